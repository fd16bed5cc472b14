//! Running the real `larch` binary in tests: a [`Larch`] guard per child process (killed if a
//! test fails), its control address read from the log, and small gRPC helpers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use larch_proto::control::ListIndexesRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long the binary may take to start, and to exit after SIGTERM.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The message of the log line that carries the bound control-plane address.
pub(crate) const LISTENING: &str = "larch control plane listening";

/// The message of the log line that carries the bound admin address.
pub(crate) const ADMIN_LISTENING: &str = "larch admin listening";

/// Removes every inherited `LARCH_…` variable from `command`, so the caller's environment
/// cannot change what a test sees (a prefix, not a list: a flag added later is covered too).
pub(crate) fn clear_larch_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARCH_") {
            command.env_remove(name);
        }
    }
}

/// Runs `larch <args>` to completion with a clean environment plus `env`; returns the exit
/// code, stdout and stderr.
pub(crate) fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
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

/// Runs `larch <args> --output json`, which must succeed, and parses what it printed.
pub(crate) fn cli_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let (code, stdout, stderr) = cli(&args, env);
    assert_eq!(code, 0, "larch {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// A port of 127.0.0.1 that was free a moment ago, for a process that must be named before it
/// starts (the data plane needs the control plane's URL and the other way round).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `larch` process. Dropping it kills the process if it is still running, so a
/// failing test never leaves a server behind.
pub(crate) struct Larch {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

/// Copies `pipe` into `all`, line by line, also sending each line to `lines`.
pub(crate) fn read_lines(
    pipe: impl Read + Send + 'static,
    all: Arc<Mutex<String>>,
    lines: Option<std::sync::mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            {
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
            if let Some(lines) = &lines {
                // The test may have stopped listening; the text is still kept in `all`.
                let _ = lines.send(line);
            }
        }
    })
}

/// Removes ANSI colour sequences (`ESC [ … letter`), in case the log is coloured anyway.
pub(crate) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Larch {
    /// Starts `larch <args>` with a clean `LARCH_…` environment plus `env`.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Larch {
        let mut command = Command::new(env!("CARGO_BIN_EXE_larch"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clear_larch_env(&mut command);
        // Any free admin port: tests run servers side by side, and 9090 may be taken.
        command
            .env("NO_COLOR", "1")
            .env("LARCH_LOG", "info")
            .env("LARCH_ADMIN_ADDR", "127.0.0.1:0");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the larch binary starts");
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let (send, stderr_lines) = channel();
        let readers = vec![
            read_lines(child.stdout.take().unwrap(), Arc::clone(&stdout), None),
            read_lines(
                child.stderr.take().unwrap(),
                Arc::clone(&stderr),
                Some(send),
            ),
        ];
        Larch {
            child,
            stdout,
            stderr,
            stderr_lines,
            readers,
        }
    }

    /// Starts `larch serve` on 127.0.0.1 port 0 with ephemeral data-plane ports.
    pub(crate) fn serve(data_dir: &Path, env: &[(&str, &str)]) -> Larch {
        let data_dir = data_dir.to_str().expect("a UTF-8 temp path");
        Larch::spawn(
            &[
                "serve",
                "--control-addr",
                "127.0.0.1:0",
                "--data-ports",
                "0",
                "--data-dir",
                data_dir,
            ],
            env,
        )
    }

    /// The process id, e.g. to read its memory use from `/proc`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `larch control plane listening addr=…` log line and returns the address.
    pub(crate) fn control_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(LISTENING) => return addr_in(&line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {LISTENING:?} log line within {TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("larch exited before listening; stderr:\n{}", self.stderr())
                }
            }
        }
    }

    /// Waits for the `larch admin listening addr=…` log line (logged before the control
    /// plane's) and returns the address. Reads the whole log, so it works after
    /// [`Larch::control_addr`] has consumed the line.
    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.logged_addr(ADMIN_LISTENING)
    }

    /// Waits for a log line containing `message` and returns its `addr` field (e.g. `larch data
    /// plane listening`). Reads the whole log, like [`Larch::admin_addr`].
    pub(crate) fn logged_addr(&self, message: &str) -> SocketAddr {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self.stderr().lines().find(|line| line.contains(message)) {
                return addr_in(line);
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line within {TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to [`TIMEOUT`] for the process to exit on its own, then collects its output.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "larch did not exit within {TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close with the process; wait until everything it wrote has been read.
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        status
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed: {sent}");
        self.wait()
    }
}

impl Drop for Larch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `addr` field of a log line: `addr=…` in text, `"addr":"…"` in JSON.
#[track_caller]
pub(crate) fn addr_in(line: &str) -> SocketAddr {
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .or_else(|| {
            let (_, rest) = line.split_once(r#""addr":""#)?;
            rest.split('"').next()
        })
        .unwrap_or_else(|| panic!("no addr in {line:?}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("addr {addr:?} in {line:?}: {e}"))
}

/// `GET path` over HTTP/1.1 (the admin port); returns the status code and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

pub(crate) async fn connect(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Polls gRPC health of `service` (no API key) until SERVING; panics after [`TIMEOUT`].
pub(crate) async fn wait_serving(addr: &str, service: &str) {
    let mut health = HealthClient::new(connect(addr).await);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} {service:?} never became SERVING: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `message` with `api-key: key` metadata (none for `None`).
pub(crate) fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("api-key", key.parse().unwrap());
    }
    request
}

pub(crate) async fn list_indexes(
    addr: &str,
    key: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    let mut control = IndexServiceClient::new(connect(addr).await);
    let listed = control
        .list_indexes(with_key(ListIndexesRequest {}, key))
        .await?;
    Ok(listed
        .into_inner()
        .indexes
        .into_iter()
        .map(|m| m.name)
        .collect())
}

/// The generated key in what `larch serve` printed on stderr, checking its shape: exactly one
/// `larch_<12 hex>_<64 hex>` token, on the line after the banner and in no log line.
#[track_caller]
pub(crate) fn printed_key(stderr: &str) -> String {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let is_key = |token: &str| {
        let parts: Vec<&str> = token.split('_').collect();
        parts.len() == 3 && parts[0] == "larch" && hex(parts[1], 12) && hex(parts[2], 64)
    };
    let keys: Vec<&str> = stderr.split_whitespace().filter(|t| is_key(t)).collect();
    assert_eq!(keys.len(), 1, "exactly one key printed: {stderr:?}");
    let key = keys[0];
    for line in stderr.lines().filter(|line| line.contains(key)) {
        assert_eq!(
            line.trim(),
            key,
            "the key stands alone on its line, not in a log event"
        );
    }
    assert!(stderr.contains(GENERATED), "the banner explains the key");
    key.to_owned()
}

/// The banner `larch serve` prints before a generated key.
pub(crate) const GENERATED: &str = "Generated the bootstrap API key";

/// The ids of `ids` that `data` holds in the default namespace, sorted (fetched with `key`).
pub(crate) async fn fetch_ids(
    data: &mut larch_proto::pinecone::vector_service_client::VectorServiceClient<Channel>,
    ids: &[String],
    key: &str,
) -> Vec<String> {
    let mut found: Vec<String> = data
        .fetch(with_key(
            larch_proto::pinecone::FetchRequest {
                ids: ids.to_vec(),
                namespace: String::new(),
            },
            Some(key),
        ))
        .await
        .unwrap()
        .into_inner()
        .vectors
        .into_keys()
        .collect();
    found.sort();
    found
}
