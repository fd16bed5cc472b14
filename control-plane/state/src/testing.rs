//! Test support (feature `testing`): a place of its own in the test bucket for each test that
//! needs a real S3-compatible server.
//!
//! `tests/run` starts one (moto, `tests/s3/serve.py`) and exports `LARCH_TEST_S3_URL`
//! (`s3://larch-test`) with the `AWS_*` variables that reach it. [`s3`] gives each test a
//! unique prefix under that URL, so tests never see each other's objects and need no cleanup.
//! Without the variable a test is skipped with a note on stderr, unless `LARCH_REQUIRE_S3=1`
//! (CI): then it fails, so a missing server cannot pass as green.
//!
//! Child processes started by a test inherit the `AWS_*` variables, so a binary given
//! [`TestBucket::url`] reaches the same server.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bucket::{self, Bucket};

/// The variable naming the test bucket, e.g. `s3://larch-test`.
pub const URL_VAR: &str = "LARCH_TEST_S3_URL";
/// Set to `1` to make tests fail instead of skip when [`URL_VAR`] is missing.
pub const REQUIRE_VAR: &str = "LARCH_REQUIRE_S3";

/// One test's own prefix in the test bucket.
#[derive(Debug, Clone)]
pub struct TestBucket {
    /// `s3://bucket/prefix` of this test's place, for `--object-store-url`.
    pub url: String,
    /// The same place, opened.
    pub bucket: Bucket,
}

/// The place of test `test` in the test bucket: a prefix no other test (or run) uses. `None`
/// when no server is configured and `LARCH_REQUIRE_S3` is not `1` (the caller returns: the
/// test is skipped, with a note on stderr).
///
/// # Panics
/// When no server is configured and `LARCH_REQUIRE_S3=1`, or the URL cannot be opened.
pub fn s3(test: &str) -> Option<TestBucket> {
    let base = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let required = std::env::var(REQUIRE_VAR).is_ok_and(|value| value == "1");
            assert!(
                !required,
                "{test}: {REQUIRE_VAR}=1 but {URL_VAR} is not set: start an S3-compatible server \
                 (tests/s3/serve.py; tests/run does) and export {URL_VAR} and the AWS_* variables"
            );
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping {test}: no S3-compatible server ({URL_VAR} is not set; tests/run \
                 starts one)"
            );
            return None;
        }
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let url = format!(
        "{}/{test}-{}-{nanos}-{}",
        base.trim_end_matches('/'),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let bucket = bucket::open(&url).unwrap_or_else(|err| panic!("{test}: {err}"));
    Some(TestBucket { url, bucket })
}
