//! The figures of one row of `larch-bench scale` (one count of data planes), the table that
//! puts the rows side by side, and the same as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::load::BOTTLENECK_SHARE;

/// Follower lag during and after ingest (rows with followers only).
#[derive(Debug, Clone, Copy)]
pub(super) struct Lag {
    /// The largest lag of any follower, in log batches, over the samples taken during ingest.
    pub(super) max: Option<u64>,
    /// The largest follower lag read right after the last upsert was acknowledged.
    pub(super) last_ack: Option<u64>,
    /// The writer's LSN then: how many log batches the ingest made (plus the fence).
    pub(super) writer_lsn: Option<u64>,
    /// Seconds from the last acknowledged upsert until every follower's LSN equalled the
    /// writer's.
    pub(super) catch_up_s: f64,
    /// Sampling rounds during ingest in which every pod's LSN was read.
    pub(super) rounds: u64,
}

/// One pod's share of the query load.
#[derive(Debug, Clone)]
pub(super) struct PodLoad {
    pub(super) name: String,
    pub(super) writer: bool,
    /// Queries it answered during the measured run.
    pub(super) queries: u64,
    pub(super) failed: u64,
    /// Its CPU time (user + system) during the measured run, in seconds.
    pub(super) cpu_s: Option<f64>,
}

/// The store's requests per second while nothing happened.
#[derive(Debug, Clone)]
pub(super) struct IdleS3 {
    /// The window, on the S3 server's own clock.
    pub(super) seconds: f64,
    pub(super) by_kind: BTreeMap<String, f64>,
    pub(super) total: f64,
}

/// Everything measured for one count of data planes.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) data_planes: usize,
    pub(super) ingest_vectors_per_s: f64,
    pub(super) ingest_s: f64,
    pub(super) lag: Option<Lag>,
    /// Seconds from the last acknowledged upsert until every pod held every vector (and,
    /// when the namespace is large enough for a graph, logged it fully indexed).
    pub(super) indexed_s: f64,
    pub(super) queried: Queried,
    /// `None` when the S3 server is not our own (no request counts).
    pub(super) idle_s3: Option<IdleS3>,
}

/// The query load's figures, over every pod.
#[derive(Debug, Clone)]
pub(super) struct Queried {
    pub(super) qps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) queries_ok: u64,
    pub(super) queries_failed: u64,
    /// Failed queries by gRPC status, with the first message of each.
    pub(super) errors: BTreeMap<String, (u64, String)>,
    /// Distinct query vectors answered, and how many of those answers held no match.
    pub(super) answered: usize,
    pub(super) empty_answers: usize,
    /// The load tool's ceiling: health checks per second at the same concurrency.
    pub(super) ceiling_qps: f64,
    pub(super) pods: Vec<PodLoad>,
}

impl PodLoad {
    /// Its CPU milliseconds per query answered (`None` without a CPU time or a query).
    fn cpu_ms_per_query(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.queries > 0)
            .map(|cpu| cpu * 1e3 / self.queries as f64)
    }
}

impl Row {
    /// CPU milliseconds per query of the pods chosen by `which` together.
    fn cpu_ms_per_query(&self, which: impl Fn(&PodLoad) -> bool) -> Option<f64> {
        let pods: Vec<&PodLoad> = self.queried.pods.iter().filter(|p| which(p)).collect();
        let cpu: f64 = pods.iter().map(|p| p.cpu_s).sum::<Option<f64>>()?;
        let queries: u64 = pods.iter().map(|p| p.queries).sum();
        (queries > 0).then(|| cpu * 1e3 / queries as f64)
    }

    pub(super) fn writer_cpu_ms(&self) -> Option<f64> {
        self.cpu_ms_per_query(|p| p.writer)
    }

    pub(super) fn follower_cpu_ms(&self) -> Option<f64> {
        self.cpu_ms_per_query(|p| !p.writer)
    }

    /// QPS as a share of the tool's ceiling (`None` if no health check succeeded).
    fn ceiling_share(&self) -> Option<f64> {
        (self.queried.ceiling_qps > 0.0).then(|| self.queried.qps / self.queried.ceiling_qps)
    }

    /// The lines printed once the row is measured.
    pub(super) fn details(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{} data plane(s): ingest {:.0} vectors/s ({:.2} s) through the writer",
            self.data_planes, self.ingest_vectors_per_s, self.ingest_s
        );
        if let Some(lag) = &self.lag {
            let _ = writeln!(
                s,
                "  follower lag: max {} batches over {} samples, {} at the last ack (the writer \
                 at LSN {}), caught up {:.2} s after it",
                opt(lag.max),
                lag.rounds,
                opt(lag.last_ack),
                opt(lag.writer_lsn),
                lag.catch_up_s
            );
        }
        let _ = writeln!(
            s,
            "  every pod indexed {:.2} s after the last ack",
            self.indexed_s
        );
        let _ = writeln!(
            s,
            "  queries: {} ok, {} failed, {:.0} QPS, p50 {:.3} ms, p99 {:.3} ms; {} distinct \
             queries answered, {} with no match; tool's ceiling {:.0} QPS (health, same load)",
            self.queried.queries_ok,
            self.queried.queries_failed,
            self.queried.qps,
            self.queried.p50_ms,
            self.queried.p99_ms,
            self.queried.answered,
            self.queried.empty_answers,
            self.queried.ceiling_qps
        );
        for (code, (n, message)) in &self.queried.errors {
            let _ = writeln!(s, "    {code}: {n} (first: {message})");
        }
        match self.ceiling_share() {
            Some(share) if share >= BOTTLENECK_SHARE => {
                let _ = writeln!(
                    s,
                    "  {:.0}% of the ceiling: the load tool may be the bottleneck",
                    share * 100.0
                );
            }
            Some(share) => {
                let _ = writeln!(
                    s,
                    "  {:.0}% of the ceiling: the servers, not the tool, set the pace",
                    share * 100.0
                );
            }
            None => {
                let _ = writeln!(s, "  the ceiling's health check never succeeded");
            }
        }
        for pod in &self.queried.pods {
            let _ = writeln!(
                s,
                "  {} ({}): {} queries, {} failed, CPU {} s, {} ms CPU/query",
                pod.name,
                if pod.writer { "writer" } else { "follower" },
                pod.queries,
                pod.failed,
                pod.cpu_s
                    .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
                fixed(pod.cpu_ms_per_query(), 3)
            );
        }
        match &self.idle_s3 {
            Some(idle) => {
                let kinds: Vec<String> = idle
                    .by_kind
                    .iter()
                    .map(|(kind, rate)| format!("{kind} {rate:.2}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "  s3 at idle: {:.2} requests/s over {:.1} s ({})",
                    idle.total,
                    idle.seconds,
                    kinds.join(", ")
                );
            }
            None => {
                let _ = writeln!(s, "  s3 at idle: not counted (not our own server)");
            }
        }
        s
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let pods: Vec<serde_json::Value> = self
            .queried
            .pods
            .iter()
            .map(|pod| {
                serde_json::json!({
                    "pod": pod.name,
                    "writer": pod.writer,
                    "queries": pod.queries,
                    "failed": pod.failed,
                    "cpu_s": pod.cpu_s,
                    "cpu_ms_per_query": pod.cpu_ms_per_query(),
                })
            })
            .collect();
        let errors: serde_json::Map<String, serde_json::Value> = self
            .queried
            .errors
            .iter()
            .map(|(code, (n, message))| {
                (
                    code.clone(),
                    serde_json::json!({ "count": n, "first_message": message }),
                )
            })
            .collect();
        serde_json::json!({
            "data_planes": self.data_planes,
            "ingest_vectors_per_s": self.ingest_vectors_per_s,
            "ingest_s": self.ingest_s,
            "lag_max_batches": self.lag.and_then(|l| l.max),
            "lag_final_batches": self.lag.and_then(|l| l.last_ack),
            "writer_lsn_at_last_ack": self.lag.and_then(|l| l.writer_lsn),
            "lag_samples": self.lag.map(|l| l.rounds),
            "catch_up_s": self.lag.map(|l| l.catch_up_s),
            "indexed_s": self.indexed_s,
            "qps": self.queried.qps,
            "p50_ms": self.queried.p50_ms,
            "p99_ms": self.queried.p99_ms,
            "queries_ok": self.queried.queries_ok,
            "queries_failed": self.queried.queries_failed,
            "errors": errors,
            "distinct_queries_answered": self.queried.answered,
            "empty_answers": self.queried.empty_answers,
            "ceiling_qps": self.queried.ceiling_qps,
            "ratio_to_ceiling": self.ceiling_share(),
            "tool_may_be_bottleneck": self.ceiling_share().map(|x| x >= BOTTLENECK_SHARE),
            "cpu_ms_per_query_writer": self.writer_cpu_ms(),
            "cpu_ms_per_query_followers": self.follower_cpu_ms(),
            "pods": pods,
            "idle_s3": self.idle_s3.as_ref().map(|idle| serde_json::json!({
                "seconds": idle.seconds,
                "requests_per_s": idle.by_kind,
                "total_per_s": idle.total,
            })),
        })
    }
}

/// The table of all rows, with the local-disk baseline's ingest rate below it.
pub(super) fn table(rows: &[Row], baseline_vectors_per_s: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| data planes | ingest vec/s | final lag (batches) | catch-up s | QPS | p50 ms | p99 ms \
         | CPU/query writer (ms) | CPU/query followers (ms) | idle S3 req/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            row.data_planes,
            row.ingest_vectors_per_s,
            row.lag.map_or_else(|| "–".to_owned(), |l| opt(l.last_ack)),
            fixed(row.lag.map(|l| l.catch_up_s), 2),
            row.queried.qps,
            row.queried.p50_ms,
            row.queried.p99_ms,
            fixed(row.writer_cpu_ms(), 3),
            fixed(row.follower_cpu_ms(), 3),
            fixed(row.idle_s3.as_ref().map(|i| i.total), 2),
        );
    }
    let _ = writeln!(
        s,
        "\nlocal-disk `larch serve`, same vectors, batches and writers: {baseline_vectors_per_s:.0} \
         vectors/s ingest"
    );
    s
}

/// `n`, or `?` when it could not be read.
fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// `x` with `digits` decimals, or `–` when there is none.
fn fixed(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, writer: bool, queries: u64, cpu_s: Option<f64>) -> PodLoad {
        PodLoad {
            name: name.to_owned(),
            writer,
            queries,
            failed: 0,
            cpu_s,
        }
    }

    fn row(pods: Vec<PodLoad>) -> Row {
        Row {
            data_planes: pods.len(),
            ingest_vectors_per_s: 1000.0,
            ingest_s: 2.0,
            lag: None,
            indexed_s: 0.5,
            queried: Queried {
                qps: 100.0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                queries_ok: pods.iter().map(|p| p.queries).sum(),
                queries_failed: 0,
                errors: BTreeMap::new(),
                answered: 10,
                empty_answers: 0,
                ceiling_qps: 1000.0,
                pods,
            },
            idle_s3: None,
        }
    }

    #[test]
    fn cpu_per_query_is_the_writers_and_the_followers_together() {
        let row = row(vec![
            pod("dp-0", false, 100, Some(0.2)),
            pod("dp-1", true, 200, Some(0.2)),
            pod("dp-2", false, 300, Some(0.6)),
        ]);
        assert_eq!(row.writer_cpu_ms(), Some(1.0));
        assert_eq!(row.follower_cpu_ms(), Some(2.0));
        // One pod alone: no followers; a pod whose CPU time could not be read: no figure.
        let alone = super::tests::row(vec![pod("dp-0", true, 10, None)]);
        assert_eq!(alone.writer_cpu_ms(), None);
        assert_eq!(alone.follower_cpu_ms(), None);
        let table = table(&[row, alone], 5000.0);
        assert!(table.contains("| 3 | 1000 | – | – | 100 |"), "{table}");
        assert!(table.contains("| 1.000 | 2.000 | – |"), "{table}");
        assert!(table.contains("5000 vectors/s"), "{table}");
    }
}
