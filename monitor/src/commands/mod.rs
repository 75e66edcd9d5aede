//! The subcommands.

pub mod check;
pub mod cleanup;
pub mod doctor;
pub mod pin;
pub mod routes;
pub mod snapshot;
pub mod top;
pub mod watch;

use crate::{
    cli::SelectionArgs,
    output::{self, HumanOptions},
    report::Report,
};

/// Prints a report as JSON or tables on stdout.
pub fn print_report(report: &Report, args: &SelectionArgs) -> anyhow::Result<u8> {
    if args.json {
        output::write_json(report, std::io::stdout().lock())
            .map_err(|err| anyhow::anyhow!("writing the report: {err}"))?;
    } else {
        print!(
            "{}",
            output::render(
                report,
                HumanOptions {
                    all_tables: args.all_tables,
                },
            )
        );
    }
    Ok(args
        .fail_on
        .exit_status(report.findings.iter().map(|f| f.severity)))
}
