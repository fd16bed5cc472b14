//! The processes of one row: an S3-compatible server ([`S3`]), one `larch control-plane` and
//! N `larch data-plane` pods ([`Cluster`]), all on 127.0.0.1, each writing its output to a
//! file of the work directory. Every child sits in a [`Proc`] guard that kills it when dropped,
//! so a failing run leaves nothing behind; [`Cluster::stop`] and [`S3::stop`] end them with
//! SIGTERM first.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::soak::server::{
    ADMIN_LISTENING, CONTROL_LISTENING, DATA_LISTENING, command, data_plane_command, logged_addr,
    tail, terminate, wait_serving,
};

/// How long a process may take to exit after SIGTERM before it is killed (a data plane's
/// drain is bounded by 20 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process with its log, killed (SIGKILL) when dropped if it still runs.
pub(super) struct Proc {
    /// What it is, for messages (`dp-1`, `control plane`, `s3 server`).
    pub(super) name: String,
    pub(super) child: Child,
    /// Where its stderr goes.
    pub(super) log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the {name} ({command:?})"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `addr` field of the first log line containing `message`, once it is there.
    async fn logged_addr(
        &mut self,
        message: &str,
        deadline: Instant,
    ) -> anyhow::Result<SocketAddr> {
        logged_addr(&self.log, &mut self.child, message, deadline)
            .await
            .with_context(|| format!("{} ({})", self.name, self.log.display()))
    }

    /// Its log so far (empty if it cannot be read).
    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; a warning on stderr unless it exited
    /// cleanly (the figures were measured by then).
    async fn stop(&mut self) {
        match terminate(&mut self.child, STOP_TIMEOUT).await {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("warning: the {} exited with {status}", self.name),
            Err(err) => eprintln!("warning: the {} did not stop cleanly: {err:#}", self.name),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where the pods keep their data: a bucket URL and the `AWS_*` settings that reach it.
pub(super) struct Store {
    /// `s3://bucket/prefix`.
    pub(super) url: String,
    pub(super) env: Vec<(String, String)>,
}

/// The S3-compatible server of one row: our own `tests/s3/serve.py` (with its request counts
/// in `stats`), or an existing endpoint.
pub(super) struct S3 {
    /// The bucket's endpoint, e.g. `http://127.0.0.1:41234`.
    pub(super) endpoint: String,
    pub(super) bucket: String,
    /// The server's `--stats-file` (own server only).
    pub(super) stats: Option<PathBuf>,
    process: Option<Proc>,
}

impl S3 {
    /// Starts `python serve.py` with `bucket` on a free port of 127.0.0.1, its output and
    /// request counts in `dir`, and waits until it accepts.
    pub(super) async fn start(
        python: &Path,
        serve_py: &Path,
        bucket: &str,
        dir: &Path,
        deadline: Instant,
    ) -> anyhow::Result<S3> {
        let port_file = dir.join("s3.port");
        let stats = dir.join("s3-stats.json");
        let log = dir.join("s3.log");
        let output = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut command = Command::new(python);
        command
            .arg(serve_py)
            .args(["--port", "0", "--bucket", bucket])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--stats-file")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let mut process = Proc::spawn("s3 server", command, log)?;
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                break port;
            }
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "the s3 server exited ({status}) before it listened; its log:\n{}",
                    tail(&process.log_text(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the s3 server did not listen in time; its log:\n{}",
                    tail(&process.log_text(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
            stats: Some(stats),
            process: Some(process),
        })
    }

    /// An S3-compatible server that runs already (credentials from the caller's `AWS_*`).
    pub(super) fn existing(endpoint: &str, bucket: &str) -> S3 {
        S3 {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            stats: None,
            process: None,
        }
    }

    /// The bucket under `prefix`, with the settings a `larch` process needs to reach it.
    pub(super) fn store(&self, prefix: &str) -> Store {
        let mut env = vec![("AWS_ENDPOINT_URL".to_owned(), self.endpoint.clone())];
        if self.endpoint.starts_with("http://") {
            env.push(("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()));
        }
        if self.process.is_some() {
            // Our own moto accepts any credentials; it needs some.
            for (name, value) in [
                ("AWS_ACCESS_KEY_ID", "larch-bench"),
                ("AWS_SECRET_ACCESS_KEY", "larch-bench"),
                ("AWS_REGION", "us-east-1"),
            ] {
                env.push((name.to_owned(), value.to_owned()));
            }
        }
        Store {
            url: format!("s3://{}/{prefix}", self.bucket),
            env,
        }
    }

    /// Stops our own server (SIGTERM); an existing one is left alone.
    pub(super) async fn stop(&mut self) {
        if let Some(process) = &mut self.process {
            process.stop().await;
        }
    }
}

/// One data-plane pod.
pub(super) struct Pod {
    pub(super) process: Proc,
    /// Its gRPC address (every index, routed by `:authority`).
    pub(super) addr: SocketAddr,
    /// Its admin server (`/metrics`).
    pub(super) admin: SocketAddr,
}

/// One control plane over `pods`, all on one store.
pub(super) struct Cluster {
    pub(super) pods: Vec<Pod>,
    pub(super) control: SocketAddr,
    control_process: Option<Proc>,
}

impl Cluster {
    /// Starts `n` pods `dp-0`, `dp-1`, … and then the control plane over them (each needs the
    /// other's address: the control plane's port is reserved first), their state in `store`
    /// and their scratch directories and logs in `dir`; returns once all are `SERVING`.
    /// `settings` are more `LARCH_…` variables for the pods.
    pub(super) async fn start(
        bin: &Path,
        n: usize,
        dir: &Path,
        api_key: &str,
        store: &Store,
        settings: &BTreeMap<&str, String>,
        deadline: Instant,
    ) -> anyhow::Result<Cluster> {
        let control_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cluster = Cluster {
            pods: Vec::with_capacity(n),
            control: SocketAddr::from(([127, 0, 0, 1], control_port)),
            control_process: None,
        };
        // From here on `cluster` owns every child: an error below kills them all.
        for pod in 0..n {
            let name = format!("dp-{pod}");
            let log = dir.join(format!("{name}.log"));
            let mut data_plane = data_plane_command(
                bin,
                api_key,
                (&log, &dir.join(format!("{name}.stdout"))),
                control_port,
                &dir.join(&name),
            )?;
            data_plane
                .env("LARCH_OBJECT_STORE_URL", &store.url)
                .env("LARCH_POD_NAME", &name)
                .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(store.env.iter().map(|(k, v)| (k, v)));
            // Dropped (killed) with `cluster` if it never says where it listens.
            let mut process = Proc::spawn(&name, data_plane, log)?;
            let addr = process.logged_addr(DATA_LISTENING, deadline).await?;
            let admin = process.logged_addr(ADMIN_LISTENING, deadline).await?;
            cluster.pods.push(Pod {
                process,
                addr,
                admin,
            });
        }

        let log = dir.join("control.log");
        let mut control = command(bin, api_key, &log, &dir.join("control.stdout"))?;
        control
            .arg("control-plane")
            .args(["--control-addr", &cluster.control.to_string()])
            .args([
                "--host-template",
                &format!(
                    "{{index}}.{{project}}.scale.test:{}",
                    cluster.pods[0].addr.port()
                ),
            ])
            .arg("--data-dir")
            .arg(dir.join("control"))
            .env("LARCH_OBJECT_STORE_URL", &store.url)
            .envs(store.env.iter().map(|(k, v)| (k, v)));
        for (pod, plane) in cluster.pods.iter().enumerate() {
            control.args([
                "--data-plane-url",
                &format!("dp-{pod}=http://{}", plane.addr),
            ]);
        }
        let process = cluster
            .control_process
            .insert(Proc::spawn("control plane", control, log)?);
        process.logged_addr(CONTROL_LISTENING, deadline).await?;
        wait_serving(&cluster.control.to_string(), "", deadline).await?;
        for pod in &cluster.pods {
            wait_serving(&pod.addr.to_string(), "", deadline)
                .await
                .with_context(|| pod.process.name.clone())?;
        }
        Ok(cluster)
    }

    /// Stops the pods (they release their leases), then the control plane.
    pub(super) async fn stop(&mut self) {
        for pod in &mut self.pods {
            pod.process.stop().await;
        }
        if let Some(control) = &mut self.control_process {
            control.stop().await;
        }
    }
}
