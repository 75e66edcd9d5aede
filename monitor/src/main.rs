//! The `routemon` binary: parses the command line, runs the subcommand, and turns
//! errors into a message and an exit status.

use std::process::ExitCode;

use clap::Parser as _;
use routemon::{
    cli::{Cli, Command},
    commands,
    pin::PinError,
    preflight::PreflightError,
    selection::SelectionError,
};
use tracing_subscriber::EnvFilter;

/// Exit status for bad usage (same as clap's).
const EXIT_USAGE: u8 = 2;
/// Exit status for missing privileges (EX_NOPERM).
const EXIT_NOPERM: u8 = 77;

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<SelectionError>().is_some() || err.downcast_ref::<PinError>().is_some() {
        EXIT_USAGE
    } else if err.downcast_ref::<PreflightError>().is_some() {
        EXIT_NOPERM
    } else {
        1
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("routemon: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Routes(args) => commands::routes::run(args).await,
            Command::Snapshot(args) => commands::snapshot::run(args).await,
            Command::Pin(args) => commands::pin::run_pin(args).await,
            Command::Unpin(args) => commands::pin::run_unpin(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("routemon: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}
