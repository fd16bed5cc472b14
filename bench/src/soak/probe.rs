//! Samples of the server process from `/proc` (Linux): resident memory, open file
//! descriptors (a connection leak shows here first), threads, the data directory's size, and
//! CPU time of the server, of the bench itself and of the whole machine (on a shared machine,
//! what else ran explains latency that the server does not).

use std::path::Path;

use super::stats::Sample;

/// Samples `pid` (if known) and `data_dir` (if known); what cannot be read is `None`.
pub(crate) fn sample(pid: Option<u32>, data_dir: Option<&Path>) -> Sample {
    let status = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    let field = |name: &str| status.as_deref().and_then(|s| status_field(s, name));
    Sample {
        rss_kib: field("VmRSS:"),
        fds: pid.and_then(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()
                .map(|dir| dir.count() as u64)
        }),
        threads: field("Threads:"),
        disk_bytes: data_dir.map(dir_bytes),
        server_ticks: pid.and_then(|pid| cpu_ticks(&format!("/proc/{pid}/stat"))),
        bench_ticks: cpu_ticks("/proc/self/stat"),
        host_busy_ticks: host_busy_ticks(),
        at: std::time::Instant::now(),
    }
}

/// User plus system CPU time of a process, in clock ticks, from its `/proc/…/stat`.
pub(crate) fn cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of the whole machine spent not idle, in clock ticks, from `/proc/stat`.
fn host_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some(total - idle)
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux if unknown).
pub(crate) fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// The peak resident memory (`VmHWM`) of `pid`, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "VmHWM:")
}

/// The number of a `/proc/<pid>/status` line such as `VmRSS:   123456 kB`.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes of the files under `dir`. Files vanish while the server runs (flushed logs are
/// deleted), so what cannot be read is skipped.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /metrics` from the admin server at `addr` (Prometheus text). HTTP/1.0, so the body
/// simply runs to the end of the connection.
pub(crate) fn scrape_metrics(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.as_str(), |(_, body)| body)
        .to_owned())
}

/// The sum of every series of metric `name` in Prometheus `text` whose labels contain
/// `labels` (`""`: every series); `None` if there is none.
pub(crate) fn metric_sum(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name && series_labels.contains(labels) {
            *found.get_or_insert(0.0) += number.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

/// The server metrics worth a line in the report: write-ahead-log fsyncs, flushes and
/// compactions (count and mean duration), and the sizes of `index`.
pub(crate) fn metrics_summary(text: &str, index: &str) -> String {
    let value = |name: &str, labels: &str| metric_sum(text, name, labels);
    let timed = |what: &str, name: &str| {
        let count = value(&format!("{name}_count"), "");
        let sum = value(&format!("{name}_sum"), "");
        match (count, sum) {
            (Some(count), Some(sum)) if count > 0.0 => {
                format!("{what} {count:.0} (mean {:.1} ms)", sum / count * 1e3)
            }
            (Some(_), _) => format!("{what} 0"),
            _ => format!("{what} -"),
        }
    };
    let label = format!("index=\"{index}\"");
    let size = |what: &str, name: &str| {
        value(name, &label).map_or_else(
            || format!("{what} -"),
            |bytes| format!("{what} {:.1} MiB", bytes / f64::from(1 << 20)),
        )
    };
    format!(
        "{}, {}, {}; index {index}: {} vectors, {}, {}, {}",
        timed("WAL fsyncs", "larch_wal_fsync_duration_seconds"),
        timed("flushes", "larch_flush_duration_seconds"),
        timed("compactions", "larch_compaction_duration_seconds"),
        value("larch_index_vectors", &label).map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
        size("graphs", "larch_index_graph_bytes"),
        size("segments", "larch_index_segment_bytes"),
        size("active WAL", "larch_index_wal_bytes"),
    )
}

/// One line describing this machine: CPU model and count, memory, kernel.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib =
        status_field(&meminfo, "MemTotal:").map_or(0.0, |kib| kib as f64 / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} × {model}, {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tlarch\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(10240));
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[test]
    fn summarizes_metrics() {
        let text = "# HELP x\n\
            larch_wal_fsync_duration_seconds_sum 2.0\n\
            larch_wal_fsync_duration_seconds_count 1000\n\
            larch_flush_duration_seconds_sum 0.0\n\
            larch_flush_duration_seconds_count 0\n\
            larch_index_vectors{project=\"default\",index=\"soak\"} 31000\n\
            larch_index_vectors{project=\"default\",index=\"other\"} 5\n\
            larch_index_graph_bytes{project=\"default\",index=\"soak\"} 2097152\n";
        assert_eq!(
            metrics_summary(text, "soak"),
            "WAL fsyncs 1000 (mean 2.0 ms), flushes 0, compactions -; index soak: 31000 vectors, \
             graphs 2.0 MiB, segments -, active WAL -"
        );
    }

    #[test]
    fn samples_this_process() {
        let sample = sample(Some(std::process::id()), None);
        assert!(sample.rss_kib.is_some_and(|kib| kib > 0));
        assert!(sample.fds.is_some_and(|fds| fds >= 3));
        assert!(sample.threads.is_some_and(|t| t >= 1));
        assert!(sample.server_ticks.is_some() && sample.bench_ticks.is_some());
        assert!(sample.host_busy_ticks.is_some());
    }
}
