//! [`Listener`]: a server's listening socket, plain or TLS (`--tls-cert`, `--tls-key`), as the
//! stream of connections tonic's server takes.
//!
//! TLS is terminated here with rustls rather than by tonic's own TLS option because each Larch
//! port serves gRPC *and* REST: the handshake offers ALPN `h2` and `http/1.1`, so HTTP/1.1 REST
//! clients (Pinecone's REST SDKs, curl) and gRPC clients share the port over TLS as they do in
//! plaintext. Handshakes run concurrently and are bounded in time, so a slow or silent client
//! never holds up other connections; failed handshakes are logged and dropped.
//!
//! A connection must also *start speaking* in time: within [`DEFAULT_PREFACE_TIMEOUT`] of
//! being handed to the server (after TLS, if any) it must have sent the HTTP/2 connection
//! preface and its first frame (the SETTINGS every HTTP/2 client sends at once), or a complete
//! HTTP/1 request head; otherwise it is closed. Without this a connection that sends nothing,
//! or only part of the preface, would hold a file descriptor and a task forever (neither
//! hyper-util's HTTP/1-or-2 detection nor the HTTP/2 handshake has a timeout), and enough of
//! them would make `accept` fail for every client. The clock stops for good once the preface
//! or first request head is in: an HTTP/2 connection that then sits idle for minutes, as
//! clients' pooled channels do, is never closed for it. Idle HTTP/1 keep-alive connections are
//! closed by hyper's own header-read timeout (30 s, tonic turns it on), which also bounds each
//! later request head.
//!
//! And a connection must keep *reading* what it asked for: when writing to it makes no
//! progress for [`DEFAULT_SEND_TIMEOUT`] (the peer's TCP window and the socket's send buffer
//! are full), it is closed. A peer that asks for big answers and stops reading its socket
//! would otherwise pin them in memory, with the connection's task and file descriptor, for as
//! long as it likes (hyper has no write timeout of its own). A client that reads slowly but
//! steadily is not affected: any progress restarts the clock. HTTP/2 flow control is not a
//! stall: a client that reads the socket but grants no window gets no writes at all, and
//! holds at most one response per open stream.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take, once accepted (and past TLS), to send the HTTP/2 preface
/// with its first frame or a complete HTTP/1 request head: see the [module docs](self).
///
/// Real clients send these at once on connecting (a few hundred bytes), so this only has to
/// cover a slow network; it is as long as the TLS handshake may take.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing to a connection may make no progress at all before it is closed: see the
/// [module docs](self). A live client drains its socket within moments; this is for peers
/// that have stopped reading (or vanished without a reset).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP/2 client connection preface (RFC 9113, section 3.4), before its SETTINGS frame.
const H2_MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
const H2_FRAME_HEADER_LEN: usize = 9;

/// A server certificate chain and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    ///
    /// A message naming the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, String> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| format!("cannot read certificates from {}: {err}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|err| format!("cannot read a private key from {}: {err}", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS setup failed: {err}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| format!("the certificate and key do not make a TLS identity: {err}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// A listening socket and, when configured, the TLS it speaks.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Tls>,
    timeouts: Timeouts,
}

/// The deadlines every connection of a [`Listener`] gets.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// See [`DEFAULT_PREFACE_TIMEOUT`].
    preface: Duration,
    /// See [`DEFAULT_SEND_TIMEOUT`].
    send: Duration,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener::new(tcp, None)
    }
}

impl Listener {
    /// `tcp`, speaking TLS if `tls` is given.
    pub fn new(tcp: TcpListener, tls: Option<Tls>) -> Listener {
        Listener {
            tcp,
            tls,
            timeouts: Timeouts {
                preface: DEFAULT_PREFACE_TIMEOUT,
                send: DEFAULT_SEND_TIMEOUT,
            },
        }
    }

    /// The same listener, closing connections that have not sent the HTTP/2 preface (and its
    /// first frame) or a complete HTTP/1 request head within `timeout` of being accepted
    /// (default [`DEFAULT_PREFACE_TIMEOUT`]).
    pub fn with_preface_timeout(mut self, timeout: Duration) -> Listener {
        self.timeouts.preface = timeout;
        self
    }

    /// The same listener, closing connections to which nothing could be written for
    /// `timeout` (default [`DEFAULT_SEND_TIMEOUT`]).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Listener {
        self.timeouts.send = timeout;
        self
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The connections, for `Server::serve_with_incoming_shutdown`. Dropping the stream
    /// closes the socket.
    pub fn incoming(self) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        let (send, receive) = tokio::sync::mpsc::channel(64);
        let Listener { tcp, tls, timeouts } = self;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    () = send.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // E.g. out of file descriptors: say so, back off, keep serving.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let conn = Conn::new(Io::Plain(stream), peer, timeouts);
                        if send.send(Ok(conn)).await.is_err() {
                            return;
                        }
                    }
                    Some(tls) => {
                        let (acceptor, send) = (tls.acceptor.clone(), send.clone());
                        tokio::spawn(async move {
                            let handshake =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            match handshake.await {
                                Ok(Ok(stream)) => {
                                    let io = Io::Tls(Box::new(stream));
                                    let _ = send.send(Ok(Conn::new(io, peer, timeouts))).await;
                                }
                                Ok(Err(err)) => {
                                    tracing::debug!(?peer, error = %err, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        ReceiverStream::new(receive)
    }
}

/// One accepted connection, plain or TLS.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: SocketAddr,
    /// Until the client has sent its preface or first request head: the deadline for it.
    preface: Option<Preface>,
    send_timeout: Duration,
    /// While a write waits for the peer to read: when the connection is given up.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug)]
enum Io {
    /// Plaintext (h2c or HTTP/1.1).
    Plain(TcpStream),
    /// After a completed TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn new(io: Io, peer: SocketAddr, timeouts: Timeouts) -> Conn {
        Conn {
            io,
            peer,
            preface: Some(Preface {
                deadline: Box::pin(tokio::time::sleep(timeouts.preface)),
                progress: Progress::Magic { matched: 0 },
            }),
            send_timeout: timeouts.send,
            stalled: None,
        }
    }

    /// `polled`, a write's outcome, unless the writes have been waiting for the peer longer
    /// than the send timeout: then an error, which makes the server drop the connection.
    fn unless_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !polled.is_pending() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::debug!(peer = %self.peer, ?timeout, "closing a connection whose peer stopped reading");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer read nothing for the send timeout",
        )))
    }
}

/// The watch on a new connection's first bytes.
#[derive(Debug)]
struct Preface {
    deadline: Pin<Box<tokio::time::Sleep>>,
    progress: Progress,
}

/// How far a connection's first bytes have got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// The first `matched` bytes are those of the HTTP/2 preface.
    Magic { matched: usize },
    /// HTTP/2: after the preface, `seen` bytes of the first frame (header, then payload).
    Frame {
        header: [u8; H2_FRAME_HEADER_LEN],
        seen: usize,
    },
    /// HTTP/1: in the request head, `line` bytes into a line after `lines` non-empty ones.
    Head { lines: usize, line: usize },
}

impl Progress {
    /// Takes the next bytes read; true once the preface with its first frame, or the request
    /// head, is complete.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            let done = match self {
                Progress::Magic { matched } => {
                    if H2_MAGIC.get(*matched) == Some(&byte) {
                        *matched += 1;
                        if *matched == H2_MAGIC.len() {
                            *self = Progress::Frame {
                                header: [0; H2_FRAME_HEADER_LEN],
                                seen: 0,
                            };
                        }
                        false
                    } else {
                        // Not HTTP/2: an HTTP/1 request that began with the bytes matched.
                        let mut head = Progress::Head { lines: 0, line: 0 };
                        let matched = &H2_MAGIC[..*matched];
                        let done = head.feed(matched) || head.feed(&[byte]);
                        *self = head;
                        done
                    }
                }
                Progress::Frame { header, seen } => {
                    if let Some(slot) = header.get_mut(*seen) {
                        *slot = byte;
                    }
                    *seen += 1;
                    *seen >= H2_FRAME_HEADER_LEN && *seen == H2_FRAME_HEADER_LEN + frame_len(header)
                }
                Progress::Head { lines, line } => match byte {
                    b'\n' if *line == 0 => *lines > 0,
                    b'\n' => {
                        *lines += 1;
                        *line = 0;
                        false
                    }
                    b'\r' => false,
                    _ => {
                        *line += 1;
                        false
                    }
                },
            };
            if done {
                return true;
            }
        }
        false
    }
}

/// The payload length in an HTTP/2 frame header.
fn frame_len(header: &[u8; H2_FRAME_HEADER_LEN]) -> usize {
    let [a, b, c, ..] = *header;
    (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP peer, for both kinds: the API-key gate slows down guessing peers by address.
    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Io::Plain(stream) => stream.connect_info(),
            Io::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        };
        let Some(preface) = &mut this.preface else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().get(before..).unwrap_or_default();
                if preface.progress.feed(read) {
                    this.preface = None;
                }
            }
            // Nothing yet: the server waits for these bytes, so it polls again when woken.
            Poll::Pending if preface.deadline.as_mut().poll(cx).is_ready() => {
                tracing::debug!(peer = %this.peer, "closing a connection that sent no request in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface or HTTP/1 request head in time",
                )));
            }
            Poll::Pending | Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        };
        this.unless_stalled(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        };
        this.unless_stalled(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        };
        this.unless_stalled(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.unless_stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` one at a time; the index of the byte that completed the preface.
    fn completed_at(bytes: &[u8]) -> Option<usize> {
        let mut progress = Progress::Magic { matched: 0 };
        bytes.iter().position(|&b| progress.feed(&[b]))
    }

    fn settings(payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len())
            .expect("a short payload")
            .to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], 0x4, 0, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn the_http2_preface_is_complete_with_its_first_frame() {
        let mut empty = H2_MAGIC.to_vec();
        empty.extend(settings(&[]));
        assert_eq!(completed_at(&empty), Some(empty.len() - 1));

        // Two settings (6 bytes each), as clients send them, fed in one read.
        let mut two = H2_MAGIC.to_vec();
        two.extend(settings(&[0, 2, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0]));
        assert_eq!(completed_at(&two), Some(two.len() - 1));
        let mut progress = Progress::Magic { matched: 0 };
        assert!(!progress.feed(&two[..two.len() - 1]));
        assert!(progress.feed(&two[two.len() - 1..]));

        assert_eq!(completed_at(H2_MAGIC), None, "the magic alone");
        assert_eq!(completed_at(&H2_MAGIC[..16]), None);
        assert_eq!(completed_at(&empty[..empty.len() - 1]), None);
    }

    #[test]
    fn an_http1_request_is_complete_with_its_head() {
        let get = b"GET /indexes HTTP/1.1\r\nHost: x\r\nApi-Key: k\r\n\r\n";
        assert_eq!(completed_at(get), Some(get.len() - 1));
        let bare = b"GET / HTTP/1.1\nHost: x\n\n";
        assert_eq!(completed_at(bare), Some(bare.len() - 1));
        // A leading empty line is not the end of a head; a method sharing the magic's first
        // letter is not HTTP/2.
        let post = b"\r\nPOST /query HTTP/1.1\r\nHost: x\r\n\r\n{}";
        assert_eq!(completed_at(post), Some(post.len() - 3));
        // The magic's first line and a blank one, then not "SM": an HTTP/1 head (which hyper
        // refuses), known as such at the first byte that differs.
        assert_eq!(completed_at(b"PRI * HTTP/2.0\r\n\r\nXX"), Some(18));

        assert_eq!(completed_at(b"GET /indexes HTT"), None);
        assert_eq!(completed_at(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
