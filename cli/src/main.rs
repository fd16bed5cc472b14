//! `larch`: the one binary of Larch.
//!
//! `larch serve` runs the control plane and the data plane in one process with embedded
//! defaults (data in `./larch-data`, control plane on `127.0.0.1:5080`, one data-plane port
//! per index from `5081-5199`). Every flag has a `LARCH_…` environment twin; the bootstrap
//! API key comes only from `LARCH_API_KEY` (so it never shows in a process list).
//!
//! # Layout
//! - `main`: argument parsing, logging, exit codes (bad configuration exits 64).
//! - [`serve`]: wiring of catalog, data plane and control plane; signals and drain.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LARCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(config) => serve::run(config),
            Err(message) => {
                eprintln!("larch: invalid configuration: {message}");
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("larch: {err:#}");
            ExitCode::FAILURE
        }
    }
}
