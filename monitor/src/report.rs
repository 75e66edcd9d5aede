//! The report that `routes` and `snapshot` print: the JSON contract and the data
//! behind the human-readable tables.
//!
//! Schema (version 1): see docs/json.md. Fields are only ever
//! added; counters are integers and appear only where routemon measured them.

use std::collections::{BTreeMap, BTreeSet};

use monitor_common::{IfaceCounters, PacketCounters};
use serde::Serialize;

use crate::{
    attribution::AttributionPlan,
    findings::Finding,
    model::{Family, NetworkModel, Route, protocol_name, scope_name, table_name},
    selection::Primary,
};

/// Version of the JSON schema; bumped only for incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Set by `snapshot`: how long it counted and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// The primary interface and how it was chosen.
    pub primary: Option<PrimaryReport>,
    /// Monitored interfaces.
    pub interfaces: Vec<InterfaceReport>,
    /// Routes of monitored interfaces and every default route.
    pub routes: Vec<RouteReport>,
    /// Policy routing rules of both families, in priority order.
    pub rules: Vec<RuleReport>,
    /// Cilium's default-route verdict, one entry per family (IPv4 first).
    pub cilium: Vec<crate::cilium::FamilyVerdict>,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
}

/// How a snapshot was taken.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    /// Requested duration in seconds.
    pub requested_seconds: f64,
    /// Time actually counted, in seconds.
    pub duration_seconds: f64,
    /// Whether SIGINT/SIGTERM ended the count early.
    pub interrupted: bool,
    /// `tcx` or `clsact`.
    pub attached_via: String,
    /// Routes that appeared during the count. Egress is attributed with the routes
    /// present at the start, so traffic they carried counts under the routes they
    /// cover.
    pub routes_added_during: usize,
    /// Routes that disappeared during the count.
    pub routes_removed_during: usize,
    /// Interfaces that appeared during the count; this snapshot did not monitor them.
    pub interfaces_added_during: Vec<String>,
    /// How full the bounded kernel tables got, and what they dropped.
    pub tables: crate::ebpf::usage::TableUsage,
    /// Why kernel drops were not counted, when they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops_unavailable: Option<String>,
}

/// The primary interface.
#[derive(Clone, Debug, Serialize)]
pub struct PrimaryReport {
    /// Interface name.
    pub name: String,
    /// `flag` (from `--primary`) or `lowest_ifindex`.
    pub chosen_by: &'static str,
}

/// One monitored interface.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceReport {
    /// Name.
    pub name: String,
    /// Index.
    pub ifindex: u32,
    /// Whether it is the primary interface.
    pub primary: bool,
    /// `IFLA_INFO_KIND` (`veth`, …), absent for physical devices.
    pub kind: Option<String>,
    /// Operational state; `gone` when the interface was deleted during a snapshot.
    pub state: String,
    /// Hardware address.
    pub mac: Option<String>,
    /// Addresses with prefix length.
    pub addresses: Vec<String>,
    /// Egress packets (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_packets: Option<u64>,
    /// Egress bytes, link-layer header included (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_bytes: Option<u64>,
    /// Ingress packets (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_packets: Option<u64>,
    /// Ingress bytes (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_bytes: Option<u64>,
    /// Egress packets no route of this interface matched (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_unattributed_packets: Option<u64>,
    /// Bytes of those packets (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_unattributed_bytes: Option<u64>,
    /// Packets, both ways, with a truncated or invalid IP header: in the totals,
    /// never in a flow or a route (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unparsed_packets: Option<u64>,
    /// Bytes of those packets (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unparsed_bytes: Option<u64>,
    /// Its busiest flows over the count, by bytes both ways (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_flows: Option<Vec<crate::flows::FlowTraffic>>,
    /// Packets the kernel dropped on it, by drop reason (snapshot only, when the
    /// kernel's BTF makes drop reasons available).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<BTreeMap<String, u64>>,
}

/// One route.
#[derive(Clone, Debug, Serialize)]
pub struct RouteReport {
    /// `ipv4` or `ipv6`.
    pub family: Family,
    /// Table name: `main`, `local`, `default` or the number.
    pub table: String,
    /// Destination in CIDR form (`0.0.0.0/0` for a default route).
    pub dst: String,
    /// Gateway of the first next hop.
    pub gateway: Option<String>,
    /// Output interface of the first next hop.
    pub dev: Option<String>,
    /// Metric (priority); lower wins.
    pub metric: u32,
    /// Who installed it: `dhcp`, `kernel`, `static`, `boot`, `ra`, …
    pub protocol: String,
    /// Route type: `unicast`, `local`, `broadcast`, `blackhole`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Scope: `global`, `link`, `host`, …
    pub scope: String,
    /// Preferred source address.
    pub src: Option<String>,
    /// Whether the kernel uses this route among those with its table and prefix.
    pub preferred: bool,
    /// All next hops, for multipath routes only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nexthops: Vec<NextHopReport>,
    /// Egress packets attributed to this route (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_packets: Option<u64>,
    /// Egress bytes attributed to this route (snapshot only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_bytes: Option<u64>,
}

/// A policy routing rule (`ip rule`).
#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    /// `ipv4` or `ipv6`.
    pub family: Family,
    /// Priority; lower is evaluated first.
    pub priority: u32,
    /// `from` selector in CIDR form.
    pub src: Option<String>,
    /// `to` selector in CIDR form.
    pub dst: Option<String>,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `fwmark` selector.
    pub fwmark: Option<u32>,
    /// `lookup`, `goto`, `blackhole`, …
    pub action: String,
    /// Table looked up (`main`, `local`, or the number).
    pub table: String,
}

/// A next hop of a multipath route.
#[derive(Clone, Debug, Serialize)]
pub struct NextHopReport {
    /// Gateway.
    pub gateway: Option<String>,
    /// Output interface.
    pub dev: Option<String>,
}

/// Counters read from the kernel at the end of a snapshot.
pub struct Measured<'a> {
    /// Per-interface counters by ifindex.
    pub interfaces: &'a BTreeMap<u32, IfaceCounters>,
    /// Per-route counters by route id.
    pub routes: &'a [PacketCounters],
    /// Which route each id stands for.
    pub plan: &'a AttributionPlan,
}

/// Everything a report is made from.
pub struct ReportInput<'a> {
    /// The network state.
    pub model: &'a NetworkModel,
    /// Monitored ifindexes.
    pub monitored: &'a BTreeSet<u32>,
    /// The primary interface.
    pub primary: Option<&'a Primary>,
    /// Indexes of preferred routes.
    pub preferred: &'a crate::preference::RouteIndexSet,
    /// Cilium's default-route verdict.
    pub cilium: &'a crate::cilium::Verdict,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Counters, for snapshots.
    pub measured: Option<Measured<'a>>,
}

impl Report {
    /// Assembles the report.
    pub fn build(input: ReportInput<'_>) -> Self {
        let ReportInput {
            model,
            monitored,
            primary,
            preferred,
            cilium,
            findings,
            measured,
        } = input;
        let interfaces = monitored
            .iter()
            .filter_map(|ifindex| model.links.get(ifindex))
            .map(|link| {
                let counters = measured
                    .as_ref()
                    .map(|m| m.interfaces.get(&link.index).copied().unwrap_or_default());
                InterfaceReport {
                    name: link.name.clone(),
                    ifindex: link.index,
                    primary: primary.is_some_and(|p| p.ifindex == link.index),
                    kind: link.kind.clone(),
                    state: link.oper_state.to_string(),
                    mac: link.mac.clone(),
                    addresses: model
                        .addresses_of(link.index)
                        .map(|a| a.addr.to_string())
                        .collect(),
                    egress_packets: counters.map(|c| c.egress_packets),
                    egress_bytes: counters.map(|c| c.egress_bytes),
                    ingress_packets: counters.map(|c| c.ingress_packets),
                    ingress_bytes: counters.map(|c| c.ingress_bytes),
                    egress_unattributed_packets: counters.map(|c| c.egress_unattributed_packets),
                    egress_unattributed_bytes: counters.map(|c| c.egress_unattributed_bytes),
                    unparsed_packets: counters.map(|c| c.unparsed_packets),
                    unparsed_bytes: counters.map(|c| c.unparsed_bytes),
                    top_flows: None,
                    drops: None,
                }
            })
            .collect();

        let routes = model
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.ifindexes().any(|i| monitored.contains(&i)) || (r.is_default() && r.forwards())
            })
            .map(|(index, route)| {
                let counters = measured.as_ref().and_then(|m| {
                    if !route.ifindexes().any(|i| monitored.contains(&i)) {
                        return None;
                    }
                    Some(
                        m.plan
                            .route_id_of(index)
                            .and_then(|id| m.routes.get(id as usize).copied())
                            .unwrap_or_default(),
                    )
                });
                route_report(model, route, preferred.contains(&index), counters)
            })
            .collect();

        let mut rules: Vec<RuleReport> = model
            .rules
            .iter()
            .map(|rule| RuleReport {
                family: rule.family,
                priority: rule.priority,
                src: rule.src.map(|n| n.to_string()),
                dst: rule.dst.map(|n| n.to_string()),
                iif: rule.iif.clone(),
                oif: rule.oif.clone(),
                fwmark: rule.fwmark,
                action: rule.action.clone(),
                table: table_name(rule.table),
            })
            .collect();
        rules.sort_by_key(|r| (r.family, r.priority));

        Self {
            schema_version: SCHEMA_VERSION,
            snapshot: None,
            primary: primary.map(|p| PrimaryReport {
                name: p.name.clone(),
                chosen_by: p.source.as_str(),
            }),
            interfaces,
            routes,
            rules,
            cilium: cilium.per_family.clone(),
            findings,
        }
    }
}

fn route_report(
    model: &NetworkModel,
    route: &Route,
    preferred: bool,
    counters: Option<PacketCounters>,
) -> RouteReport {
    let first = route.nexthops.first();
    let nexthops = if route.nexthops.len() > 1 {
        route
            .nexthops
            .iter()
            .map(|nh| NextHopReport {
                gateway: nh.gateway.map(|g| g.to_string()),
                dev: nh.ifindex.map(|i| model.link_name(i)),
            })
            .collect()
    } else {
        Vec::new()
    };
    RouteReport {
        family: route.family,
        table: table_name(route.table),
        dst: route.dst.to_string(),
        gateway: first.and_then(|nh| nh.gateway).map(|g| g.to_string()),
        dev: first.and_then(|nh| nh.ifindex).map(|i| model.link_name(i)),
        metric: route.metric,
        protocol: protocol_name(route.protocol),
        kind: route.kind.to_string(),
        scope: scope_name(route.scope),
        src: route.pref_src.map(|s| s.to_string()),
        preferred,
        nexthops,
        egress_packets: counters.map(|c| c.packets),
        egress_bytes: counters.map(|c| c.bytes),
    }
}
