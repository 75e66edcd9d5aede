//! A look at the node: the routing state gathered once with everything derived from
//! it ([`Investigation`]), and, for `snapshot` and `top`, routemon's programs loaded
//! and attached to the monitored interfaces ([`Counting`]) with what they counted
//! ([`Readings`]).
//!
//! Commands build a [`Selection`] from their arguments; nothing here knows the
//! command line.

use std::collections::{BTreeMap, BTreeSet};

use monitor_common::{
    AsymmetricKey, CrossEniKey, FlowKey, FlowState, IfaceCounters, PacketCounters,
};

use crate::{
    attribution::AttributionPlan,
    cilium::CiliumFamilies,
    ebpf::{
        AttachMode, AttachedVia, EbpfError, Monitor, orphans,
        usage::{FlowEntries, TableUsage},
    },
    findings::{self, Finding},
    model::{Link, NetworkModel, dump::Netlink},
    preference,
    report::{Measured, Report, ReportInput},
    selection::{self, InterfacePattern, Primary},
};

/// Which interfaces to look at and how to judge them.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Interface patterns; empty for the default choice (uplinks).
    pub interfaces: Vec<InterfacePattern>,
    /// The primary interface's name; `None` for the default choice.
    pub primary: Option<String>,
    /// The address families the Cilium agent uses.
    pub cilium_family: CiliumFamilies,
}

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
    pub async fn gather(netlink: &Netlink, selection: &Selection) -> anyhow::Result<Self> {
        let model = netlink.dump().await?;
        let monitored = selection::select_interfaces(&model, &selection.interfaces)?;
        let primary = selection::primary_interface(&model, selection.primary.as_deref())?;
        let preferred = preference::preferred_routes(&model);
        let cilium = crate::cilium::Verdict::of(&model, selection.cilium_family);
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

impl Investigation {
    /// The report of this state with `findings` and, for snapshots, what was
    /// measured.
    pub fn report(&self, findings: Vec<Finding>, measured: Option<Measured<'_>>) -> Report {
        Report::build(ReportInput {
            model: &self.model,
            monitored: &self.monitored,
            primary: self.primary.as_ref(),
            preferred: &self.preferred,
            cilium: &self.cilium,
            findings,
            measured,
        })
    }
}

/// Programs loaded and attached to the monitored interfaces.
pub struct Counting {
    /// The routing state at the start.
    pub found: Investigation,
    /// Route ids of the attribution.
    pub plan: AttributionPlan,
    /// The loaded programs.
    pub monitor: Monitor,
    /// Why drops are not counted, when they are not.
    pub drops_unavailable: Option<String>,
}

impl Counting {
    /// Gathers the state and attaches to the interfaces `selection` chooses.
    pub async fn start(
        netlink: &Netlink,
        selection: &Selection,
        mode: AttachMode,
    ) -> anyhow::Result<Self> {
        let found = Investigation::gather(netlink, selection).await?;
        let plan = AttributionPlan::build(&found.model, &found.monitored);
        let links: Vec<&Link> = found
            .monitored
            .iter()
            .filter_map(|i| found.model.links.get(i))
            .collect();
        anyhow::ensure!(
            !links.is_empty(),
            "no interface to monitor: none holds a default route or is named like an uplink \
             (ens*, enp*, eth*); choose some with --interface"
        );
        let source_owners: Vec<(std::net::IpAddr, u32)> = found
            .model
            .owned_addresses(|i| found.monitored.contains(&i))
            .collect();
        orphans::warn(
            &orphans::find(
                netlink,
                found
                    .model
                    .links
                    .values()
                    .map(|l| (l.index, l.name.clone())),
            )
            .await,
        );
        let mut monitor = Monitor::load(&plan, &links, &source_owners)?;
        for link in &links {
            if let Err(err) = monitor.attach(link, mode) {
                // Leave nothing behind: undo what was attached before failing.
                if let Err(detach_err) = monitor.detach(netlink).await {
                    tracing::error!("cleanup after the failed attach also failed: {detach_err}");
                }
                return Err(err.into());
            }
        }
        let drops_unavailable = monitor.attach_drop_counter().err().map(|err| {
            tracing::info!("{err}");
            err.to_string()
        });
        Ok(Self {
            found,
            plan,
            monitor,
            drops_unavailable,
        })
    }

    /// `tcx` or `clsact` (clsact if any interface needed it).
    pub fn attached_via(&self) -> String {
        self.monitor
            .attachments()
            .iter()
            .map(|a| a.via)
            .max_by_key(|via| *via == AttachedVia::Clsact)
            .map_or_else(String::new, |via| via.to_string())
    }

    /// The monitored interfaces' names.
    pub fn interface_names(&self) -> Vec<String> {
        self.found
            .monitored
            .iter()
            .map(|i| self.found.model.link_name(*i))
            .collect()
    }

    /// Reads everything the kernel counted so far.
    pub fn read(&self) -> Result<Readings, EbpfError> {
        let monitor = &self.monitor;
        let flows = monitor.flows()?;
        Ok(Readings {
            interfaces: monitor.interface_counters()?,
            routes: monitor.route_counters(self.plan.route_ids.len())?,
            cross_eni: monitor.cross_eni_counters()?,
            asymmetric: monitor.asymmetric_flows()?,
            tables: monitor.table_usage(Some(flow_entries(&flows)))?,
            flows,
            drops: monitor.drop_counters()?,
        })
    }
}

/// Everything the kernel counted, cumulative since the programs were loaded.
pub struct Readings {
    /// Per interface.
    pub interfaces: BTreeMap<u32, IfaceCounters>,
    /// Per route id.
    pub routes: Vec<PacketCounters>,
    /// Cross-ENI egress per (egress, owner) pair.
    pub cross_eni: BTreeMap<CrossEniKey, PacketCounters>,
    /// Asymmetric flows.
    pub asymmetric: BTreeMap<AsymmetricKey, PacketCounters>,
    /// Fill and losses of the bounded tables.
    pub tables: TableUsage,
    /// The flow table.
    pub flows: Vec<(FlowKey, FlowState)>,
    /// Drops per (interface, reason).
    pub drops: BTreeMap<(u32, String), u64>,
}

/// How many of `flows` each flow table holds (IPv4, IPv6).
fn flow_entries(flows: &[(FlowKey, FlowState)]) -> FlowEntries {
    let v4 = flows.iter().filter(|(key, _)| key.ip_version == 4).count() as u64;
    (v4, flows.len() as u64 - v4)
}
