//! Every code through both maps, checked against the README's table.

use super::*;

/// An error of a given class, as any crate's error would be.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Probe {
    code: Code,
    message: String,
    retry_after: Option<Duration>,
}

impl Classified for Probe {
    fn code(&self) -> Code {
        self.code
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

fn probe(code: Code) -> Probe {
    Probe {
        code,
        message: format!("probe of {code}"),
        retry_after: None,
    }
}

/// One row of the README's table.
#[derive(Debug)]
struct Row {
    code: String,
    grpc: String,
    http: u16,
    data_plane: i32,
    control_plane: String,
}

/// The rows of the table in the README section "Errors and status codes".
fn readme_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md beside the workspace");
    let section = readme
        .split("\n## Errors and status codes\n")
        .nth(1)
        .expect("README has a section 'Errors and status codes'");
    let section = section.split("\n## ").next().unwrap_or(section);
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            assert!(cells.len() >= 6, "a row has 6 cells: {line}");
            Row {
                code: unquote(cells[0]),
                grpc: unquote(cells[1]),
                http: unquote(cells[2]).parse().expect("HTTP status is a number"),
                data_plane: unquote(cells[3]).parse().expect("gRPC code is a number"),
                control_plane: unquote(cells[4]),
            }
        })
        .collect()
}

/// `InvalidArgument` → `INVALID_ARGUMENT`, as gRPC names its codes.
fn screaming(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn every_code_maps_as_the_readme_table_says() {
    let rows = readme_rows();
    assert_eq!(
        rows.len(),
        Code::ALL.len(),
        "one README row per code: {rows:?}"
    );
    for code in Code::ALL {
        let name = format!("{code:?}");
        let row = rows
            .iter()
            .find(|row| row.code == name)
            .unwrap_or_else(|| panic!("README has no row for {name}"));
        let err = probe(code);

        let status = grpc_status(&err);
        assert_eq!(screaming(status.code()), row.grpc, "gRPC of {name}");
        assert_eq!(
            status.code() as i32,
            row.data_plane,
            "gRPC number of {name}"
        );

        for dialect in [Dialect::DataPlane, Dialect::ControlPlane] {
            let (http, headers, body) = http_error(dialect, &err);
            assert_eq!(http.as_u16(), row.http, "HTTP of {name} ({dialect:?})");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
            match dialect {
                Dialect::DataPlane => {
                    assert_eq!(body["code"], row.data_plane, "{name}: {body}");
                    assert_eq!(body["details"], serde_json::json!([]), "{body}");
                }
                Dialect::ControlPlane => {
                    assert_eq!(body["error"]["code"], row.control_plane.as_str(), "{body}");
                    assert_eq!(body["status"], row.http, "{body}");
                }
            }
            let message = match dialect {
                Dialect::DataPlane => &body["message"],
                Dialect::ControlPlane => &body["error"]["message"],
            };
            assert_eq!(message.as_str(), Some(status.message()), "{name}");
        }
    }
}

#[test]
fn internal_messages_stay_in_the_log() {
    let err = Probe {
        code: Code::Internal,
        message: "lock poisoned in /secret/path".into(),
        retry_after: None,
    };
    assert_eq!(grpc_status(&err).message(), INTERNAL_MESSAGE);
    let (_, _, body) = http_error(Dialect::ControlPlane, &err);
    let body = String::from_utf8(body).expect("utf-8");
    assert!(!body.contains("secret"), "{body}");
    assert!(body.contains(INTERNAL_MESSAGE), "{body}");
    // Other classes tell the client what went wrong.
    let err = probe(Code::NotFound);
    assert_eq!(grpc_status(&err).message(), "probe of NOT_FOUND");
}

#[test]
fn retry_hints_reach_both_transports() {
    for code in [Code::ResourceExhausted, Code::Unavailable] {
        let err = Probe {
            retry_after: Some(Duration::from_millis(1500)),
            ..probe(code)
        };
        let status = grpc_status(&err);
        assert_eq!(
            status.metadata().get(RETRY_PUSHBACK_HEADER).unwrap(),
            "1500"
        );
        let (_, headers, _) = http_error(Dialect::DataPlane, &err);
        // Whole seconds, rounded up.
        assert_eq!(headers[header::RETRY_AFTER], "2");
    }
    let (_, headers, _) = http_error(Dialect::DataPlane, &probe(Code::ResourceExhausted));
    assert!(headers.get(header::RETRY_AFTER).is_none());
}

#[test]
fn bodies_escape_messages() {
    let body = data_plane_body(tonic::Code::InvalidArgument, "bad \"quote\"\n");
    let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(parsed["message"], "bad \"quote\"\n");
    assert_eq!(
        String::from_utf8(body).expect("utf-8"),
        r#"{"code":3,"message":"bad \"quote\"\n","details":[]}"#
    );
    let body = control_plane_body(StatusCode::NOT_FOUND, "NOT_FOUND", "index 'x' not found");
    assert_eq!(
        String::from_utf8(body).expect("utf-8"),
        r#"{"error":{"code":"NOT_FOUND","message":"index 'x' not found"},"status":404}"#
    );
}

#[test]
fn statuses_of_peers_decode_to_the_code_they_were_sent_for() {
    for code in Code::ALL {
        let sent = grpc_code(code);
        let expected = if code == Code::Forbidden {
            // gRPC has one code for both.
            Code::FailedPrecondition
        } else {
            code
        };
        assert_eq!(code_of_status(sent), expected, "{code}");
    }
}
