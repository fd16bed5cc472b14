//! Two data-plane pods over one bucket (issue 17, "Every other pod is a follower"), with the
//! real binary and a real S3-compatible server: the index's preferred writer holds its lease,
//! the other pod follows it — serving reads from the bucket and tailing `wal/`. A write sent to
//! the follower is forwarded to the writer and answered once the follower has applied it, so
//! the client reads it back from the follower at once. After `kill -9` of the writer, the
//! follower takes the index over once the dead lease has gone unrenewed for a TTL, and
//! serves every acknowledged write. Skipped without a server, failing with
//! `LARCH_REQUIRE_S3=1`.

use std::time::Duration;

use super::harness::*;
use super::replicas::create;
use super::s3_data::{held, try_upsert, upsert};
use super::split::{KEY, eventually, start_data_plane_with};
use super::split_pods::logged_writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_reads_its_own_and_takes_over_from_a_dead_writer() {
    let Some(test) = larch_state::testing::s3("s3_followers") else {
        return;
    };
    let pods = ["dp-0", "dp-1"];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let control_dir = tempfile::tempdir().unwrap();
    let control_port = free_port();
    let env = |pod: &'static str| {
        [
            ("LARCH_OBJECT_STORE_URL", test.url.clone()),
            ("LARCH_LEASE_TTL_SECS", "2".to_owned()),
            ("LARCH_TAIL_INTERVAL_MS", "50".to_owned()),
            ("LARCH_POD_NAME", pod.to_owned()),
        ]
    };
    let mut planes: Vec<Larch> = pods
        .iter()
        .zip(&dirs)
        .map(|(pod, dir)| {
            let env = env(pod);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_data_plane_with(dir.path(), "127.0.0.1:0", control_port, &env)
        })
        .collect();
    let addrs: Vec<String> = planes
        .iter()
        .map(|plane| plane.logged_addr("larch data plane listening").to_string())
        .collect();
    let port = addrs[0].rsplit(':').next().unwrap().to_owned();
    let control = Larch::spawn(
        &[
            "control-plane",
            "--data-dir",
            control_dir.path().to_str().unwrap(),
            "--control-addr",
            &format!("127.0.0.1:{control_port}"),
            "--data-plane-url",
            &format!("dp-0=http://{}", addrs[0]),
            "--data-plane-url",
            &format!("dp-1=http://{}", addrs[1]),
            "--host-template",
            &format!("{{index}}.{{project}}.larch.test:{port}"),
        ],
        &[("LARCH_API_KEY", KEY)],
    );
    let control_addr = control.control_addr().to_string();
    wait_serving(&control_addr, "").await;
    for addr in &addrs {
        wait_serving(addr, "").await;
    }
    let host = create(&control_addr, "movies").await.unwrap().host;
    let (writer_pod, _) = logged_writer(&planes[0].stderr(), &host).expect("logged");
    let writer = usize::from(writer_pod == "dp-1");
    let follower = 1 - writer;
    eventually(
        Duration::from_secs(30),
        "the other pod following the index",
        async || {
            planes[follower]
                .stderr()
                .contains("opened the object log as a follower")
        },
    )
    .await;

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
    assert!(
        planes[follower]
            .stderr()
            .contains("opened the object log as a follower"),
        "{}",
        planes[follower].stderr()
    );
    acknowledged.sort();
    assert_eq!(
        held(&addrs[writer], &host, &acknowledged).await.as_ref(),
        Some(&acknowledged),
        "the writer applied them"
    );
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
    planes[writer].kill();
    let survivor = addrs[follower].clone();
    let mut taken_over = Vec::new();
    eventually(
        Duration::from_secs(60),
        "the follower taking the index over and acknowledging writes",
        async || {
            let attempt =
                tokio::time::timeout(Duration::from_secs(10), try_upsert(&survivor, &host, 200))
                    .await;
            match attempt {
                Ok(Ok(())) => {
                    taken_over.push("v200".to_owned());
                    true
                }
                _ => false,
            }
        },
    )
    .await;
    acknowledged.extend(taken_over);
    acknowledged.sort();
    assert_eq!(
        held(&survivor, &host, &acknowledged).await.as_ref(),
        Some(&acknowledged),
        "every acknowledged write, on the pod that took over"
    );
    assert!(
        planes[follower]
            .stderr()
            .contains("the index's writer stopped; taking it over"),
        "{}",
        planes[follower].stderr()
    );
    drop(control);
}
