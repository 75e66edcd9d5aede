//! The `routemon` binary: parses the command line, runs the subcommand, and turns
//! errors into a message and an exit status.

use std::process::ExitCode;

use clap::Parser as _;
use routemon::{
    cli::{Cli, Command, EXIT_NOPERM, EXIT_RUNTIME, EXIT_USAGE, LogFormat, UsageError},
    commands,
    pin::PinError,
    preflight::PreflightError,
    selection::SelectionError,
};
use tracing_subscriber::EnvFilter;

fn init_logging(cli: &Cli) {
    let default = match (cli.verbose, &cli.command) {
        (0, Command::Watch(_)) => "info",
        // Log lines would tear the full-screen view; findings are on screen.
        (_, Command::Top(_)) => "error",
        (0, _) => "warn",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|err| {
            eprintln!("routemon: invalid --log-level '{level}' ({err}); using {default}");
            EnvFilter::new(default)
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a journal or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match cli.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<SelectionError>().is_some()
        || err.downcast_ref::<PinError>().is_some()
        || err.downcast_ref::<UsageError>().is_some()
    {
        EXIT_USAGE
    } else if err.downcast_ref::<PreflightError>().is_some() {
        EXIT_NOPERM
    } else {
        EXIT_RUNTIME
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("routemon: cannot start the async runtime: {err}");
            if let Command::Check(_) = cli.command {
                return ExitCode::from(commands::check::cannot_start(&format!(
                    "cannot start the async runtime: {err}"
                )));
            }
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Routes(args) => commands::routes::run(args).await,
            Command::Snapshot(args) => commands::snapshot::run(args).await,
            Command::Top(args) => commands::top::run(args).await.map(|()| 0),
            Command::Pin(args) => commands::pin::run_pin(args).await.map(|()| 0),
            Command::Unpin(args) => commands::pin::run_unpin(args).await.map(|()| 0),
            Command::Watch(args) => commands::watch::run(args).await.map(|()| 0),
            Command::Cleanup(args) => commands::cleanup::run(args).await.map(|()| 0),
            Command::Doctor(args) => commands::doctor::run(args).await,
            // Its exit code is NPD's plugin status; errors are an answer too.
            Command::Check(args) => Ok(commands::check::run(args).await),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("routemon: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}
