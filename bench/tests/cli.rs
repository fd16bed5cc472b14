//! The `larch-bench` binary starts and offers its benchmarks. Being an integration test, this
//! also makes `cargo test --workspace --all-targets` build `target/debug/larch-bench`, which
//! `tests/run` then uses for the one-minute soak without a separate build.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_lists_the_benchmarks() {
    let output = Command::new(env!("CARGO_BIN_EXE_larch-bench"))
        .arg("--help")
        .output()
        .expect("larch-bench runs");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["restart", "soak"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

/// Runs `larch-bench` with `args` (inherited `LARCH_…` settings removed) off the runtime's
/// threads and returns its stdout; the run must succeed.
async fn larch_bench(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_larch-bench"));
        command.args(&args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LARCH_") {
                command.env_remove(name);
            }
        }
        let output = command.output().expect("larch-bench runs");
        assert!(
            output.status.success(),
            "larch-bench {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// `rows` × `dim` vectors as a NumPy `.npy` file (version 1.0, `<f4`, C order).
fn write_npy(path: &std::path::Path, rows: usize, dim: usize, values: &[f32]) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

fn number(json: &serde_json::Value, field: &str) -> f64 {
    json[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing from {json}"))
}

/// `larch-bench load` against a real server: upserts one pass of a `.npy` file, sends 400
/// queries from a raw f32 file and reports ordered percentiles and a ceiling, hands back the
/// ids of the answers; with a wrong key every call is counted under UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_upserts_and_queries_a_real_server() {
    let server = larch_tests::TestServer::start().await;
    let (model, mut data) = server.create_index("load", 8, "cosine").await;
    let dir = tempfile::tempdir().unwrap();
    let (rows, dim) = (300, 8);
    // Distinct, deterministic vectors: row i points its own way.
    let values: Vec<f32> = (0..rows * dim)
        .map(|x| (((x * 7919) % 1009) as f32 / 1009.0) - 0.5)
        .collect();
    let base = dir.path().join("base.npy");
    write_npy(&base, rows, dim, &values);
    // The first 20 rows again, as a raw f32 file.
    let queries = dir.path().join("queries.f32");
    let raw: Vec<u8> = values[..20 * dim]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&queries, raw).unwrap();
    let common = |extra: &[&str]| -> Vec<String> {
        [
            "load",
            "--addr",
            &model.host,
            "--json",
            "--concurrency",
            "4",
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
    };

    let base_arg = base.to_str().unwrap();
    let upsert = larch_bench(common(&[
        "--api-key",
        &server.key,
        "--mode",
        "upsert",
        "--vectors",
        base_arg,
        "--batch",
        "100",
        "--warmup",
        "0s",
        "--ceiling-duration",
        "500ms",
    ]))
    .await;
    let upsert: serde_json::Value = serde_json::from_str(&upsert).unwrap();
    assert_eq!(upsert["ok"], 3, "{upsert}");
    assert_eq!(upsert["failed"], 0, "{upsert}");
    assert_eq!(upsert["vectors"], 300, "{upsert}");
    assert!(number(&upsert, "vectors_per_s") > 0.0, "{upsert}");
    let stats = data
        .describe_index_stats(larch_proto::pinecone::DescribeIndexStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_vector_count, 300);

    let ids = dir.path().join("ids.jsonl");
    let query = larch_bench(common(&[
        "--api-key",
        &server.key,
        "--queries",
        queries.to_str().unwrap(),
        "--dim",
        "8",
        "--connections",
        "2",
        // Bounded in count so every query is sent whatever the machine's speed (20 rows, 400
        // requests); the duration is only a safety bound.
        "--requests",
        "400",
        "--duration",
        "60s",
        "--warmup",
        "200ms",
        "--ceiling-duration",
        "1s",
        "--collect-ids",
        ids.to_str().unwrap(),
    ]))
    .await;
    let query: serde_json::Value = serde_json::from_str(&query).unwrap();
    assert_eq!(query["ok"], 400, "{query}");
    assert_eq!(query["failed"], 0, "{query}");
    assert_eq!(query["errors"], serde_json::json!({}), "{query}");
    let percentiles: Vec<f64> = ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
        .iter()
        .map(|p| number(&query, p))
        .collect();
    assert!(percentiles[0] > 0.0, "{query}");
    assert!(
        percentiles.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {query}"
    );
    assert!(number(&query, "ceiling_qps") > 0.0, "{query}");
    assert_eq!(
        query["ceiling"]["method"], "/grpc.health.v1.Health/Check",
        "{query}"
    );
    assert!(number(&query, "ratio_to_ceiling") > 0.0, "{query}");
    assert!(query["tool_may_be_bottleneck"].is_boolean(), "{query}");
    // Every query was answered; each one's best match is itself (cosine, distinct vectors).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    for (i, line) in lines.iter().enumerate() {
        let answer = line
            .as_array()
            .unwrap_or_else(|| panic!("query {i}: {line}"));
        assert_eq!(answer.len(), 10, "query {i}: {line}");
        assert_eq!(answer[0], i.to_string(), "query {i}: {line}");
    }

    let denied = larch_bench(common(&[
        "--api-key",
        "not-a-key",
        "--queries",
        queries.to_str().unwrap(),
        "--dim",
        "8",
        // Five: the server holds back refusals after the fifth wrong key within a minute.
        "--requests",
        "5",
        "--warmup",
        "0s",
        "--no-ceiling",
    ]))
    .await;
    let denied: serde_json::Value = serde_json::from_str(&denied).unwrap();
    assert_eq!(denied["ok"], 0, "{denied}");
    assert_eq!(denied["errors"]["UNAUTHENTICATED"], 5, "{denied}");
    assert!(denied["ceiling"].is_null(), "{denied}");
    // The graceful stop waits for open connections: close the test's own first.
    drop(data);
    server.stop().await;
}
