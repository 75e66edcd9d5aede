//! `routemon routes`: the routing state and findings, from netlink only.

use super::print_report;
use crate::{
    cli::RoutesArgs,
    model::dump::Netlink,
    report::{Report, ReportInput},
    session::Investigation,
};

/// Runs `routes`.
pub async fn run(args: &RoutesArgs) -> anyhow::Result<()> {
    let netlink = Netlink::connect()?;
    let found = Investigation::gather(&netlink, &args.selection.selection()).await?;
    let report = Report::build(ReportInput {
        model: &found.model,
        monitored: &found.monitored,
        primary: found.primary.as_ref(),
        preferred: &found.preferred,
        cilium: &found.cilium,
        findings: found.findings.clone(),
        measured: None,
    });
    print_report(&report, &args.selection)?;
    Ok(())
}
