//! `routemon routes`: the routing state and findings, from netlink only.

use super::print_report;
use crate::{cli::RoutesArgs, model::dump::Netlink, session::Investigation};

/// Runs `routes`; returns the exit status (`--fail-on`).
pub async fn run(args: &RoutesArgs) -> anyhow::Result<u8> {
    let netlink = Netlink::connect()?;
    let found = Investigation::gather(&netlink, &args.selection.selection()).await?;
    let report = found.report(found.findings.clone(), None);
    print_report(&report, &args.selection)
}
