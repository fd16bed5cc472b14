//! The query pool: a fixed set of threads, one per core, that run every
//! read (query, fetch, list, stats) of every index served by this process.
//!
//! Reads are CPU-bound and synchronous (graph walks, scans), so they must
//! not run on the async runtime's threads, where they would hold up every
//! other request. Tokio's blocking pool could take them, but it grows to
//! hundreds of threads under load, and hundreds of queries time-slicing two
//! cores each take far longer than they would one after another. A pool of
//! one thread per core keeps the cores busy and queues the rest in order;
//! writes, which mostly wait for `fdatasync`, stay on the blocking pool.

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError, mpsc},
    thread,
};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Handle to the process-wide query pool.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = thread::available_parallelism().map_or(2, |n| n.get());
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            let spawned = thread::Builder::new()
                .name(format!("larch-query-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job, not to run it.
                        let job = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a query thread");
            }
        }
        Pool { jobs: sender }
    })
}

/// Runs `job` on the query pool and waits for its result without blocking
/// the async runtime. `None` if the job panicked (its thread carries on).
pub(crate) async fn run<T, F>(job: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = oneshot::channel();
    let job: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        if let Ok(value) = outcome {
            // The caller may have gone away (client cancelled); nothing to do then.
            let _ = done.send(value);
        }
    });
    if pool().jobs.send(job).is_err() {
        return None;
    }
    result.await.ok()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_survives_panics() {
        let name = super::run(thread_name).await.expect("ran");
        assert!(name.starts_with("larch-query-"), "{name}");
        assert!(super::run(|| -> u8 { panic!("boom") }).await.is_none());
        assert_eq!(super::run(|| 7).await, Some(7));
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }
}
