//! Abuse resistance: a per-key request rate limit ([`RateLimit`], off unless configured) and
//! a slowdown for peers that keep presenting wrong keys (`Failures`).
//!
//! The slowdown delays only the *refusals* sent to a peer after its first few failures, so a
//! guesser gets a few answers per second at most while valid keys from the same address are
//! answered at once: nothing is ever blocked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Requests per second each API key may send, with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second per key (at least 1).
    pub per_second: u32,
    /// Requests a key may send at once after being idle (at least 1).
    pub burst: u32,
}

/// A token bucket per key id.
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Buckets {
    pub(crate) fn new(limit: RateLimit) -> Buckets {
        Buckets {
            limit: RateLimit {
                per_second: limit.per_second.max(1),
                burst: limit.burst.max(1),
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one request's token for `key_id`, or says how long until one is available.
    pub(crate) fn take(&self, key_id: &str, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst);
        let mut buckets = lock(&self.buckets);
        // Only authenticated keys get here, so there is one bucket per existing key at most.
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// Forgets a revoked key's bucket.
    pub(crate) fn forget(&self, key_id: &str) {
        lock(&self.buckets).remove(key_id);
    }
}

/// Failed authentications per peer address.
#[derive(Debug)]
pub(crate) struct Failures {
    /// Off when every request comes through one proxy, whose address would be slowed for all.
    enabled: AtomicBool,
    peers: Mutex<HashMap<IpAddr, Strikes>>,
}

impl Default for Failures {
    fn default() -> Failures {
        Failures {
            enabled: AtomicBool::new(true),
            peers: Mutex::default(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

/// Failures answered at once before the slowdown starts (typos, a client retrying).
pub(crate) const FREE_FAILURES: u32 = 5;
/// A peer's failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Delay of the first slowed refusal; doubles with each further failure…
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// …up to this.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3);
/// Peers tracked at most (memory bound); beyond it, forgotten peers are pruned first, and a
/// peer that still does not fit gets the longest delay.
const MAX_PEERS: usize = 10_000;

impl Failures {
    /// Turns the slowdown on (the default) or off.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if !enabled {
            lock(&self.peers).clear();
        }
    }

    /// Records a failed authentication from `peer` and returns how long to hold its refusal.
    pub(crate) fn record(&self, peer: IpAddr, now: Instant) -> Duration {
        if !self.enabled.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let mut peers = lock(&self.peers);
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, strikes| now.saturating_duration_since(strikes.last) < FORGET_AFTER);
            if peers.len() >= MAX_PEERS {
                return MAX_DELAY;
            }
        }
        let strikes = peers.entry(peer).or_insert(Strikes {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(strikes.last) >= FORGET_AFTER {
            strikes.count = 0;
        }
        strikes.count = strikes.count.saturating_add(1);
        strikes.last = now;
        delay_after(strikes.count)
    }
}

/// The hold for a peer's `count`-th failure in a row.
fn delay_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(extra) => FIRST_DELAY
            .saturating_mul(1u32.checked_shl(extra.min(16)).unwrap_or(u32::MAX))
            .min(MAX_DELAY),
    }
}

// Entries are replaced whole; a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let buckets = Buckets::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            buckets.take("a", t0).expect("within the burst");
        }
        let wait = buckets.take("a", t0).expect_err("burst used up");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // Other keys have their own bucket.
        buckets.take("b", t0).expect("own bucket");
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        buckets.take("a", t1).expect("refilled");
        assert!(buckets.take("a", t1).is_err());
        // Long idle: back to the burst, not more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            buckets.take("a", t2).expect("burst again");
        }
        assert!(buckets.take("a", t2).is_err());
        buckets.forget("a");
        buckets.take("a", t2).expect("fresh bucket after forget");
    }

    #[test]
    fn failures_are_free_at_first_then_slowed_then_forgotten() {
        let failures = Failures::default();
        let peer: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(failures.record(peer, t0), Duration::ZERO);
        }
        assert_eq!(failures.record(peer, t0), FIRST_DELAY);
        assert_eq!(failures.record(peer, t0), FIRST_DELAY * 2);
        for _ in 0..40 {
            failures.record(peer, t0);
        }
        assert_eq!(failures.record(peer, t0), MAX_DELAY);
        // Another peer is not affected.
        assert_eq!(failures.record(other, t0), Duration::ZERO);
        // A minute without failures: forgiven.
        assert_eq!(failures.record(peer, t0 + FORGET_AFTER), Duration::ZERO);
        // Switched off (e.g. behind a proxy): never slowed.
        failures.set_enabled(false);
        for _ in 0..20 {
            assert_eq!(failures.record(peer, t0), Duration::ZERO);
        }
    }

    #[test]
    fn the_peer_table_is_bounded() {
        let failures = Failures::default();
        let t0 = Instant::now();
        for i in 0..MAX_PEERS as u32 {
            failures.record(IpAddr::from(i.to_be_bytes()), t0);
        }
        let newcomer: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(failures.record(newcomer, t0), MAX_DELAY);
        // Once the old entries are stale they make room.
        assert_eq!(failures.record(newcomer, t0 + FORGET_AFTER), Duration::ZERO);
        assert!(lock(&failures.peers).len() <= MAX_PEERS);
    }
}
