//! `larch-bench scale` end to end on a small scale: the debug `larch` binary, a real
//! `tests/s3/serve.py` from the repository's `.venv-s3`, one and then two data planes. Skipped
//! when `.venv-s3` is missing, failing instead with `LARCH_REQUIRE_S3=1` (as in CI).
//!
//! The `larch` binary is `LARCH_BIN`, else the one beside this test in the target directory
//! (`cargo build -p larch` first; `cargo test --workspace` builds it).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `larch` binary of this build.
fn larch_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LARCH_BIN") {
        return PathBuf::from(bin);
    }
    // target/debug/deps/scale-… → target/debug/larch
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .join("larch");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p larch) or set LARCH_BIN",
        bin.display()
    );
    bin
}

/// The last lines of every `.log` file under `dir` (the processes' logs), for a failure.
fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&log_tails(&path));
        } else if path.extension().is_some_and(|ext| ext == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", path.display()));
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
    }
    out
}

fn number(json: &serde_json::Value, field: &str) -> f64 {
    json[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing from {json}"))
}

#[test]
fn scale_measures_one_and_two_data_planes_over_a_bucket() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv-s3/bin/python");
    if !python.exists() {
        assert_ne!(
            std::env::var("LARCH_REQUIRE_S3").as_deref(),
            Ok("1"),
            "LARCH_REQUIRE_S3=1 but {} is missing",
            python.display()
        );
        eprintln!(
            "skipped: {} is missing (tests/run installs it)",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scale.json");
    let work = dir.path().join("work");
    let mut command = Command::new(env!("CARGO_BIN_EXE_larch-bench"));
    command
        .args(["scale", "--larch-bin"])
        .arg(larch_bin())
        .args(["--data-planes", "1,2", "--vectors", "2000", "--dim", "8"])
        .args([
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "--idle-seconds",
            "2",
        ])
        // A graph for 2,000 vectors, so the run waits for every pod's "fully indexed".
        .args(["--ann-min-rows", "500"])
        .arg("--dir")
        .arg(&work)
        .arg("--out")
        .arg(&out);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARCH_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("larch-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "larch-bench scale: {}\n{stdout}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        log_tails(&work)
    );

    // The table: one row per count of data planes, and the local-disk baseline.
    for row in ["| 1 | ", "| 2 | "] {
        assert!(
            stdout.lines().any(|line| line.starts_with(row)),
            "no row {row:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("local-disk `larch serve`"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        number(&json["baseline"], "ingest_vectors_per_s") > 0.0,
        "{json}"
    );
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    for (row, n) in rows.iter().zip([1, 2]) {
        assert_eq!(row["data_planes"], n, "{row}");
        assert!(number(row, "ingest_vectors_per_s") > 0.0, "{row}");
        assert!(number(row, "qps") > 0.0, "{row}");
        assert_eq!(row["queries_failed"], 0, "{row}");
        assert_eq!(row["empty_answers"], 0, "{row}");
        assert!(number(row, "p50_ms") <= number(row, "p99_ms"), "{row}");
        assert!(number(row, "ceiling_qps") > 0.0, "{row}");
        // Every pod answered queries and used CPU for them; exactly one is the writer.
        let pods = row["pods"].as_array().unwrap();
        assert_eq!(pods.len(), n, "{row}");
        assert_eq!(
            pods.iter().filter(|pod| pod["writer"] == true).count(),
            1,
            "{row}"
        );
        for pod in pods {
            assert!(number(pod, "queries") > 0.0, "{row}");
            assert!(number(pod, "cpu_ms_per_query") > 0.0, "{row}");
        }
        assert!(number(row, "cpu_ms_per_query_writer") > 0.0, "{row}");
        assert!(number(&row["idle_s3"], "seconds") > 0.0, "{row}");
    }
    // One pod alone has no followers; with two, the follower caught up and tails the bucket
    // even when nothing is written.
    assert!(rows[0]["catch_up_s"].is_null(), "{}", rows[0]);
    assert!(
        rows[0]["cpu_ms_per_query_followers"].is_null(),
        "{}",
        rows[0]
    );
    assert!(number(&rows[1], "catch_up_s") >= 0.0, "{}", rows[1]);
    assert!(number(&rows[1], "lag_final_batches") >= 0.0, "{}", rows[1]);
    assert!(
        number(&rows[1], "cpu_ms_per_query_followers") > 0.0,
        "{}",
        rows[1]
    );
    assert!(
        number(&rows[1]["idle_s3"]["requests_per_s"], "GET") > 0.0,
        "{}",
        rows[1]
    );
}
