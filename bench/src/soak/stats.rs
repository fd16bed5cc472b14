//! What happened: latencies per operation, errors by gRPC status, backpressure, consistency
//! violations and the churn client's connections, collected in windows of one report interval.
//!
//! Clients record into the current [`Window`] of a shared [`Recorder`]; the reporter takes it
//! every interval, prints one row and keeps it for the summary (raw latencies included, a few
//! MB for a 10-minute run, so percentiles over any span are exact).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::{Code, Status};

/// How many error and violation messages are printed as they happen (all are counted).
const PRINTED_MESSAGES: usize = 20;

/// The operations of the load clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Upsert,
    Query,
    FilteredQuery,
    Fetch,
    Update,
    Delete,
}

impl Op {
    pub(crate) const ALL: [Op; 6] = [
        Op::Upsert,
        Op::Query,
        Op::FilteredQuery,
        Op::Fetch,
        Op::Update,
        Op::Delete,
    ];

    /// The name used in `--mix` and in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Query => "query",
            Op::FilteredQuery => "filtered-query",
            Op::Fetch => "fetch",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    /// A column heading of at most 6 characters.
    fn short(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Query => "query",
            Op::FilteredQuery => "q+filt",
            Op::Fetch => "fetch",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the churn client did with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChurnMode {
    /// TCP connect, then reset at once.
    Reset,
    /// TCP connect, part of the HTTP/2 preface, then reset.
    Preface,
    /// A full HTTP/2 handshake, then reset without a request.
    Handshake,
    /// A request, reset before or while its response arrives.
    Request,
}

impl ChurnMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChurnMode::Reset => "reset after connect",
            ChurnMode::Preface => "reset mid-preface",
            ChurnMode::Handshake => "reset after handshake",
            ChurnMode::Request => "reset during a request",
        }
    }
}

/// How one churn attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChurnEnd {
    /// Dropped as planned (for requests: before the answer arrived).
    Dropped,
    /// The answer arrived before the planned drop.
    Answered,
    /// An error status the churn client caused itself (CANCELLED, UNAVAILABLE, UNKNOWN).
    SelfCaused(&'static str),
}

/// Everything recorded during one interval.
#[derive(Debug, Default, Clone)]
pub(crate) struct Window {
    /// Microseconds of each successful call (the attempt that succeeded), per [`Op`].
    pub(crate) latencies: [Vec<u32>; 6],
    /// Unexpected errors by (operation or `churn`, status code).
    pub(crate) errors: BTreeMap<(&'static str, &'static str), u64>,
    /// `RESOURCE_EXHAUSTED` answers with a retry pushback, per operation.
    pub(crate) backpressure: BTreeMap<&'static str, u64>,
    /// Total time spent honouring pushbacks.
    pub(crate) pushback: Duration,
    /// Answers that contradict the expected state.
    pub(crate) violations: u64,
    /// Churn attempts by mode and ending.
    pub(crate) churn: BTreeMap<(ChurnMode, ChurnEnd), u64>,
}

impl Window {
    /// Successful calls.
    pub(crate) fn ops(&self) -> usize {
        self.latencies.iter().map(Vec::len).sum()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn backpressure_count(&self) -> u64 {
        self.backpressure.values().sum()
    }

    pub(crate) fn churn_count(&self) -> u64 {
        self.churn.values().sum()
    }

    /// Adds `other` into this window.
    pub(crate) fn absorb(&mut self, other: &Window) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.extend_from_slice(theirs);
        }
        for (key, n) in &other.errors {
            *self.errors.entry(*key).or_default() += n;
        }
        for (key, n) in &other.backpressure {
            *self.backpressure.entry(key).or_default() += n;
        }
        self.pushback += other.pushback;
        self.violations += other.violations;
        for (key, n) in &other.churn {
            *self.churn.entry(*key).or_default() += n;
        }
    }

    /// Every latency of every operation, sorted.
    pub(crate) fn all_sorted(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.latencies.iter().flatten().copied().collect();
        all.sort_unstable();
        all
    }

    /// The latencies of `op`, sorted.
    pub(crate) fn sorted(&self, op: Op) -> Vec<u32> {
        let mut lat = self.latencies[op.index()].clone();
        lat.sort_unstable();
        lat
    }

    /// `CODE×n (op n, op n)` for each status code, or `None` without errors.
    pub(crate) fn errors_line(&self) -> Option<String> {
        let mut by_code: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for ((label, code), n) in &self.errors {
            by_code.entry(code).or_default().push((label, *n));
        }
        (!by_code.is_empty()).then(|| {
            by_code
                .iter()
                .map(|(code, labels)| {
                    let total: u64 = labels.iter().map(|(_, n)| n).sum();
                    let parts: Vec<String> =
                        labels.iter().map(|(l, n)| format!("{l} {n}")).collect();
                    format!("{code}×{total} ({})", parts.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// The shared sink of every client.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    window: Mutex<Window>,
    printed: AtomicUsize,
}

impl Recorder {
    fn with<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        // A poisoned lock only means another client panicked mid-record; the counts stay usable.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut window)
    }

    /// A successful call of `op` that took `latency`.
    pub(crate) fn ok(&self, op: Op, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.with(|w| w.latencies[op.index()].push(micros));
    }

    /// A `RESOURCE_EXHAUSTED` answer with a pushback of `wait`, which the client honours.
    pub(crate) fn backpressure(&self, label: &'static str, wait: Duration) {
        self.with(|w| {
            *w.backpressure.entry(label).or_default() += 1;
            w.pushback += wait;
        });
    }

    /// An unexpected error of `label` (an operation's name, or `churn`).
    pub(crate) fn error(&self, label: &'static str, status: &Status) {
        self.with(|w| {
            *w.errors
                .entry((label, code_name(status.code())))
                .or_default() += 1
        });
        self.print(format!(
            "! error: {label}: {} {:?}",
            code_name(status.code()),
            status.message()
        ));
    }

    /// An unexpected failure that is not a status (e.g. the churn client cannot connect).
    pub(crate) fn failure(&self, label: &'static str, what: &'static str, message: String) {
        self.with(|w| *w.errors.entry((label, what)).or_default() += 1);
        self.print(format!("! error: {label}: {what} {message}"));
    }

    /// An answer of `op` that contradicts the expected state.
    pub(crate) fn violation(&self, op: Op, message: String) {
        self.with(|w| w.violations += 1);
        self.print(format!("! violation: {}: {message}", op.name()));
    }

    /// One churn attempt.
    pub(crate) fn churn(&self, mode: ChurnMode, end: ChurnEnd) {
        self.with(|w| *w.churn.entry((mode, end)).or_default() += 1);
    }

    /// Hands over the current window and starts a new one.
    pub(crate) fn take(&self) -> Window {
        self.with(std::mem::take)
    }

    fn print(&self, line: String) {
        let n = self.printed.fetch_add(1, Ordering::Relaxed);
        if n < PRINTED_MESSAGES {
            println!("{line}");
        } else if n == PRINTED_MESSAGES {
            println!("! (further errors and violations are counted, not printed)");
        }
    }
}

/// The `q` quantile (0..=1) of sorted microseconds, in milliseconds.
pub(crate) fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(f64::from(sorted[index]) / 1000.0)
}

/// Milliseconds with two decimals, or `-`.
pub(crate) fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// What the reporter samples from the server process each interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) rss_kib: Option<u64>,
    pub(crate) fds: Option<u64>,
    pub(crate) threads: Option<u64>,
    pub(crate) disk_bytes: Option<u64>,
    /// CPU time (user + system) of the server, of this bench, and of the whole machine.
    pub(crate) server_ticks: Option<u64>,
    pub(crate) bench_ticks: Option<u64>,
    pub(crate) host_busy_ticks: Option<u64>,
    pub(crate) at: Instant,
}

/// CPU use between two samples, in percent of one core: (server, bench, everything else).
pub(crate) fn cpu(prev: &Sample, now: &Sample, ticks_per_sec: u64) -> [Option<f64>; 3] {
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-9);
    let pct = |a: Option<u64>, b: Option<u64>| {
        Some(b?.saturating_sub(a?) as f64 / ticks_per_sec as f64 / secs * 100.0)
    };
    let server = pct(prev.server_ticks, now.server_ticks);
    let bench = pct(prev.bench_ticks, now.bench_ticks);
    let host = pct(prev.host_busy_ticks, now.host_busy_ticks);
    let other = host.map(|h| (h - server.unwrap_or(0.0) - bench.unwrap_or(0.0)).max(0.0));
    [server, bench, other]
}

/// The table's heading.
pub(crate) fn heading() -> String {
    let ops: Vec<String> = Op::ALL
        .iter()
        .map(|op| format!("{:>6}", op.short()))
        .collect();
    let line = format!(
        "{:>5} {:>6} {:>6} {:>7} | {} | {:>5} {:>4} | {:>7} {:>4} {:>3} {:>8} | {:>4} {:>5} {:>5} | {:>5}",
        "t (s)",
        "ops/s",
        "p50 ms",
        "p99 ms",
        ops.join(" "),
        "bkpr",
        "err",
        "RSS MiB",
        "fds",
        "thr",
        "disk MiB",
        "srv",
        "bench",
        "other",
        "churn"
    );
    // Labels over the column groups (the segments between ` | `).
    let labels = ["", "p99 ms by operation", "", "", "CPU %", ""];
    let over: Vec<String> = line
        .split(" | ")
        .zip(labels)
        .map(|(segment, label)| {
            let width = segment.chars().count();
            if label.is_empty() {
                " ".repeat(width)
            } else {
                format!("{:-^width$}", format!(" {label} "))
            }
        })
        .collect();
    format!(
        "{}\n{line}\n{}",
        over.join("   ").trim_end(),
        "-".repeat(line.chars().count())
    )
}

/// One table row for `window`, which ended `end` after the load started and lasted `span`;
/// `sample` was taken at its end, `prev` at its start.
pub(crate) fn row(
    end: Duration,
    span: Duration,
    window: &Window,
    sample: &Sample,
    prev: &Sample,
    ticks_per_sec: u64,
) -> String {
    let all = window.all_sorted();
    let per_op: Vec<String> = Op::ALL
        .iter()
        .map(|op| format!("{:>6}", ms(quantile_ms(&window.sorted(*op), 0.99))))
        .collect();
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let [server, bench, other] = cpu(prev, sample, ticks_per_sec);
    let mut line = format!(
        "{:>5.0} {:>6.0} {:>6} {:>7} | {} | {:>5} {:>4} | {:>7} {:>4} {:>3} {:>8} | {:>4} {:>5} {:>5} | {:>5}",
        end.as_secs_f64(),
        window.ops() as f64 / span.as_secs_f64().max(1e-9),
        ms(quantile_ms(&all, 0.50)),
        ms(quantile_ms(&all, 0.99)),
        per_op.join(" "),
        window.backpressure_count(),
        window.error_count() + window.violations,
        sample
            .rss_kib
            .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        opt(sample.fds),
        opt(sample.threads),
        sample.disk_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.1}", b as f64 / (1 << 20) as f64)
        ),
        pct(server),
        pct(bench),
        pct(other),
        window.churn_count(),
    );
    if let Some(errors) = window.errors_line() {
        line.push_str(&format!("\n{:>5}   errors: {errors}", ""));
    }
    if window.violations > 0 {
        line.push_str(&format!("\n{:>5}   violations: {}", "", window.violations));
    }
    line
}

/// The canonical name of a gRPC status code (`UNAVAILABLE`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&sorted, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&sorted, 1.0), Some(100.0));
        assert_eq!(quantile_ms(&[7000], 0.99), Some(7.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }

    #[test]
    fn windows_add_up_and_name_their_errors() {
        let recorder = Recorder::default();
        recorder.ok(Op::Fetch, Duration::from_millis(2));
        recorder.error("upsert", &Status::unavailable("x"));
        recorder.error("fetch", &Status::unavailable("y"));
        let mut total = recorder.take();
        assert_eq!(recorder.take().ops(), 0, "take starts a new window");
        total.absorb(&total.clone());
        assert_eq!(total.ops(), 2);
        assert_eq!(total.error_count(), 4);
        assert_eq!(
            total.errors_line().as_deref(),
            Some("UNAVAILABLE×4 (fetch 2, upsert 2)")
        );
    }
}
