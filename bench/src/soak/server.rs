//! The server under test: a `larch serve` child process on 127.0.0.1 port 0 with a fresh data
//! directory, its stderr and stdout in log files (never interleaved with the report), its
//! addresses read from that log, killed when the guard is dropped so an early exit of the
//! bench never leaves a server behind. With `--split`, a `larch data-plane` and a
//! `larch control-plane` process instead ([`Server::start_split`]).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The log message carrying the bound control-plane address (field `addr`).
pub(crate) const CONTROL_LISTENING: &str = "larch control plane listening";

/// The log message carrying the bound admin address (field `addr`).
pub(crate) const ADMIN_LISTENING: &str = "larch admin listening";

/// The log message carrying a split-mode data plane's bound address (field `addr`).
pub(crate) const DATA_LISTENING: &str = "larch data plane listening";

/// A running `larch serve`. Dropping it kills the process (SIGKILL) if it still runs.
pub(crate) struct Server {
    child: Child,
    /// The control plane, as the log announced it.
    pub(crate) control: SocketAddr,
    /// The admin (metrics) server.
    pub(crate) admin: SocketAddr,
    /// Where the server's stderr goes.
    pub(crate) log: PathBuf,
    /// Its data directory.
    pub(crate) data_dir: PathBuf,
    /// Split mode: the data plane's address (every index, routed by host); `child`, `admin`,
    /// `log` and `data_dir` are the data plane's.
    pub(crate) data_addr: Option<SocketAddr>,
    /// Split mode: the control-plane process and its log.
    control_plane: Option<(Child, PathBuf)>,
}

impl Server {
    /// Starts `bin serve` with its data in `dir/data` and its output in `dir/server.log`
    /// (stderr) and `dir/server.stdout`, then waits until the control plane is `SERVING`.
    /// `wal_flush_mb`: the server's `--wal-flush-mb`.
    pub(crate) async fn start(
        bin: &Path,
        dir: &Path,
        api_key: &str,
        wal_flush_mb: u64,
        timeout: Duration,
    ) -> anyhow::Result<Server> {
        let data_dir = dir.join("data");
        let log = dir.join("server.log");
        let stderr = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let stdout_path = dir.join("server.stdout");
        let stdout = File::create(&stdout_path)
            .with_context(|| format!("create {}", stdout_path.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .args(["--control-addr", "127.0.0.1:0"])
            .args(["--data-ports", "0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            // JSON lines: addresses and warnings are read back without guessing at text.
            .args(["--log-format", "json"])
            .args(["--wal-flush-mb", &wal_flush_mb.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Every inherited `LARCH_…` variable goes, so the caller's shell cannot change the
        // server under test (the key is set explicitly).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LARCH_") {
                command.env_remove(name);
            }
        }
        command
            .env("LARCH_API_KEY", api_key)
            .env("LARCH_LOG", "info")
            .env("NO_COLOR", "1");
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} (build it, or pass --larch-bin)",
                bin.display()
            )
        })?;
        // From here on the guard owns the child: any error below kills it.
        let mut server = Server {
            child,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            data_dir,
            data_addr: None,
            control_plane: None,
        };
        let deadline = Instant::now() + timeout;
        server.control = server.logged_addr(CONTROL_LISTENING, deadline).await?;
        server.admin = server.logged_addr(ADMIN_LISTENING, deadline).await?;
        wait_serving(&server.control.to_string(), "", deadline).await?;
        Ok(server)
    }

    /// Starts split mode: `bin data-plane` (data in `dir/data`, log `dir/server.log`, its pid
    /// and admin address the ones sampled) and `bin control-plane` (state in `dir/control`,
    /// log `dir/control.log`), then waits until both are `SERVING`.
    pub(crate) async fn start_split(
        bin: &Path,
        dir: &Path,
        api_key: &str,
        wal_flush_mb: u64,
        timeout: Duration,
    ) -> anyhow::Result<Server> {
        let deadline = Instant::now() + timeout;
        // Each plane needs the other's URL: reserve the control plane's port first.
        let control_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data_dir = dir.join("data");
        let log = dir.join("server.log");
        let mut data_plane = data_plane_command(
            bin,
            api_key,
            (&log, &dir.join("server.stdout")),
            control_port,
            &data_dir,
        )?;
        data_plane.args(["--wal-flush-mb", &wal_flush_mb.to_string()]);
        let child = data_plane
            .spawn()
            .with_context(|| format!("cannot start {} data-plane", bin.display()))?;
        let mut server = Server {
            child,
            control: SocketAddr::from(([127, 0, 0, 1], control_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            data_dir,
            data_addr: None,
            control_plane: None,
        };
        let data_addr = server.logged_addr(DATA_LISTENING, deadline).await?;
        server.data_addr = Some(data_addr);
        server.admin = server.logged_addr(ADMIN_LISTENING, deadline).await?;
        let control_log = dir.join("control.log");
        let mut control_plane = command(bin, api_key, &control_log, &dir.join("control.stdout"))?;
        control_plane
            .arg("control-plane")
            .args(["--control-addr", &server.control.to_string()])
            .args(["--data-plane-url", &format!("http://{data_addr}")])
            .args([
                "--host-template",
                &format!("{{index}}.{{project}}.soak.test:{}", data_addr.port()),
            ])
            .arg("--data-dir")
            .arg(dir.join("control"));
        let control = control_plane
            .spawn()
            .with_context(|| format!("cannot start {} control-plane", bin.display()))?;
        server.control_plane = Some((control, control_log.clone()));
        let (control, _) = server.control_plane.as_mut().expect("set above");
        logged_addr(&control_log, control, CONTROL_LISTENING, deadline).await?;
        wait_serving(&server.control.to_string(), "", deadline).await?;
        wait_serving(&data_addr.to_string(), "", deadline).await?;
        Ok(server)
    }

    /// Every log the server writes (split mode: the data plane's, then the control plane's).
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        let mut logs = vec![self.log.clone()];
        logs.extend(self.control_plane.as_ref().map(|(_, log)| log.clone()));
        logs
    }

    /// The process id, for `/proc/<pid>/…`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the server (either process, in split mode) has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let control = self.control_plane.as_mut().map(|(child, _)| child);
        std::iter::once(&mut self.child)
            .chain(control)
            .find_map(|child| child.try_wait().ok().flatten())
    }

    /// Polls the log for a line containing `message` and returns its `addr` field.
    async fn logged_addr(
        &mut self,
        message: &str,
        deadline: Instant,
    ) -> anyhow::Result<SocketAddr> {
        logged_addr(&self.log, &mut self.child, message, deadline).await
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; kills it after that. In split
    /// mode the data plane goes first, then the control plane; the first unclean exit is
    /// returned.
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let status = terminate(&mut self.child, timeout).await?;
        if let Some((control, _)) = &mut self.control_plane {
            let control = terminate(control, timeout).await?;
            if status.success() {
                return Ok(control);
            }
        }
        Ok(status)
    }
}

/// Builds `bin` with its stderr in `log`, its stdout in `stdout`, the `LARCH_…` environment
/// cleared but for `api_key`, logging JSON lines, its admin server on any port.
pub(crate) fn command(
    bin: &Path,
    api_key: &str,
    log: &Path,
    stdout: &Path,
) -> anyhow::Result<Command> {
    let stderr = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let stdout = File::create(stdout).with_context(|| format!("create {}", stdout.display()))?;
    let mut command = Command::new(bin);
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARCH_") {
            command.env_remove(name);
        }
    }
    command
        .env("LARCH_API_KEY", api_key)
        .env("LARCH_LOG", "info")
        .env("LARCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LARCH_LOG_FORMAT", "json")
        .env("NO_COLOR", "1");
    Ok(command)
}

/// `bin data-plane` on any port of 127.0.0.1, following the control plane on `control_port`,
/// its data in `data_dir` and its output in `(stderr, stdout)` (otherwise as [`command`]).
pub(crate) fn data_plane_command(
    bin: &Path,
    api_key: &str,
    (log, stdout): (&Path, &Path),
    control_port: u16,
    data_dir: &Path,
) -> anyhow::Result<Command> {
    let mut data_plane = command(bin, api_key, log, stdout)?;
    data_plane
        .arg("data-plane")
        .args(["--data-addr", "127.0.0.1:0"])
        .args([
            "--control-plane-url",
            &format!("http://127.0.0.1:{control_port}"),
        ])
        .arg("--data-dir")
        .arg(data_dir);
    Ok(data_plane)
}

/// Polls `log` (of `child`) for a line containing `message` and returns its `addr` field.
pub(crate) async fn logged_addr(
    log: &Path,
    child: &mut Child,
    message: &str,
    deadline: Instant,
) -> anyhow::Result<SocketAddr> {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(message)) {
            return addr_in(line);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "larch exited ({status}) before logging {message:?}; its log:\n{}",
                tail(&text, 20)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "no {message:?} in the server log in time; its log:\n{}",
                tail(&text, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM to `child` and waits up to `timeout` for the exit; kills it after that.
pub(crate) async fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    // std has no signal API and the workspace forbids unsafe code: use kill(1).
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("run kill -TERM")?;
    if !sent.success() {
        bail!("kill -TERM {} failed: {sent}", child.id());
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!("larch did not exit within {timeout:?} of SIGTERM (killed)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let control = self.control_plane.as_mut().map(|(child, _)| child);
        for child in std::iter::once(&mut self.child).chain(control) {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls gRPC health of `service` at `addr` (no key needed) until `SERVING`.
pub(crate) async fn wait_serving(
    addr: &str,
    service: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    loop {
        let status = match endpoint.connect().await {
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|status| status.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{addr} never became SERVING: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `addr` field of a JSON log line.
fn addr_in(line: &str) -> anyhow::Result<SocketAddr> {
    let event: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line:?}"))?;
    let addr = event["addr"]
        .as_str()
        .with_context(|| format!("no addr in {line:?}"))?;
    addr.parse()
        .with_context(|| format!("addr {addr:?} in {line:?}"))
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the server wrote to its log: counts of warnings, errors and panics, and its distinct
/// events (level, target and message; the fields, e.g. request ids, left out) with counts.
#[derive(Debug, Default)]
pub(crate) struct LogScan {
    pub(crate) lines: usize,
    pub(crate) warnings: usize,
    pub(crate) errors: usize,
    /// Lines that are not JSON events and mention a panic (the panic hook writes plain text).
    pub(crate) panics: usize,
    /// The first 20 distinct events of any level, with how often each occurred: a soak's log
    /// is short (start-up, flushes, indexing, shutdown), so this is most of it.
    pub(crate) events: Vec<(String, usize)>,
}

/// Reads the server log at `path`.
pub(crate) fn scan_log(path: &Path) -> anyhow::Result<LogScan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut scan = LogScan::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        scan.lines += 1;
        let key = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(event) => {
                let level = event["level"].as_str().unwrap_or("?");
                match level {
                    "WARN" => scan.warnings += 1,
                    "ERROR" => scan.errors += 1,
                    _ => {}
                }
                let error = event["error"]
                    .as_str()
                    .map(|e| format!(" (error: {})", shorten(e)))
                    .unwrap_or_default();
                format!(
                    "{level} {}: {}{error}",
                    event["target"].as_str().unwrap_or("?"),
                    event["message"].as_str().unwrap_or("?"),
                )
            }
            Err(_) if line.contains("panicked") => {
                scan.panics += 1;
                format!("PANIC {}", shorten(line))
            }
            Err(_) => format!("TEXT {}", shorten(line)),
        };
        if let Some((_, count)) = scan.events.iter_mut().find(|(k, _)| *k == key) {
            *count += 1;
        } else if scan.events.len() < 20 {
            scan.events.push((key, 1));
        }
    }
    Ok(scan)
}

/// The first 160 characters of `text`.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(160) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_logged_address() {
        let line = r#"{"timestamp":"2026-11-26T10:00:00Z","level":"INFO","message":"larch control plane listening","addr":"127.0.0.1:40123","target":"larch"}"#;
        assert_eq!(
            addr_in(line).unwrap(),
            "127.0.0.1:40123".parse::<SocketAddr>().unwrap()
        );
        assert!(addr_in("no address here").is_err());
        assert!(addr_in(r#"{"message":"x"}"#).is_err());
    }

    #[test]
    fn scans_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let lines = [
            r#"{"level":"INFO","message":"larch control plane listening","addr":"127.0.0.1:1","target":"larch::serve"}"#,
            r#"{"level":"WARN","message":"accept failed","error":"too many open files","target":"larch_observe::listener"}"#,
            r#"{"level":"WARN","message":"accept failed","error":"too many open files","target":"larch_observe::listener"}"#,
            "thread 'larch-indexer' panicked at src/hnsw.rs:1:1:",
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let scan = scan_log(&path).unwrap();
        assert_eq!(
            (scan.lines, scan.warnings, scan.errors, scan.panics),
            (4, 2, 0, 1)
        );
        assert_eq!(
            scan.events[1],
            (
                "WARN larch_observe::listener: accept failed (error: too many open files)"
                    .to_owned(),
                2
            )
        );
        assert_eq!(scan.events.len(), 3);
    }
}
