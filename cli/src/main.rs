//! `larch`: the one binary of Larch.
//!
//! `larch serve` runs the control plane and the data plane in one process with embedded
//! defaults (data in `./larch-data`, control plane on `127.0.0.1:5080`, one data-plane port
//! per index from `5081-5199`). Every flag has a `LARCH_…` environment twin; the bootstrap
//! API key comes only from `LARCH_API_KEY` (so it never shows in a process list).
//!
//! `larch indexes …` manages indexes through the running control plane; `larch vectors …` and
//! `larch namespaces …` manage their records through each index's data plane (its host found
//! by describing the index). The key comes from `LARCH_API_KEY` or `LARCH_API_KEY_FILE`.
//!
//! `larch keys …` and `larch projects …` administer API keys and projects through the
//! running control plane, with the admin key from `LARCH_API_KEY` or `LARCH_API_KEY_FILE`.
//!
//! # Layout
//! - `main`: argument parsing, logging (`LARCH_LOG`, and `--log-format` of `serve`), exit
//!   codes (bad configuration, or a data dir it must not start on, exits 64), and the API key from the environment.
//! - [`serve`]: the flags of `larch serve` turned into a [`larch::embedded::Config`], run until
//!   SIGINT/SIGTERM; the wiring of catalog, data plane, control plane and drain is the
//!   library's [`larch::embedded`] (which the integration tests run too).
//! - [`split`]: `larch control-plane` and `larch data-plane` (split mode).
//! - [`admin`]: the `keys` and `projects` commands (gRPC clients of the admin API), and the
//!   `--addr` connection every client command shares.
//! - [`indexes`]: `larch indexes …` (the control plane's `IndexService`).
//! - [`vectors`]: `larch vectors …` (an index's `VectorService`, found by describing the
//!   index; JSON Lines and .npy upserts in batches with progress; `.npy` headers in [`npy`]).
//! - [`namespaces`]: `larch namespaces …` (the same data-plane client).
//! - [`output`]: `--output table|json`, tables, the API key and failed calls of the client
//!   commands.

mod admin;
mod indexes;
mod limits;
mod namespaces;
mod npy;
mod output;
mod serve;
mod split;
mod vectors;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the C library's malloc: it hands memory freed by flushes and
/// compactions back to the OS, so a long-running server's resident set (which the memory
/// budget counts) follows its live data (see `Cargo.toml` and bench/soak/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a usage or configuration error (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// Larch: a self-hostable vector database that speaks Pinecone's API.
#[derive(Debug, Parser)]
#[command(name = "larch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane and the data plane in one process (embedded defaults).
    Serve(serve::ServeArgs),
    /// Run only the control plane (split mode): catalog, keys and projects; indexes are served
    /// by the `larch data-plane` pods at --data-plane-url.
    ControlPlane(split::ControlPlaneArgs),
    /// Run only the data plane (split mode): every index on one address, routed by host,
    /// following the control plane at --control-plane-url.
    DataPlane(split::DataPlaneArgs),
    /// Create, list, describe, configure and delete indexes.
    Indexes {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(flatten)]
        output: output::OutputArgs,
        #[command(subcommand)]
        command: indexes::IndexesCommand,
    },
    /// Upsert a file, query, fetch, delete, list and count an index's records.
    Vectors {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(flatten)]
        route: vectors::Route,
        #[command(flatten)]
        output: output::OutputArgs,
        #[command(subcommand)]
        command: vectors::VectorsCommand,
    },
    /// List, describe and delete an index's namespaces.
    Namespaces {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(flatten)]
        route: vectors::Route,
        #[command(flatten)]
        output: output::OutputArgs,
        #[command(subcommand)]
        command: namespaces::NamespacesCommand,
    },
    /// Create, list, describe, update and revoke API keys (needs the admin key).
    Keys {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Create, list, describe and delete projects (needs the admin key).
    Projects {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::ProjectsCommand,
    },
}

/// The API key configured in the environment: `LARCH_API_KEY`, or the contents of the file
/// named by `LARCH_API_KEY_FILE` (e.g. a mounted Kubernetes Secret; a trailing newline is not
/// part of the key). Read only here, so library crates never touch the environment.
pub(crate) fn configured_api_key() -> Result<Option<String>, String> {
    let var = |name: &str| match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    };
    match (var("LARCH_API_KEY")?, var("LARCH_API_KEY_FILE")?) {
        (Some(_), Some(_)) => Err("set LARCH_API_KEY or LARCH_API_KEY_FILE, not both".into()),
        (Some(key), None) => Ok(Some(key)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|err| format!("LARCH_API_KEY_FILE: cannot read {path}: {err}"))?;
            let key = text.trim_end_matches(['\n', '\r']);
            if key.is_empty() {
                return Err(format!("LARCH_API_KEY_FILE: {path} is empty"));
            }
            Ok(Some(key.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

fn print_json(value: serde_json::Value) {
    // A Value always serializes.
    println!("{value:#}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EX_USAGE } else { 0 };
            // Printing help or a usage error is all we can do if stderr is closed.
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format(),
        Command::ControlPlane(args) => args.log_format(),
        Command::DataPlane(args) => args.log_format(),
        Command::Keys { .. }
        | Command::Projects { .. }
        | Command::Indexes { .. }
        | Command::Vectors { .. }
        | Command::Namespaces { .. } => larch_observe::LogFormat::Text,
    };
    // Nothing else sets a subscriber in this process.
    let _ = larch_observe::logging::init(
        log_format,
        std::env::var("LARCH_LOG").ok().as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    if matches!(
        cli.command,
        Command::Serve(_) | Command::ControlPlane(_) | Command::DataPlane(_)
    ) {
        limits::raise_open_files_limit();
    }
    let result = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(config) => serve::run(config),
            Err(message) => {
                eprintln!("larch: invalid configuration: {message}");
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::ControlPlane(args) => match args.into_config() {
            Ok(config) => split::run_control_plane(config),
            Err(message) => {
                eprintln!("larch: invalid configuration: {message}");
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::DataPlane(args) => match args.into_config() {
            Ok(config) => split::run_data_plane(config),
            Err(message) => {
                eprintln!("larch: invalid configuration: {message}");
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Indexes {
            connection,
            output,
            command,
        } => indexes::run(&connection, output, command),
        Command::Vectors {
            connection,
            route,
            output,
            command,
        } => vectors::run(&connection, &route, output, command),
        Command::Namespaces {
            connection,
            route,
            output,
            command,
        } => namespaces::run(&connection, &route, output, command),
        Command::Keys {
            connection,
            command,
        } => admin::keys(&connection, command).map(print_json),
        Command::Projects {
            connection,
            command,
        } => admin::projects(&connection, command).map(print_json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if matches!(err.downcast_ref(), Some(larch::Error::Refused(_))) => {
            eprintln!("larch: {err:#}");
            ExitCode::from(EX_USAGE)
        }
        Err(err) => {
            eprintln!("larch: {err:#}");
            ExitCode::FAILURE
        }
    }
}
