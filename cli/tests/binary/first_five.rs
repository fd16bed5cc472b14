//! The README's "First five minutes" (issue 18, item 6), run as written: the JSON Lines file
//! is the section's own heredoc and every `larch` command the test runs must appear verbatim
//! in the section, so the walk-through cannot rot without this test failing.

use serde_json::Value;

use super::harness::*;

/// The README's "First five minutes" section, up to the next `## ` heading.
fn section() -> &'static str {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("\n## First five minutes\n")
        .expect("the README has a \"First five minutes\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3);
    &rest[..end]
}

/// The lines of the section's `cat > movies.jsonl <<'EOF'` heredoc.
fn movies_jsonl(section: &str) -> String {
    let start = section
        .find("cat > movies.jsonl <<'EOF'\n")
        .expect("the section writes movies.jsonl with a heredoc");
    let body = &section[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body.find("\nEOF\n").expect("the heredoc ends with EOF");
    body[..end].to_owned() + "\n"
}

/// `args` as a shell line, single-quoting what the shell would otherwise split or expand.
fn shell_line(args: &[&str]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| {
            if arg.contains(['[', '{', '"', ' ', '*']) {
                format!("'{arg}'")
            } else {
                (*arg).to_owned()
            }
        })
        .collect();
    format!("larch {}", quoted.join(" "))
}

/// `args` to run, after checking the README shows exactly this command; the README's relative
/// `movies.jsonl` becomes `file`, the test's copy.
fn shown<'a>(section: &str, args: &[&'a str], file: &'a str) -> Vec<&'a str> {
    let line = shell_line(args);
    assert!(
        section.contains(&line),
        "the README's \"First five minutes\" no longer shows `{line}`"
    );
    args.iter()
        .map(|arg| if *arg == "movies.jsonl" { file } else { arg })
        .collect()
}

/// Runs a command the README shows (see [`shown`]).
fn run(section: &str, args: &[&str], file: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    cli(&shown(section, args, file), env)
}

/// Like [`run`] for a command that must succeed; `--output json` is added (the README shows
/// the table) and what it printed is parsed.
fn run_json(section: &str, args: &[&str], file: &str, env: &[(&str, &str)]) -> Value {
    cli_json(&shown(section, args, file), env)
}

const CREATE: &[&str] = &[
    "indexes",
    "create",
    "movies",
    "--dimension",
    "4",
    "--metric",
    "cosine",
];
const UPSERT: &[&str] = &[
    "vectors",
    "upsert",
    "--index",
    "movies",
    "--file",
    "movies.jsonl",
];
const QUERY: &[&str] = &[
    "vectors",
    "query",
    "--index",
    "movies",
    "--vector",
    "[0.2,0.1,0.9,0.1]",
    "--top-k",
    "3",
    "--filter",
    r#"{"genre":"drama"}"#,
    "--include-metadata",
];
const KEY: &[&str] = &[
    "keys",
    "create",
    "--name",
    "movies-reader",
    "--role",
    "ProjectViewer",
    "--index",
    "movies",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_first_five_minutes_work_as_written() {
    let section = section();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("movies.jsonl");
    let jsonl = movies_jsonl(section);
    std::fs::write(&file, &jsonl).unwrap();
    let file = file.to_str().unwrap();
    let records = jsonl.lines().count();

    // `larch serve` with no key configured: the bootstrap key is generated and printed.
    assert!(section.contains("larch serve"), "{section}");
    let data_dir = tempfile::tempdir().unwrap();
    let larch = Larch::serve(data_dir.path(), &[]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let admin_key = printed_key(&larch.stderr());
    let url = format!("http://{addr}");
    let admin = [
        ("LARCH_ADDR", url.as_str()),
        ("LARCH_API_KEY", admin_key.as_str()),
    ];

    // The table the README shows for `indexes create`.
    let (code, table, stderr) = run(section, CREATE, file, &admin);
    assert_eq!(code, 0, "{stderr}");
    let row = |name: &str| {
        table
            .lines()
            .find_map(|line| line.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no {name} row: {table}"))
            .to_owned()
    };
    assert_eq!(row("name "), "movies", "{table}");
    assert_eq!(row("dimension "), "4", "{table}");
    assert_eq!(row("metric "), "cosine", "{table}");
    assert_eq!(row("state "), "Ready", "{table}");
    // The README shows this table as printed, but for the port, which differs per run.
    for line in table.lines().filter(|line| !line.starts_with("host ")) {
        assert!(
            section.contains(&format!("\n{line}\n")),
            "the README's table lacks `{line}`"
        );
    }

    let upserted = run_json(section, UPSERT, file, &admin);
    assert_eq!(upserted["upserted_count"], records, "{upserted}");

    // The section's query: the drama closest to Moonlight's own vector is Moonlight.
    let answer = run_json(section, QUERY, file, &admin);
    let matches = answer["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 3, "{answer}");
    assert_eq!(matches[0]["id"], "moonlight", "{answer}");
    for found in matches {
        assert_eq!(found["metadata"]["genre"], "drama", "{answer}");
    }
    let (code, table, stderr) = run(section, QUERY, file, &admin);
    assert_eq!(code, 0, "{stderr}");
    // The README shows these rows in this order; the scores' last digits may vary by CPU.
    let shown: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with("ID  "))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .collect();
    let printed: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(printed.len(), shown.len(), "{table}");
    for (printed, shown) in printed.iter().zip(&shown) {
        let ends = |line: &str| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[0].to_owned(), fields[fields.len() - 1].to_owned())
        };
        assert_eq!(ends(printed), ends(shown), "printed:\n{table}");
    }

    // A read-only key limited to the index: it queries, it may not upsert.
    // `larch keys` always prints JSON (it has no `--output`).
    let (code, stdout, stderr) = run(section, KEY, file, &admin);
    assert_eq!(code, 0, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        created["key"]["roles"],
        serde_json::json!(["ProjectViewer"])
    );
    assert_eq!(created["key"]["index_names"], serde_json::json!(["movies"]));
    let reader_key = created["value"].as_str().unwrap();
    let reader = [("LARCH_ADDR", url.as_str()), ("LARCH_API_KEY", reader_key)];

    let answer = run_json(section, QUERY, file, &reader);
    assert_eq!(answer["matches"][0]["id"], "moonlight", "{answer}");

    let (code, _, stderr) = run(section, UPSERT, file, &reader);
    assert_eq!(
        code, 1,
        "a read-only key upserted, or failed otherwise: {stderr}"
    );
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(stderr.contains("may not write vectors"), "{stderr}");
    // The line the section shows is the one printed (after the log's `larch: ` prefix).
    let refusal = stderr
        .lines()
        .find(|line| line.contains("PermissionDenied"))
        .expect("the refusal line");
    assert!(
        section.contains(refusal.trim()),
        "the section shows the refusal as printed: {refusal}"
    );
    assert!(
        section.contains("PermissionDenied"),
        "the section shows the refusal"
    );
}
