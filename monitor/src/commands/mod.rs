//! The subcommands.

pub mod cleanup;
pub mod counting;
pub mod doctor;
pub mod pin;
pub mod routes;
pub mod snapshot;
pub mod top;
pub mod watch;

use std::collections::BTreeSet;

use crate::{
    cli::SelectionArgs,
    findings::{self, Finding},
    model::{NetworkModel, dump::Netlink},
    output::{self, HumanOptions},
    preference,
    report::Report,
    selection::{self, Primary},
};

/// The routing state of the node, with everything derived from it: which
/// interfaces are monitored, the primary, the preferred routes and the findings.
pub struct Investigation {
    /// The dumped state.
    pub model: NetworkModel,
    /// Monitored ifindexes.
    pub monitored: BTreeSet<u32>,
    /// The primary interface.
    pub primary: Option<Primary>,
    /// Indexes of preferred routes in `model.routes`.
    pub preferred: crate::preference::RouteIndexSet,
    /// Cilium's default-route verdict.
    pub cilium: crate::cilium::Verdict,
    /// Findings.
    pub findings: Vec<Finding>,
}

impl Investigation {
    /// Dumps the state and evaluates it.
    pub async fn gather(netlink: &Netlink, args: &SelectionArgs) -> anyhow::Result<Self> {
        let model = netlink.dump().await?;
        let monitored = selection::select_interfaces(&model, &args.interfaces)?;
        let primary = selection::primary_interface(&model, args.primary.as_deref())?;
        let preferred = preference::preferred_routes(&model);
        let cilium = crate::cilium::Verdict::of(&model, args.cilium_family);
        let findings = findings::evaluate(&model, &preferred, primary.as_ref(), &cilium);
        Ok(Self {
            model,
            monitored,
            primary,
            preferred,
            cilium,
            findings,
        })
    }
}

/// Prints a report as JSON or tables on stdout.
pub fn print_report(report: &Report, args: &SelectionArgs) -> anyhow::Result<()> {
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
    Ok(())
}
