//! [`Versioned`]: one kind of state (a [`Format`]) kept in a [`Store`], and the one
//! read-modify-write loop every change to it goes through.
//!
//! A change is a function over the in-memory document (`FnMut(&mut Doc) -> Result<T, E>`):
//! it validates against the document it is given and edits it. [`Versioned::change`] catches
//! up with the newest version, runs the change on a copy, and replaces the stored document if
//! it is still the version read; if another writer replaced it first, it catches up and runs
//! the change again on the newer document (which may now refuse it), up to [`ATTEMPTS`]
//! times. So a change is written once, whatever the store, and no acknowledged change is lost
//! or applied twice. A change that leaves the document as it was writes nothing.

use crate::Error;
use crate::store::{Loaded, Replaced, Store, Version};

/// How many times a change is tried against a document that other writers keep changing
/// first, before it is refused.
pub const ATTEMPTS: u32 = 32;

/// How one kind of state is stored: its in-memory document, its bytes, and how a store's
/// failures read as the kind's own errors.
pub trait Format {
    /// The in-memory document (`Default` is the document of an empty store).
    type Doc: Clone + PartialEq + Default;
    /// The error of the crate owning this kind of state.
    type Error;

    /// The document in `bytes`; `location` names them in errors.
    fn decode(&self, bytes: &[u8], location: &str) -> Result<Self::Doc, Self::Error>;
    /// The bytes stored for `doc`; `location` names where they go in errors.
    fn encode(&self, doc: &Self::Doc, location: &str) -> Result<Vec<u8>, Self::Error>;
    /// A store failure (or [`Error::Contended`]) as this kind's error.
    fn failed(&self, err: Error) -> Self::Error;
}

/// This process's copy of a document in a [`Store`]; see the module docs. Not synchronized:
/// its owner keeps it behind its own lock.
pub struct Versioned<F: Format> {
    store: Box<dyn Store>,
    format: F,
    version: Version,
    doc: F::Doc,
}

impl<F: Format> std::fmt::Debug for Versioned<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("location", &self.store.location())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<F: Format> Versioned<F> {
    /// The document in `store`, not read yet: the copy is the empty document until
    /// [`Versioned::refresh`] or the first change.
    pub fn new(store: Box<dyn Store>, format: F) -> Versioned<F> {
        Versioned {
            store,
            format,
            version: Version::Absent,
            doc: F::Doc::default(),
        }
    }

    /// The copy: the newest version as of the last refresh or change.
    pub fn doc(&self) -> &F::Doc {
        &self.doc
    }

    /// The version the copy reflects.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Where the document lives, for messages.
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// The format, e.g. to read its settings.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// Catches the copy up with the newest version; returns whether it changed. On an error
    /// the copy stays as it was.
    pub fn refresh(&mut self) -> Result<bool, F::Error> {
        let loaded = self
            .store
            .load(&self.version)
            .map_err(|err| self.format.failed(err))?;
        match loaded {
            Loaded::Unchanged | Loaded::Absent => Ok(false),
            Loaded::Found { version, bytes } => {
                let location = self.store.location_of(&version);
                self.doc = self.format.decode(&bytes, &location)?;
                self.version = version;
                Ok(true)
            }
        }
    }

    /// Makes one change (see the module docs): `apply` runs on a copy of the newest document,
    /// which is stored and only then becomes this copy. Returns what `apply` returned for the
    /// document that was stored.
    pub fn change<T>(
        &mut self,
        mut apply: impl FnMut(&mut F::Doc) -> Result<T, F::Error>,
    ) -> Result<T, F::Error> {
        for _ in 0..ATTEMPTS {
            self.refresh()?;
            let mut next = self.doc.clone();
            let out = apply(&mut next)?;
            if next == self.doc {
                return Ok(out);
            }
            let bytes = self.format.encode(&next, self.store.location())?;
            let replaced = self
                .store
                .replace(&self.version, bytes)
                .map_err(|err| self.format.failed(err))?;
            match replaced {
                Replaced::Done(version) => {
                    self.doc = next;
                    self.version = version;
                    return Ok(out);
                }
                Replaced::Conflict => {
                    tracing::debug!(location = self.store.location(), version = ?self.version, "another writer changed the document first; redoing the change");
                }
            }
        }
        Err(self.format.failed(Error::Contended {
            location: self.store.location().to_owned(),
            attempts: ATTEMPTS,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{LocalFile, Memory, SharedDocument};

    /// A counter stored as decimal text; errors are plain strings.
    struct Counter;

    impl Format for Counter {
        type Doc = u64;
        type Error = String;

        fn decode(&self, bytes: &[u8], location: &str) -> Result<u64, String> {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| format!("{location}: not a number"))
        }

        fn encode(&self, doc: &u64, _location: &str) -> Result<Vec<u8>, String> {
            Ok(doc.to_string().into_bytes())
        }

        fn failed(&self, err: Error) -> String {
            format!("failed: {err}")
        }
    }

    /// A store that counts replaces and lets a test act just before each one.
    struct Watched<S> {
        inner: S,
        replaces: Arc<Mutex<u32>>,
        before_replace: Mutex<Box<dyn FnMut() + Send>>,
    }

    impl<S: Store> Store for Watched<S> {
        fn location(&self) -> &str {
            self.inner.location()
        }
        fn load(&self, known: &Version) -> crate::Result<Loaded> {
            self.inner.load(known)
        }
        fn replace(&self, expected: &Version, bytes: Vec<u8>) -> crate::Result<Replaced> {
            (self.before_replace.lock().expect("not poisoned"))();
            *self.replaces.lock().expect("not poisoned") += 1;
            self.inner.replace(expected, bytes)
        }
    }

    fn watched<S: Store + 'static>(
        inner: S,
        before_replace: impl FnMut() + Send + 'static,
    ) -> (Versioned<Counter>, Arc<Mutex<u32>>) {
        let replaces = Arc::new(Mutex::new(0));
        let store = Watched {
            inner,
            replaces: Arc::clone(&replaces),
            before_replace: Mutex::new(Box::new(before_replace)),
        };
        (Versioned::new(Box::new(store), Counter), replaces)
    }

    fn add(state: &mut Versioned<Counter>, n: u64) -> Result<u64, String> {
        state.change(|doc| {
            *doc += n;
            Ok(*doc)
        })
    }

    #[test]
    fn each_store_keeps_every_change_and_writes_nothing_for_no_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stores: Vec<Box<dyn Store>> = vec![
            Box::new(Memory::default()),
            Box::new(LocalFile::new(dir.path().join("counter.json"))),
            Box::new(SharedDocument::local(dir.path(), "counter").expect("shared")),
        ];
        for store in stores {
            let location = store.location().to_owned();
            let (mut state, replaces) = watched(store, || {});
            assert_eq!(add(&mut state, 2), Ok(2), "{location}");
            assert_eq!(add(&mut state, 3), Ok(5), "{location}");
            assert_eq!(state.change(|doc| Ok(*doc)), Ok(5), "{location}");
            let refused: Result<(), String> = state.change(|doc| {
                *doc = 99;
                Err("refused".into())
            });
            assert_eq!(refused, Err("refused".into()));
            assert_eq!(
                *state.doc(),
                5,
                "{location}: a refused change changes nothing"
            );
            assert_eq!(
                *replaces.lock().expect("not poisoned"),
                2,
                "{location}: one write per change that changed something"
            );
        }
    }

    #[test]
    fn a_local_file_reloads_and_is_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("counter.json");
        let mut state = Versioned::new(Box::new(LocalFile::new(&path)), Counter);
        assert_eq!(add(&mut state, 7), Ok(7));
        assert_eq!(std::fs::read_to_string(&path).expect("written"), "7");
        assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut again = Versioned::new(Box::new(LocalFile::new(&path)), Counter);
        assert!(again.refresh().expect("read"));
        assert_eq!(*again.doc(), 7);
        assert!(!again.refresh().expect("read"), "unchanged: not read again");
    }

    #[test]
    fn a_change_beaten_by_another_writer_is_redone_on_the_newer_document() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = SharedDocument::local(dir.path(), "counter").expect("shared");
        let mut beaten = false;
        let (mut state, replaces) = watched(
            SharedDocument::local(dir.path(), "counter").expect("shared"),
            move || {
                // The other writer stores 100 as version 1 just before our first write.
                if !std::mem::replace(&mut beaten, true) {
                    assert_eq!(
                        other.write_next(0, b"100".to_vec()).expect("written"),
                        crate::Written::Done(1)
                    );
                }
            },
        );
        assert_eq!(add(&mut state, 1), Ok(101), "redone on 100, not lost");
        assert_eq!(*replaces.lock().expect("not poisoned"), 2);
        assert_eq!(state.version(), &Version::Number(2));
    }

    #[test]
    fn a_change_that_keeps_losing_gives_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = SharedDocument::local(dir.path(), "counter").expect("shared");
        let (mut state, replaces) = watched(
            SharedDocument::local(dir.path(), "counter").expect("shared"),
            move || {
                let base = other.refresh(0).expect("read").map_or(0, |s| s.version);
                assert!(matches!(
                    other.write_next(base, b"0".to_vec()),
                    Ok(crate::Written::Done(_))
                ));
            },
        );
        let err = add(&mut state, 1).expect_err("always beaten");
        assert!(err.starts_with("failed: "), "{err}");
        assert!(err.contains("32 times"), "{err}");
        assert_eq!(*replaces.lock().expect("not poisoned"), ATTEMPTS);
    }

    #[test]
    fn a_document_that_cannot_be_decoded_is_an_error_naming_its_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = SharedDocument::local(dir.path(), "counter").expect("shared");
        assert_eq!(
            doc.write_next(0, b"x".to_vec()).expect("written"),
            crate::Written::Done(1)
        );
        let mut state = Versioned::new(Box::new(doc), Counter);
        let err = state.refresh().expect_err("not a number");
        assert!(err.ends_with("(version 1): not a number"), "{err}");
        assert_eq!(state.version(), &Version::Absent, "the copy is kept");
    }
}
