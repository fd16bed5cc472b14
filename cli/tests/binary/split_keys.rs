//! Key sync in split mode fails closed, visibly (issue 14, item 4): keys come over in pages (20k
//! of them, one with the largest allow-list allowed), a data plane whose keys got too old stops
//! serving with UNAVAILABLE and says so in readiness, health and a metric, and an admin key
//! rotated in the key files is picked up by the data plane without a restart.

use std::path::Path;
use std::time::Duration;

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::harness::*;
use super::split::{KEY, eventually, query, upsert_a, via_host};

/// Generous: every wait here is for a refresh period (1 s) or a key-age bound (a few seconds).
const BOUND: Duration = Duration::from_secs(60);

/// The two planes of one test, the control plane on a port kept across its restarts.
struct Planes {
    control_dir: tempfile::TempDir,
    _data_dir: tempfile::TempDir,
    control_port: u16,
    control_env: Vec<(String, String)>,
    control: Larch,
    data: Larch,
    data_addr: String,
}

impl Planes {
    /// Starts a data plane with `data_env` and a control plane with `control_env` (both on
    /// top of a 1 s refresh and 2 s internal timeout), then waits until both serve.
    async fn start(control_env: &[(&str, &str)], data_env: &[(&str, &str)]) -> Planes {
        let control_dir = tempfile::tempdir().unwrap();
        Planes::start_in(control_dir, control_env, data_env).await
    }

    async fn start_in(
        control_dir: tempfile::TempDir,
        control_env: &[(&str, &str)],
        data_env: &[(&str, &str)],
    ) -> Planes {
        let data_dir = tempfile::tempdir().unwrap();
        let control_port = free_port();
        let mut env = vec![
            ("LARCH_KEY_REFRESH_SECS", "1"),
            ("LARCH_INTERNAL_TIMEOUT_SECS", "2"),
        ];
        env.extend_from_slice(data_env);
        let data = Larch::spawn(
            &[
                "data-plane",
                "--data-dir",
                data_dir.path().to_str().unwrap(),
                "--data-addr",
                "127.0.0.1:0",
                "--control-plane-url",
                &format!("http://127.0.0.1:{control_port}"),
            ],
            &env,
        );
        let data_addr = data.logged_addr("larch data plane listening").to_string();
        let control_env: Vec<(String, String)> = control_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let control = start_control(control_dir.path(), control_port, &data_addr, &control_env);
        let planes = Planes {
            control_dir,
            _data_dir: data_dir,
            control_port,
            control_env,
            control,
            data,
            data_addr,
        };
        wait_serving(&planes.control_addr(), "").await;
        wait_serving(&planes.data_addr, "").await;
        planes
    }

    fn control_addr(&self) -> String {
        format!("127.0.0.1:{}", self.control_port)
    }

    fn host(&self, index: &str) -> String {
        let port = self.data_addr.rsplit(':').next().unwrap();
        format!("{index}.default.larch.test:{port}")
    }

    fn stop_control(&mut self) {
        assert!(
            self.control.terminate().success(),
            "{}",
            self.control.stderr()
        );
    }

    async fn restart_control(&mut self) {
        self.control = start_control(
            self.control_dir.path(),
            self.control_port,
            &self.data_addr,
            &self.control_env,
        );
        wait_serving(&self.control_addr(), "").await;
    }

    async fn create(&self, name: &str, key: &str) -> Result<(), tonic::Status> {
        IndexServiceClient::new(connect(&self.control_addr()).await)
            .create_index(with_key(
                CreateIndexRequest {
                    name: name.into(),
                    dimension: Some(2),
                    metric: Some("cosine".into()),
                    ..Default::default()
                },
                Some(key),
            ))
            .await
            .map(drop)
    }
}

fn start_control(dir: &Path, port: u16, data_addr: &str, env: &[(String, String)]) -> Larch {
    let data_port = data_addr.rsplit(':').next().unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let larch = Larch::spawn(
        &[
            "control-plane",
            "--data-dir",
            dir.to_str().unwrap(),
            "--control-addr",
            &format!("127.0.0.1:{port}"),
            "--data-plane-url",
            &format!("http://{data_addr}"),
            "--host-template",
            &format!("{{index}}.{{project}}.larch.test:{data_port}"),
            "--internal-timeout-secs",
            "2",
        ],
        &env,
    );
    // Listening once it logs so.
    larch.control_addr();
    larch
}

async fn health(addr: &str) -> i32 {
    HealthClient::new(connect(addr).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_old_keys_make_the_data_plane_refuse_until_the_control_plane_is_back() {
    let mut planes = Planes::start(
        &[("LARCH_API_KEY", KEY)],
        &[("LARCH_API_KEY", KEY), ("LARCH_KEY_MAX_AGE_SECS", "3")],
    )
    .await;
    planes.create("movies", KEY).await.unwrap();
    let host = planes.host("movies");
    upsert_a(
        &mut larch_proto::pinecone::vector_service_client::VectorServiceClient::new(
            via_host(&planes.data_addr, &host).await,
        ),
    )
    .await;
    assert_eq!(query(&planes.data_addr, &host, KEY).await.unwrap(), 1);
    let admin = planes.data.admin_addr();
    assert_eq!(http_get(admin, "/readyz").0, 200);

    // The control plane gone: past the bound, the data plane refuses (UNAVAILABLE, saying
    // why), is not ready, reports NOT_SERVING, and the key age metric shows it.
    planes.stop_control();
    eventually(BOUND, "requests refused with UNAVAILABLE", async || {
        matches!(query(&planes.data_addr, &host, KEY).await, Err(s) if s.code() == Code::Unavailable)
    })
    .await;
    let refused = query(&planes.data_addr, &host, KEY).await.unwrap_err();
    assert!(
        refused.message().contains("--key-max-age-secs 3"),
        "{refused:?}"
    );
    eventually(BOUND, "readiness false", async || {
        http_get(admin, "/readyz").0 == 503
    })
    .await;
    assert_eq!(
        health(&planes.data_addr).await,
        ServingStatus::NotServing as i32
    );
    let (_, metrics) = http_get(admin, "/metrics");
    let age: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("larch_data_plane_key_age_seconds "))
        .unwrap_or_else(|| panic!("no key age in {metrics}"))
        .parse()
        .unwrap();
    assert!(age > 3.0, "{age}");
    assert!(
        planes
            .data
            .stderr()
            .contains("the keys are older than --key-max-age-secs"),
        "{}",
        planes.data.stderr()
    );

    // Back: it serves again.
    planes.restart_control().await;
    eventually(BOUND, "requests served again", async || {
        query(&planes.data_addr, &host, KEY).await.is_ok()
    })
    .await;
    eventually(BOUND, "ready again", async || {
        http_get(admin, "/readyz").0 == 200
    })
    .await;
    assert_eq!(
        health(&planes.data_addr).await,
        ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_an_admin_key_rotated_in_the_key_files_reaches_the_data_plane_without_a_restart() {
    const OLD: &str = "split-mode-admin-key-old";
    const NEW: &str = "split-mode-admin-key-new";
    let files = tempfile::tempdir().unwrap();
    let (control_file, data_file) = (files.path().join("control"), files.path().join("data"));
    std::fs::write(&control_file, format!("{OLD}\n")).unwrap();
    std::fs::write(&data_file, format!("{OLD}\n")).unwrap();
    let mut planes = Planes::start(
        &[("LARCH_API_KEY_FILE", control_file.to_str().unwrap())],
        &[("LARCH_API_KEY_FILE", data_file.to_str().unwrap())],
    )
    .await;
    planes.create("movies", OLD).await.unwrap();
    let host = planes.host("movies");

    // Rotated on the control plane alone (its file, then a restart): the data plane's pulls
    // are refused, and it says so clearly.
    std::fs::write(&control_file, format!("{NEW}\n")).unwrap();
    planes.stop_control();
    planes.restart_control().await;
    eventually(
        BOUND,
        "the data plane saying its key is refused",
        async || {
            planes
                .data
                .stderr()
                .contains("the control plane refused this data plane's admin key")
        },
    )
    .await;

    // The data plane's file updated too (as a mounted Secret is): picked up at the next pull,
    // without a restart; the old key stops working on the data plane, the new one works on
    // both, and the control plane's calls to the data plane work again.
    std::fs::write(&data_file, format!("{NEW}\n")).unwrap();
    eventually(
        BOUND,
        "the new admin key working on the data plane",
        async || query(&planes.data_addr, &host, NEW).await.is_ok(),
    )
    .await;
    let old = query(&planes.data_addr, &host, OLD).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "{old:?}");
    planes.create("books", NEW).await.unwrap();
    assert_eq!(
        query(&planes.data_addr, &planes.host("books"), NEW)
            .await
            .unwrap(),
        0
    );
    assert!(
        planes
            .data
            .stderr()
            .contains("the admin key file changed; calling the control plane with the new key")
    );
    assert!(
        !planes.data.stderr().contains(NEW),
        "the key is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_twenty_thousand_keys_reach_the_data_plane_in_pages() {
    use larch_auth::{ApiKey, Grant, Role, StoredKey};
    // The control plane's state with 20,000 more keys, written as it stores them; the last by
    // id (the last page) may read index "movies" among the most index names a key may list.
    let control_dir = tempfile::tempdir().unwrap();
    {
        let mut first = start_control(
            control_dir.path(),
            0,
            "127.0.0.1:1",
            &[("LARCH_API_KEY".into(), KEY.into())],
        );
        first.terminate();
    }
    let path = control_dir.path().join(larch_auth::admin::ACCESS_FILE);
    let mut access: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut generated: Vec<(ApiKey, StoredKey)> = (0..20_000)
        .map(|_| {
            let key = ApiKey::generate();
            let stored = StoredKey::new(&key, Grant::admin());
            (key, stored)
        })
        .collect();
    generated.sort_by(|a, b| a.1.key_id().cmp(b.1.key_id()));
    let (last, _) = generated.pop().unwrap();
    let mut allowed: Vec<String> = (1..larch_auth::admin::MAX_ALLOWED_INDEXES)
        .map(|i| format!("index-{i:0>39}"))
        .collect();
    allowed.push("movies".into());
    let grant = Grant {
        project_id: Grant::DEFAULT_PROJECT.into(),
        roles: vec![Role::DataPlaneViewer],
        index_names: Some(allowed),
        is_admin: false,
    };
    let keys = access["keys"].as_array_mut().unwrap();
    keys.extend(
        generated
            .iter()
            .map(|(_, stored)| serde_json::to_value(stored).unwrap()),
    );
    keys.push(serde_json::to_value(StoredKey::new(&last, grant)).unwrap());
    std::fs::write(&path, serde_json::to_vec(&access).unwrap()).unwrap();
    assert!(
        std::fs::metadata(&path).unwrap().len() > 4 * 1024 * 1024,
        "more than a default gRPC message holds"
    );

    let planes = Planes::start_in(
        control_dir,
        &[("LARCH_API_KEY", KEY)],
        &[("LARCH_API_KEY", KEY)],
    )
    .await;
    planes.create("movies", KEY).await.unwrap();
    let host = planes.host("movies");
    eventually(
        BOUND,
        "the last key working on the data plane",
        async || query(&planes.data_addr, &host, last.as_str()).await.is_ok(),
    )
    .await;
    // Its allow-list came over whole: another index is refused.
    planes.create("books", KEY).await.unwrap();
    let denied = query(&planes.data_addr, &planes.host("books"), last.as_str())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // One of the first keys works too.
    let first = generated.first().unwrap().0.as_str().to_owned();
    assert_eq!(query(&planes.data_addr, &host, &first).await.unwrap(), 0);
}

#[test]
fn bad_split_bounds_exit_64_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let never_created = dir.path().join("never-created");
    let data_dir = never_created.to_str().unwrap();
    let data_plane = |extra: &[&str]| {
        let mut args = vec![
            "data-plane",
            "--data-dir",
            data_dir,
            "--control-plane-url",
            "http://127.0.0.1:1",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases = [
        (
            data_plane(&["--internal-timeout-secs", "0"]),
            "--internal-timeout-secs",
        ),
        (
            data_plane(&["--key-refresh-secs", "5", "--key-max-age-secs", "5"]),
            "--key-max-age-secs",
        ),
        (
            [
                "control-plane",
                "--data-dir",
                data_dir,
                "--data-plane-url",
                "http://127.0.0.1:1",
                "--host-template",
                "{index}.{project}.larch.test",
                "--internal-timeout-secs",
                "0",
            ]
            .map(str::to_owned)
            .to_vec(),
            "--internal-timeout-secs",
        ),
    ];
    for (args, flag) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut larch = Larch::spawn(&args, &[("LARCH_API_KEY", KEY)]);
        let exit = larch.wait();
        let stderr = larch.stderr();
        assert_eq!(exit.code(), Some(64), "{args:?}; stderr:\n{stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}:\n{stderr}"
        );
    }
    assert!(
        !never_created.exists(),
        "bad configuration touches no data directory"
    );
}
