//! Bounds on the calls between Larch's own processes (split mode: the control plane calling a
//! data plane's `DataPlaneControl`, a data plane pulling `ControlPlaneSync`), so that a peer
//! that stops answering — a paused or partitioned process, a half-open connection — turns into
//! an error within a known time instead of a call that never returns.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use larch_observe::internal::CallTimeouts;
//!
//! let timeouts = CallTimeouts::new(Duration::from_secs(10));
//! let endpoint = tonic::transport::Endpoint::from_static("http://127.0.0.1:5081");
//! let _bounded = timeouts.apply(endpoint);
//! ```

use std::time::Duration;

use tonic::transport::Endpoint;

/// Connect and request timeouts plus HTTP/2 keepalive for one internal client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    /// How long opening a connection (TCP and TLS) may take.
    pub connect: Duration,
    /// How long one call may take, from sending to the whole answer (the server sees it as
    /// `grpc-timeout`, and the client gives up with DEADLINE_EXCEEDED / CANCELLED).
    pub request: Duration,
    /// How often an HTTP/2 PING is sent on a connection, even while idle; a connection whose
    /// PING is not answered within the same time is closed, so the next call reconnects.
    pub keepalive: Duration,
}

impl CallTimeouts {
    /// Calls bounded by `request`; connecting by the same bound (at most 5 s), and keepalive
    /// PINGs every 10 s (more often when `request` is shorter).
    pub fn new(request: Duration) -> CallTimeouts {
        CallTimeouts {
            connect: request.min(Duration::from_secs(5)),
            request,
            keepalive: request.min(Duration::from_secs(10)),
        }
    }

    /// `endpoint` with these bounds.
    pub fn apply(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect)
            .timeout(self.request)
            .http2_keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .keep_alive_while_idle(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connecting_and_keepalive_never_wait_longer_than_a_call() {
        let short = CallTimeouts::new(Duration::from_secs(2));
        assert_eq!(short.connect, Duration::from_secs(2));
        assert_eq!(short.keepalive, Duration::from_secs(2));
        let long = CallTimeouts::new(Duration::from_secs(60));
        assert_eq!(long.connect, Duration::from_secs(5));
        assert_eq!(long.keepalive, Duration::from_secs(10));
        assert_eq!(long.request, Duration::from_secs(60));
    }
}
