//! Backpressure in the real binary (issue 8, item 2): with a deliberately small
//! `--memory-budget`, upserts are refused with RESOURCE_EXHAUSTED and a retry pushback once
//! the process would pass it, the process's peak resident memory stays under the budget,
//! reads and deletes go on being served, and every acknowledged write is there after a restart.

use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{CreateIndexRequest, DescribeIndexRequest};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{
    DeleteRequest, DescribeIndexStatsRequest, FetchRequest, QueryRequest, UpsertRequest, Vector,
};

use super::harness::*;

const KEY: &str = "pressure-test-key";
const BUDGET_MIB: u64 = 96;
const DIM: usize = 256;
const BATCH: usize = 500;

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn batch(first: usize) -> Vec<Vector> {
    (first..first + BATCH)
        .map(|i| Vector {
            id: format!("v{i}"),
            values: (0..DIM).map(|d| ((i * 31 + d) % 97) as f32 + 1.0).collect(),
            ..Default::default()
        })
        .collect()
}

async fn count(data: &mut VectorServiceClient<tonic::transport::Channel>) -> u32 {
    data.describe_index_stats(with_key(DescribeIndexStatsRequest::default(), Some(KEY)))
        .await
        .unwrap()
        .into_inner()
        .total_vector_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_memory_budget_refuses_writes_keeps_reads_and_bounds_memory() {
    let data_dir = tempfile::tempdir().unwrap();
    let budget = format!("{BUDGET_MIB}MiB");
    // Exact search only: the test is about the budget, not about how fast graphs build.
    let env = [
        ("LARCH_API_KEY", KEY),
        ("LARCH_MEMORY_BUDGET", budget.as_str()),
        ("LARCH_ANN_MIN_ROWS", "10000000"),
    ];
    let mut larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    assert!(
        larch.stderr().contains("memory budget on"),
        "{}",
        larch.stderr()
    );
    let host = IndexServiceClient::new(connect(&addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "tight".into(),
                dimension: Some(DIM as i32),
                metric: Some("euclidean".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host;
    wait_serving(&host, "").await;
    let mut data = VectorServiceClient::new(connect(&host).await);

    // Fill until refused.
    let mut acknowledged = 0;
    let refusal = loop {
        assert!(
            acknowledged < 2_000_000,
            "never refused; peak RSS {} KiB",
            status_kib(larch.pid(), "VmHWM:")
        );
        let request = UpsertRequest {
            vectors: batch(acknowledged),
            namespace: String::new(),
        };
        match data.upsert(with_key(request, Some(KEY))).await {
            Ok(_) => acknowledged += BATCH,
            Err(status) => break status,
        }
    };
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert!(refusal.message().contains("--memory-budget"), "{refusal:?}");
    assert_eq!(
        refusal
            .metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("1000"),
        "{refusal:?}"
    );
    assert!(
        acknowledged >= 10 * BATCH,
        "refused too early: {acknowledged} vectors"
    );

    // Reads are served while writes are refused.
    assert_eq!(count(&mut data).await as usize, acknowledged);
    let fetched = data
        .fetch(with_key(
            FetchRequest {
                ids: vec!["v0".into(), format!("v{}", acknowledged - 1)],
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors.len(), 2);
    let matches = data
        .query(with_key(
            QueryRequest {
                vector: batch(7)[0].values.clone(),
                top_k: 3,
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .matches;
    // Values repeat every 97 ids, so several records are at distance 0.
    assert_eq!(matches.len(), 3);
    assert_eq!(matches[0].score, 0.0, "{matches:?}");
    // Deletes are taken.
    let deleted: Vec<String> = (0..BATCH).map(|i| format!("v{i}")).collect();
    data.delete(with_key(
        DeleteRequest {
            ids: deleted,
            namespace: String::new(),
            ..Default::default()
        },
        Some(KEY),
    ))
    .await
    .expect("deletes are never refused");
    let peak_kib = status_kib(larch.pid(), "VmHWM:");
    assert!(
        peak_kib <= BUDGET_MIB * 1024,
        "peak RSS {peak_kib} KiB passed the {BUDGET_MIB} MiB budget"
    );

    // Every acknowledged write survives a restart (with the same budget).
    let status = larch.terminate();
    assert!(status.success(), "{status:?}");
    let larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let host = IndexServiceClient::new(connect(&addr).await)
        .describe_index(with_key(
            DescribeIndexRequest {
                name: "tight".into(),
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host;
    wait_serving(&host, "").await;
    let mut data = VectorServiceClient::new(connect(&host).await);
    assert_eq!(count(&mut data).await as usize, acknowledged - BATCH);
}

/// `Max open files` of `/proc/<pid>/limits`: (soft, hard).
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_server_raises_its_open_file_limit_to_the_hard_limit() {
    let data_dir = tempfile::tempdir().unwrap();
    let larch = env!("CARGO_BIN_EXE_larch");
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -S -n 256 && exec \"$0\" \"$@\"",
            larch,
            "serve",
            "--control-addr",
            "127.0.0.1:0",
            "--data-ports",
            "0",
            "--admin-addr",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.path().to_str().unwrap(),
        ])
        .env("LARCH_API_KEY", KEY)
        .env_remove("LARCH_API_KEY_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // Once it listens, it has configured its limits.
    let listening = lines.any(|line| line.unwrap().contains("control plane listening"));
    let (soft, hard) = open_files_limit(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server never listened");
    assert_eq!(soft, hard, "soft limit not raised");
    assert_ne!(soft, "256");
}
