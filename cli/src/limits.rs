//! The request-limit flags every server command takes, and byte sizes as flags accept them.

use std::time::Duration;

use larch_observe::{LimitSettings, Limits};

/// Request limits of every port a server command opens (see `larch_observe::limits`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LimitArgs {
    /// Largest gRPC request message ("2MiB", "500KB", bytes); larger ones get INVALID_ARGUMENT
    /// after their 5-byte length prefix, before the message is read.
    #[arg(long, env = "LARCH_MAX_REQUEST_BYTES", default_value = "2MiB", value_parser = parse_size)]
    max_request_bytes: u64,
    /// Most requests running at once in the process; more get RESOURCE_EXHAUSTED with a retry
    /// pushback (REST: 429). Health checks are never refused.
    #[arg(long, env = "LARCH_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    max_concurrent_requests: usize,
    /// Most requests of one client address running or waiting for their body at once (over
    /// all ports); more get RESOURCE_EXHAUSTED with a retry pushback (REST: 429). Requests
    /// without a valid key are refused before and never count.
    #[arg(long, env = "LARCH_MAX_REQUESTS_PER_PEER", default_value_t = 256)]
    max_requests_per_peer: usize,
    /// Most concurrent HTTP/2 streams per connection; a client opening more waits.
    #[arg(long, env = "LARCH_MAX_STREAMS_PER_CONNECTION", default_value_t = 128)]
    max_streams_per_connection: u32,
    /// Largest header list (all metadata) of one request.
    #[arg(long, env = "LARCH_MAX_HEADER_BYTES", default_value = "16KiB", value_parser = parse_size)]
    max_header_bytes: u64,
    /// Longest time any request may run ("60s", "2m"; "0" for no server limit); a client's
    /// shorter `grpc-timeout` wins. Past it: DEADLINE_EXCEEDED (REST: 504).
    #[arg(long, env = "LARCH_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    request_timeout: Duration,
    /// Longest wait for a request's first body bytes after its headers ("5s", "500ms"); a
    /// request whose body has not started by then gets DEADLINE_EXCEEDED (REST: 408).
    #[arg(long, env = "LARCH_BODY_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    body_timeout: Duration,
    #[command(flatten)]
    answers: AnswerArgs,
}

impl LimitArgs {
    /// The limits, checked.
    pub(crate) fn limits(&self) -> Result<Limits, String> {
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(format!("--{name}: must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let max_request_bytes = positive("max-request-bytes", self.max_request_bytes)?;
        let max_header_bytes = positive("max-header-bytes", self.max_header_bytes)?;
        positive(
            "max-concurrent-requests",
            self.max_concurrent_requests as u64,
        )?;
        positive("max-requests-per-peer", self.max_requests_per_peer as u64)?;
        if self.body_timeout.is_zero() {
            return Err("--body-timeout: must be above 0".to_owned());
        }
        positive(
            "max-streams-per-connection",
            u64::from(self.max_streams_per_connection),
        )?;
        let settings = LimitSettings {
            max_request_bytes: usize::try_from(max_request_bytes)
                .map_err(|_| "--max-request-bytes: too large".to_owned())?,
            max_concurrent_requests: self.max_concurrent_requests,
            max_requests_per_peer: self.max_requests_per_peer,
            max_streams_per_connection: self.max_streams_per_connection,
            max_header_bytes: u32::try_from(max_header_bytes)
                .map_err(|_| "--max-header-bytes: must be below 4 GiB".to_owned())?,
            request_timeout: Some(self.request_timeout).filter(|timeout| !timeout.is_zero()),
            body_timeout: self.body_timeout,
            ..LimitSettings::default()
        };
        Ok(Limits::new(self.answers.apply(settings)?))
    }
}

/// How large and how many answers a server gives (see `larch_engine::answer` and
/// `larch_observe::keyed`).
#[derive(Debug, Clone, clap::Args)]
struct AnswerArgs {
    /// Largest answer of a query, fetch, fetch by metadata or list ("4MiB", bytes), counted as
    /// it is built; a larger one is refused with INVALID_ARGUMENT saying what to lower
    /// (top_k, values, metadata, ids, limit).
    #[arg(long, env = "LARCH_MAX_RESPONSE_BYTES", default_value = "4MiB", value_parser = parse_size)]
    max_response_bytes: u64,
    /// Most queries (and fetches by metadata) of one API key running or queued at once; more
    /// get RESOURCE_EXHAUSTED with a retry pushback (REST: 429), so one key's slow scans
    /// cannot fill the query pool.
    #[arg(long, env = "LARCH_MAX_QUERIES_PER_KEY", default_value_t = 64)]
    max_queries_per_key: usize,
}

impl AnswerArgs {
    /// `settings` with these limits, checked.
    fn apply(&self, settings: LimitSettings) -> Result<LimitSettings, String> {
        if self.max_response_bytes == 0 {
            return Err("--max-response-bytes: must be at least 1".to_owned());
        }
        if self.max_queries_per_key == 0 {
            return Err("--max-queries-per-key: must be at least 1".to_owned());
        }
        Ok(LimitSettings {
            max_response_bytes: usize::try_from(self.max_response_bytes)
                .map_err(|_| "--max-response-bytes: too large".to_owned())?,
            max_queries_per_key: self.max_queries_per_key,
            ..settings
        })
    }
}

/// The memory budget flag of the commands that hold index data (`serve`, `data-plane`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MemoryArgs {
    /// Refuse writes that add data (RESOURCE_EXHAUSTED with a retry pushback; reads and deletes
    /// go on) once the process's memory would pass this: a size ("6GiB"), "off", or "auto" —
    /// 80% of the container's (cgroup) memory limit, or off without one.
    #[arg(long, env = "LARCH_MEMORY_BUDGET", default_value = "auto", value_parser = parse_budget)]
    memory_budget: Budget,
}

/// A `--memory-budget` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Auto,
    Off,
    Bytes(u64),
}

fn parse_budget(text: &str) -> Result<Budget, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Budget::Auto),
        "off" | "none" => Ok(Budget::Off),
        _ => match parse_size(text)? {
            0 => Err("a memory budget must be above 0 (or \"off\")".to_owned()),
            bytes => Ok(Budget::Bytes(bytes)),
        },
    }
}

/// Share of the cgroup memory limit that `auto` budgets: the rest is for what the budget does
/// not see coming (request buffers, allocator slack, a graph rebuild's second copy).
const AUTO_SHARE: f64 = 0.8;

impl MemoryArgs {
    /// The configured budget in bytes (`auto` resolved against the cgroup), logged.
    pub(crate) fn budget(&self) -> Option<u64> {
        let bytes = match self.memory_budget {
            Budget::Off => None,
            Budget::Bytes(bytes) => Some(bytes),
            Budget::Auto => cgroup_memory_limit().map(|limit| (limit as f64 * AUTO_SHARE) as u64),
        };
        match bytes {
            Some(bytes) => tracing::info!(
                budget_mib = bytes / (1024 * 1024),
                "memory budget on: writes that add data are refused past it"
            ),
            None => tracing::info!("no memory budget (no container memory limit found, or off)"),
        }
        bytes
    }

    /// `engine` with the configured budget, logged.
    pub(crate) fn apply(&self, engine: larch_engine::Engine) -> larch_engine::Engine {
        match self.budget() {
            Some(bytes) => engine.with_memory_budget(bytes),
            None => engine,
        }
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`),
/// if there is one.
fn cgroup_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let value = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    // "max" (v2) or a huge number (v1's page-rounded i64::MAX) mean no limit.
    let bytes: u64 = value.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime and most servers do:
/// every client connection is a file, and the usual soft limit (1024) is far below what a
/// server meets, while the hard limit is what the administrator allows.
pub(crate) fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit")
        }
        Err(err) => {
            tracing::warn!(current = ?limit.current, error = %err, "cannot raise the open-file limit; connections beyond it are refused")
        }
    }
}

/// A byte size: a number with an optional unit — `B`, decimal `KB`/`MB`/`GB`, or binary
/// `KiB`/`MiB`/`GiB` (case-insensitive; `K`/`M`/`G` alone are binary).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB, 2GB or 1048576"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        "g" | "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// A duration such as `60s` or `2m` (humantime), or a bare `0` for none.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|err| format!("{text:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("16kib"), Ok(16 * 1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn answer_limits_parse_with_their_defaults_and_refuse_zero() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let parse = |args: &[&str]| {
            let command: Command =
                clap::Parser::try_parse_from(std::iter::once("larch").chain(args.iter().copied()))
                    .expect("parses");
            command.limits.limits()
        };
        let defaults = LimitSettings::default();
        assert_eq!(defaults.max_response_bytes, 4 * 1024 * 1024);
        assert_eq!(defaults.max_queries_per_key, 64);
        let limits = parse(&[
            "--max-response-bytes",
            "64KiB",
            "--max-queries-per-key",
            "2",
        ])
        .expect("valid");
        assert_eq!(limits.answer_budget().max_bytes(), 64 * 1024);
        assert_eq!(limits.queries().max(), 2);
        assert_eq!(limits.max_encoding_bytes(), 128 * 1024);
        let err = parse(&["--max-response-bytes", "0"]).unwrap_err();
        assert!(err.contains("--max-response-bytes"), "{err}");
        let err = parse(&["--max-queries-per-key", "0"]).unwrap_err();
        assert!(err.contains("--max-queries-per-key"), "{err}");
    }

    #[test]
    fn budgets_parse() {
        assert_eq!(parse_budget("auto"), Ok(Budget::Auto));
        assert_eq!(parse_budget("off"), Ok(Budget::Off));
        assert_eq!(parse_budget("512MiB"), Ok(Budget::Bytes(512 * 1024 * 1024)));
        assert!(parse_budget("0").is_err());
        assert!(parse_budget("plenty").is_err());
    }

    /// The limit flags as the binary parses them, with `args` after the command name.
    fn limit_args(args: &[&str]) -> LimitArgs {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let args = std::iter::once("larch").chain(args.iter().copied());
        <Command as clap::Parser>::try_parse_from(args)
            .expect("flags parse")
            .limits
    }

    #[test]
    fn per_peer_and_body_limits_have_defaults_and_refuse_zero() {
        let limits = limit_args(&[]).limits().expect("the defaults are valid");
        assert_eq!(
            format!("{limits:?}"),
            format!("{:?}", Limits::new(LimitSettings::default()))
        );
        let set = limit_args(&["--max-requests-per-peer", "7", "--body-timeout", "250ms"]);
        assert_eq!(set.max_requests_per_peer, 7);
        assert_eq!(set.body_timeout, Duration::from_millis(250));
        set.limits().expect("valid");
        let zero = limit_args(&["--max-requests-per-peer", "0"]).limits();
        assert!(
            zero.expect_err("refused")
                .contains("--max-requests-per-peer")
        );
        let zero = limit_args(&["--body-timeout", "0"]).limits();
        assert!(zero.expect_err("refused").contains("--body-timeout"));
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert_eq!(parse_timeout("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("soon").is_err());
    }
}
