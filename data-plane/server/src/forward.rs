//! Writes sent to a follower go to the index's writer ([`forward_writes`], a layer on each
//! index's routes in split mode).
//!
//! On a bucket, one pod writes an index (it holds the index's writer lease) and every other
//! pod follows it (see `larch_engine::Index::catch_up`). A client may send a write to any
//! pod behind the Service: a follower passes the request on, as it is — gRPC or REST, the
//! caller's `api-key` and the index host included — over HTTP/2 to the address the writer
//! wrote into its lease (`larch data-plane --advertise-url`), and the writer authenticates,
//! validates and applies it exactly as if the client had sent it there. Nothing is re-encoded,
//! so a forwarded write cannot differ from a direct one.
//!
//! Read-your-writes: the writer's answer carries the write's LSN (Pinecone's
//! `x-pinecone-request-lsn`, the log batch holding it); the follower answers only once it
//! has applied that batch itself, so a client that reads from the same pod next sees its
//! write. Should the follower not get there within [`APPLY_TIMEOUT`] (it is reloading the
//! index), it answers all the same — the write is durable — and logs why.
//!
//! Reads are never forwarded: a follower serves them from what it has applied (at most one
//! tail interval behind the writer, see `--tail-interval-ms`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, Method, header};
use larch_engine::Engine;
use larch_model::Code;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use crate::api::REQUEST_LSN_HEADER;
use crate::routed::{is_grpc, refusal, refuse, request_authority};

/// How long a follower waits to apply a write it forwarded before answering anyway.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a forwarded write may take on the writer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Marks a write a follower passed on: the pod receiving it never passes it on again (it
/// would loop between pods that each believe the other writes the index).
pub const FORWARDED_HEADER: &str = "x-larch-forwarded";

/// Headers that belong to one HTTP/1.1 connection and must not be sent on over HTTP/2.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    HeaderName::from_static("keep-alive"),
];

/// What [`forward_writes`] needs for one index: the engine serving it, its storage name, and
/// HTTP/2 channels to writers (shared by every index of the process).
#[derive(Clone)]
pub struct Forwarder {
    engine: Arc<Engine>,
    index: String,
    channels: Channels,
}

/// Channels to writers, by writer address and index host (each channel sends its requests to
/// one host, as the writer routes them by `:authority`), and the CA an `https` writer's
/// certificate must be signed by.
#[derive(Clone, Default)]
pub struct Channels {
    open: Arc<Mutex<HashMap<(String, String), Channel>>>,
    trusted: Arc<std::sync::OnceLock<tonic::transport::Certificate>>,
}

impl Forwarder {
    /// Forwards the writes to index `index` of `engine`, when a follower, through `channels`.
    pub fn new(engine: Arc<Engine>, index: String, channels: Channels) -> Forwarder {
        Forwarder {
            engine,
            index,
            channels,
        }
    }
}

impl Channels {
    /// Trusts writers whose certificate `ca_pem` (PEM, one or more CAs) signed, for writers
    /// advertising an `https` address (pods serving TLS). Set once, before serving; later
    /// calls are ignored.
    pub fn trust(&self, ca_pem: Vec<u8>) {
        let _ = self
            .trusted
            .set(tonic::transport::Certificate::from_pem(ca_pem));
    }

    fn get(&self, address: &str, host: &str) -> Result<Channel, String> {
        let mut channels = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (address.to_owned(), host.to_owned());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let origin: http::Uri = format!("http://{host}")
            .parse()
            .map_err(|err| format!("bad index host '{host}': {err}"))?;
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|err| format!("bad writer address '{address}': {err}"))?
            .origin(origin.clone())
            .connect_timeout(Duration::from_secs(5))
            .timeout(FORWARD_TIMEOUT);
        if address.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls(address, &origin)?)
                .map_err(|err| format!("cannot set up TLS to the writer at {address}: {err}"))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// TLS to the writer at `address`: its certificate must be signed by the trusted CA and
    /// name the index host (`origin`'s host), as it does for every client of the index — the
    /// pods serve one certificate for the hosts of their indexes.
    fn tls(
        &self,
        address: &str,
        origin: &http::Uri,
    ) -> Result<tonic::transport::ClientTlsConfig, String> {
        let Some(ca) = self.trusted.get() else {
            return Err(format!(
                "the writer's address {address} is https, and this pod trusts no CA for it: start the data planes with --tls-ca"
            ));
        };
        let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone());
        if let Some(name) = origin.host() {
            tls = tls.domain_name(name);
        }
        Ok(tls)
    }

    fn forget(&self, address: &str, host: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(address.to_owned(), host.to_owned()));
    }
}

/// Whether `request` changes the index (see the module docs): gRPC `Upsert`, `Update`,
/// `Delete`, `CreateNamespace`, `DeleteNamespace`; their REST twins; and bulk imports, which
/// run where the writes land.
pub fn is_write(method: &Method, path: &str) -> bool {
    if let Some(rpc) = path.strip_prefix("/VectorService/") {
        return matches!(
            rpc,
            "Upsert" | "Update" | "Delete" | "CreateNamespace" | "DeleteNamespace"
        );
    }
    if path == "/bulk/imports" || path.starts_with("/bulk/imports/") {
        return true;
    }
    match *method {
        Method::POST => matches!(
            path,
            "/vectors/upsert" | "/vectors/update" | "/vectors/delete" | "/namespaces"
        ),
        Method::DELETE => path.starts_with("/namespaces/"),
        _ => false,
    }
}

/// The layer: passes a write on to the writer when this process follows the index, and
/// waits to apply it before answering; everything else goes to `next`.
pub async fn forward_writes(
    State(forwarder): State<Forwarder>,
    request: Request,
    next: Next,
) -> Response {
    if !is_write(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(index) = forwarder.engine.index(&forwarder.index) else {
        return next.run(request).await;
    };
    if !index.is_followed() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_HEADER) {
        let message = format!(
            "a write forwarded to this pod as the writer of index '{}', which it only follows: the index is changing hands; retry shortly",
            forwarder.index
        );
        return refuse(&request, Code::Unavailable, message);
    }
    let lookup = Arc::clone(&index);
    let own = forwarder.engine.advertised_address().to_owned();
    let address = match tokio::task::spawn_blocking(move || lookup.writer_address()).await {
        // This process's own earlier life (same address), which did not release the lease.
        Ok(Ok(Some(address))) if address == own => {
            let message = format!(
                "the last writer of index '{}' stopped without handing it over; this pod takes it over once its lease lapses; retry shortly",
                forwarder.index
            );
            return refuse(&request, Code::Unavailable, message);
        }
        Ok(Ok(Some(address))) => address,
        Ok(Ok(None)) => {
            let message = format!(
                "index '{}' has no writer right now (its writer stopped and another pod is taking it over); retry shortly",
                forwarder.index
            );
            return refuse(&request, Code::Unavailable, message);
        }
        Ok(Err(err)) => {
            let message = format!("cannot find the writer of the index: {err}; retry shortly");
            return refuse(&request, Code::Unavailable, message);
        }
        Err(err) => {
            let message = format!("cannot find the writer: {err}");
            return refuse(&request, Code::Internal, message);
        }
    };
    let host = request_authority(&request).unwrap_or_default();
    let channel = match forwarder.channels.get(&address, &host) {
        Ok(channel) => channel,
        Err(err) => return refuse(&request, Code::Internal, err),
    };
    let grpc = is_grpc(&request);
    let (mut parts, body) = request.into_parts();
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.version = http::Version::HTTP_2;
    parts
        .headers
        .insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
    let outgoing = http::Request::from_parts(parts, tonic::body::Body::new(body));
    let answer = match channel.oneshot(outgoing).await {
        Ok(answer) => answer,
        Err(err) => {
            forwarder.channels.forget(&address, &host);
            index.forget_writer();
            tracing::warn!(index = %forwarder.index, writer = %address, error = %err, "cannot forward a write to the index's writer");
            let message = format!(
                "this pod follows index '{}' and could not reach its writer at {address}: {err}; retry shortly",
                forwarder.index
            );
            return refusal(grpc, Code::Unavailable, message);
        }
    };
    let lsn = answer
        .headers()
        .get(REQUEST_LSN_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(lsn) = lsn {
        let name = forwarder.index.clone();
        let waited =
            tokio::task::spawn_blocking(move || index.wait_applied(lsn, APPLY_TIMEOUT)).await;
        let failed = match waited {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(err) => Some(err.to_string()),
        };
        if let Some(error) = failed {
            tracing::warn!(index = %name, lsn, %error, "answering a forwarded write before this follower applied it");
        }
    }
    let (parts, body) = answer.into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_from_reads() {
        for (method, path) in [
            (Method::POST, "/VectorService/Upsert"),
            (Method::POST, "/VectorService/DeleteNamespace"),
            (Method::POST, "/vectors/upsert"),
            (Method::POST, "/vectors/delete"),
            (Method::POST, "/namespaces"),
            (Method::DELETE, "/namespaces/films"),
            (Method::GET, "/bulk/imports/7"),
        ] {
            assert!(is_write(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/VectorService/Query"),
            (Method::POST, "/VectorService/Fetch"),
            (Method::POST, "/query"),
            (Method::GET, "/namespaces/films"),
            (Method::GET, "/namespaces"),
            (Method::GET, "/vectors/fetch"),
        ] {
            assert!(!is_write(&method, path), "{method} {path}");
        }
    }
}
