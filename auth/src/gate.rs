//! The admission decision both transports share: authenticate the key, check the caller's
//! project, roles and index allow-list for the RPC, apply the rate limit, and audit refusals.
//! [`crate::grpc`] and [`crate::http`] only read the request and write the refusal in their
//! protocol.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Action, ApiKey, Error, KeyStore, Principal, audit};

/// Receives the reason of a refused request — the refusal's [`Error::code_name`], e.g.
/// `UNAUTHENTICATED` or `PERMISSION_DENIED` — e.g. to count denials in a server's metrics. It
/// runs on the request path, so it must be quick.
pub type RefusalCounter = Arc<dyn Fn(&'static str) + Send + Sync>;

/// What a server's requests act on, for authorization.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// The control plane: the layer checks roles; handlers check index allow-lists, since
    /// the index is named in the request body.
    #[default]
    ControlPlane,
    /// One index's data plane: every request acts on this index of this project.
    Index {
        /// The project owning the index.
        project: String,
        /// The index name.
        name: String,
    },
}

/// A refused request: the error to answer with, after holding the answer for `delay` (the
/// slowdown of repeated failed authentications; zero otherwise).
#[derive(Debug)]
pub struct Rejection {
    /// Why; maps to the transport's status in one place per transport.
    pub error: Error,
    /// How long to wait before answering.
    pub delay: Duration,
}

/// The key header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No key header at all.
    Missing,
    /// A header that is not visible ASCII: it cannot be a key we issued or accepted.
    Unreadable,
    /// The header's text, edge whitespace removed.
    Key(&'a str),
}

/// One request as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The RPC, for the audit log (`/Service/Method`, or `METHOD /path` for REST).
    pub rpc: &'a str,
    /// What the RPC does; `None` for a path that is not an RPC of this plane (it is still
    /// authenticated, and then answered as unknown by the router).
    pub action: Option<Action>,
    /// The key as sent.
    pub presented: Presented<'a>,
    /// The peer's address, for the failed-authentication slowdown.
    pub peer: Option<IpAddr>,
}

/// Proof that a request's key was checked by [`KeyStore::authenticate_attempt`] (headers
/// only, before the request was admitted to any limit or routed), put into the request's
/// extensions by [`crate::http::AuthenticateLayer`]. The per-route layers that find it
/// ([`crate::grpc::AuthLayer`], [`crate::http::require_key`]) skip authentication and only
/// authorize ([`KeyStore::authorize_attempt`]), so a key is verified, audited and rate
/// limited once per request. Only this crate makes one.
#[derive(Debug, Clone)]
pub struct Authenticated(Principal);

impl Authenticated {
    pub(crate) fn new(principal: Principal) -> Authenticated {
        Authenticated(principal)
    }

    /// Who the key belongs to.
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl KeyStore {
    /// Sends the reason of every request this store refuses — through any of its clones, so
    /// on every server checking keys against it — to `counter`. Set once at start-up, before
    /// requests arrive (like [`KeyStore::limit_rate`]); returns `false`, keeping the first
    /// counter, if one was already set. Other stores in the process count elsewhere.
    pub fn count_refusals(&self, counter: RefusalCounter) -> bool {
        self.guard().refusals.set(counter).is_ok()
    }

    /// Passes a refusal's reason to this store's counter, if one is set.
    fn count_refusal(&self, error: &Error) {
        if let Some(counter) = self.guard().refusals.get() {
            counter(error.code_name());
        }
    }

    /// Decides whether `attempt` may proceed in `scope`, and as whom:
    /// [`KeyStore::authenticate_attempt`] then [`KeyStore::authorize_attempt`].
    ///
    /// # Errors
    ///
    /// A [`Rejection`] whose error is one of [`Error::MissingKey`], [`Error::InvalidKey`],
    /// [`Error::ExpiredKey`] (unauthenticated), [`Error::IndexNotFound`] (an index of another
    /// project), [`Error::Denied`] (role or allow-list) or [`Error::RateLimited`].
    pub fn admit(&self, scope: &Scope, attempt: Attempt<'_>) -> Result<Principal, Rejection> {
        let principal = self.authenticate_attempt(scope, attempt)?;
        self.authorize_attempt(scope, attempt, principal)
    }

    /// The first half of [`KeyStore::admit`], from the request's headers alone: who the key
    /// belongs to. A refusal is audited (sampled, see [`audit`]), counted, and carries the
    /// failed-authentication slowdown as its `delay`; `attempt.action` is not looked at.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] whose error is [`Error::MissingKey`], [`Error::InvalidKey`],
    /// [`Error::Malformed`] or [`Error::ExpiredKey`].
    pub fn authenticate_attempt(
        &self,
        scope: &Scope,
        attempt: Attempt<'_>,
    ) -> Result<Principal, Rejection> {
        let (project, index) = scope_names(scope);
        let refuse = |key_id: &str, error: Error, delay: Duration| {
            audit::unauthenticated(key_id, attempt.rpc, project, index, attempt.peer, &error);
            self.count_refusal(&error);
            Rejection { error, delay }
        };
        let presented = match attempt.presented {
            Presented::Missing => return Err(refuse("-", Error::MissingKey, Duration::ZERO)),
            Presented::Unreadable => "",
            Presented::Key(presented) => presented,
        };
        let authenticated = match attempt.presented {
            Presented::Unreadable => Err(Error::InvalidKey),
            _ => self.authenticate(presented),
        };
        match authenticated {
            Ok(principal) => Ok(principal),
            Err(error) => {
                // Name the key only if it is one of ours in form; an opaque string may be
                // someone's whole secret.
                let key_id = ApiKey::parse(presented).map_or("-", |parsed| parsed.key_id());
                let delay = match (&error, attempt.peer) {
                    (Error::InvalidKey | Error::Malformed(_), Some(peer)) => {
                        self.guard().failures.record(peer, Instant::now())
                    }
                    _ => Duration::ZERO,
                };
                let key_id = if matches!(error, Error::ExpiredKey(_)) {
                    crate::key::Presented::classify(presented).key_id()
                } else {
                    key_id
                };
                Err(refuse(key_id, error, delay))
            }
        }
    }

    /// The second half of [`KeyStore::admit`], for an authenticated `principal`: the project
    /// of the index, the roles and allow-list for `attempt.action`, and the per-key rate limit.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] whose error is [`Error::IndexNotFound`] (an index of another project),
    /// [`Error::Denied`] (role or allow-list) or [`Error::RateLimited`].
    pub fn authorize_attempt(
        &self,
        scope: &Scope,
        attempt: Attempt<'_>,
        principal: Principal,
    ) -> Result<Principal, Rejection> {
        let (project, index) = scope_names(scope);
        let refuse = |key_id: &str, error: Error| {
            audit::refused(key_id, attempt.rpc, project, index, attempt.peer, &error);
            self.count_refusal(&error);
            Rejection {
                error,
                delay: Duration::ZERO,
            }
        };
        if let Some(action) = attempt.action {
            if let (Some(project), Some(index)) = (project, index)
                && principal.project_id != project
            {
                let error = Error::IndexNotFound(index.to_owned());
                return Err(refuse(&principal.key_id, error));
            }
            if let Err(denied) = principal.authorize(action, index) {
                return Err(refuse(&principal.key_id, denied.into()));
            }
        }
        if let Some(rate) = self.guard().rate.get()
            && let Err(retry_after) = rate.take(&principal.key_id, Instant::now())
        {
            let error = Error::RateLimited {
                key_id: principal.key_id.clone(),
                per_second: rate.limit().per_second,
                retry_after,
            };
            return Err(refuse(&principal.key_id, error));
        }
        Ok(principal)
    }
}

fn scope_names(scope: &Scope) -> (Option<&str>, Option<&str>) {
    match scope {
        Scope::ControlPlane => (None, None),
        Scope::Index { project, name } => (Some(project.as_str()), Some(name.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grant, RateLimit, Role, StoredKey};

    fn key(store: &KeyStore, project: &str, roles: &[Role], only: Option<&[&str]>) -> ApiKey {
        let key = ApiKey::generate();
        store.insert(StoredKey::new(
            &key,
            Grant {
                project_id: project.into(),
                roles: roles.to_vec(),
                index_names: only.map(|names| names.iter().map(|n| n.to_string()).collect()),
                is_admin: false,
            },
        ));
        key
    }

    fn attempt<'a>(key: &'a str, action: Action) -> Attempt<'a> {
        Attempt {
            rpc: "/VectorService/Query",
            action: Some(action),
            presented: Presented::Key(key),
            peer: Some("192.0.2.7".parse().expect("ip")),
        }
    }

    fn index(project: &str, name: &str) -> Scope {
        Scope::Index {
            project: project.into(),
            name: name.into(),
        }
    }

    #[test]
    fn each_refusal_has_its_error() {
        let store = KeyStore::new();
        let viewer = key(&store, "p1", &[Role::DataPlaneViewer], None);
        let only_b = key(&store, "p1", &[Role::DataPlaneEditor], Some(&["b"]));
        let scope = index("p1", "a");

        let ok = store.admit(&scope, attempt(viewer.as_str(), Action::DataRead));
        assert_eq!(ok.expect("viewer reads").key_id, viewer.key_id());
        let write = store.admit(&scope, attempt(viewer.as_str(), Action::DataWrite));
        assert!(matches!(
            write,
            Err(Rejection {
                error: Error::Denied(_),
                ..
            })
        ));
        let elsewhere = store.admit(&scope, attempt(only_b.as_str(), Action::DataRead));
        assert!(matches!(
            elsewhere,
            Err(Rejection {
                error: Error::Denied(_),
                ..
            })
        ));
        let other_project = store.admit(
            &index("p2", "a"),
            attempt(viewer.as_str(), Action::DataRead),
        );
        assert!(
            matches!(other_project, Err(Rejection { error: Error::IndexNotFound(ref name), .. }) if name == "a")
        );
        let missing = Attempt {
            presented: Presented::Missing,
            ..attempt("", Action::DataRead)
        };
        assert!(matches!(
            store.admit(&scope, missing),
            Err(Rejection {
                error: Error::MissingKey,
                ..
            })
        ));
        let unreadable = Attempt {
            presented: Presented::Unreadable,
            ..attempt("", Action::DataRead)
        };
        assert!(matches!(
            store.admit(&scope, unreadable),
            Err(Rejection {
                error: Error::InvalidKey,
                ..
            })
        ));
        // Control plane: roles only.
        let control = store.admit(
            &Scope::ControlPlane,
            attempt(viewer.as_str(), Action::ControlRead),
        );
        assert!(matches!(
            control,
            Err(Rejection {
                error: Error::Denied(_),
                ..
            })
        ));
        // A path of neither plane is only authenticated.
        let unknown = Attempt {
            action: None,
            ..attempt(viewer.as_str(), Action::DataRead)
        };
        assert!(store.admit(&index("p2", "a"), unknown).is_ok());
    }

    #[test]
    fn repeated_failures_from_one_peer_are_slowed_but_valid_keys_are_not() {
        let store = KeyStore::new();
        let good = key(&store, "p", &[Role::DataPlaneViewer], None);
        let scope = index("p", "a");
        let wrong = ApiKey::generate();
        let delays: Vec<Duration> = (0..8)
            .map(|_| {
                store
                    .admit(&scope, attempt(wrong.as_str(), Action::DataRead))
                    .expect_err("wrong key")
                    .delay
            })
            .collect();
        assert!(delays[..5].iter().all(Duration::is_zero), "{delays:?}");
        assert!(
            delays[5] > Duration::ZERO && delays[7] > delays[6],
            "{delays:?}"
        );
        // The same peer with a valid key is admitted at once.
        assert!(
            store
                .admit(&scope, attempt(good.as_str(), Action::DataRead))
                .is_ok()
        );
    }

    #[test]
    fn rate_limit_refuses_with_a_retry_time() {
        let store = KeyStore::new();
        assert!(store.limit_rate(RateLimit {
            per_second: 1,
            burst: 2
        }));
        assert!(!store.limit_rate(RateLimit {
            per_second: 5,
            burst: 5
        }));
        let a = key(&store, "p", &[Role::DataPlaneViewer], None);
        let b = key(&store, "p", &[Role::DataPlaneViewer], None);
        let scope = index("p", "i");
        for _ in 0..2 {
            store
                .admit(&scope, attempt(a.as_str(), Action::DataRead))
                .expect("burst");
        }
        let refused = store
            .admit(&scope, attempt(a.as_str(), Action::DataRead))
            .expect_err("limited");
        match refused.error {
            Error::RateLimited {
                retry_after,
                per_second,
                ..
            } => {
                assert_eq!(per_second, 1);
                assert!(retry_after > Duration::from_millis(900), "{retry_after:?}");
            }
            other => panic!("expected RateLimited, got {other}"),
        }
        store
            .admit(&scope, attempt(b.as_str(), Action::DataRead))
            .expect("another key has its own budget");
    }

    /// A counter recording the reasons it is given, and what it got.
    fn recording_counter() -> (RefusalCounter, Arc<std::sync::Mutex<Vec<&'static str>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let counter: RefusalCounter =
            Arc::new(move |reason| record.lock().expect("not poisoned").push(reason));
        (counter, seen)
    }

    #[test]
    fn every_refusal_reaches_its_stores_counter_and_no_other() {
        let store = KeyStore::new();
        let (counter, seen) = recording_counter();
        assert!(store.count_refusals(counter));
        let (second, _) = recording_counter();
        assert!(!store.count_refusals(second), "set once");
        let other = KeyStore::new();
        let (other_counter, other_seen) = recording_counter();
        assert!(other.count_refusals(other_counter));

        let viewer = key(&store, "p", &[Role::DataPlaneViewer], None);
        let scope = index("p", "i");
        let missing = Attempt {
            presented: Presented::Missing,
            ..attempt("", Action::DataRead)
        };
        store.admit(&scope, missing).expect_err("no key");
        // Through a clone, as each server holds one.
        store
            .clone()
            .admit(&scope, attempt(viewer.as_str(), Action::DataWrite))
            .expect_err("a viewer cannot write");
        store
            .admit(&scope, attempt(viewer.as_str(), Action::DataRead))
            .expect("admitted requests are not counted");
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            ["UNAUTHENTICATED", "PERMISSION_DENIED"]
        );
        assert!(
            other_seen.lock().expect("not poisoned").is_empty(),
            "another store's refusals are not counted here"
        );

        other.admit(&scope, missing).expect_err("no key");
        assert_eq!(
            *other_seen.lock().expect("not poisoned"),
            ["UNAUTHENTICATED"]
        );
        assert_eq!(seen.lock().expect("not poisoned").len(), 2);
    }
}
