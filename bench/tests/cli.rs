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
