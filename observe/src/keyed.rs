//! A per-key cap on concurrent work: [`KeyedGate`] counts, per API key id, the permits held,
//! and refuses one more past the cap.
//!
//! The data plane takes a permit for each query (and fetch by metadata) of a key before the
//! read is queued on the query pool, and the read gives it back when it ends, so one tenant's
//! slow filtered scans cannot fill the pool that every index's reads share
//! (`--max-queries-per-key`). Each [`Limits`](crate::Limits) holds one gate, shared by its
//! clones and so by every port of the process.
//!
//! ```
//! use larch_observe::keyed::KeyedGate;
//!
//! let gate = KeyedGate::new(1);
//! let first = gate.try_acquire("key-a").expect("under the cap");
//! assert!(gate.try_acquire("key-a").is_none(), "one per key");
//! assert!(gate.try_acquire("key-b").is_some(), "other keys are not held up");
//! drop(first);
//! assert!(gate.try_acquire("key-a").is_some());
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Counts of held permits per key, each at most `max`.
#[derive(Debug)]
pub struct KeyedGate {
    max: usize,
    /// Keys holding no permit are removed, so the map holds only keys with work running.
    held: Mutex<HashMap<String, usize>>,
}

impl KeyedGate {
    /// A gate letting each key hold at most `max` permits (at least 1).
    pub fn new(max: usize) -> Arc<KeyedGate> {
        Arc::new(KeyedGate {
            max: max.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The most permits one key may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit for `key`, or `None` if it already holds the most it may.
    pub fn try_acquire(self: &Arc<Self>, key: &str) -> Option<KeyPermit> {
        let mut held = self.held();
        let count = held.entry(key.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(KeyPermit {
            gate: Arc::clone(self),
            key: key.to_owned(),
        })
    }

    /// How many permits `key` holds now.
    pub fn held_by(&self, key: &str) -> usize {
        self.held().get(key).copied().unwrap_or(0)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Counts are changed whole under the lock; a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One unit of a key's work; dropping it gives the unit back.
#[derive(Debug)]
pub struct KeyPermit {
    gate: Arc<KeyedGate>,
    key: String,
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        let mut held = self.gate.held();
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_holds_at_most_the_cap_and_gets_permits_back() {
        let gate = KeyedGate::new(2);
        let a1 = gate.try_acquire("a").expect("1 of 2");
        let a2 = gate.try_acquire("a").expect("2 of 2");
        assert!(gate.try_acquire("a").is_none());
        assert_eq!(gate.held_by("a"), 2);
        let b = gate.try_acquire("b").expect("another key");
        assert_eq!(gate.held_by("b"), 1);
        drop(a1);
        assert_eq!(gate.held_by("a"), 1);
        let a3 = gate.try_acquire("a").expect("one was given back");
        drop((a2, a3, b));
        assert_eq!(gate.held_by("a"), 0);
        assert!(gate.held().is_empty(), "idle keys are forgotten");
    }

    #[test]
    fn a_cap_of_zero_is_one() {
        let gate = KeyedGate::new(0);
        assert_eq!(gate.max(), 1);
        let _held = gate.try_acquire("a").expect("one");
        assert!(gate.try_acquire("a").is_none());
    }
}
