//! The command-line client against a running `larch serve`: `larch indexes …` over the
//! control plane (issue 18, item 1), JSON output for scripts, tables for people, and the
//! server's message with a non-zero exit when a call fails.

use serde_json::Value;

use super::harness::*;

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

    let created = cli_json(
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

    let described = cli_json(&["indexes", "describe", "movies"], &env);
    assert_eq!(described, created, "describe answers what create did");

    let listed = cli_json(&["indexes", "list"], &env);
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

    let configured = cli_json(
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

    cli_json(
        &[
            "indexes",
            "configure",
            "movies",
            "--deletion-protection",
            "disabled",
        ],
        &env,
    );
    let deleted = cli_json(&["indexes", "delete", "movies"], &env);
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

/// `count` records of dimension `dimension` as JSON Lines: ids `v0…`, values from a fixed
/// linear congruential sequence, metadata `genre` drama for odd ids and comedy for even.
fn records(count: usize, dimension: usize) -> Vec<(String, Vec<f32>, String)> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|i| {
            let values = (0..dimension)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let genre = if i % 2 == 1 { "drama" } else { "comedy" };
            (format!("v{i}"), values, genre.to_owned())
        })
        .collect()
}

fn write_jsonl(path: &std::path::Path, records: &[(String, Vec<f32>, String)]) {
    let text: String = records
        .iter()
        .map(|(id, values, genre)| {
            serde_json::json!({"id": id, "values": values, "metadata": {"genre": genre}})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn total(index: &str, env: &[(&str, &str)]) -> u64 {
    cli_json(&["vectors", "stats", "--index", index], env)["total_vector_count"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_file_is_upserted_queried_fetched_listed_and_deleted_from_the_command_line() {
    let server = Server::start().await;
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    cli_json(
        &[
            "indexes",
            "create",
            "movies",
            "--dimension",
            "8",
            "--metric",
            "cosine",
        ],
        &env,
    );

    let data = records(2500, 8);
    let file = dir.path().join("data.jsonl");
    write_jsonl(&file, &data);
    let file = file.to_str().unwrap();
    let upserted = cli_json(
        &upsert_args("movies", file, &["--batch", "300", "--in-flight", "3"]),
        &env,
    );
    assert_eq!(upserted["upserted_count"], 2500);
    assert_eq!(total("movies", &env), 2500);

    // Query by a stored record's own values: it is its own nearest neighbour.
    let (id, values, _) = &data[1234];
    let vector = serde_json::to_string(values).unwrap();
    let answer = cli_json(
        &[
            "vectors", "query", "--index", "movies", "--vector", &vector, "--top-k", "3",
        ],
        &env,
    );
    assert_eq!(answer["matches"][0]["id"], id.as_str(), "{answer}");
    assert_eq!(answer["matches"].as_array().unwrap().len(), 3);
    let by_id = cli_json(
        &[
            "vectors", "query", "--index", "movies", "--id", id, "--top-k", "1",
        ],
        &env,
    );
    assert_eq!(by_id["matches"][0]["id"], id.as_str());
    let (code, table, stderr) = cli(
        &[
            "vectors", "query", "--index", "movies", "--vector", &vector, "--top-k", "1",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.lines().nth(1).unwrap().starts_with(id.as_str()),
        "{table}"
    );

    // A filter as JSON: every match satisfies it.
    let dramas = cli_json(
        &[
            "vectors",
            "query",
            "--index",
            "movies",
            "--vector",
            &vector,
            "--top-k",
            "5",
            "--filter",
            r#"{"genre":"drama"}"#,
            "--include-metadata",
        ],
        &env,
    );
    let matches = dramas["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 5);
    assert!(
        matches.iter().all(|m| m["metadata"]["genre"] == "drama"),
        "{dramas}"
    );

    let fetched = cli_json(
        &["vectors", "fetch", "--index", "movies", "--ids", "v1,v2"],
        &env,
    );
    assert_eq!(fetched["vectors"]["v1"]["metadata"]["genre"], "drama");
    assert_eq!(fetched["vectors"]["v2"]["metadata"]["genre"], "comedy");
    assert_eq!(
        fetched["vectors"]["v2"]["values"].as_array().unwrap().len(),
        8
    );

    let listed = cli_json(
        &["vectors", "list", "--index", "movies", "--prefix", "v249"],
        &env,
    );
    let mut ids: Vec<&str> = listed["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = std::iter::once("v249".to_owned())
        .chain((2490..2500).map(|i| format!("v{i}")))
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // A second namespace, listed, described and deleted.
    let other = dir.path().join("other.jsonl");
    write_jsonl(&other, &records(3, 8));
    cli_json(
        &upsert_args("movies", other.to_str().unwrap(), &["--namespace", "other"]),
        &env,
    );
    let namespaces = cli_json(&["namespaces", "list", "--index", "movies"], &env);
    let named: Vec<(&str, u64)> = namespaces["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| {
            (
                ns["name"].as_str().unwrap(),
                ns["record_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(named.contains(&("other", 3)), "{namespaces}");
    let described = cli_json(
        &["namespaces", "describe", "--index", "movies", "other"],
        &env,
    );
    assert_eq!(described["record_count"], 3);
    cli_json(
        &["namespaces", "delete", "--index", "movies", "other"],
        &env,
    );
    let namespaces = cli_json(&["namespaces", "list", "--index", "movies"], &env);
    assert!(
        !namespaces["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ns| ns["name"] == "other"),
        "{namespaces}"
    );

    // Deletes by id, by filter, then all.
    cli_json(
        &["vectors", "delete", "--index", "movies", "--ids", "v1"],
        &env,
    );
    let fetched = cli_json(
        &["vectors", "fetch", "--index", "movies", "--ids", "v1"],
        &env,
    );
    assert_eq!(fetched["vectors"], serde_json::json!({}));
    cli_json(
        &[
            "vectors",
            "delete",
            "--index",
            "movies",
            "--filter",
            r#"{"genre":"comedy"}"#,
        ],
        &env,
    );
    assert_eq!(total("movies", &env), 2500 - 1 - 1250);
    cli_json(&["vectors", "delete", "--index", "movies", "--all"], &env);
    assert_eq!(total("movies", &env), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_reported_by_number_and_the_run_resumes_with_skip() {
    let server = Server::start().await;
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    cli_json(&["indexes", "create", "books", "--dimension", "4"], &env);

    let data = records(10, 4);
    let file = dir.path().join("data.jsonl");
    write_jsonl(&file, &data);
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[6] = r#"{"id":"v6","values":[1,2,"x",4]}"#.to_owned();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let path = file.to_str().unwrap();

    let args = upsert_args("books", path, &["--batch", "3"]);
    let (code, _, stderr) = cli(&args, &env);
    assert_ne!(code, 0);
    assert!(stderr.contains("line 7"), "{stderr}");
    assert!(stderr.contains("values[2]"), "{stderr}");
    assert!(stderr.contains("--skip 6"), "{stderr}");
    // Lines 1-6 (two whole batches) are in; nothing of line 7's batch was sent.
    assert_eq!(total("books", &env), 6);

    // Fixed, the run resumes where it stopped.
    write_jsonl(&file, &data);
    let resumed = cli_json(&[&args[..], &["--skip", "6"]].concat(), &env);
    assert_eq!(resumed["upserted_count"], 4);
    assert_eq!(total("books", &env), 10);

    // A record the server refuses (wrong dimension): its message, a non-zero exit, and the
    // records before the refused batch stay in.
    let wrong = dir.path().join("wrong.jsonl");
    std::fs::write(&wrong, "{\"id\":\"w0\",\"values\":[1,2,3]}\n").unwrap();
    let (code, _, stderr) = cli(&upsert_args("books", wrong.to_str().unwrap(), &[]), &env);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("dimension"),
        "{stderr}"
    );
    assert_eq!(total("books", &env), 10);

    // Other formats are refused, saying so, before anything is sent.
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, b"").unwrap();
    let (code, _, stderr) = cli(&upsert_args("books", csv.to_str().unwrap(), &[]), &env);
    assert_ne!(code, 0);
    assert!(stderr.contains(".csv input is not supported"), "{stderr}");
}

/// The generated records as Parquet rows, metadata `{"genre": …}`.
fn parquet_records(data: &[(String, Vec<f32>, String)]) -> Vec<larch_engine::VectorInput> {
    data.iter()
        .map(|(id, values, genre)| larch_engine::VectorInput {
            id: id.clone(),
            values: values.clone(),
            sparse_values: None,
            metadata: serde_json::json!({"genre": genre}).as_object().cloned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_file_or_an_import_layout_directory_is_upserted() {
    use larch_data_plane::import::parquet::write::write_records;
    let server = Server::start().await;
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    cli_json(&["indexes", "create", "pq", "--dimension", "4"], &env);

    // One file, several row groups and batches, into --namespace.
    let data = records(25, 4);
    let file = dir.path().join("data.parquet");
    write_records(&file, &parquet_records(&data), 7).unwrap();
    let path = file.to_str().unwrap();
    let upserted = cli_json(
        &upsert_args("pq", path, &["-n", "one", "--batch", "10"]),
        &env,
    );
    assert_eq!(upserted["upserted_count"], 25);
    let fetched = cli_json(
        &[
            "vectors", "fetch", "--index", "pq", "-n", "one", "--ids", "v13",
        ],
        &env,
    );
    let v13 = &fetched["vectors"]["v13"];
    assert_eq!(v13["metadata"]["genre"], "drama");
    let values: Vec<f32> = serde_json::from_value(v13["values"].clone()).unwrap();
    assert_eq!(values, data[13].1);
    // --skip skips rows.
    let skipped = cli_json(
        &upsert_args("pq", path, &["-n", "skip", "--skip", "20"]),
        &env,
    );
    assert_eq!(skipped["upserted_count"], 5);

    // A bad row stops the run by row, with the --skip that resumes it.
    let mut bad = parquet_records(&data);
    bad[12].metadata = None;
    bad[12].values = vec![1.0, f32::INFINITY, 0.0, 0.0];
    let bad_file = dir.path().join("bad.parquet");
    write_records(&bad_file, &bad, 100).unwrap();
    let (code, _, stderr) = cli(
        &upsert_args(
            "pq",
            bad_file.to_str().unwrap(),
            &["-n", "bad", "--batch", "5", "--in-flight", "1"],
        ),
        &env,
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("row 12") && stderr.contains("values[1]") && stderr.contains("--skip 10"),
        "{stderr}"
    );

    // A directory in Pinecone's import layout: a namespace a sub-directory.
    let layout = dir.path().join("layout");
    for (namespace, range) in [("__default__", 0..10), ("books", 10..25)] {
        std::fs::create_dir_all(layout.join(namespace)).unwrap();
        let half = (range.start + range.end) / 2;
        write_records(
            &layout.join(namespace).join("0.parquet"),
            &parquet_records(&data[range.start..half]),
            100,
        )
        .unwrap();
        write_records(
            &layout.join(namespace).join("1.parquet"),
            &parquet_records(&data[half..range.end]),
            100,
        )
        .unwrap();
    }
    std::fs::write(layout.join("books").join(".log"), b"ignored").unwrap();
    let upserted = cli_json(&upsert_args("pq", layout.to_str().unwrap(), &[]), &env);
    assert_eq!(upserted["upserted_count"], 25, "{upserted}");
    assert_eq!(upserted["namespaces"][""]["upserted_count"], 10);
    assert_eq!(upserted["namespaces"]["books"]["upserted_count"], 15);
    let stats = cli_json(&["vectors", "stats", "--index", "pq"], &env);
    assert_eq!(stats["namespaces"]["books"]["vector_count"], 15, "{stats}");
    assert_eq!(stats["namespaces"][""]["vector_count"], 10, "{stats}");

    // --namespace does not apply to a directory.
    let (code, _, stderr) = cli(
        &upsert_args("pq", layout.to_str().unwrap(), &["-n", "x"]),
        &env,
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("name the namespaces"), "{stderr}");
}

/// `vectors upsert --index <index> --file <file>` followed by `more`.
fn upsert_args<'a>(index: &'a str, file: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    [
        &["vectors", "upsert", "--index", index, "--file", file][..],
        more,
    ]
    .concat()
}

/// A version 1.0 `.npy` file as NumPy writes it: magic, version, header length, the header
/// dict padded with spaces to a newline at a 64-byte boundary, then the data.
fn write_npy(path: &std::path::Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_npy_matrix_is_upserted_with_generated_ids_or_an_ids_file() {
    let server = Server::start().await;
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    cli_json(&["indexes", "create", "emb", "--dimension", "4"], &env);

    let data = records(12, 4);
    let f32s: Vec<u8> = data
        .iter()
        .flat_map(|(_, values, _)| values.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let file = dir.path().join("emb.npy");
    write_npy(&file, "<f4", "(12, 4)", &f32s);
    let path = file.to_str().unwrap();
    let query = |namespace: &str| {
        let vector = serde_json::to_string(&data[7].1).unwrap();
        let answer = cli_json(
            &[
                "vectors", "query", "--index", "emb", "-n", namespace, "--vector", &vector,
                "--top-k", "1",
            ],
            &env,
        );
        answer["matches"][0]["id"].as_str().unwrap().to_owned()
    };

    // Generated ids: the file's stem and "-" by default, in batches, resumable by row.
    let upserted = cli_json(&upsert_args("emb", path, &["--batch", "5"]), &env);
    assert_eq!(upserted["upserted_count"], 12);
    assert_eq!(total("emb", &env), 12);
    assert_eq!(query(""), "emb-7");
    let skipped = cli_json(
        &upsert_args(
            "emb",
            path,
            &["-n", "p", "--id-prefix", "doc", "--skip", "5"],
        ),
        &env,
    );
    assert_eq!(skipped["upserted_count"], 7);
    assert_eq!(query("p"), "doc7");
    let listed = cli_json(&["vectors", "list", "--index", "emb", "-n", "p"], &env);
    let mut listed: Vec<&str> = listed["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        ["doc10", "doc11", "doc5", "doc6", "doc7", "doc8", "doc9"],
        "--skip 5 starts at row 5"
    );

    // Ids from a second file, one a line; float64 is converted.
    let f64s: Vec<u8> = data
        .iter()
        .flat_map(|(_, values, _)| values.iter().flat_map(|&v| f64::from(v).to_le_bytes()))
        .collect();
    let wide = dir.path().join("wide.npy");
    write_npy(&wide, "<f8", "(12, 4)", &f64s);
    let ids = dir.path().join("ids.txt");
    let names: String = (0..12).map(|i| format!("movie-{}\n", i * 10)).collect();
    std::fs::write(&ids, names).unwrap();
    let from_file = cli_json(
        &upsert_args(
            "emb",
            wide.to_str().unwrap(),
            &["-n", "f", "--ids-file", ids.to_str().unwrap()],
        ),
        &env,
    );
    assert_eq!(from_file["upserted_count"], 12);
    assert_eq!(query("f"), "movie-70");
    assert_eq!(total("emb", &env), 12 + 7 + 12);

    // An ids file of the wrong length is refused before anything is sent.
    cli_json(&["indexes", "create", "empty", "--dimension", "4"], &env);
    std::fs::write(&ids, "a\nb\nc\n").unwrap();
    let (code, _, stderr) = cli(
        &upsert_args("empty", path, &["--ids-file", ids.to_str().unwrap()]),
        &env,
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("3 ids") && stderr.contains("12 rows"),
        "{stderr}"
    );
    assert_eq!(total("empty", &env), 0);

    // Arrays of another dtype or shape are refused naming what was found.
    let refused = |descr: &str, shape: &str, data: &[u8]| {
        let bad = dir.path().join("bad.npy");
        write_npy(&bad, descr, shape, data);
        let (code, _, stderr) = cli(&upsert_args("empty", bad.to_str().unwrap(), &[]), &env);
        assert_ne!(code, 0);
        stderr
    };
    let stderr = refused("<i4", "(12, 4)", &f32s);
    assert!(
        stderr.contains("'<i4'") && stderr.contains("'<f4'"),
        "{stderr}"
    );
    let stderr = refused("<f4", "(48,)", &f32s);
    assert!(
        stderr.contains("(48,)") && stderr.contains("2-D"),
        "{stderr}"
    );
    assert_eq!(total("empty", &env), 0);

    // Ids flags belong to .npy input: a JSON Lines record carries its own id.
    let lines = dir.path().join("data.jsonl");
    write_jsonl(&lines, &data);
    let (code, _, stderr) = cli(
        &upsert_args("empty", lines.to_str().unwrap(), &["--id-prefix", "x"]),
        &env,
    );
    assert_ne!(code, 0);
    assert!(stderr.contains(".npy input only"), "{stderr}");
    assert_eq!(total("empty", &env), 0);

    // A row that is not finite stops the run like a bad JSON line: by row, with the --skip
    // that resumes it, and nothing of its batch sent.
    let mut holed = f32s.clone();
    holed[7 * 16 + 8..7 * 16 + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    let hole = dir.path().join("hole.npy");
    write_npy(&hole, "<f4", "(12, 4)", &holed);
    let (code, _, stderr) = cli(
        &upsert_args(
            "empty",
            hole.to_str().unwrap(),
            &["--batch", "5", "--in-flight", "1"],
        ),
        &env,
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("row 7") && stderr.contains("values[2]") && stderr.contains("--skip 5"),
        "{stderr}"
    );
    assert_eq!(total("empty", &env), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_reaches_a_host_routed_split_data_plane_without_dns() {
    use super::split::{KEY, Split};
    let split = Split::start("larch.invalid").await;
    let (control_addr, data_addr, port) = (&split.control_addr, &split.data_addr, &split.data_port);
    let url = format!("http://{control_addr}");
    let env = [("LARCH_ADDR", url.as_str()), ("LARCH_API_KEY", KEY)];

    let created = cli_json(&["indexes", "create", "movies", "--dimension", "2"], &env);
    assert_eq!(
        created["host"],
        format!("movies.default.larch.invalid:{port}")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.jsonl");
    write_jsonl(&file, &records(5, 2));
    let file = file.to_str().unwrap();

    // The host names no machine (.invalid never resolves): dialing it fails, saying where.
    let (code, _, stderr) = cli(&["vectors", "stats", "--index", "movies"], &env);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot reach index movies"), "{stderr}");

    let upserted = cli_json(
        &upsert_args("movies", file, &["--connect-to", data_addr]),
        &env,
    );
    assert_eq!(upserted["upserted_count"], 5);
    let env_to = [
        ("LARCH_ADDR", url.as_str()),
        ("LARCH_API_KEY", KEY),
        ("LARCH_CONNECT_TO", data_addr.as_str()),
    ];
    assert_eq!(total("movies", &env_to), 5);
    let namespaces = cli_json(&["namespaces", "list", "--index", "movies"], &env_to);
    assert_eq!(
        namespaces["namespaces"][0]["record_count"], 5,
        "{namespaces}"
    );
}

/// A key with only data-plane roles may not describe indexes, so `vectors` cannot find the
/// index's host through the control plane; `--host` gives it, and the same key then queries
/// (and is still refused what its role forbids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_viewer_key_queries_when_given_the_host() {
    let server = Server::start().await;
    let env = server.env();
    let created = cli_json(
        &[
            "indexes",
            "create",
            "books",
            "--dimension",
            "2",
            "--metric",
            "cosine",
        ],
        &env,
    );
    let host = created["host"].as_str().expect("a host").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("books.jsonl");
    write_jsonl(&file, &records(5, 2));
    let (code, _, stderr) = cli(&upsert_args("books", file.to_str().unwrap(), &[]), &env);
    assert_eq!(code, 0, "{stderr}");
    // `larch keys` always prints JSON.
    let (code, stdout, stderr) = cli(
        &[
            "keys",
            "create",
            "--name",
            "reader",
            "--role",
            "DataPlaneViewer",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    let reader: Value = serde_json::from_str(&stdout).expect("the created key as JSON");
    let secret = reader["value"]
        .as_str()
        .expect("the key's secret")
        .to_owned();
    let reader_env = [
        ("LARCH_ADDR", server.url.as_str()),
        ("LARCH_API_KEY", secret.as_str()),
    ];
    let query = [
        "vectors", "query", "--index", "books", "--id", "v1", "--top-k", "3",
    ];

    let (code, _, stderr) = cli(&query, &reader_env);
    assert_ne!(code, 0, "describing the index needs a control-plane role");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");

    let with_host = [&query[..], &["--host", &host]].concat();
    let answer = cli_json(&with_host, &reader_env);
    let matches = answer["matches"].as_array().expect("matches");
    assert_eq!(matches.len(), 3, "{answer}");
    assert_eq!(matches[0]["id"], "v1", "{answer}");

    let write = [
        &upsert_args("books", file.to_str().unwrap(), &[])[..],
        &["--host", &host],
    ]
    .concat();
    let (code, _, stderr) = cli(&write, &reader_env);
    assert_ne!(code, 0, "a viewer may not write");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
}

/// Issue 18, item 5: `larch indexes create --vector-type sparse` needs no dimension; a JSON
/// Lines file of sparse records is upserted and queried by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_index_is_created_loaded_and_queried_from_the_command_line() {
    let server = Server::start().await;
    let env = server.env();
    let created = cli_json(
        &["indexes", "create", "splade", "--vector-type", "sparse"],
        &env,
    );
    assert_eq!(created["vector_type"], "sparse");
    assert_eq!(created["metric"], "dotproduct");
    assert!(created["dimension"].is_null(), "{created}");
    let (code, _, stderr) = cli(&["indexes", "create", "dense-without-dimension"], &env);
    assert_ne!(code, 0);
    assert!(stderr.contains("dimension"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sparse.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"id":"a","sparse_values":{"indices":[1,3000000000],"values":[0.5,2.0]}}"#,
            "\n",
            r#"{"id":"b","sparse_values":{"indices":[1],"values":[1.0]}}"#,
            "\n",
            r#"{"id":"c","sparse_values":{"indices":[9],"values":[1.0]}}"#,
            "\n",
        ),
    )
    .unwrap();
    let upserted = cli_json(&upsert_args("splade", file.to_str().unwrap(), &[]), &env);
    assert_eq!(upserted["upserted_count"], 3);
    let answer = cli_json(
        &[
            "vectors", "query", "--index", "splade", "--id", "a", "--top-k", "3",
        ],
        &env,
    );
    let ids: Vec<&str> = answer["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{answer}");
    let by_sparse = cli_json(
        &[
            "vectors",
            "query",
            "--index",
            "splade",
            "--sparse-vector",
            r#"{"indices":[3000000000,9],"values":[1.0,4.0]}"#,
        ],
        &env,
    );
    assert_eq!(by_sparse["matches"][0]["id"], "c", "{by_sparse}");
    assert_eq!(by_sparse["matches"][1]["id"], "a", "{by_sparse}");
    assert_eq!(by_sparse["matches"].as_array().unwrap().len(), 2);
    let (code, _, stderr) = cli(
        &[
            "vectors",
            "query",
            "--index",
            "splade",
            "--sparse-vector",
            r#"{"indices":[-1],"values":[1.0]}"#,
        ],
        &env,
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("--sparse-vector.indices"), "{stderr}");
}
