//! What the run reads from the processes it measures: each pod's `larch_index_lsn` and
//! `larch_index_vectors` from its admin `/metrics`, the follower lag sampled from them during
//! ingest ([`LagSampler`]), events in a pod's JSON log (its role, the namespace fully indexed),
//! a process's CPU time from `/proc`, and the S3 server's request counts ([`S3Counts`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::soak::probe::{cpu_ticks, metric_sum, scrape_metrics};

/// The value of gauge `name` in Prometheus text (one index per cluster, so one series).
pub(super) fn gauge(metrics: &str, name: &str) -> Option<u64> {
    // LSNs and record counts stay far below 2^53: exact as f64.
    metric_sum(metrics, name, "").map(|value| value as u64)
}

/// The index's LSN on the pod whose admin server is `admin` (`None` if it cannot be read).
pub(super) fn lsn(admin: SocketAddr) -> Option<u64> {
    gauge(&scrape_metrics(admin).ok()?, "larch_index_lsn")
}

/// The records the pod whose admin server is `admin` holds in the index.
pub(super) fn vectors(admin: SocketAddr) -> Option<u64> {
    gauge(&scrape_metrics(admin).ok()?, "larch_index_vectors")
}

/// The lag of each follower in log batches: the writer's LSN minus its own, from LSNs read
/// in the same round (`lsns[writer]` is the writer's; `None` where a read failed).
pub(super) fn lags(lsns: &[Option<u64>], writer: usize) -> Vec<Option<u64>> {
    lsns.iter()
        .enumerate()
        .filter(|(pod, _)| *pod != writer)
        .map(|(_, lsn)| Some(lsns[writer]?.saturating_sub((*lsn)?)))
        .collect()
}

/// Reads every pod's LSN, the writer's last: a follower read before the writer can only look
/// further behind, so a lag from this round is never understated.
pub(super) fn read_lsns(admins: &[SocketAddr], writer: usize) -> Vec<Option<u64>> {
    let mut lsns = vec![None; admins.len()];
    for (pod, admin) in admins.iter().enumerate().filter(|(pod, _)| *pod != writer) {
        lsns[pod] = lsn(*admin);
    }
    lsns[writer] = lsn(admins[writer]);
    lsns
}

/// A thread that reads every pod's LSN every `interval` until stopped, keeping the largest
/// follower lag it saw.
pub(super) struct LagSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Sampled>,
}

/// What a [`LagSampler`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sampled {
    /// Rounds in which every LSN could be read.
    pub(super) rounds: u64,
    /// The largest lag of any follower in any round, in log batches.
    pub(super) max_lag: Option<u64>,
}

impl LagSampler {
    pub(super) fn start(admins: Vec<SocketAddr>, writer: usize, interval: Duration) -> LagSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut sampled = Sampled::default();
            while !flag.load(Ordering::Acquire) {
                let lags = lags(&read_lsns(&admins, writer), writer);
                if lags.iter().all(Option::is_some) {
                    sampled.rounds += 1;
                    let max = lags.into_iter().flatten().max();
                    sampled.max_lag = sampled.max_lag.max(max);
                }
                std::thread::sleep(interval);
            }
            sampled
        });
        LagSampler { stop, thread }
    }

    pub(super) fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the lag sampler does not panic")
    }
}

/// The JSON events of a log (lines that are not JSON are skipped).
fn events(log: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
}

/// Whether the pod's log holds the `data plane serving index` event, and if so whether it
/// named the pod the index's writer (`None` until it is logged).
pub(super) fn logged_writer(log: &str) -> Option<bool> {
    events(log)
        .find(|event| event["message"] == "data plane serving index")
        .map(|event| event["writer"].as_bool() == Some(true))
}

/// Whether the pod's log says it opened the index as a follower.
pub(super) fn logged_follower(log: &str) -> bool {
    events(log).any(|event| event["message"] == "opened the object log as a follower")
}

/// Whether the pod's log says a namespace's graph covers at least `records` records.
pub(super) fn logged_fully_indexed(log: &str, records: u64) -> bool {
    events(log).any(|event| {
        event["message"] == "namespace fully indexed"
            && event["records"].as_u64().is_some_and(|n| n >= records)
    })
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
pub(super) fn cpu(pid: u32) -> Option<u64> {
    cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// One snapshot of the S3 server's `--stats-file`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct S3Counts {
    /// Seconds since the server started, on its own monotonic clock.
    pub(super) uptime_s: f64,
    /// Requests answered so far, by kind (`GET`, `PUT`, `HEAD`, `LIST`, `DELETE`, `POST`).
    pub(super) requests: BTreeMap<String, u64>,
}

impl S3Counts {
    fn read(path: &Path) -> anyhow::Result<S3Counts> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        S3Counts::parse(&text).with_context(|| format!("{}: {text:?}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<S3Counts> {
        let snapshot: serde_json::Value = serde_json::from_str(text)?;
        let uptime_s = snapshot["uptime_s"].as_f64().context("no uptime_s")?;
        let requests = snapshot["requests"]
            .as_object()
            .context("no requests")?
            .iter()
            .map(|(kind, n)| Ok((kind.clone(), n.as_u64().context("a count")?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(S3Counts { uptime_s, requests })
    }

    /// The first snapshot the server writes after this call (it writes one a second), so
    /// that two of them bracket exactly the time between the calls.
    pub(super) async fn next(path: &Path, timeout: Duration) -> anyhow::Result<S3Counts> {
        let deadline = Instant::now() + timeout;
        let seen = S3Counts::read(path)?;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = S3Counts::read(path)?;
            if now.uptime_s > seen.uptime_s {
                return Ok(now);
            }
            if Instant::now() >= deadline {
                bail!("{} was not rewritten within {timeout:?}", path.display());
            }
        }
    }

    /// Requests per second of each kind between `earlier` and `self`, and in total.
    pub(super) fn rates_since(&self, earlier: &S3Counts) -> (BTreeMap<String, f64>, f64) {
        let seconds = (self.uptime_s - earlier.uptime_s).max(1e-9);
        let rates: BTreeMap<String, f64> = self
            .requests
            .iter()
            .map(|(kind, n)| {
                let before = earlier.requests.get(kind).copied().unwrap_or(0);
                (kind.clone(), n.saturating_sub(before) as f64 / seconds)
            })
            .collect();
        let total = rates.values().sum();
        (rates, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_gauge_of_prometheus_text() {
        let text = "# HELP larch_index_lsn The index's log sequence number\n\
                    # TYPE larch_index_lsn gauge\n\
                    larch_index_lsn_other 5\n\
                    larch_index_lsn{project=\"default\",index=\"bench\"} 42\n\
                    larch_index_vectors{project=\"default\",index=\"bench\"} 2000\n";
        assert_eq!(gauge(text, "larch_index_lsn"), Some(42));
        assert_eq!(gauge(text, "larch_index_vectors"), Some(2000));
        assert_eq!(gauge(text, "larch_index_graph_bytes"), None);
    }

    #[test]
    fn lag_is_the_writers_lsn_minus_each_followers() {
        assert_eq!(lags(&[Some(7), Some(10), Some(10)], 1), [Some(3), Some(0)]);
        assert_eq!(lags(&[Some(7), None], 0), [None]);
        assert_eq!(lags(&[None, Some(3)], 0), [None]);
        // A follower read before the writer may not be ahead of it: no negative lag.
        assert_eq!(lags(&[Some(5), Some(6)], 0), [Some(0)]);
        assert!(lags(&[Some(5)], 0).is_empty());
    }

    #[test]
    fn finds_the_pods_role_and_indexing_in_its_log() {
        let log = [
            r#"{"level":"INFO","message":"larch data plane listening","addr":"127.0.0.1:1"}"#,
            "not json",
            r#"{"level":"INFO","message":"data plane serving index","preferred_writer":"dp-1","writer":false}"#,
            r#"{"level":"INFO","message":"opened the object log as a follower","start":0,"applied":3}"#,
            r#"{"level":"INFO","message":"namespace fully indexed","records":1500}"#,
        ]
        .join("\n");
        assert_eq!(logged_writer(&log), Some(false));
        assert_eq!(logged_writer("{}"), None);
        assert!(logged_follower(&log));
        assert!(logged_fully_indexed(&log, 1500));
        assert!(!logged_fully_indexed(&log, 2000));
    }

    #[test]
    fn parses_the_stats_file_of_serve_py() {
        let text = r#"{"uptime_s": 4.5, "total": 5, "requests": {"GET": 1, "PUT": 1, "LIST": 3}}"#;
        let counts = S3Counts::parse(text).unwrap();
        assert_eq!(counts.uptime_s, 4.5);
        assert_eq!(counts.requests["LIST"], 3);
        assert!(S3Counts::parse(r#"{"requests": {}}"#).is_err());
    }

    #[test]
    fn s3_rates_divide_new_requests_by_the_servers_own_time() {
        let counts = |uptime_s: f64, get: u64, put: u64| S3Counts {
            uptime_s,
            requests: [("GET".to_owned(), get), ("PUT".to_owned(), put)].into(),
        };
        let (rates, total) = counts(12.0, 50, 4).rates_since(&counts(10.0, 30, 3));
        assert_eq!(rates["GET"], 10.0);
        assert_eq!(rates["PUT"], 0.5);
        assert_eq!(total, 10.5);
    }
}
