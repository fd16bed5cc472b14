//! One control plane over TWO data-plane pods (issue 17, "Control plane"), each with its own
//! data dir: an index change goes to both, and a pod that was down when it happened catches
//! up from the control plane at its next pull (before it reports SERVING).

use std::path::Path;
use std::time::Duration;

use larch_proto::control::DeleteIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::DescribeIndexStatsRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::harness::*;
use super::replicas::create;
use super::split::{KEY, eventually, start_data_plane_with, upsert_a, via_host};

/// `larch control-plane` keeping its catalog in `dir`, on `control_port`, over the data-plane
/// pods `dp-0`, `dp-1`, … at `addrs`. Hosts name the first pod's port; routing uses only the
/// host name, so every pod serves them when dialled with that authority.
pub(super) fn control_plane_over(dir: &Path, control_port: u16, addrs: &[String]) -> Larch {
    control_plane_with(dir, control_port, addrs, "http", &[("LARCH_API_KEY", KEY)])
}

/// [`control_plane_over`] reaching the pods with `scheme` (`http` or `https`), with `env`.
pub(super) fn control_plane_with(
    dir: &Path,
    control_port: u16,
    addrs: &[String],
    scheme: &str,
    env: &[(&str, &str)],
) -> Larch {
    let port = addrs[0].rsplit(':').next().unwrap();
    let mut args = vec![
        "control-plane".to_owned(),
        "--data-dir".to_owned(),
        dir.to_str().unwrap().to_owned(),
        "--control-addr".to_owned(),
        format!("127.0.0.1:{control_port}"),
        "--host-template".to_owned(),
        format!("{{index}}.{{project}}.larch.test:{port}"),
    ];
    for (pod, addr) in addrs.iter().enumerate() {
        args.push("--data-plane-url".to_owned());
        args.push(format!("dp-{pod}={scheme}://{addr}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Larch::spawn(&args, env)
}

/// `larch data-plane` named `pod`, keeping its data in `dir`, on `addr`.
fn data_plane(pod: &str, dir: &Path, addr: &str, control_port: u16) -> Larch {
    start_data_plane_with(dir, addr, control_port, &[("LARCH_POD_NAME", pod)])
}

/// [`data_plane`] again on `addr`, once it is SERVING (it has pulled from the control plane).
async fn restart(pod: &str, dir: &Path, addr: &str, control_port: u16) -> Larch {
    let plane = data_plane(pod, dir, addr, control_port);
    let listening = plane.logged_addr("larch data plane listening").to_string();
    assert_eq!(listening, addr);
    wait_serving(addr, "").await;
    plane
}

/// The dimension DescribeIndexStats reports for the index at `host` on the data plane at
/// `addr`.
async fn stats(addr: &str, host: &str) -> Result<u32, tonic::Status> {
    VectorServiceClient::new(via_host(addr, host).await)
        .describe_index_stats(with_key(DescribeIndexStatsRequest::default(), Some(KEY)))
        .await
        .map(|stats| stats.into_inner().dimension.unwrap_or_default())
}

async fn delete(control: &str, name: &str) {
    IndexServiceClient::new(connect(control).await)
        .delete_index(with_key(
            DeleteIndexRequest { name: name.into() },
            Some(KEY),
        ))
        .await
        .unwrap();
}

/// The storage directories of index `name` in a data plane's data dir.
fn stored(dir: &Path, name: &str) -> Vec<String> {
    let indexes = dir.join(larch::embedded::INDEXES_DIR);
    let Ok(entries) = std::fs::read_dir(&indexes) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|file| file == name || file.starts_with(&format!("{name}@")))
        .collect()
}

/// The preferred writer a data plane logged for the index it serves at `host`, and whether it
/// found itself to be that writer.
pub(super) fn logged_writer(stderr: &str, host: &str) -> Option<(String, bool)> {
    let host_name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let field = |line: &str, name: &str| -> Option<String> {
        let (_, after) = line.split_once(&format!(" {name}="))?;
        Some(after.split_whitespace().next()?.to_owned())
    };
    stderr
        .lines()
        .filter(|line| line.contains("data plane serving index") && line.contains(host_name))
        .find_map(|line| {
            let writer = field(line, "preferred_writer")?;
            Some((writer, field(line, "writer")? == "true"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_index_changes_reach_every_data_plane_and_a_missed_one_catches_up() {
    let control_dir = tempfile::tempdir().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let control_port = free_port();
    let mut planes: Vec<Larch> = ["dp-0", "dp-1"]
        .iter()
        .zip(&dirs)
        .map(|(pod, dir)| data_plane(pod, dir.path(), "127.0.0.1:0", control_port))
        .collect();
    let addrs: Vec<String> = planes
        .iter()
        .map(|plane| plane.logged_addr("larch data plane listening").to_string())
        .collect();
    let control = control_plane_over(control_dir.path(), control_port, &addrs);
    let control_addr = control.control_addr().to_string();
    wait_serving(&control_addr, "").await;
    for addr in &addrs {
        wait_serving(addr, "").await;
    }

    // Created: attached on both pods when CreateIndex returns, each naming the same preferred
    // writer, one of the two.
    let movies = create(&control_addr, "movies").await.unwrap().host;
    for addr in &addrs {
        assert_eq!(stats(addr, &movies).await.unwrap(), 2, "{addr}");
    }
    // Each pod was told the same preferred writer, and exactly that pod knows itself as it.
    let writers: Vec<(String, bool)> = planes
        .iter()
        .map(|plane| logged_writer(&plane.stderr(), &movies).expect("logged"))
        .collect();
    assert_eq!(writers[0].0, writers[1].0, "{writers:?}");
    let writer = writers[0].0.as_str();
    assert!(matches!(writer, "dp-0" | "dp-1"), "{writers:?}");
    assert_eq!(writers[0].1, writer == "dp-0", "{writers:?}");
    assert_eq!(writers[1].1, writer == "dp-1", "{writers:?}");
    // Each pod keeps its own copy (until the object log): a write lands on the pod it is sent
    // to.
    upsert_a(&mut VectorServiceClient::new(
        via_host(&addrs[0], &movies).await,
    ))
    .await;

    // Deleted: detached on both, data gone from both.
    delete(&control_addr, "movies").await;
    for (addr, dir) in addrs.iter().zip(&dirs) {
        let err = stats(addr, &movies).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{addr}: {err:?}");
        assert!(stored(dir.path(), "movies").is_empty(), "{addr}");
    }

    // One pod down: a create still succeeds, served by the other at once.
    assert!(planes[1].terminate().success(), "{}", planes[1].stderr());
    let books = create(&control_addr, "books").await.unwrap().host;
    assert_eq!(stats(&addrs[0], &books).await.unwrap(), 2);
    // Back (same address, as behind its headless Service): it serves the index as soon as it
    // is SERVING, having pulled it.
    planes[1] = restart("dp-1", dirs[1].path(), &addrs[1], control_port).await;
    assert_eq!(stats(&addrs[1], &books).await.unwrap(), 2);
    assert_eq!(stored(dirs[1].path(), "books").len(), 1);

    // Down again while the index is deleted: the delete succeeds, and the pod removes the data
    // once it is back.
    assert!(planes[1].terminate().success(), "{}", planes[1].stderr());
    delete(&control_addr, "books").await;
    let err = stats(&addrs[0], &books).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(
        stored(dirs[1].path(), "books").len(),
        1,
        "not removed while down"
    );
    // The other pod's reports do not make the control plane forget the tombstone: it keeps
    // sending it (the pod removes nothing twice, and logs it each time) until every pod has
    // reported it.
    eventually(
        Duration::from_secs(30),
        "the running pod being sent the tombstone again after reporting it",
        async || {
            let removals = planes[0]
                .stderr()
                .lines()
                .filter(|line| line.contains("removed the data of a deleted index"))
                .filter(|line| line.contains("books"))
                .count();
            removals >= 2
        },
    )
    .await;
    planes[1] = restart("dp-1", dirs[1].path(), &addrs[1], control_port).await;
    let err = stats(&addrs[1], &books).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    eventually(
        Duration::from_secs(30),
        "the restarted pod removing the deleted index's data",
        async || stored(dirs[1].path(), "books").is_empty(),
    )
    .await;
    drop(control);
}

/// A starting data plane is not ready while an index the control plane lists cannot be opened
/// (it would answer NOT_FOUND for it): here its description file is moved away. Once the file
/// is back, the next pull opens it and the pod becomes SERVING with the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_not_ready_until_it_serves_every_listed_index() {
    let control_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let control_port = free_port();
    let mut plane = data_plane("dp-0", dir.path(), "127.0.0.1:0", control_port);
    let addr = plane.logged_addr("larch data plane listening").to_string();
    let control = control_plane_over(
        control_dir.path(),
        control_port,
        std::slice::from_ref(&addr),
    );
    let control_addr = control.control_addr().to_string();
    wait_serving(&addr, "").await;
    let movies = create(&control_addr, "movies").await.unwrap().host;
    assert_eq!(stats(&addr, &movies).await.unwrap(), 2);
    assert!(plane.terminate().success());

    let [storage] = stored(dir.path(), "movies").try_into().unwrap();
    let meta = dir
        .path()
        .join(larch::embedded::INDEXES_DIR)
        .join(storage)
        .join("index.meta");
    let aside = meta.with_extension("aside");
    std::fs::rename(&meta, &aside).unwrap();
    let plane = data_plane("dp-0", dir.path(), &addr, control_port);
    plane.logged_addr("larch data plane listening");
    // Several pulls (one a second) fail to open it: never SERVING meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let mut health = HealthClient::new(connect(&addr).await);
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        assert_ne!(
            status.ok(),
            Some(ServingStatus::Serving as i32),
            "SERVING without the listed index:\n{}",
            plane.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        plane.stderr().contains("not ready yet"),
        "{}",
        plane.stderr()
    );
    std::fs::rename(&aside, &meta).unwrap();
    wait_serving(&addr, "").await;
    assert_eq!(stats(&addr, &movies).await.unwrap(), 2);
    drop((plane, control));
}
