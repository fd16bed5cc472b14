//! Log setup of the `larch` binary: `tracing` events on stderr, as text or one JSON object per
//! line.
//!
//! Both formats show the fields of the spans an event happened in, so a line logged while a
//! request is handled names its `request_id` and `rpc` (see [`crate::layer`]): the text format
//! as `request{request_id=… rpc=…}: …`, JSON as the `span` object (the innermost span) and the
//! `spans` list (all of them, outermost first). JSON event fields sit at the top level:
//!
//! ```text
//! {"timestamp":"…","level":"INFO","message":"refused","key_id":"-","code":"UNAUTHENTICATED",…,
//!  "target":"audit","span":{"request_id":"…","rpc":"/VectorService/Query","name":"request"},"spans":[…]}
//! ```

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Sends this process's `tracing` events to stderr in `format`, keeping those `filter` lets
/// through (`tracing` filter syntax, e.g. `info` or `larch=debug,audit=info`; `None` or an
/// invalid filter means `info`). `ansi`: colour text lines (when stderr is a terminal).
///
/// # Errors
///
/// If this process already has a global subscriber.
pub fn init(
    format: LogFormat,
    filter: Option<&str>,
    ansi: bool,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::util::SubscriberInitExt;
    subscriber(format, filter, ansi, std::io::stderr).try_init()
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture the lines).
pub fn subscriber<W>(
    format: LogFormat,
    filter: Option<&str>,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!("yaml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
