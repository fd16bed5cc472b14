//! The form in which an S3-compatible server wants the ETag of an `If-Match` PUT.
//!
//! S3 answers every PUT and GET with the object's ETag in quotes (`"9e10…"`, as HTTP's entity
//! tags are written), and object_store sends it back verbatim in `If-Match`. AWS S3, MinIO and
//! moto compare it with or without the quotes; Ceph RGW (16.2 at least) compares the header
//! with its stored ETag *without* quotes, so it refuses every quoted `If-Match` with 412 — on
//! such a store a writer could never renew its lease nor swap a manifest. Ceph's own S3 tests
//! strip the quotes before sending.
//!
//! [`IfMatchForm`] learns the form per store, once, from the store's own answers: a replace is
//! sent as object_store has it; if that is refused as a failed precondition and the ETag was
//! quoted, it is sent once more without the quotes. If that lands the store wants bare ETags,
//! and every later replace is sent bare at once; if the quoted form lands, quoted it stays.
//!
//! Why the second attempt never lets a stale replace through: a refused precondition is a PUT
//! that did not happen, and the bare ETag names the same version as the quoted one. On a store
//! that understands quotes, a stale quoted ETag is stale bare too, so the second attempt is
//! refused as well; on a store that only understands bare ETags, the first attempt proved
//! nothing and the second is the real comparison.

use std::sync::atomic::{AtomicU8, Ordering};

use object_store::{PutMode, PutOptions, PutPayload, PutResult, UpdateVersion};

/// Not known yet: send as given, and try bare after a refusal.
const UNKNOWN: u8 = 0;
/// The store took a quoted ETag.
const QUOTED: u8 = 1;
/// The store refused the quoted ETag and took it bare.
const BARE: u8 = 2;

/// What one store has shown about the form of `If-Match` it accepts (see the module docs).
#[derive(Debug)]
pub struct IfMatchForm(AtomicU8);

impl Default for IfMatchForm {
    fn default() -> Self {
        IfMatchForm(AtomicU8::new(UNKNOWN))
    }
}

impl IfMatchForm {
    /// Whether this store is known to want bare ETags (for logs and tests).
    pub fn wants_bare(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BARE
    }

    /// Puts `payload` with `opts` through `put`, adapting the `If-Match` ETag of a replace to
    /// the form the store accepts; every other put is passed on unchanged.
    pub async fn put<F, Fut>(
        &self,
        put: F,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult>
    where
        F: Fn(PutPayload, PutOptions) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<PutResult>>,
    {
        let Some(bare) = bare_tag(&opts.mode) else {
            return put(payload, opts).await;
        };
        match self.0.load(Ordering::Relaxed) {
            BARE => {
                set_tag(&mut opts.mode, bare);
                return put(payload, opts).await;
            }
            QUOTED => return put(payload, opts).await,
            _ => {}
        }
        // Not known yet: as given, and bare after a refusal.
        match put(payload.clone(), opts.clone()).await {
            Ok(result) => {
                self.0.store(QUOTED, Ordering::Relaxed);
                Ok(result)
            }
            Err(object_store::Error::Precondition { .. }) => {
                set_tag(&mut opts.mode, bare);
                let second = put(payload, opts).await;
                if second.is_ok() {
                    tracing::info!(
                        "the object store compares If-Match with unquoted ETags (as Ceph RGW does): sending them unquoted"
                    );
                    self.0.store(BARE, Ordering::Relaxed);
                }
                second
            }
            Err(err) => Err(err),
        }
    }
}

/// The ETag of a replace without its quotes, if it has them.
fn bare_tag(mode: &PutMode) -> Option<String> {
    let PutMode::Update(UpdateVersion {
        e_tag: Some(tag), ..
    }) = mode
    else {
        return None;
    };
    let bare = tag.strip_prefix('"')?.strip_suffix('"')?;
    Some(bare.to_owned())
}

fn set_tag(mode: &mut PutMode, tag: String) {
    if let PutMode::Update(version) = mode {
        version.e_tag = Some(tag);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An object's current ETag (bare) and how a store of one form or the other compares an
    /// `If-Match` with it: exactly what the server does, as far as the form goes.
    struct Server {
        etag: Mutex<u32>,
        accepts_quoted: bool,
        accepts_bare: bool,
        puts: Mutex<Vec<String>>,
    }

    impl Server {
        fn new(accepts_quoted: bool, accepts_bare: bool) -> Server {
            Server {
                etag: Mutex::new(1),
                accepts_quoted,
                accepts_bare,
                puts: Mutex::new(Vec::new()),
            }
        }

        fn current_quoted(&self) -> String {
            format!("\"{}\"", self.etag.lock().unwrap())
        }

        async fn put(&self, opts: PutOptions) -> object_store::Result<PutResult> {
            let PutMode::Update(version) = &opts.mode else {
                panic!("only replaces here")
            };
            let sent = version.e_tag.clone().unwrap();
            self.puts.lock().unwrap().push(sent.clone());
            let mut etag = self.etag.lock().unwrap();
            let matches = (self.accepts_quoted && sent == format!("\"{etag}\""))
                || (self.accepts_bare && sent == etag.to_string());
            if !matches {
                return Err(object_store::Error::Precondition {
                    path: "x".into(),
                    source: "412".into(),
                });
            }
            *etag += 1;
            Ok(PutResult {
                e_tag: Some(format!("\"{etag}\"")),
                version: None,
                extensions: Default::default(),
            })
        }
    }

    fn replace(tag: String) -> PutOptions {
        PutOptions::from(PutMode::Update(UpdateVersion {
            e_tag: Some(tag),
            version: None,
        }))
    }

    async fn put(form: &IfMatchForm, server: &Server, tag: String) -> bool {
        form.put(
            |_payload, opts| server.put(opts),
            PutPayload::from_static(b"x"),
            replace(tag),
        )
        .await
        .is_ok()
    }

    #[test]
    fn a_store_that_wants_bare_etags_is_learnt_once_and_stale_replaces_stay_refused() {
        futures_executor::block_on(async {
            let server = Server::new(false, true);
            let form = IfMatchForm::default();
            let stale = server.current_quoted();
            assert!(put(&form, &server, server.current_quoted()).await);
            assert!(form.wants_bare());
            assert_eq!(*server.puts.lock().unwrap(), ["\"1\"", "1"]);
            // Now one request per replace, and a stale ETag is refused.
            assert!(put(&form, &server, server.current_quoted()).await);
            assert!(!put(&form, &server, stale).await);
            assert_eq!(server.puts.lock().unwrap().len(), 4);
        });
    }

    #[test]
    fn a_store_that_takes_quoted_etags_gets_them_quoted_and_stale_ones_are_refused() {
        for accepts_bare in [false, true] {
            futures_executor::block_on(async {
                let server = Server::new(true, accepts_bare);
                let form = IfMatchForm::default();
                let stale = server.current_quoted();
                assert!(put(&form, &server, server.current_quoted()).await);
                assert!(!form.wants_bare());
                assert!(!put(&form, &server, stale.clone()).await);
                assert!(put(&form, &server, server.current_quoted()).await);
                let puts = server.puts.lock().unwrap();
                assert!(puts.iter().all(|sent| sent.starts_with('"')), "{puts:?}");
            });
        }
    }

    #[test]
    fn a_stale_etag_before_the_form_is_known_is_refused_in_both_forms() {
        futures_executor::block_on(async {
            let server = Server::new(false, true);
            let form = IfMatchForm::default();
            assert!(!put(&form, &server, "\"7\"".to_owned()).await);
            assert!(!form.wants_bare(), "nothing learnt from two refusals");
            assert_eq!(*server.puts.lock().unwrap(), ["\"7\"", "7"]);
        });
    }

    #[test]
    fn creates_and_unquoted_tags_pass_unchanged() {
        let create = PutMode::Create;
        assert_eq!(bare_tag(&create), None);
        let bare = PutMode::Update(UpdateVersion {
            e_tag: Some("3".into()),
            version: None,
        });
        assert_eq!(bare_tag(&bare), None);
    }
}
