//! Audit events: one structured `tracing` event, target `audit`, per refused request and per
//! change to keys or projects. Fields: `key_id` (who; `-` when no well-formed key was sent),
//! `rpc` (what), `project`/`index`/`target` (which), `outcome`, and for refusals `code` and
//! `reason`. Never a secret: callers pass key ids, and errors never carry key material.
//!
//! Route them with a filter such as `LARCH_LOG=info,audit=info`, or keep only them with
//! `LARCH_LOG=warn,audit=info`.
//!
//! Refusals of requests without a valid key are *sampled*: anyone can send them, as fast as
//! the network allows, so logging each would let a flood fill the disk. The first is logged,
//! then at most one per [`UNAUTHENTICATED_LOG_EVERY`], with `suppressed` saying how many were
//! left out since the last one logged. All of them are counted, through the key store's refusal
//! counter ([`KeyStore::count_refusals`](crate::KeyStore::count_refusals)), in the metric
//! `larch_auth_denials_total{reason="UNAUTHENTICATED"}`. Refusals of authenticated keys
//! (roles, allow-lists, rate limits) name a key of ours and are each logged.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Error, Principal};

/// The `tracing` target of every audit event.
pub const TARGET: &str = "audit";

/// At most one unauthenticated refusal is logged per this long (see the [module docs](self)).
pub const UNAUTHENTICATED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The sampling of unauthenticated refusals: one per interval, counting those left out.
#[derive(Debug)]
struct Sampler {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Sampler {
    const fn new(every: Duration) -> Sampler {
        Sampler {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log a refusal seen at `now`: `Some(left out since the last one logged)`, or
    /// `None` to leave this one out.
    fn sample(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

static UNAUTHENTICATED: Mutex<Sampler> = Mutex::new(Sampler::new(UNAUTHENTICATED_LOG_EVERY));

/// A request refused for its key (missing, wrong, expired): logged as [`refused`] is, but
/// sampled (see the [module docs](self)).
pub(crate) fn unauthenticated(
    key_id: &str,
    rpc: &str,
    project: Option<&str>,
    index: Option<&str>,
    peer: Option<IpAddr>,
    error: &Error,
) {
    // The sampler is only ever replaced field by field; a poisoned lock is still consistent.
    let sampled = UNAUTHENTICATED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sample(Instant::now());
    if let Some(suppressed) = sampled {
        log_refusal(key_id, rpc, project, index, peer, error, Some(suppressed));
    }
}

/// A request refused by authentication or authorization.
pub(crate) fn refused(
    key_id: &str,
    rpc: &str,
    project: Option<&str>,
    index: Option<&str>,
    peer: Option<IpAddr>,
    error: &Error,
) {
    log_refusal(key_id, rpc, project, index, peer, error, None);
}

/// The one audit event of a refusal; `suppressed` (sampled refusals only) counts the ones not
/// logged since the previous sample.
fn log_refusal(
    key_id: &str,
    rpc: &str,
    project: Option<&str>,
    index: Option<&str>,
    peer: Option<IpAddr>,
    error: &Error,
    suppressed: Option<u64>,
) {
    tracing::info!(
        target: TARGET,
        key_id,
        rpc,
        project = project.unwrap_or("-"),
        index = index.unwrap_or("-"),
        peer = %peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        outcome = "denied",
        code = error.code_name(),
        reason = %error,
        suppressed,
        "request refused",
    );
}

/// A refusal decided by a handler (e.g. an index outside the key's allow-list, named in the
/// request body).
pub fn denied(principal: &Principal, rpc: &str, index: Option<&str>, error: &Error) {
    refused(
        &principal.key_id,
        rpc,
        Some(&principal.project_id),
        index,
        None,
        error,
    );
}

/// A change to keys or projects, made (`outcome` "ok") or refused (the error's code).
pub fn change(
    actor: &Principal,
    rpc: &str,
    project: Option<&str>,
    target: Option<&str>,
    result: Result<(), &Error>,
) {
    let (outcome, reason) = match result {
        Ok(()) => ("ok", String::new()),
        Err(err) => (err.code_name(), err.to_string()),
    };
    tracing::info!(
        target: TARGET,
        key_id = %actor.key_id,
        rpc,
        project = project.unwrap_or("-"),
        target = target.unwrap_or("-"),
        outcome,
        reason,
        "access changed",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_refusals_are_sampled_with_a_count_of_those_left_out() {
        let mut sampler = Sampler::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(sampler.sample(t0), Some(0), "the first is logged");
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(sampler.sample(now), None, "a flood is left out");
        }
        assert_eq!(
            sampler.sample(t0 + Duration::from_secs(10)),
            Some(1000),
            "the next sample says how many were left out"
        );
        assert_eq!(sampler.sample(t0 + Duration::from_secs(11)), None);
        assert_eq!(sampler.sample(t0 + Duration::from_secs(20)), Some(1));
    }
}
