//! A fault-injecting [`ObjectStore`] for the tests of the object log: it wraps
//! any store (an `InMemory` one in tests) and, per operation and key pattern,
//! fails a call, delays it, holds it until the test opens a gate, or applies it
//! and then reports an error (the ambiguous case: a PUT that landed but whose
//! answer was lost to a timeout or a retried 5xx). It counts calls by kind and
//! notes every path a delete was asked for, so a test can prove that a store
//! handle deleted nothing, or exactly what it deleted.
//!
//! The engine drives store futures with `futures_executor::block_on` on its
//! own thread, so a delay or a held gate simply blocks that thread, as a slow
//! network call would.

use std::{
    fmt,
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, stream::BoxStream};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, path::Path,
};

/// The kinds of call a rule can match, and that are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
    Delete,
    List,
}

/// What the store answers when a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A transport failure: timeout, connection reset, 5xx after retries.
    Timeout,
    /// `AlreadyExists`, as a client sees after retrying a create whose first
    /// attempt landed.
    AlreadyExists,
    /// `Precondition` (HTTP 412), as after a retried `If-Match` write.
    Precondition,
}

impl Failure {
    fn error(self, path: &Path) -> object_store::Error {
        let path = path.to_string();
        match self {
            Failure::Timeout => object_store::Error::Generic {
                store: "faulty",
                source: format!("injected timeout on {path}").into(),
            },
            Failure::AlreadyExists => object_store::Error::AlreadyExists {
                source: format!("injected conflict on {path}").into(),
                path,
            },
            Failure::Precondition => object_store::Error::Precondition {
                source: format!("injected precondition failure on {path}").into(),
                path,
            },
        }
    }
}

/// A gate a held call waits at until the test opens it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// How many calls have arrived at the gate.
    arrived: usize,
    open: bool,
}

impl Gate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Gate::default())
    }

    /// Lets every held call (and every later one) through.
    pub(crate) fn open(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open = true;
        self.changed.notify_all();
    }

    /// Blocks until `calls` calls have arrived at the gate.
    pub(crate) fn wait_arrived(&self, calls: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.arrived < calls {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn pass(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.arrived += 1;
        self.changed.notify_all();
        while !state.open {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// What a matching call suffers.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Not applied; the caller gets the error.
    Fail(Failure),
    /// Applied in the inner store; the caller gets the error anyway.
    ApplyThenFail(Failure),
    /// Applied after a pause.
    Delay(Duration),
    /// Applied once the gate opens.
    Hold(Arc<Gate>),
}

#[derive(Debug)]
struct Rule {
    op: Op,
    /// Matches keys containing this text.
    key: String,
    fault: Fault,
    /// How many more calls it hits; `None`: every one.
    remaining: Option<usize>,
}

/// Calls made through one [`FaultyStore`], by kind (faulted ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) puts: usize,
    pub(crate) gets: usize,
    pub(crate) deletes: usize,
    pub(crate) lists: usize,
}

/// An [`ObjectStore`] that injects faults into the calls to another one.
#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<Rule>,
    counts: Counts,
    /// Every path a delete was asked for, in order (faulted ones included).
    deleted: Vec<String>,
}

impl FaultState {
    /// Counts a call and takes the fault of the first rule matching it.
    fn call(&mut self, op: Op, path: &Path) -> Option<Fault> {
        let counts = &mut self.counts;
        match op {
            Op::Put => counts.puts += 1,
            Op::Get => counts.gets += 1,
            Op::Delete => {
                counts.deletes += 1;
                self.deleted.push(path.to_string());
            }
            Op::List => counts.lists += 1,
        }
        let key = path.as_ref();
        let index = self
            .rules
            .iter()
            .position(|rule| rule.op == op && key.contains(&rule.key))?;
        let rule = &mut self.rules[index];
        let fault = rule.fault.clone();
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                self.rules.remove(index);
            }
        }
        Some(fault)
    }
}

impl FaultyStore {
    /// Wraps `inner`, with no faults yet.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            state: Arc::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next `times` calls of kind `op` on a key containing `key`
    /// suffer `fault`.
    pub(crate) fn inject(&self, op: Op, key: &str, fault: Fault, times: usize) {
        assert!(times > 0, "a rule must hit at least one call");
        self.push(op, key, fault, Some(times));
    }

    /// Makes every later call of kind `op` on a key containing `key` suffer
    /// `fault`, until [`FaultyStore::clear`].
    pub(crate) fn inject_always(&self, op: Op, key: &str, fault: Fault) {
        self.push(op, key, fault, None);
    }

    fn push(&self, op: Op, key: &str, fault: Fault, remaining: Option<usize>) {
        self.state().rules.push(Rule {
            op,
            key: key.to_owned(),
            fault,
            remaining,
        });
    }

    /// How many rules are still waiting for calls to hit (used-up ones are gone), so a test
    /// can show its faults were met.
    pub(crate) fn rules_left(&self) -> usize {
        self.state().rules.len()
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        self.state().rules.clear();
    }

    /// The calls made so far.
    pub(crate) fn counts(&self) -> Counts {
        self.state().counts
    }

    /// Every path a delete was asked for so far, in order: `counts().deletes` of them.
    pub(crate) fn deleted(&self) -> Vec<String> {
        self.state().deleted.clone()
    }

    /// Counts the call and suffers its fault up to the point where the inner
    /// store should run: `Err` when it must not run, otherwise what to do
    /// with its outcome.
    fn before(&self, op: Op, path: &Path) -> std::result::Result<After, object_store::Error> {
        let fault = self.state().call(op, path);
        match fault {
            None => Ok(After::Pass),
            Some(Fault::Fail(failure)) => Err(failure.error(path)),
            Some(Fault::ApplyThenFail(failure)) => Ok(After::Fail(failure)),
            Some(Fault::Delay(pause)) => {
                std::thread::sleep(pause);
                Ok(After::Pass)
            }
            Some(Fault::Hold(gate)) => {
                gate.pass();
                Ok(After::Pass)
            }
        }
    }
}

/// What happens to a call's outcome once the inner store ran it.
enum After {
    Pass,
    Fail(Failure),
}

impl After {
    fn finish<T>(self, outcome: Result<T>, path: &Path) -> Result<T> {
        match (self, outcome) {
            (After::Fail(failure), Ok(_)) => Err(failure.error(path)),
            (_, outcome) => outcome,
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let after = self.before(Op::Put, location)?;
        let outcome = self.inner.put_opts(location, payload, opts).await;
        after.finish(outcome, location)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let after = self.before(Op::Get, location)?;
        let outcome = self.inner.get_opts(location, options).await;
        after.finish(outcome, location)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let store = FaultyStore {
            inner: Arc::clone(&self.inner),
            state: Arc::clone(&self.state),
        };
        // Each path is counted and faulted as the inner store pulls it; a
        // failed one never reaches the inner store.
        let checked = locations
            .map(move |location| {
                let location = location?;
                match store.before(Op::Delete, &location)? {
                    After::Pass => Ok(location),
                    // Applying and then failing a delete is not modelled.
                    After::Fail(failure) => Err(failure.error(&location)),
                }
            })
            .boxed();
        inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Path::default();
        match self.before(Op::List, prefix.unwrap_or(&root)) {
            Ok(After::Pass) => self.inner.list(prefix),
            Ok(After::Fail(failure)) => {
                futures_util::stream::once(std::future::ready(Err(failure.error(&root)))).boxed()
            }
            Err(err) => futures_util::stream::once(std::future::ready(Err(err))).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        let after = self.before(Op::List, prefix.unwrap_or(&root))?;
        let outcome = self.inner.list_with_delimiter(prefix).await;
        after.finish(outcome, prefix.unwrap_or(&root))
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, PutMode, memory::InMemory};

    use super::*;

    fn wait<F: std::future::Future>(future: F) -> F::Output {
        futures_executor::block_on(future)
    }

    fn create(store: &FaultyStore, key: &str) -> Result<PutResult> {
        let options = PutOptions::from(PutMode::Create);
        wait(store.put_opts(&Path::from(key), PutPayload::from_static(b"x"), options))
    }

    fn exists(store: &FaultyStore, key: &str) -> bool {
        match wait(store.get(&Path::from(key))) {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(err) => panic!("unexpected error: {err}"),
        }
    }

    #[test]
    fn fail_does_not_apply_and_apply_then_fail_does() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        store.inject(Op::Put, "wal/", Fault::Fail(Failure::Timeout), 1);
        store.inject(
            Op::Put,
            "wal/",
            Fault::ApplyThenFail(Failure::AlreadyExists),
            1,
        );
        assert!(matches!(
            create(&store, "p/wal/1"),
            Err(object_store::Error::Generic { .. })
        ));
        assert!(!exists(&store, "p/wal/1"));
        assert!(matches!(
            create(&store, "p/wal/1"),
            Err(object_store::Error::AlreadyExists { .. })
        ));
        assert!(exists(&store, "p/wal/1"), "apply-then-fail applies the put");
        // Both rules are used up; the next create meets the real conflict.
        assert_eq!(store.rules_left(), 0);
        assert!(matches!(
            create(&store, "p/wal/1"),
            Err(object_store::Error::AlreadyExists { .. })
        ));
        // Other keys were never matched.
        store.inject_always(Op::Put, "wal/", Fault::Fail(Failure::Timeout));
        create(&store, "p/lease").unwrap();
        assert_eq!(
            store.counts(),
            Counts {
                puts: 4,
                gets: 2,
                deletes: 0,
                lists: 0
            }
        );
    }

    #[test]
    fn deletes_are_counted_and_can_fail() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        create(&store, "a").unwrap();
        create(&store, "b").unwrap();
        store.inject(Op::Delete, "a", Fault::Fail(Failure::Timeout), 1);
        assert!(wait(store.delete(&Path::from("a"))).is_err());
        assert!(exists(&store, "a"));
        wait(store.delete(&Path::from("a"))).unwrap();
        wait(store.delete(&Path::from("b"))).unwrap();
        assert!(!exists(&store, "a") && !exists(&store, "b"));
        assert_eq!(store.counts().deletes, 3);
        assert_eq!(store.deleted(), ["a", "a", "b"]);
    }

    #[test]
    fn a_held_call_waits_for_its_gate() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        let gate = Gate::new();
        store.inject(Op::Put, "slow", Fault::Hold(Arc::clone(&gate)), 1);
        std::thread::scope(|scope| {
            let held = scope.spawn(|| create(&store, "slow"));
            gate.wait_arrived(1);
            assert!(!exists(&store, "slow"), "a held put is not applied yet");
            gate.open();
            held.join().unwrap().unwrap();
        });
        assert!(exists(&store, "slow"));
    }

    #[test]
    fn delays_pass_and_clear_removes_every_rule() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        store.inject(Op::Put, "a", Fault::Delay(Duration::from_millis(1)), 1);
        create(&store, "a").unwrap();
        store.inject_always(Op::Put, "b", Fault::Fail(Failure::Precondition));
        for _ in 0..2 {
            assert!(matches!(
                create(&store, "b"),
                Err(object_store::Error::Precondition { .. })
            ));
        }
        store.clear();
        create(&store, "b").unwrap();
    }
}
