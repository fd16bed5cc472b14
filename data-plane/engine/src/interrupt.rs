//! Stopping work nobody waits for: the server runs each request's engine call inside
//! [`run`] with a flag it sets when the request is abandoned (its deadline passed or its client
//! went away), and long loops — exact scans over many rows — look at the flag every
//! [`CHECK_EVERY`] rows and stop early. A stopped call returns whatever it had, which nobody
//! receives; only reads stop this way, so nothing is left half-written.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many rows a scan scores between two looks at the flag.
pub(crate) const CHECK_EVERY: usize = 4096;

thread_local! {
    static CURRENT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `work` on this thread with `abandoned` as its interrupt flag.
pub fn run<T>(abandoned: Arc<AtomicBool>, work: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| current.replace(Some(abandoned)));
    // Restored even if `work` panics (the query pool catches panics and goes on).
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|current| *current.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    work()
}

/// Whether the work running on this thread was abandoned.
pub(crate) fn requested() -> bool {
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_applies_inside_run_only() {
        assert!(!requested());
        let flag = Arc::new(AtomicBool::new(true));
        assert!(run(Arc::clone(&flag), requested));
        assert!(!requested());
        flag.store(false, Ordering::Release);
        assert!(!run(flag, requested));
    }

    #[test]
    fn an_abandoned_exact_scan_stops() {
        use crate::test_support::{index, vector};
        use crate::{Metric, QueryRequest, UpsertRequest};
        // No graph (an index outside an engine has no indexer): queries scan every row.
        let index = index(2, Metric::Euclidean);
        for batch in 0..10 {
            let vectors = (0..1000)
                .map(|i| {
                    let n = batch * 1000 + i;
                    vector(&format!("v{n}"), &[n as f32, 1.0])
                })
                .collect();
            index
                .upsert(UpsertRequest {
                    namespace: String::new(),
                    vectors,
                })
                .unwrap();
        }
        let query = || QueryRequest {
            vector: vec![9999.0, 1.0],
            top_k: 1,
            ..Default::default()
        };
        let wanted = run(Arc::new(AtomicBool::new(false)), || index.query(query()));
        assert_eq!(wanted.unwrap().matches[0].id, "v9999");
        // Abandoned before it started: the scan stops at its first look at the flag, far
        // before the row that would have won.
        let abandoned = run(Arc::new(AtomicBool::new(true)), || index.query(query()));
        assert!(abandoned.unwrap().matches.is_empty());
    }
}
