//! Split mode never hangs (issue 14, item 3): with one plane paused (SIGSTOP — a process that
//! holds its connections open but never answers, like a partitioned or frozen pod), the other
//! keeps answering within a bound, and calls to the paused one fail with a clear status instead
//! of waiting forever.

use std::process::Command;
use std::time::Duration;

use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DescribeIndexRequest, SearchParams,
};
use tonic::Code;

use super::harness::*;
use super::split::{KEY, Split, query};

/// Far longer than the planes' 2 s internal timeout, yet finite: a call that takes longer hangs.
const BOUND: Duration = Duration::from_secs(30);

/// Stops a process with SIGSTOP; sends SIGCONT when dropped (also when the test fails).
struct Paused(u32);

impl Paused {
    fn new(larch: &Larch) -> Paused {
        signal(larch.pid(), "-STOP");
        Paused(larch.pid())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid} failed: {sent}");
}

fn create(name: &str) -> CreateIndexRequest {
    CreateIndexRequest {
        name: name.into(),
        dimension: Some(2),
        metric: Some("cosine".into()),
        ..Default::default()
    }
}

/// The number of log lines of `larch` containing `message`.
fn logged(larch: &Larch, message: &str) -> usize {
    larch
        .stderr()
        .lines()
        .filter(|line| line.contains(message))
        .count()
}

async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {BOUND:?}: it hangs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_paused_plane_never_hangs_the_other() {
    let split = Split::start_with(
        "larch.test",
        &[
            ("LARCH_INTERNAL_TIMEOUT_SECS", "2"),
            // Long enough that the keys stay fresh while the control plane is paused here.
            ("LARCH_KEY_MAX_AGE_SECS", "600"),
        ],
    )
    .await;
    let (control, data) = (&split.control, &split.data);
    let (control_addr, data_addr) = (split.control_addr.clone(), split.data_addr.clone());
    let mut indexes = IndexServiceClient::new(connect(&control_addr).await);
    let movies = indexes
        .create_index(with_key(create("movies"), Some(KEY)))
        .await
        .unwrap()
        .into_inner();

    // The data plane paused: the control plane still lists and describes, and a change that
    // needs the data plane fails within the bound instead of hanging (and holding up reads).
    {
        let _paused = Paused::new(data);
        let mut creating = indexes.clone();
        let create = tokio::spawn(async move {
            creating
                .create_index(with_key(create("books"), Some(KEY)))
                .await
        });
        let mut reads = 0;
        while !create.is_finished() || reads == 0 {
            let listed = bounded("ListIndexes", list_indexes(&control_addr, Some(KEY))).await;
            assert_eq!(listed.unwrap(), vec!["movies".to_owned()]);
            let described = bounded(
                "DescribeIndex",
                indexes.describe_index(with_key(
                    DescribeIndexRequest {
                        name: "movies".into(),
                    },
                    Some(KEY),
                )),
            )
            .await;
            assert_eq!(described.unwrap().into_inner().host, movies.host);
            reads += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = bounded("CreateIndex", create)
            .await
            .unwrap()
            .expect_err("the data plane is paused");
        assert!(
            matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
            "{err:?}"
        );
        assert!(err.message().contains("data plane"), "{err:?}");
        // Not recorded, so not listed.
        let listed = bounded("ListIndexes", list_indexes(&control_addr, Some(KEY))).await;
        assert_eq!(listed.unwrap(), vec!["movies".to_owned()]);
        // A change of search parameters is refused as UNAVAILABLE too (worth retrying), not as
        // an internal error, and the parameters in force stay what they were.
        let err = bounded(
            "ConfigureIndex",
            indexes.configure_index(with_key(
                ConfigureIndexRequest {
                    name: "movies".into(),
                    search: Some(SearchParams {
                        ef_search: Some(200),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Some(KEY),
            )),
        )
        .await
        .expect_err("the data plane is paused");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("data plane"), "{err:?}");
        let described = bounded(
            "DescribeIndex",
            indexes.describe_index(with_key(
                DescribeIndexRequest {
                    name: "movies".into(),
                },
                Some(KEY),
            )),
        )
        .await;
        assert_eq!(described.unwrap().into_inner().search, movies.search);
    }
    // Resumed: changes work again.
    bounded(
        "CreateIndex",
        indexes.create_index(with_key(create("books"), Some(KEY))),
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "{err:?}\ncontrol:\n{}\ndata:\n{}",
            control.stderr(),
            data.stderr()
        )
    });

    // The control plane paused: the data plane's pull times out, is logged and retried, and
    // the data plane keeps serving with what it has; resumed, it syncs again.
    let failed = "cannot sync with the control plane";
    let recovered = "in sync with the control plane again";
    let (failed_before, recovered_before) = (logged(data, failed), logged(data, recovered));
    {
        let _paused = Paused::new(control);
        super::split::eventually(
            BOUND,
            "a logged timeout of the data plane's pull",
            async || logged(data, failed) > failed_before,
        )
        .await;
        let served = bounded("Query", query(&data_addr, &movies.host, KEY)).await;
        assert_eq!(served.unwrap(), 0);
    }
    super::split::eventually(BOUND, "the data plane syncing again", async || {
        logged(data, recovered) > recovered_before
    })
    .await;
    let stderr = data.stderr();
    let warning = stderr.lines().rfind(|line| line.contains(failed)).unwrap();
    assert!(warning.contains("WARN"), "{warning}");
}
