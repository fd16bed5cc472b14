//! Several data-plane pods over one bucket (issue 17, "Every other pod is a follower"), with
//! the real binary and a real S3-compatible server: the index's preferred writer holds its
//! lease, the other pods follow it — serving reads from the bucket and tailing `wal/`. A write
//! sent to a follower is forwarded to the writer and answered once the follower has applied
//! it. A writer that dies (`kill -9`) or stalls (SIGSTOP past its TTL) is replaced by a
//! follower, and no acknowledged write is lost. Skipped without a server, failing with
//! `LARCH_REQUIRE_S3=1`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larch_proto::pinecone::QueryRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use object_store::ObjectStoreExt;

use super::harness::*;
use super::replicas::create;
use super::s3_data::{held, try_upsert, upsert};
use super::split::{KEY, eventually, start_data_plane_with, via_host};
use super::split_pods::{control_plane_over, logged_writer};

/// A lease TTL short enough for takeovers within a test.
const TTL_SECS: u64 = 2;

/// A control plane over `n` data-plane pods `dp-0`, `dp-1`, … on one bucket, each with an
/// empty data dir of its own, and one index (`host`), all SERVING.
struct Pods {
    test: larch_state::testing::TestBucket,
    _control: Larch,
    control_port: u16,
    planes: Vec<Larch>,
    addrs: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    host: String,
    _control_dir: tempfile::TempDir,
}

/// `larch data-plane` named `dp-<pod>` on the bucket at `url`, listening on `addr`.
fn data_plane(
    url: &str,
    control_port: u16,
    pod: usize,
    addr: &str,
    dir: &std::path::Path,
) -> Larch {
    let name = format!("dp-{pod}");
    let ttl = TTL_SECS.to_string();
    start_data_plane_with(dir, addr, control_port, &pod_env(url, &name, &ttl))
}

/// The settings of data-plane pod `name` on the bucket at `url`: a lease of `ttl` seconds, the
/// log tailed every 100 ms.
pub(super) fn pod_env<'a>(
    url: &'a str,
    name: &'a str,
    ttl: &'a str,
) -> [(&'static str, &'a str); 4] {
    [
        ("LARCH_OBJECT_STORE_URL", url),
        ("LARCH_LEASE_TTL_SECS", ttl),
        ("LARCH_TAIL_INTERVAL_MS", "100"),
        ("LARCH_POD_NAME", name),
    ]
}

/// Waits until every pod of `planes` but one follows the index and every pod routes its host
/// (a route is added after the open is logged); returns a follower.
pub(super) async fn wait_followed(planes: &[Larch]) -> usize {
    let follows = |plane: &Larch| {
        plane
            .stderr()
            .contains("opened the object log as a follower")
    };
    eventually(
        Duration::from_secs(60),
        "every other pod following, every pod serving the index",
        async || {
            let routed = planes
                .iter()
                .all(|plane| plane.stderr().contains("data plane serving index"));
            routed && planes.iter().filter(|plane| follows(plane)).count() == planes.len() - 1
        },
    )
    .await;
    planes
        .iter()
        .position(follows)
        .expect("a follower, as just seen")
}

impl Pods {
    async fn start(name: &str, n: usize) -> Option<Pods> {
        let test = larch_state::testing::s3(name)?;
        let control_port = free_port();
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let planes: Vec<Larch> = dirs
            .iter()
            .enumerate()
            .map(|(pod, dir)| data_plane(&test.url, control_port, pod, "127.0.0.1:0", dir.path()))
            .collect();
        let addrs: Vec<String> = planes
            .iter()
            .map(|plane| plane.logged_addr("larch data plane listening").to_string())
            .collect();
        let control_dir = tempfile::tempdir().unwrap();
        let control = control_plane_over(control_dir.path(), control_port, &addrs);
        let control_addr = control.control_addr().to_string();
        wait_serving(&control_addr, "").await;
        for addr in &addrs {
            wait_serving(addr, "").await;
        }
        let host = create(&control_addr, "movies").await.unwrap().host;
        // Every pod but the writer follows the index before a test starts.
        wait_followed(&planes).await;
        Some(Pods {
            test,
            _control: control,
            control_port,
            planes,
            addrs,
            dirs,
            host,
            _control_dir: control_dir,
        })
    }

    /// Replaces pod `pod` (dead or stopped) with a fresh process with an empty data dir on
    /// the same address, once it is SERVING.
    async fn replace(&mut self, pod: usize) {
        self.dirs[pod] = tempfile::tempdir().unwrap();
        let addr = self.addrs[pod].clone();
        self.planes[pod] = data_plane(
            &self.test.url,
            self.control_port,
            pod,
            &addr,
            self.dirs[pod].path(),
        );
        self.planes[pod].logged_addr("larch data plane listening");
        let started = Instant::now();
        loop {
            if serving(&addr).await {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "dp-{pod} never became SERVING:\n{}",
                    self.planes[pod].stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pod that holds the index's writer lease now, by the lease object in the bucket
    /// (`None` if there is none, or it is released).
    async fn writer(&self) -> Option<usize> {
        let store = &self.test.bucket.store;
        let objects: Vec<_> = {
            use futures_util::TryStreamExt;
            store
                .list(Some(&self.test.bucket.prefix))
                .try_collect()
                .await
                .ok()?
        };
        let lease = objects
            .iter()
            .find(|meta| meta.location.filename() == Some("lease"))?;
        let bytes = store.get(&lease.location).await.ok()?.bytes().await.ok()?;
        let lease: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if lease["released"].as_bool() != Some(false) {
            return None;
        }
        let holder = lease["holder"].as_str()?;
        (0..self.planes.len()).find(|pod| holder.starts_with(&format!("dp-{pod}-")))
    }

    /// The preferred writer the control plane named, as pod 0 logged it.
    fn preferred_writer(&self) -> usize {
        let (writer, _) = logged_writer(&self.planes[0].stderr(), &self.host).expect("logged");
        writer.trim_start_matches("dp-").parse().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_reads_its_own_and_takes_over_from_a_dead_writer() {
    let Some(mut pods) = Pods::start("s3_followers", 2).await else {
        return;
    };
    let (addrs, host) = (pods.addrs.clone(), pods.host.clone());
    let writer = pods.preferred_writer();
    let follower = 1 - writer;
    eventually(
        Duration::from_secs(30),
        "the other pod following the index",
        async || {
            pods.planes[follower]
                .stderr()
                .contains("opened the object log as a follower")
        },
    )
    .await;
    assert_eq!(
        pods.writer().await,
        Some(writer),
        "the preferred writer writes"
    );

    // Sent to the follower: forwarded, and readable there as soon as it is acknowledged.
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let ids = upsert(&addrs[follower], &host, round * 10, 10).await;
        assert_eq!(
            held(&addrs[follower], &host, &ids).await.as_ref(),
            Some(&ids),
            "read-your-writes on the follower, round {round}"
        );
        acknowledged.extend(ids);
    }
    acknowledged.sort();
    assert_eq!(
        held(&addrs[writer], &host, &acknowledged).await.as_ref(),
        Some(&acknowledged),
        "the writer applied them"
    );
    // The next query on the follower sees a write sent to it.
    let ids = upsert(&addrs[follower], &host, 50, 1).await;
    let mut client = VectorServiceClient::new(via_host(&addrs[follower], &host).await);
    let matches = client
        .query(with_key(
            QueryRequest {
                id: ids[0].clone(),
                top_k: 1,
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .expect("query by the id just written")
        .into_inner()
        .matches;
    assert_eq!(matches[0].id, ids[0]);
    acknowledged.extend(ids);
    // Sent to the writer: the follower sees them within its tail interval.
    let direct = upsert(&addrs[writer], &host, 100, 10).await;
    eventually(
        Duration::from_secs(30),
        "the follower tailing the writer's log",
        async || held(&addrs[follower], &host, &direct).await.as_ref() == Some(&direct),
    )
    .await;
    acknowledged.extend(direct);
    acknowledged.sort();

    // The writer dies without releasing its lease: the follower takes the index over once
    // the lease has gone unrenewed for a TTL, and then writes itself.
    pods.planes[writer].kill();
    let survivor = addrs[follower].clone();
    eventually(
        Duration::from_secs(60),
        "the follower taking the index over and acknowledging writes",
        async || try_upsert(&survivor, &host, 200).await.is_ok(),
    )
    .await;
    acknowledged.push("v200".to_owned());
    acknowledged.sort();
    assert_eq!(
        held(&survivor, &host, &acknowledged).await.as_ref(),
        Some(&acknowledged),
        "every acknowledged write, on the pod that took over"
    );
    assert_eq!(pods.writer().await, Some(follower));
    assert!(
        pods.planes[follower]
            .stderr()
            .contains("the index's writer stopped; taking it over"),
        "{}",
        pods.planes[follower].stderr()
    );
    // The dead pod comes back with an empty data dir: it follows the new writer.
    pods.replace(writer).await;
    eventually(
        Duration::from_secs(30),
        "the replaced pod serving every acknowledged write",
        async || held(&addrs[writer], &host, &acknowledged).await.as_ref() == Some(&acknowledged),
    )
    .await;
    assert_eq!(pods.writer().await, Some(follower), "no takeover back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_past_its_ttl_is_replaced_and_acknowledges_nothing_more() {
    let Some(pods) = Pods::start("s3_followers_stopped", 2).await else {
        return;
    };
    let (addrs, host) = (pods.addrs.clone(), pods.host.clone());
    let writer = pods.preferred_writer();
    let other = 1 - writer;
    assert_eq!(pods.writer().await, Some(writer), "exactly one writes");
    let mut acknowledged = upsert(&addrs[other], &host, 0, 20).await;

    // SIGSTOP past the TTL: the other pod takes the index over and writes.
    let pid = pods.planes[writer].pid().to_string();
    signal("-STOP", &pid);
    let mut n = 1_000;
    eventually(
        Duration::from_secs(60),
        "the other pod taking the stopped writer's index over",
        async || {
            n += 1;
            let written =
                tokio::time::timeout(Duration::from_secs(5), try_upsert(&addrs[other], &host, n))
                    .await;
            if matches!(written, Ok(Ok(()))) {
                acknowledged.push(format!("v{n}"));
                true
            } else {
                false
            }
        },
    )
    .await;
    assert_eq!(pods.writer().await, Some(other));
    acknowledged.extend(upsert(&addrs[other], &host, 2_000, 20).await);

    // SIGCONT: the old writer acknowledges nothing on its own any more — a write sent to it
    // is refused or, once it follows the new writer, forwarded there.
    signal("-CONT", &pid);
    for n in 3_000..3_020 {
        let written = tokio::time::timeout(
            Duration::from_secs(15),
            try_upsert(&addrs[writer], &host, n),
        )
        .await;
        if matches!(written, Ok(Ok(()))) {
            acknowledged.push(format!("v{n}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pods.writer().await,
        Some(other),
        "the old writer took nothing back"
    );
    eventually(
        Duration::from_secs(30),
        "the old writer following the new one",
        async || {
            pods.planes[writer]
                .stderr()
                .contains("this process no longer writes the index")
        },
    )
    .await;
    acknowledged.sort();
    for addr in &addrs {
        eventually(
            Duration::from_secs(30),
            "every acknowledged write on both pods",
            async || held(addr, &host, &acknowledged).await.as_ref() == Some(&acknowledged),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_of_three_pods_under_load_loses_no_acknowledged_write() {
    let Some(mut pods) = Pods::start("s3_followers_chaos", 3).await else {
        return;
    };
    let host = pods.host.clone();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let last_ack: Arc<Mutex<Instant>> = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for task in 0..16 {
        let (addrs, host) = (pods.addrs.clone(), host.clone());
        let (acknowledged, last_ack, stop) = (
            Arc::clone(&acknowledged),
            Arc::clone(&last_ack),
            Arc::clone(&stop),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                let addr = &addrs[(task + n) % addrs.len()];
                let id = task * 1_000_000 + n;
                let written =
                    tokio::time::timeout(Duration::from_secs(10), try_upsert(addr, &host, id))
                        .await;
                if matches!(written, Ok(Ok(()))) {
                    acknowledged.lock().unwrap().push(format!("v{id}"));
                    *last_ack.lock().unwrap() = Instant::now();
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // Reads never stop on the pods that are up.
    let alive: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
        (0..pods.planes.len())
            .map(|_| std::sync::atomic::AtomicBool::new(true))
            .collect(),
    );
    let reader = {
        let (addrs, host, alive, stop) = (
            pods.addrs.clone(),
            host.clone(),
            Arc::clone(&alive),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let (mut reads, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for (pod, addr) in addrs.iter().enumerate() {
                    if !alive[pod].load(std::sync::atomic::Ordering::Acquire) {
                        continue;
                    }
                    let read = held(addr, &host, &["v1".to_owned()]).await;
                    // Marked down just now: not a failure of a live pod.
                    if read.is_none() && alive[pod].load(std::sync::atomic::Ordering::Acquire) {
                        // Why, for the failure message: the same read once more.
                        let why = fetch_error(addr, &host).await;
                        failed.push(format!("dp-{pod}: {why}"));
                    }
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (reads, failed)
        })
    };
    let mut resumed_after = Vec::new();
    for round in 0..5u64 {
        // A different moment in each round.
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        let writer = pods.writer().await.expect("a writer");
        alive[writer].store(false, std::sync::atomic::Ordering::Release);
        let killed_at = Instant::now();
        pods.planes[writer].kill();
        let deadline = killed_at + Duration::from_secs(60);
        while *last_ack.lock().unwrap() <= killed_at + Duration::from_secs(TTL_SECS) / 2 {
            if Instant::now() > deadline {
                for (pod, plane) in pods.planes.iter().enumerate() {
                    let stderr = plane.stderr();
                    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
                    eprintln!(
                        "--- dp-{pod} (killed: {})\n{}",
                        pod == writer,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!(
                    "writes did not resume within 60s after round {round}'s kill of dp-{writer}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        resumed_after.push(killed_at.elapsed());
        pods.replace(writer).await;
        alive[writer].store(true, std::sync::atomic::Ordering::Release);
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for writer in writers {
        writer.await.unwrap();
    }
    let (reads, failed) = reader.await.unwrap();
    assert!(reads > 100, "{reads}");
    if !failed.is_empty() {
        for (pod, plane) in pods.planes.iter().enumerate() {
            let stderr = plane.stderr();
            let notable: Vec<&str> = stderr
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .collect();
            eprintln!("--- dp-{pod} warnings and errors:\n{}", notable.join("\n"));
        }
    }
    assert!(
        failed.is_empty(),
        "reads on live pods failed: {failed:?} of {reads}"
    );
    let mut acknowledged = acknowledged.lock().unwrap().clone();
    acknowledged.sort();
    eprintln!(
        "{} acknowledged writes; writes resumed after each kill within {resumed_after:?} (lease TTL {TTL_SECS}s)",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 100, "{}", acknowledged.len());
    // On every pod, and on a process started afresh.
    let fresh = pods.planes.len() - 1;
    assert!(pods.planes[fresh].terminate().success());
    pods.replace(fresh).await;
    for addr in &pods.addrs {
        for chunk in acknowledged.chunks(500) {
            eventually(
                Duration::from_secs(60),
                "every acknowledged write on every pod",
                async || held(addr, &host, chunk).await.as_deref() == Some(chunk),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_writer_show_up_on_a_follower_within_the_tail_interval() {
    let Some(pods) = Pods::start("s3_followers_fresh", 2).await else {
        return;
    };
    let (addrs, host) = (pods.addrs.clone(), pods.host.clone());
    let writer = pods.preferred_writer();
    let follower = 1 - writer;
    let mut lags = Vec::new();
    for n in 0..200 {
        let id = upsert(&addrs[writer], &host, n, 1).await;
        let written = Instant::now();
        eventually(
            Duration::from_secs(30),
            "a write through the writer showing up on the follower",
            async || held(&addrs[follower], &host, &id).await.as_ref() == Some(&id),
        )
        .await;
        lags.push(written.elapsed());
    }
    // Both pods report the same log sequence number once the follower caught up, and the
    // follower how stale it may be.
    let lsn = |pod: usize| {
        let (status, text) = http_get(pods.planes[pod].admin_addr(), "/metrics");
        assert_eq!(status, 200);
        let lsn = text
            .lines()
            .find(|line| line.starts_with("larch_index_lsn{"))
            .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .expect("larch_index_lsn");
        (lsn, text.contains("larch_follower_staleness_seconds{"))
    };
    let (writer_lsn, writer_follows) = lsn(writer);
    let (follower_lsn, follower_follows) = lsn(follower);
    assert!(writer_lsn >= 200, "{writer_lsn}");
    assert_eq!(follower_lsn, writer_lsn);
    assert!(follower_follows && !writer_follows);
    lags.sort();
    eprintln!(
        "visible on the follower after p50 {:?}, p99 {:?}, max {:?} (--tail-interval-ms 100)",
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1]
    );
}

/// Whether the server at `addr` reports SERVING.
async fn serving(addr: &str) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    let status = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    matches!(status, Ok(answer) if answer.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// What a fetch from the data plane at `addr` for the index at `host` fails with now (for a
/// failure message; "no error" if it works this time).
async fn fetch_error(addr: &str, host: &str) -> String {
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.origin(format!("http://{host}").parse().unwrap()))
    {
        Ok(endpoint) => endpoint.connect().await,
        Err(err) => return format!("bad address: {err}"),
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(err) => return format!("cannot connect: {err}"),
    };
    let fetched = VectorServiceClient::new(channel)
        .fetch(with_key(
            larch_proto::pinecone::FetchRequest {
                ids: vec!["v1".to_owned()],
                namespace: String::new(),
            },
            Some(super::split::KEY),
        ))
        .await;
    match fetched {
        Ok(_) => "no error".to_owned(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}
