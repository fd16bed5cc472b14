//! The churn client: over and over, it opens a new connection to the data plane and abandons
//! it abruptly. Its sockets have `SO_LINGER` 0, so closing one sends a TCP reset rather than
//! an orderly FIN: the server sees a peer vanish, as when a client process is killed or a
//! load balancer drops a connection. Each attempt picks one of:
//!
//! - reset right after the TCP connect;
//! - reset in the middle of the HTTP/2 connection preface;
//! - reset after a full HTTP/2 handshake, without a request;
//! - start a request (a query, sometimes with a large answer, or a fetch of the load's
//!   namespace, or an upsert into its own namespace, so the load's expected state is untouched)
//!   and reset before, during or after the server's work (after 0 or 0.1–100 ms).
//!
//! Whatever the churn client does to itself is no failure: an answer that arrives anyway, or
//! `CANCELLED`/`UNAVAILABLE`/`UNKNOWN` from its own transport. A connect that fails, or any
//! other status, is an unexpected error, as for the load clients.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{FetchRequest, QueryRequest, UpsertRequest, Vector};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::Endpoint;

use super::Rng;
use super::load::{ApiKey, pushback};
use super::stats::{ChurnEnd, ChurnMode, Recorder, code_name};

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The churn client's namespace: its writes may or may not land, so they stay out of the
/// load's namespace.
pub(crate) const CHURN_NAMESPACE: &str = "churn";

/// What the churn client needs.
pub(crate) struct Churn {
    pub(crate) addr: SocketAddr,
    /// The index's host, sent as `:authority` (split mode, where the data plane routes by it).
    pub(crate) authority: Option<String>,
    pub(crate) key: ApiKey,
    pub(crate) namespace: String,
    pub(crate) dim: usize,
    /// Pause between attempts.
    pub(crate) pause: Duration,
    pub(crate) recorder: Arc<Recorder>,
}

impl Churn {
    /// Churns until `deadline`.
    pub(crate) async fn run(self, deadline: Instant, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut attempt = 0u64;
        while Instant::now() < deadline {
            attempt += 1;
            let roll = rng.below(100);
            let outcome = if roll < 15 {
                self.reset_after_connect()
                    .await
                    .map_err(anyhow::Error::from)
            } else if roll < 30 {
                self.reset_mid_preface(&mut rng)
                    .await
                    .map_err(anyhow::Error::from)
            } else if roll < 45 {
                self.reset_after_handshake().await
            } else {
                self.reset_during_request(&mut rng, attempt).await
            };
            if let Err(err) = outcome {
                self.recorder
                    .failure("churn", "CONNECT_FAILED", format!("{err:#}"));
            }
            tokio::time::sleep(self.pause).await;
        }
    }

    async fn reset_after_connect(&self) -> io::Result<()> {
        let stream = connect(self.addr).await?;
        drop(stream);
        self.recorder.churn(ChurnMode::Reset, ChurnEnd::Dropped);
        Ok(())
    }

    async fn reset_mid_preface(&self, rng: &mut Rng) -> io::Result<()> {
        let stream = connect(self.addr).await?;
        let cut = 1 + rng.below(PREFACE.len() as u64 - 1) as usize;
        stream.writable().await?;
        // A short write only shortens the preface further.
        let _ = stream.try_write(&PREFACE[..cut]);
        drop(stream);
        self.recorder.churn(ChurnMode::Preface, ChurnEnd::Dropped);
        Ok(())
    }

    async fn reset_after_handshake(&self) -> anyhow::Result<()> {
        let channel = self
            .endpoint()?
            .connect_with_connector(Resetting(self.addr))
            .await?;
        drop(channel);
        self.recorder.churn(ChurnMode::Handshake, ChurnEnd::Dropped);
        Ok(())
    }

    async fn reset_during_request(&self, rng: &mut Rng, attempt: u64) -> anyhow::Result<()> {
        let channel = self
            .endpoint()?
            .connect_with_connector(Resetting(self.addr))
            .await?;
        let mut client = VectorServiceClient::with_interceptor(channel, self.key.clone());
        let vector: Vec<f32> = (0..self.dim).map(|_| rng.f32()).collect();
        // A fifth of the time 0 (dropped before the request is even sent), else log-uniform
        // between 0.1 ms and 100 ms: before, during and (sometimes) after the server's work.
        let patience = if rng.chance(0.2) {
            Duration::ZERO
        } else {
            let exponent = rng.below(1000) as f64 / 1000.0;
            Duration::from_secs_f64(1e-4 * 1000f64.powf(exponent))
        };
        // Large answers (top 1000 with values and metadata, ~0.5 MB at d=64) are still being
        // written when the connection is reset.
        let top_k = if rng.chance(0.5) { 1000 } else { 10 };
        let kind = rng.below(3);
        let call = async {
            match kind {
                0 => client
                    .query(QueryRequest {
                        namespace: self.namespace.clone(),
                        top_k,
                        include_values: top_k > 10,
                        include_metadata: true,
                        vector,
                        ..QueryRequest::default()
                    })
                    .await
                    .map(drop),
                1 => client
                    .fetch(FetchRequest {
                        ids: (0..10).map(|s| super::model::id(0, s)).collect(),
                        namespace: self.namespace.clone(),
                    })
                    .await
                    .map(drop),
                _ => client
                    .upsert(UpsertRequest {
                        vectors: vec![Vector {
                            id: format!("churn-{}", attempt % 1000),
                            values: vector,
                            sparse_values: None,
                            metadata: None,
                        }],
                        namespace: CHURN_NAMESPACE.to_owned(),
                    })
                    .await
                    .map(drop),
            }
        };
        let end = match tokio::time::timeout(patience, call).await {
            Err(_elapsed) => ChurnEnd::Dropped,
            Ok(Ok(())) => ChurnEnd::Answered,
            Ok(Err(status)) => match status.code() {
                Code::Cancelled | Code::Unavailable | Code::Unknown => {
                    ChurnEnd::SelfCaused(code_name(status.code()))
                }
                // Backpressure is an answer too; the churn client does not retry.
                Code::ResourceExhausted if pushback(&status).is_some() => ChurnEnd::Answered,
                _ => {
                    self.recorder.error("churn", &status);
                    return Ok(());
                }
            },
        };
        // Dropping the client drops the connection: a reset, since the socket lingers 0.
        drop(client);
        self.recorder.churn(ChurnMode::Request, end);
        Ok(())
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?;
        if let Some(authority) = &self.authority {
            endpoint = endpoint.origin(format!("http://{authority}").parse()?);
        }
        Ok(endpoint.connect_timeout(Duration::from_secs(5)))
    }
}

/// A TCP connection whose close is a reset (`SO_LINGER` 0).
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_zero_linger()?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A tonic connector that dials [`connect`] (whatever the URI says).
#[derive(Clone, Copy)]
struct Resetting(SocketAddr);

impl Service<Uri> for Resetting {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move { connect(addr).await.map(TokioIo::new) })
    }
}
