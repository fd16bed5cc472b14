//! Damage and faults under the real binary: a log torn by a crash mid-write, a corrupt log and
//! a full disk.
//!
//! The disk test mounts a small tmpfs (it needs root, as CI and the dev machines have; it says
//! so and passes trivially where `mount` is not permitted). A disk turning read-only under a
//! running server cannot be staged here (`mount -o remount,ro` refuses while the log is open
//! for writing); the engine's unit tests cover that path with a failing writer.

use std::path::{Path, PathBuf};
use std::process::Command;

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{QueryRequest, UpsertRequest, Vector};
use tonic::Code;
use tonic::transport::Channel;

use super::harness::*;

const KEY: &str = "faults-test-key";

/// A running server with a data-plane client for its index `f` (dimension 4, euclidean).
struct Running {
    larch: Larch,
    data: VectorServiceClient<Channel>,
}

async fn start(data_dir: &Path, create: bool) -> Running {
    start_with(data_dir, create, &[]).await
}

async fn start_with(data_dir: &Path, create: bool, env: &[(&str, &str)]) -> Running {
    let env: Vec<(&str, &str)> = [("LARCH_API_KEY", KEY)]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let larch = Larch::serve(data_dir, &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let mut control = IndexServiceClient::new(connect(&addr).await);
    let host = if create {
        control
            .create_index(with_key(
                CreateIndexRequest {
                    name: "f".into(),
                    dimension: Some(4),
                    metric: Some("euclidean".into()),
                    ..Default::default()
                },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner()
            .host
    } else {
        list_indexes(&addr, Some(KEY)).await.unwrap();
        control
            .describe_index(with_key(
                larch_proto::control::DescribeIndexRequest { name: "f".into() },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner()
            .host
    };
    wait_serving(&host, "").await;
    let data = VectorServiceClient::new(connect(&host).await);
    Running { larch, data }
}

/// Upserts `count` vectors `{prefix}{i}` with a 1 KiB metadata string each.
async fn upsert(
    data: &mut VectorServiceClient<Channel>,
    prefix: &str,
    count: usize,
) -> Result<(), tonic::Status> {
    let filler = "x".repeat(1024);
    let vectors = (0..count)
        .map(|i| Vector {
            id: format!("{prefix}{i}"),
            values: vec![i as f32 + 1.0, 1.0, 0.0, 0.0],
            sparse_values: None,
            metadata: Some(prost_types::Struct {
                fields: [(
                    "pad".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(filler.clone())),
                    },
                )]
                .into(),
            }),
        })
        .collect();
    data.upsert(with_key(
        UpsertRequest {
            vectors,
            namespace: String::new(),
        },
        Some(KEY),
    ))
    .await
    .map(|_| ())
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    ids.sort();
    ids
}

/// The data directory of index `f`: `f@default@<incarnation>` (see `IndexKey::storage_name`).
fn index_dir(data_dir: &Path) -> PathBuf {
    let indexes = data_dir.join("indexes");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&indexes)
        .unwrap_or_else(|e| panic!("{}: {e}", indexes.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("f@default@"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one directory of index f: {found:?}");
    found.remove(0)
}

/// The newest write-ahead log file of index `f`.
fn newest_wal(data_dir: &Path) -> PathBuf {
    let dir = index_dir(data_dir);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop()
        .unwrap_or_else(|| panic!("no .log file in {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_log_record_is_dropped_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path(), true).await;
    upsert(&mut running.data, "a", 5).await.unwrap();
    let wal = newest_wal(dir.path());
    let intact = std::fs::metadata(&wal).unwrap().len();
    upsert(&mut running.data, "b", 5).await.unwrap();
    running.larch.kill();

    // A crash in the middle of writing the last record: cut it short.
    let full = std::fs::metadata(&wal).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(intact + (full - intact) / 2).unwrap();
    drop(file);

    let mut running = start(dir.path(), false).await;
    assert_eq!(
        fetch_ids(&mut running.data, &ids("a", 5), KEY).await,
        ids("a", 5)
    );
    assert!(
        fetch_ids(&mut running.data, &ids("b", 5), KEY)
            .await
            .is_empty(),
        "the torn batch is gone whole"
    );
    assert!(
        running.larch.stderr().contains("torn") || running.larch.stderr().contains("WARN"),
        "the drop is logged:\n{}",
        running.larch.stderr()
    );
    // The log accepts writes after the cut, and they survive another restart.
    upsert(&mut running.data, "c", 2).await.unwrap();
    assert_eq!(running.larch.terminate().code(), Some(0));
    let mut running = start(dir.path(), false).await;
    assert_eq!(
        fetch_ids(&mut running.data, &ids("c", 2), KEY).await,
        ids("c", 2)
    );
    assert_eq!(
        fetch_ids(&mut running.data, &ids("a", 5), KEY).await,
        ids("a", 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_inside_the_log_stops_startup_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path(), true).await;
    let wal = newest_wal(dir.path());
    let header = std::fs::metadata(&wal).unwrap().len();
    upsert(&mut running.data, "a", 3).await.unwrap();
    upsert(&mut running.data, "b", 3).await.unwrap();
    assert_eq!(running.larch.terminate().code(), Some(0));

    // Flip one byte inside the first record's payload; a good record follows it.
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = header as usize + 40;
    bytes[at] ^= 0x5a;
    std::fs::write(&wal, &bytes).unwrap();

    let mut larch = Larch::serve(dir.path(), &[("LARCH_API_KEY", KEY)]);
    let status = larch.wait();
    assert!(
        !status.success(),
        "larch must refuse to serve a corrupt index"
    );
    let stderr = larch.stderr();
    assert!(
        stderr.contains(&wal.display().to_string()),
        "names the file:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("at byte {header}")),
        "names the offset of the bad record:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_stops_startup_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    // Flush the log into segments after every MiB.
    let small_log = [("LARCH_WAL_FLUSH_MB", "1")];
    let mut running = start_with(dir.path(), true, &small_log).await;
    for batch in 0..3 {
        upsert(&mut running.data, &format!("s{batch}-"), 1000)
            .await
            .unwrap();
    }
    assert_eq!(running.larch.terminate().code(), Some(0));
    let segments = index_dir(dir.path()).join("segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&segments)
        .unwrap_or_else(|e| panic!("{}: {e}", segments.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let segment = files.first().expect("at least one segment was flushed");

    // A clean restart reads the segments back.
    let mut running = start_with(dir.path(), false, &small_log).await;
    assert_eq!(
        fetch_ids(&mut running.data, &ids("s0-", 1000), KEY).await,
        ids("s0-", 1000)
    );
    assert_eq!(running.larch.terminate().code(), Some(0));

    // One flipped bit in the middle of the vectors block.
    let mut bytes = std::fs::read(segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(segment, &bytes).unwrap();
    let mut larch = Larch::serve(dir.path(), &[("LARCH_API_KEY", KEY)]);
    assert!(
        !larch.wait().success(),
        "larch must refuse to serve a damaged segment"
    );
    let stderr = larch.stderr();
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(name), "names the segment:\n{stderr}");
    assert!(stderr.contains("at byte"), "names an offset:\n{stderr}");
}

/// A tmpfs of `size` mounted on a new temp dir, unmounted on drop; `None` without privilege.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn resize(&self, size: &str) {
        let options = format!("size={size}");
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn query_works(running: &mut Running) {
    let found = running
        .data
        .query(with_key(
            QueryRequest {
                top_k: 3,
                vector: vec![1.0, 1.0, 0.0, 0.0],
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .matches;
    assert_eq!(found.len(), 3, "reads keep working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_resource_exhausted_and_keeps_reads() {
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let mut running = start(disk.dir.path(), true).await;
    upsert(&mut running.data, "a", 10).await.unwrap();
    let mut batch = 0;
    let err = loop {
        match upsert(&mut running.data, &format!("fill{batch}-"), 100).await {
            Ok(()) => batch += 1,
            Err(err) => break err,
        }
        assert!(batch < 100, "a 3 MiB disk never filled up");
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("disk full"), "{}", err.message());
    query_works(&mut running).await;

    // Room again: writes resume, and everything acknowledged survives a restart.
    disk.resize("64m");
    upsert(&mut running.data, "b", 10).await.unwrap();
    assert_eq!(running.larch.terminate().code(), Some(0));
    let mut running = start(disk.dir.path(), false).await;
    for i in 0..batch {
        let prefix = format!("fill{i}-");
        assert_eq!(
            fetch_ids(&mut running.data, &ids(&prefix, 100), KEY).await,
            ids(&prefix, 100)
        );
    }
    assert!(
        fetch_ids(&mut running.data, &ids(&format!("fill{batch}-"), 100), KEY)
            .await
            .is_empty()
    );
    assert_eq!(
        fetch_ids(&mut running.data, &ids("b", 10), KEY).await,
        ids("b", 10)
    );
    assert_eq!(running.larch.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), true).await;
    upsert(&mut first.data, "a", 3).await.unwrap();

    let mut second = Larch::serve(dir.path(), &[("LARCH_API_KEY", KEY)]);
    assert!(!second.wait().success(), "the second server must not start");
    let stderr = second.stderr();
    assert!(
        stderr.contains("another larch server is using the data dir"),
        "{stderr}"
    );
    assert!(stderr.contains("LOCK"), "names the lock file: {stderr}");

    // The first one is untouched and still serves its data.
    assert_eq!(
        fetch_ids(&mut first.data, &ids("a", 3), KEY).await,
        ids("a", 3)
    );
    assert_eq!(first.larch.terminate().code(), Some(0));
    // Once it is gone, the data dir can be opened again.
    let mut again = start(dir.path(), false).await;
    assert_eq!(
        fetch_ids(&mut again.data, &ids("a", 3), KEY).await,
        ids("a", 3)
    );
}
