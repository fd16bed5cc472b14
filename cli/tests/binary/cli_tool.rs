//! The command-line client against a running `larch serve`: `larch indexes …` over the
//! control plane (issue 18, item 1), JSON output for scripts, tables for people, and the
//! server's message with a non-zero exit when a call fails.

use std::process::Command;

use serde_json::Value;

use super::harness::*;

/// Runs `larch <args>` to completion with a clean environment plus `env`; returns the exit
/// code, stdout and stderr.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_larch"));
    command.args(args);
    clear_larch_env(&mut command);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("larch runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs a command that must succeed with `--output json` and parses what it printed.
fn json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let (code, stdout, stderr) = cli(&args, env);
    assert_eq!(code, 0, "larch {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// A running server and the environment that points the CLI at it.
struct Server {
    _larch: Larch,
    _data_dir: tempfile::TempDir,
    url: String,
    key: String,
}

impl Server {
    async fn start() -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let key = larch_auth::ApiKey::generate().as_str().to_owned();
        let larch = Larch::serve(data_dir.path(), &[("LARCH_API_KEY", &key)]);
        let addr = larch.control_addr().to_string();
        wait_serving(&addr, "").await;
        Server {
            _larch: larch,
            _data_dir: data_dir,
            url: format!("http://{addr}"),
            key,
        }
    }

    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("LARCH_ADDR", self.url.as_str()),
            ("LARCH_API_KEY", self.key.as_str()),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_created_listed_configured_and_deleted_from_the_command_line() {
    let server = Server::start().await;
    let env = server.env();

    let created = json(
        &[
            "indexes",
            "create",
            "movies",
            "--dimension",
            "8",
            "--metric",
            "euclidean",
            "--tag",
            "env=dev",
            "--ef-search",
            "100",
        ],
        &env,
    );
    assert_eq!(created["name"], "movies");
    assert_eq!(created["dimension"], 8);
    assert_eq!(created["metric"], "euclidean");
    assert_eq!(created["spec"]["serverless"]["cloud"], "aws");
    assert_eq!(created["spec"]["serverless"]["region"], "us-east-1");
    assert_eq!(created["tags"]["env"], "dev");
    assert_eq!(created["search"]["ef_search"], 100);
    assert!(created["host"].as_str().unwrap().contains(':'), "{created}");

    let described = json(&["indexes", "describe", "movies"], &env);
    assert_eq!(described, created, "describe answers what create did");

    let listed = json(&["indexes", "list"], &env);
    let names: Vec<&str> = listed["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|index| index["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["movies"]);

    // The default output is a table with a header and one row per index.
    let (code, table, stderr) = cli(&["indexes", "list"], &env);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("movies") && lines[1].contains("euclidean"),
        "{table}"
    );

    let configured = json(
        &[
            "indexes",
            "configure",
            "movies",
            "--deletion-protection",
            "enabled",
            "--tag",
            "env=",
            "--tag",
            "team=search",
        ],
        &env,
    );
    assert_eq!(configured["deletion_protection"], "enabled");
    assert_eq!(configured["tags"], serde_json::json!({"team": "search"}));

    // Deletion protection: the server refuses, the CLI prints its message and fails.
    let (code, _, stderr) = cli(&["indexes", "delete", "movies"], &env);
    assert_ne!(code, 0);
    assert!(stderr.contains("deletion protection"), "{stderr}");

    json(
        &[
            "indexes",
            "configure",
            "movies",
            "--deletion-protection",
            "disabled",
        ],
        &env,
    );
    let deleted = json(&["indexes", "delete", "movies"], &env);
    assert_eq!(deleted["deleted"], true);
    let (code, _, stderr) = cli(&["indexes", "describe", "movies"], &env);
    assert_ne!(code, 0);
    assert!(stderr.contains("NotFound"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_exits_non_zero_with_the_servers_message() {
    let server = Server::start().await;
    let wrong = larch_auth::ApiKey::generate().as_str().to_owned();
    let env = [
        ("LARCH_ADDR", server.url.as_str()),
        ("LARCH_API_KEY", wrong.as_str()),
    ];
    let (code, stdout, stderr) = cli(&["indexes", "list"], &env);
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    let (code, _, stderr) = cli(&["indexes", "list"], &[("LARCH_ADDR", server.url.as_str())]);
    assert_ne!(code, 0);
    assert!(stderr.contains("LARCH_API_KEY"), "{stderr}");
}
