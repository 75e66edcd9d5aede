//! Findings: what is wrong with the node's default routing, how bad it is, and how
//! to fix it.

use std::collections::{BTreeMap, HashSet};

use monitor_common::{AsymmetricKey, CrossEniKey, FlowKey, PacketCounters};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::{
    cilium::{Outcome, Verdict},
    model::{Family, NetworkModel, Route, table, table_name},
    samples::SampleCollector,
    selection::Primary,
};

/// How urgent a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Likely to cause trouble.
    Warning,
    /// Breaks the node now (Cilium's default-route lookup fails, egress can change
    /// uplink).
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        })
    }
}

/// A 5-tuple in a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowReport {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the protocol number.
    pub protocol: String,
    /// Source address.
    pub src: String,
    /// Source port (ICMP echo: the identifier; 0 when there is none).
    pub src_port: u16,
    /// Destination address.
    pub dst: String,
    /// Destination port.
    pub dst_port: u16,
}

impl FlowReport {
    /// Describes a kernel flow key.
    pub fn from_key(key: &FlowKey) -> Self {
        let addr = |bytes: &[u8; 16]| -> String {
            if key.ip_version == 4 {
                Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
            } else {
                Ipv6Addr::from(*bytes).to_string()
            }
        };
        Self {
            protocol: match key.protocol {
                1 => "icmp".to_owned(),
                6 => "tcp".to_owned(),
                17 => "udp".to_owned(),
                58 => "icmpv6".to_owned(),
                132 => "sctp".to_owned(),
                other => other.to_string(),
            },
            src: addr(&key.src),
            src_port: key.src_port,
            dst: addr(&key.dst),
            dst_port: key.dst_port,
        }
    }
}

impl std::fmt::Display for FlowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = |addr: &str| {
            if addr.contains(':') {
                format!("[{addr}]")
            } else {
                addr.to_owned()
            }
        };
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.protocol,
            host(&self.src),
            self.src_port,
            host(&self.dst),
            self.dst_port
        )
    }
}

/// A sampled flow and how many of its packets were sampled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SampledFlow {
    /// The 5-tuple.
    pub flow: FlowReport,
    /// Packets of it that were sampled.
    pub sampled_packets: u64,
}

/// Sampled flows listed per cross-ENI finding.
const LISTED_SAMPLES: usize = 5;

/// One default route named in a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    /// Output interface.
    pub dev: String,
    /// Gateway, if any.
    pub gateway: Option<String>,
    /// Metric.
    pub metric: u32,
}

/// The kind-specific part of a finding. Serialized flat next to the common fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// Two or more default routes of one table and family share a metric.
    EqualMetricDefaultRoutes {
        /// Address family.
        family: Family,
        /// Table name (`main`, or the number).
        table: String,
        /// The shared metric.
        metric: u32,
        /// Interfaces of the tied routes, in the kernel's order (a drop route is named
        /// by its type: `blackhole`, `unreachable`, `prohibit`).
        interfaces: Vec<String>,
        /// Gateways of the tied routes, in the same order.
        gateways: Vec<Option<String>>,
        /// Whether the tie is between the best routes (critical) or backups (warning).
        best: bool,
        /// Whether the kernel merged the tied routes into one multipath (ECMP) route,
        /// as it does for IPv6 routes added over netlink with the same metric.
        multipath: bool,
    },
    /// Cilium's default-route lookup fails, or resolves to no usable device, for a
    /// family the agent uses (see [`crate::cilium`]).
    CiliumDefaultRoute {
        /// Address family.
        family: Family,
        /// The lookup's outcome (never `ok`).
        outcome: Outcome,
        /// The device Cilium would take, if any.
        device: Option<String>,
        /// The exact error Cilium would get, if any.
        error: Option<String>,
    },
    /// With both families enabled, the IPv4 and IPv6 default routes leave by
    /// different links, which `NodeDeviceWithDefaultRoute` rejects.
    CiliumDualStackLinks {
        /// The IPv4 default route's device.
        ipv4_device: String,
        /// The IPv6 default route's device.
        ipv6_device: String,
    },
    /// Packets left by one interface with a source address of another.
    CrossEniEgress {
        /// The interface the packets left by.
        egress_interface: String,
        /// The interface that owns their source address.
        source_interface: String,
        /// Addresses of the source interface (any of them may be the source).
        source_addresses: Vec<String>,
        /// Packets counted.
        packets: u64,
        /// Bytes counted, link-layer header included.
        bytes: u64,
        /// Sampled packets' flows, most sampled first (at most 5).
        samples: Vec<SampledFlow>,
        /// Packets counted but not sampled (rate limit), so not in `samples`.
        unsampled_packets: u64,
    },
    /// A flow's packets left by another interface than the flow arrived on.
    AsymmetricFlow {
        /// The egress direction's 5-tuple.
        flow: FlowReport,
        /// Where the flow's incoming packets arrived.
        ingress_interface: String,
        /// Where this direction left.
        egress_interface: String,
        /// Packets that left asymmetrically.
        packets: u64,
        /// Their bytes, link-layer header included.
        bytes: u64,
    },
    /// Strict reverse-path filtering on an uplink that does not carry the default
    /// route drops traffic that arrives on it from addresses routed elsewhere.
    StrictRpFilter {
        /// The interface with `rp_filter=1`.
        interface: String,
        /// The interface the preferred IPv4 default route uses.
        default_route_interface: String,
    },
    /// The default route the kernel prefers does not leave by the primary interface.
    PrimaryNotPreferred {
        /// Address family.
        family: Family,
        /// Table name.
        table: String,
        /// The primary interface.
        primary: String,
        /// The primary's best default route metric, if it has one.
        primary_metric: Option<u32>,
        /// The route the kernel prefers.
        preferred: RouteRef,
    },
}

/// A problem routemon found, with its remediation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Kind and kind-specific fields.
    #[serde(flatten)]
    pub kind: FindingKind,
    /// Severity.
    pub severity: Severity,
    /// What is wrong, in plain language.
    pub message: String,
    /// What to do about it.
    pub remediation: String,
}

impl Finding {
    /// What identifies this finding over time, for raising and clearing it: its kind
    /// and the interfaces, routes or flow it is about, not its counts.
    pub fn key(&self) -> String {
        match &self.kind {
            FindingKind::EqualMetricDefaultRoutes {
                family,
                table,
                metric,
                interfaces,
                ..
            } => format!(
                "equal_metric_default_routes/{family}/{table}/{metric}/{}",
                interfaces.join(",")
            ),
            FindingKind::PrimaryNotPreferred {
                family,
                table,
                primary,
                ..
            } => format!("primary_not_preferred/{family}/{table}/{primary}"),
            FindingKind::CiliumDefaultRoute {
                family, outcome, ..
            } => format!("cilium_default_route/{family}/{outcome}"),
            FindingKind::CiliumDualStackLinks {
                ipv4_device,
                ipv6_device,
            } => format!("cilium_dual_stack_links/{ipv4_device}/{ipv6_device}"),
            FindingKind::CrossEniEgress {
                egress_interface,
                source_interface,
                ..
            } => format!("cross_eni_egress/{egress_interface}/{source_interface}"),
            FindingKind::AsymmetricFlow {
                flow,
                ingress_interface,
                egress_interface,
                ..
            } => format!("asymmetric_flow/{flow}/{ingress_interface}/{egress_interface}"),
            FindingKind::StrictRpFilter { interface, .. } => {
                format!("strict_rp_filter/{interface}")
            }
        }
    }

    /// The kind's name as it appears in JSON (`equal_metric_default_routes`, …).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FindingKind::EqualMetricDefaultRoutes { .. } => "equal_metric_default_routes",
            FindingKind::PrimaryNotPreferred { .. } => "primary_not_preferred",
            FindingKind::CiliumDefaultRoute { .. } => "cilium_default_route",
            FindingKind::CiliumDualStackLinks { .. } => "cilium_dual_stack_links",
            FindingKind::CrossEniEgress { .. } => "cross_eni_egress",
            FindingKind::AsymmetricFlow { .. } => "asymmetric_flow",
            FindingKind::StrictRpFilter { .. } => "strict_rp_filter",
        }
    }
}

/// Evaluates every finding on the model. `preferred` holds the indexes of the
/// routes the kernel prefers (see [`crate::preference`]).
pub fn evaluate(
    model: &NetworkModel,
    preferred: &crate::preference::RouteIndexSet,
    primary: Option<&Primary>,
    cilium: &Verdict,
) -> Vec<Finding> {
    let mut findings = cilium_findings(model, cilium, primary);
    findings.extend(equal_metric_default_routes(model, primary, cilium));
    findings.extend(primary_not_preferred(model, preferred, primary));
    findings.extend(strict_rp_filter(model, preferred));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

/// Default forwarding routes grouped by (family, table), each group sorted the way
/// the kernel ranks them: metric, then dump order.
fn default_route_groups(model: &NetworkModel) -> BTreeMap<(Family, u32), Vec<(usize, &Route)>> {
    let mut groups: BTreeMap<(Family, u32), Vec<(usize, &Route)>> = BTreeMap::new();
    for (index, route) in model.routes.iter().enumerate() {
        if route.is_default() && route.forwards() {
            groups
                .entry((route.family, route.table))
                .or_default()
                .push((index, route));
        }
    }
    for routes in groups.values_mut() {
        routes.sort_by_key(|(_, r)| (r.metric, r.order));
    }
    groups
}

fn describe(model: &NetworkModel, route: &Route) -> String {
    let dev = model.route_devices(route);
    match route.gateway() {
        Some(gw) => format!("via {gw} dev {dev}"),
        None => format!("dev {dev}"),
    }
}

/// The networkd drop-in that pins the primary's metric (the documented fix).
pub fn networkd_remediation(primary: &str, family: Family) -> String {
    let section = match family {
        Family::Ipv4 => "DHCPv4",
        Family::Ipv6 => "IPv6AcceptRA",
    };
    format!(
        "Give the primary interface a lower metric than every other uplink so exactly one \
         default route wins: write /etc/systemd/network/05-{primary}.network containing \
         \"[Match] Name={primary}\", \"[Network] DHCP=yes\" and \"[{section}] RouteMetric=1000\", \
         then run `networkctl reload` (or restart systemd-networkd). Let Cilium own the \
         secondary ENIs by matching them by name in a .network file with \"[Link] Unmanaged=yes\"."
    )
}

/// One way out of a default route: a next hop. A multipath route contributes one
/// per next hop, since the kernel spreads flows over them.
struct Exit<'a> {
    dev: String,
    gateway: Option<String>,
    route: &'a Route,
}

fn exits<'a>(model: &NetworkModel, route: &'a Route) -> Vec<Exit<'a>> {
    if route.rejects() {
        // A drop route leaves by no interface (IPv6 gives it lo): it is named by its
        // type.
        return vec![Exit {
            dev: route.kind.to_string(),
            gateway: None,
            route,
        }];
    }
    route
        .nexthops
        .iter()
        .map(|nh| Exit {
            dev: nh
                .ifindex
                .map_or_else(|| "-".to_owned(), |i| model.link_name(i)),
            gateway: nh.gateway.map(|g| g.to_string()),
            route,
        })
        .collect()
}

/// The priorities of the policy rules that look up `table_id`; `None` when the model
/// holds no rules of the family (not read), so that every table counts as used.
fn rules_using(model: &NetworkModel, family: Family, table_id: u32) -> Option<Vec<u32>> {
    let mut rules = model.rules.iter().filter(|r| r.family == family).peekable();
    rules.peek()?;
    Some(
        rules
            .filter(|r| r.action == "lookup" && r.table == table_id)
            .map(|r| r.priority)
            .collect(),
    )
}

/// What the kernel does with default routes tied at the best metric, as its code
/// does it (see README "What the kernel does with tied default routes").
fn kernel_behaviour(family: Family, tied: &[Exit<'_>], multipath: bool) -> String {
    let reject = tied.iter().find(|e| e.route.rejects());
    if let Some(reject) = reject {
        let kind = reject.route.kind;
        return match family {
            Family::Ipv4 if std::ptr::eq(tied[0].route, reject.route) => format!(
                "The kernel's lookup returns the first of them in its list, the {kind} route, \
                 so the traffic this table routes by default is dropped."
            ),
            Family::Ipv4 => format!(
                "The kernel's lookup returns the first of them in its list ({}); the {kind} \
                 route behind it drops the traffic as soon as that route is removed or re-added \
                 behind it.",
                tied[0].describe()
            ),
            Family::Ipv6 => format!(
                "Which of them a lookup returns is decided per lookup by the kernel's route \
                 scoring (rt6_select); packets that take the {kind} route are dropped."
            ),
        };
    }
    if multipath {
        return "The kernel treats them as one multipath route and hashes each flow onto one \
                of the uplinks, so replies may leave by a different ENI than the requests came \
                in on."
            .to_owned();
    }
    match family {
        Family::Ipv4 => format!(
            "The kernel does not balance them. Forwarded traffic (pods) takes the first in the \
             kernel's list ({}). Traffic the node sends itself goes through fib_select_default \
             on every route lookup: it stays on the first route while that gateway's neighbour \
             entry is reachable, rotates to the next route at each lookup while the entry is \
             only stale, delayed or permanent, and skips a gateway whose entry failed. So \
             egress can change uplink without any route change (unconnected sends such as DNS \
             can alternate), and replies may leave by a different ENI than the requests came \
             in on.",
            tied[0].describe()
        ),
        Family::Ipv6 => "The kernel keeps them as separate routes (router-advertised, \
             nexthop-object and device-only routes are not merged into one multipath route) and \
             uses one at a time, chosen per lookup by the gateways' neighbour reachability \
             (rt6_select), so egress can change uplink and replies may leave by a different \
             ENI than the requests came in on."
            .to_owned(),
    }
}

impl Exit<'_> {
    fn describe(&self) -> String {
        if self.route.rejects() {
            return self.route.kind.to_string();
        }
        match &self.gateway {
            Some(gw) => format!("via {gw} dev {}", self.dev),
            None => format!("dev {}", self.dev),
        }
    }
}

/// Ties between default routes of one table and family at one metric: what the
/// kernel does with them, how much of the node's traffic they concern, and whether
/// Cilium's default-route lookup fails on them too.
fn equal_metric_default_routes(
    model: &NetworkModel,
    primary: Option<&Primary>,
    cilium: &Verdict,
) -> Vec<Finding> {
    let mut groups: BTreeMap<(Family, u32), Vec<&Route>> = BTreeMap::new();
    for route in &model.routes {
        if route.is_default() && (route.forwards() || route.rejects()) {
            groups
                .entry((route.family, route.table))
                .or_default()
                .push(route);
        }
    }
    let mut findings = Vec::new();
    for ((family, table_id), mut routes) in groups {
        routes.sort_by_key(|r| (r.metric, r.order));
        let mut by_metric: BTreeMap<u32, Vec<Exit<'_>>> = BTreeMap::new();
        for route in &routes {
            by_metric
                .entry(route.metric)
                .or_default()
                .extend(exits(model, route));
        }
        let best_metric = routes.first().map(|r| r.metric);
        let used_by = rules_using(model, family, table_id);
        let unused = used_by.as_ref().is_some_and(Vec::is_empty);
        for (metric, tied) in by_metric.into_iter().filter(|(_, tied)| tied.len() > 1) {
            let best = Some(metric) == best_metric;
            let multipath = tied.iter().any(|e| e.route.nexthops.len() > 1);
            let table = table_name(table_id);
            let listed = tied
                .iter()
                .map(Exit::describe)
                .collect::<Vec<_>>()
                .join(", ");
            let n = tied.len();
            let mut message;
            let severity;
            if !best {
                message = format!(
                    "{n} backup {family} default routes in table {table} share metric {metric} \
                     ({listed}): if the preferred route fails, the fallback uplink is ambiguous."
                );
                severity = Severity::Warning;
            } else {
                message = format!(
                    "{n} {family} default routes in table {table} share the best metric {metric} \
                     ({listed}). {}",
                    kernel_behaviour(family, &tied, multipath)
                );
                // IPv4 uses the first route of its list: a drop route behind a real one
                // drops nothing yet.
                let reject_behind = family == Family::Ipv4
                    && !tied[0].route.rejects()
                    && tied.iter().any(|e| e.route.rejects());
                severity = if unused {
                    Severity::Info
                } else if reject_behind {
                    Severity::Warning
                } else {
                    Severity::Critical
                };
            }
            if unused {
                message.push_str(&format!(
                    " No policy rule looks up table {table}, so no traffic uses these routes now."
                ));
            } else if let Some(used_by) = used_by.as_ref().filter(|_| table_id != table::MAIN) {
                let rules = used_by
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                message.push_str(&format!(
                    " This concerns the traffic that the policy rule(s) with priority {rules} \
                     send to table {table}."
                ));
            }
            let cilium_family = cilium.family(family);
            if best
                && table_id == table::MAIN
                && cilium_family.enabled
                && cilium_family.outcome == crate::cilium::Outcome::Tie
            {
                message.push_str(
                    " Cilium's default-route lookup fails on this tie too (see the \
                     cilium_default_route finding).",
                );
            }
            let interfaces: Vec<String> = tied.iter().map(|e| e.dev.clone()).collect();
            let fix_on = primary.map_or_else(
                || {
                    tied.iter()
                        .find(|e| !e.route.rejects())
                        .map_or_else(|| interfaces[0].clone(), |e| e.dev.clone())
                },
                |p| p.name.clone(),
            );
            findings.push(Finding {
                kind: FindingKind::EqualMetricDefaultRoutes {
                    family,
                    table,
                    metric,
                    gateways: tied.iter().map(|e| e.gateway.clone()).collect(),
                    interfaces,
                    best,
                    multipath,
                },
                severity,
                message,
                remediation: networkd_remediation(&fix_on, family),
            });
        }
    }
    findings
}

/// Findings from Cilium's verdict, for the families the agent uses.
fn cilium_findings(
    model: &NetworkModel,
    cilium: &Verdict,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    use crate::cilium::Outcome;
    let mut findings = Vec::new();
    for verdict in cilium.per_family.iter().filter(|v| v.enabled) {
        let family = verdict.family;
        let error = verdict.error.clone().unwrap_or_default();
        let route = verdict.route.map(|i| &model.routes[i]);
        let fix_on = primary.map_or_else(
            || route.map_or_else(|| "<primary>".to_owned(), |r| model.route_devices(r)),
            |p| p.name.clone(),
        );
        let (severity, message, remediation) = match verdict.outcome {
            Outcome::Ok => continue,
            Outcome::Tie => (
                Severity::Critical,
                format!(
                    "Cilium's default-route lookup for {family} fails: the two best {family} \
                     default routes of table main have the same metric, and Cilium \
                     (lookupDefaultRoute) stops with \"{error}\". The agent needs this lookup in \
                     ENI IPAM mode, for egress gateway policies that name no interface, and for \
                     IPsec; depending on the version it exits at start or reports degraded health \
                     and retries."
                ),
                networkd_remediation(&fix_on, family),
            ),
            Outcome::NoDefaultRoute => (
                Severity::Warning,
                format!(
                    "Cilium's default-route lookup for {family} fails with \"{error}\": table main \
                     has no {family} default route (Cilium does not look at other tables). This \
                     matters in ENI IPAM mode, for egress gateway policies that name no \
                     interface, and for IPsec."
                ),
                format!(
                    "Give the node a {family} default route in table main, or run Cilium without \
                     {family} (--cilium-family tells routemon which families the agent uses)."
                ),
            ),
            Outcome::MultipathDefault => (
                Severity::Warning,
                format!(
                    "Cilium's default-route lookup for {family} returns one multipath route ({}), \
                     which is not a tie, but it has no single output interface: resolving the \
                     node's default-route device fails with \"{error}\". Only Cilium features that \
                     need that device fail (ENI IPAM, egress gateway policies that name no \
                     interface, IPsec); others are unaffected.",
                    route.map(|r| model.route_devices(r)).unwrap_or_default()
                ),
                format!(
                    "Replace the multipath default by single default routes with distinct \
                     metrics. {}",
                    networkd_remediation(&fix_on, family)
                ),
            ),
            Outcome::RejectDefault => {
                let kind = route.map(|r| r.kind.to_string()).unwrap_or_default();
                let consequence = match &verdict.device {
                    Some(dev) => {
                        format!("Cilium would take {dev} as the node's default-route device")
                    }
                    None => {
                        format!("resolving the node's default-route device fails with \"{error}\"")
                    }
                };
                (
                    Severity::Warning,
                    format!(
                        "The best {family} default route of table main is a {kind} route: the kernel \
                         drops traffic that only the default route matches, and Cilium's lookup \
                         returns it, so {consequence}."
                    ),
                    format!(
                        "Remove the {kind} default route or give it a higher metric than the real \
                         default route."
                    ),
                )
            }
        };
        findings.push(Finding {
            kind: FindingKind::CiliumDefaultRoute {
                family,
                outcome: verdict.outcome,
                device: verdict.device.clone(),
                error: verdict.error.clone(),
            },
            severity,
            message,
            remediation,
        });
    }
    if let Some((ipv4_device, ipv6_device)) = cilium.dual_stack_links(model) {
        findings.push(Finding {
            kind: FindingKind::CiliumDualStackLinks {
                ipv4_device: ipv4_device.clone(),
                ipv6_device: ipv6_device.clone(),
            },
            severity: Severity::Warning,
            message: format!(
                "The IPv4 default route leaves by {ipv4_device} and the IPv6 one by {ipv6_device}: \
                 Cilium's NodeDeviceWithDefaultRoute, asked for both families, fails with \
                 \"{}\". Cilium calls it with both families in ENI IPAM mode with IPv6 enabled \
                 (up to 1.19) and for IPsec (up to 1.17).",
                crate::cilium::DIFFERENT_LINKS_ERROR
            ),
            remediation: format!(
                "Make both families' best default routes leave by the same interface \
                 ({ipv4_device}): pin the primary's IPv4 and IPv6 metrics ([DHCPv4] and \
                 [IPv6AcceptRA] RouteMetric=1000 in 05-{ipv4_device}.network)."
            ),
        });
    }
    findings
}

/// On a node with default routes on several interfaces, an interface in strict
/// `rp_filter` mode that the preferred IPv4 default route does not use drops every
/// packet arriving on it from a source the node would route out of another
/// interface — which is every internet source.
fn strict_rp_filter(
    model: &NetworkModel,
    preferred: &crate::preference::RouteIndexSet,
) -> Vec<Finding> {
    let defaults: Vec<(usize, &Route)> = model
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.is_default() && r.forwards() && r.family == Family::Ipv4 && r.table == table::MAIN
        })
        .collect();
    let uplinks: HashSet<u32> = defaults.iter().flat_map(|(_, r)| r.ifindexes()).collect();
    if uplinks.len() < 2 {
        return Vec::new();
    }
    let used: HashSet<u32> = defaults
        .iter()
        .filter(|(index, _)| preferred.contains(index))
        .flat_map(|(_, r)| r.ifindexes())
        .collect();
    let Some(used_name) = used.iter().min().map(|i| model.link_name(*i)) else {
        return Vec::new();
    };
    let mut strict: Vec<u32> = uplinks
        .iter()
        .filter(|i| !used.contains(i) && model.rp_filter.get(i) == Some(&1))
        .copied()
        .collect();
    strict.sort_unstable();
    strict
        .into_iter()
        .map(|ifindex| {
            let name = model.link_name(ifindex);
            Finding {
                kind: FindingKind::StrictRpFilter {
                    interface: name.clone(),
                    default_route_interface: used_name.clone(),
                },
                severity: Severity::Warning,
                message: format!(
                    "Strict reverse-path filtering (rp_filter=1) is in effect on {name}, but the \
                     node's IPv4 default route leaves by {used_name}. Packets that arrive on {name} \
                     from any source routed out of {used_name} — every internet client of {name}'s \
                     address — fail the reverse-path check and are dropped by the node itself."
                ),
                remediation: format!(
                    "Use loose mode on multi-homed nodes: `sysctl -w net.ipv4.conf.{name}.rp_filter=2 \
                     net.ipv4.conf.all.rp_filter=2` (persist in /etc/sysctl.d; the kernel applies the \
                     larger of `all` and the interface's value), or add a source-based policy rule \
                     for {name}'s addresses so the reverse path matches."
                ),
            }
        })
        .collect()
}

fn primary_not_preferred(
    model: &NetworkModel,
    preferred: &crate::preference::RouteIndexSet,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    let Some(primary) = primary else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for ((family, table_id), routes) in default_route_groups(model) {
        if table_id != table::MAIN {
            continue;
        }
        let used: Vec<&Route> = routes
            .iter()
            .filter(|(index, _)| preferred.contains(index))
            .map(|(_, route)| *route)
            .collect();
        let Some(chosen) = used.first() else {
            continue;
        };
        if used.iter().any(|r| r.uses_ifindex(primary.ifindex)) {
            continue;
        }
        let primary_metric = routes
            .iter()
            .find(|(_, r)| r.uses_ifindex(primary.ifindex))
            .map(|(_, r)| r.metric);
        let dev = describe(model, chosen);
        let why = match primary_metric {
            Some(m) => format!("has metric {m}"),
            None => "has no default route".to_owned(),
        };
        findings.push(Finding {
            kind: FindingKind::PrimaryNotPreferred {
                family,
                table: table_name(table_id),
                primary: primary.name.clone(),
                primary_metric,
                preferred: RouteRef {
                    dev: model.route_devices(chosen),
                    gateway: chosen.gateway().map(|g| g.to_string()),
                    metric: chosen.metric,
                },
            },
            severity: Severity::Warning,
            message: format!(
                "The kernel sends {family} egress by the default route {dev} (metric {}), not by the \
                 primary interface {}, which {why}. Traffic sourced from the primary's address leaves \
                 by another ENI, where the VPC source/destination check drops it.",
                chosen.metric, primary.name
            ),
            remediation: networkd_remediation(&primary.name, family),
        });
    }
    findings
}

/// Findings for egress measured leaving by one interface with another interface's
/// source address: the EC2 source/destination check drops these packets.
pub fn cross_eni_egress(
    model: &NetworkModel,
    counters: &BTreeMap<CrossEniKey, PacketCounters>,
    samples: &SampleCollector,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    counters
        .iter()
        .filter(|(key, c)| c.packets > 0 && key.egress_ifindex != key.source_ifindex)
        .map(|(key, c)| {
            let egress = model.link_name(key.egress_ifindex);
            let source = model.link_name(key.source_ifindex);
            let addresses: Vec<String> = model
                .addresses_of(key.source_ifindex)
                .map(|a| a.addr.addr().to_string())
                .collect();
            let pin = primary.map_or_else(|| egress.clone(), |p| p.name.clone());
            let (flows, sampled) = samples.cross_eni(key.egress_ifindex, key.source_ifindex);
            let listed: Vec<SampledFlow> = flows
                .iter()
                .take(LISTED_SAMPLES)
                .map(|(flow, n)| SampledFlow {
                    flow: FlowReport::from_key(flow),
                    sampled_packets: *n,
                })
                .collect();
            let mut message = format!(
                "{} packets ({} bytes) left by {egress} with a source address of {source} ({}). \
                 The VPC only accepts traffic from an ENI with that ENI's own addresses \
                 (source/destination check), so these packets are dropped: connections from \
                 {source}'s address that the routing table sends out of {egress} fail or hang.",
                c.packets,
                c.bytes,
                addresses.join(", ")
            );
            if let Some(first) = listed.first() {
                message.push_str(&format!(" For example: {}.", first.flow));
            }
            Finding {
                kind: FindingKind::CrossEniEgress {
                    egress_interface: egress.clone(),
                    source_interface: source.clone(),
                    source_addresses: addresses.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                    samples: listed,
                    unsampled_packets: c.packets.saturating_sub(sampled),
                },
                severity: Severity::Critical,
                message,
                remediation: format!(
                    "Send each ENI's traffic out of that ENI: add a source-based policy rule per \
                     secondary ENI (`ip rule add from <{source} address> lookup <table>` with \
                     `default via <{source} gateway> dev {source}` in that table, as \
                     amazon-ec2-net-utils does); pin the primary's metric so unsourced traffic \
                     uses {pin} (05-{pin}.network with [DHCPv4] RouteMetric=1000); or, if Cilium \
                     owns {source}, mark it `[Link] Unmanaged=yes` in networkd by its name."
                ),
            }
        })
        .collect()
}

/// Asymmetric flows listed one by one at most; the rest are summed in the last.
pub const MAX_LISTED_ASYMMETRIC_FLOWS: usize = 20;

/// Findings for flows whose packets left by another interface than the flow
/// arrived on, the busiest first.
pub fn asymmetric_flows(
    model: &NetworkModel,
    flows: &BTreeMap<AsymmetricKey, PacketCounters>,
) -> Vec<Finding> {
    let mut flows: Vec<(&AsymmetricKey, &PacketCounters)> =
        flows.iter().filter(|(_, c)| c.packets > 0).collect();
    flows.sort_by_key(|(key, c)| (std::cmp::Reverse(c.packets), **key));
    let total = flows.len();
    flows
        .into_iter()
        .take(MAX_LISTED_ASYMMETRIC_FLOWS)
        .map(|(key, c)| {
            let ingress = model.link_name(key.ingress_ifindex);
            let egress = model.link_name(key.egress_ifindex);
            let flow = FlowReport::from_key(&key.flow);
            let mut message = format!(
                "Flow {flow} arrived on {ingress} but {} of its packets ({} bytes) left by {egress}. \
                 In a VPC the reply leaves by another ENI than the request came in on: with \
                 the sender's address it is dropped by the source/destination check, and \
                 stateful firewalls and load balancers see only half of the connection.",
                c.packets, c.bytes
            );
            if total > MAX_LISTED_ASYMMETRIC_FLOWS {
                message.push_str(&format!(
                    " ({total} asymmetric flows in all; the {MAX_LISTED_ASYMMETRIC_FLOWS} busiest are listed.)"
                ));
            }
            Finding {
                kind: FindingKind::AsymmetricFlow {
                    flow,
                    ingress_interface: ingress.clone(),
                    egress_interface: egress.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                },
                severity: Severity::Critical,
                message,
                remediation: format!(
                    "Make replies leave by the ENI the request arrived on: a source-based policy \
                     rule for {ingress}'s addresses (`ip rule add from <{ingress} address> lookup \
                     <table>` with `default via <{ingress} gateway> dev {ingress}` in that table, \
                     as amazon-ec2-net-utils installs). Pinning the primary's metric alone does \
                     not fix traffic that arrives on a secondary ENI."
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        preference::preferred_routes,
        selection::PrimarySource,
        testutil::{default_route, model_with_links, push_routes, route},
    };

    fn primary(ifindex: u32, name: &str) -> Primary {
        Primary {
            ifindex,
            name: name.to_owned(),
            source: PrimarySource::LowestIfindex,
        }
    }

    fn with_cilium(
        model: &NetworkModel,
        primary: Option<&Primary>,
        families: crate::cilium::CiliumFamilies,
    ) -> Vec<Finding> {
        evaluate(
            model,
            &preferred_routes(model),
            primary,
            &Verdict::of(model, families),
        )
    }

    /// The findings other than Cilium's verdict (tested in `cilium_*` below).
    fn run(model: &NetworkModel, primary: Option<&Primary>) -> Vec<Finding> {
        with_cilium(model, primary, crate::cilium::CiliumFamilies::Ipv4)
            .into_iter()
            .filter(|f| !f.kind_name().starts_with("cilium_"))
            .collect()
    }

    fn eks(metric5: u32, metric6: u32) -> NetworkModel {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), metric5, table::MAIN),
                default_route(3, Some("10.0.2.1"), metric6, table::MAIN),
            ],
        );
        model
    }

    #[test]
    fn equal_metric_defaults_are_critical() {
        let model = eks(1024, 1024);
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.kind_name(), "equal_metric_default_routes");
        let FindingKind::EqualMetricDefaultRoutes {
            family,
            table,
            metric,
            interfaces,
            gateways,
            best,
            multipath,
        } = &f.kind
        else {
            panic!("wrong kind");
        };
        assert_eq!(
            (*family, table.as_str(), *metric, *best, *multipath),
            (Family::Ipv4, "main", 1024, true, false)
        );
        assert_eq!(interfaces, &["ens5", "ens6"]);
        assert_eq!(
            gateways,
            &[Some("10.0.1.1".to_owned()), Some("10.0.2.1".to_owned())]
        );
        assert!(f.message.contains("fib_select_default"), "{}", f.message);
        assert!(f.message.contains("see the cilium_default_route finding"));
        assert!(f.remediation.contains("05-ens5.network"));
        assert!(f.remediation.contains("[DHCPv4] RouteMetric=1000"));
    }

    #[test]
    fn pinned_primary_clears_every_finding() {
        let model = eks(1000, 1024);
        assert!(run(&model, Some(&primary(2, "ens5"))).is_empty());
    }

    #[test]
    fn single_default_and_no_default_are_healthy() {
        let mut one = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut one,
            [default_route(2, Some("10.0.1.1"), 1024, table::MAIN)],
        );
        assert!(run(&one, Some(&primary(2, "ens5"))).is_empty());
        let none = model_with_links(&["lo", "ens5"]);
        assert!(run(&none, Some(&primary(2, "ens5"))).is_empty());
    }

    #[test]
    fn tie_among_backups_is_a_warning() {
        let mut model = eks(1000, 1024);
        model.links.insert(4, model.links[&3].clone());
        model.links.get_mut(&4).unwrap().index = 4;
        model.links.get_mut(&4).unwrap().name = "ens7".into();
        push_routes(
            &mut model,
            [default_route(4, Some("10.0.3.1"), 1024, table::MAIN)],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(matches!(
            findings[0].kind,
            FindingKind::EqualMetricDefaultRoutes {
                best: false,
                metric: 1024,
                ..
            }
        ));
    }

    #[test]
    fn ipv6_ties_are_found_per_family() {
        let mut model = eks(1000, 1024);
        push_routes(
            &mut model,
            [
                route("::/0", 2, Some("fe80::1"), 1024, table::MAIN),
                route("::/0", 3, Some("fe80::2"), 1024, table::MAIN),
            ],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(matches!(
            findings[0].kind,
            FindingKind::EqualMetricDefaultRoutes {
                family: Family::Ipv6,
                ..
            }
        ));
        assert!(
            findings[0]
                .remediation
                .contains("[IPv6AcceptRA] RouteMetric=1000")
        );
    }

    #[test]
    fn multipath_default_over_two_uplinks_is_a_tie() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut ecmp = route("::/0", 2, Some("fd00:1::1"), 1024, table::MAIN);
        ecmp.nexthops.push(crate::model::NextHop {
            gateway: Some("fd00:2::1".parse().unwrap()),
            ifindex: Some(3),
            hops: 0,
            flags: 0,
        });
        ecmp.multipath = true;
        push_routes(&mut model, [ecmp]);
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let FindingKind::EqualMetricDefaultRoutes {
            interfaces,
            multipath,
            ..
        } = &findings[0].kind
        else {
            panic!()
        };
        assert_eq!(interfaces, &["ens5", "ens6"]);
        assert!(*multipath);
        assert_eq!(findings[0].severity, Severity::Critical);
        assert!(findings[0].message.contains("multipath"));
        assert!(
            !findings[0].message.contains("Cilium"),
            "one multipath route is no tie for Cilium"
        );
        let cilium = with_cilium(
            &model,
            Some(&primary(2, "ens5")),
            crate::cilium::CiliumFamilies::Ipv6,
        );
        let cilium = cilium
            .iter()
            .find(|f| f.kind_name() == "cilium_default_route")
            .unwrap();
        assert_eq!(cilium.severity, Severity::Warning);
        assert!(matches!(
            cilium.kind,
            FindingKind::CiliumDefaultRoute {
                outcome: Outcome::MultipathDefault,
                ..
            }
        ));
    }

    #[test]
    fn cilium_findings_only_for_enabled_families() {
        use crate::cilium::CiliumFamilies;
        let mut model = eks(1024, 1024);
        push_routes(
            &mut model,
            [
                route("::/0", 2, Some("fe80::1"), 1024, table::MAIN),
                route("::/0", 3, Some("fe80::2"), 1024, table::MAIN),
            ],
        );
        let cilium_kinds = |families| -> Vec<(String, Severity)> {
            with_cilium(&model, None, families)
                .into_iter()
                .filter_map(|f| match &f.kind {
                    FindingKind::CiliumDefaultRoute {
                        family, outcome, ..
                    } => Some((format!("{family}/{outcome}"), f.severity)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            cilium_kinds(CiliumFamilies::Ipv4),
            [("ipv4/tie".to_owned(), Severity::Critical)]
        );
        assert_eq!(
            cilium_kinds(CiliumFamilies::Ipv6),
            [("ipv6/tie".to_owned(), Severity::Critical)]
        );
        assert_eq!(cilium_kinds(CiliumFamilies::Dual).len(), 2);
        let tie = with_cilium(&model, None, CiliumFamilies::Ipv4);
        let tie = tie
            .iter()
            .find(|f| f.kind_name() == "cilium_default_route")
            .unwrap();
        assert!(tie.message.contains(
            "Found multiple default routes with the same priority: {Ifindex: 2 Dst: 0.0.0.0/0"
        ));
    }

    #[test]
    fn ties_in_unused_tables_are_info_and_in_rule_tables_critical() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1000, table::MAIN),
                default_route(2, Some("10.0.1.1"), 0, 100),
                default_route(3, Some("10.0.2.1"), 0, 100),
            ],
        );
        let rule = |priority, table| crate::model::Rule {
            family: Family::Ipv4,
            priority,
            table,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            action: "lookup".to_owned(),
        };
        model.rules = vec![rule(32766, table::MAIN)];
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].severity, Severity::Info);
        assert!(
            findings[0]
                .message
                .contains("No policy rule looks up table 100")
        );
        model.rules.push(rule(100, 100));
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings[0].severity, Severity::Critical);
        assert!(
            findings[0].message.contains("priority 100"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn blackhole_tied_with_a_real_default_is_reported() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let mut blackhole = default_route(2, None, 100, table::MAIN);
        blackhole.kind = crate::model::RouteKind::Blackhole;
        blackhole.nexthops.clear();
        // The kernel lists the blackhole first: it is what lookups return.
        push_routes(
            &mut model,
            [
                blackhole.clone(),
                default_route(2, Some("10.0.1.1"), 100, table::MAIN),
            ],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].severity, Severity::Critical);
        assert!(
            findings[0]
                .message
                .contains("the blackhole route, so the traffic")
        );
        // Behind the real route it drops nothing yet.
        let mut model = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 100, table::MAIN),
                blackhole,
            ],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings[0].severity, Severity::Warning);
    }

    #[test]
    fn ties_in_other_tables_are_reported_without_cilium() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 0, 10_001),
                default_route(3, Some("10.0.2.1"), 0, 10_001),
            ],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1);
        assert!(!findings[0].message.contains("Cilium"));
        assert!(
            matches!(&findings[0].kind, FindingKind::EqualMetricDefaultRoutes { table, .. } if table == "10001")
        );
    }

    #[test]
    fn secondary_with_better_metric_means_primary_not_preferred() {
        let model = eks(1024, 100);
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind_name(), "primary_not_preferred");
        let FindingKind::PrimaryNotPreferred {
            primary,
            primary_metric,
            preferred,
            ..
        } = &findings[0].kind
        else {
            panic!()
        };
        assert_eq!((primary.as_str(), *primary_metric), ("ens5", Some(1024)));
        assert_eq!((preferred.dev.as_str(), preferred.metric), ("ens6", 100));
    }

    #[test]
    fn a_tie_that_includes_the_primary_is_only_the_tie() {
        // Whatever the order, a tie is one finding.
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
                default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
            ],
        );
        let findings = run(&model, Some(&primary(2, "ens5")));
        let kinds: Vec<_> = findings.iter().map(Finding::kind_name).collect();
        assert_eq!(kinds, ["equal_metric_default_routes"]);
    }

    #[test]
    fn cross_eni_counters_become_critical_findings() {
        let mut model = eks(1024, 1024);
        model.addresses.push(crate::model::Address {
            ifindex: 3,
            addr: "10.0.2.10/24".parse().unwrap(),
        });
        let counters = BTreeMap::from([
            (
                CrossEniKey {
                    egress_ifindex: 2,
                    source_ifindex: 3,
                },
                PacketCounters {
                    packets: 7,
                    bytes: 700,
                },
            ),
            // A pair with nothing counted, and one that is not cross-ENI at all.
            (
                CrossEniKey {
                    egress_ifindex: 3,
                    source_ifindex: 2,
                },
                PacketCounters::default(),
            ),
            (
                CrossEniKey {
                    egress_ifindex: 3,
                    source_ifindex: 3,
                },
                PacketCounters {
                    packets: 9,
                    bytes: 900,
                },
            ),
        ]);
        let mut samples = SampleCollector::default();
        let mut flow = FlowKey {
            ip_version: 4,
            protocol: 17,
            src_port: 5000,
            dst_port: 9,
            ..FlowKey::default()
        };
        flow.src[..4].copy_from_slice(&[10, 0, 2, 10]);
        flow.dst[..4].copy_from_slice(&[198, 51, 100, 10]);
        let event = monitor_common::SampleEvent {
            kind: monitor_common::SAMPLE_CROSS_ENI,
            egress_ifindex: 2,
            source_ifindex: 3,
            pad: 0,
            flow,
        };
        samples.add([event, event]);
        let findings = cross_eni_egress(&model, &counters, &samples, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let json = serde_json::to_value(&findings[0]).unwrap();
        assert_eq!(json["kind"], "cross_eni_egress");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["egress_interface"], "ens5");
        assert_eq!(json["source_interface"], "ens6");
        assert_eq!(json["source_addresses"][0], "10.0.2.10");
        assert_eq!(
            (json["packets"].as_u64(), json["bytes"].as_u64()),
            (Some(7), Some(700))
        );
        assert!(findings[0].remediation.contains("ip rule add from"));
        assert_eq!(json["samples"][0]["flow"]["src_port"], 5000);
        assert_eq!(json["samples"][0]["sampled_packets"], 2);
        assert_eq!(json["unsampled_packets"], 5);
        assert!(
            findings[0]
                .message
                .contains("udp 10.0.2.10:5000 -> 198.51.100.10:9")
        );
    }

    #[test]
    fn asymmetric_flows_are_listed_busiest_first_with_their_tuple() {
        let model = eks(1000, 1024);
        let key = |sport: u16, ingress, egress| {
            let mut flow = FlowKey {
                ip_version: 4,
                protocol: 6,
                src_port: 8080,
                dst_port: sport,
                ..FlowKey::default()
            };
            flow.src[..4].copy_from_slice(&[10, 0, 2, 10]);
            flow.dst[..4].copy_from_slice(&[10, 0, 100, 2]);
            AsymmetricKey {
                flow,
                ingress_ifindex: ingress,
                egress_ifindex: egress,
            }
        };
        let flows = BTreeMap::from([
            (
                key(40000, 3, 2),
                PacketCounters {
                    packets: 3,
                    bytes: 222,
                },
            ),
            (
                key(40001, 3, 2),
                PacketCounters {
                    packets: 5,
                    bytes: 370,
                },
            ),
        ]);
        let findings = asymmetric_flows(&model, &flows);
        assert_eq!(findings.len(), 2);
        let json = serde_json::to_value(&findings[0]).unwrap();
        assert_eq!(json["kind"], "asymmetric_flow");
        assert_eq!(json["flow"]["protocol"], "tcp");
        assert_eq!(json["flow"]["src"], "10.0.2.10");
        assert_eq!(json["flow"]["dst_port"], 40001, "busiest first");
        assert_eq!(json["ingress_interface"], "ens6");
        assert_eq!(json["egress_interface"], "ens5");
        assert_eq!(json["packets"], 5);
        assert!(
            findings[0]
                .message
                .contains("tcp 10.0.2.10:8080 -> 10.0.100.2:40001")
        );
    }

    #[test]
    fn strict_rp_filter_on_a_secondary_uplink_is_a_warning() {
        let mut model = eks(1000, 1024);
        model.rp_filter = BTreeMap::from([(2, 1), (3, 1)]);
        let findings = run(&model, Some(&primary(2, "ens5")));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let json = serde_json::to_value(&findings[0]).unwrap();
        assert_eq!(json["kind"], "strict_rp_filter");
        assert_eq!(json["interface"], "ens6");
        assert_eq!(json["default_route_interface"], "ens5");
        // Loose mode, or a single uplink, is fine.
        model.rp_filter = BTreeMap::from([(2, 2), (3, 2)]);
        assert!(run(&model, Some(&primary(2, "ens5"))).is_empty());
        let mut single = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut single,
            [default_route(2, Some("10.0.1.1"), 1024, table::MAIN)],
        );
        single.rp_filter = BTreeMap::from([(2, 1)]);
        assert!(run(&single, Some(&primary(2, "ens5"))).is_empty());
    }

    #[test]
    fn json_shape_is_flat() {
        let model = eks(1024, 1024);
        let findings = run(&model, Some(&primary(2, "ens5")));
        let json = serde_json::to_value(&findings[0]).unwrap();
        assert_eq!(json["kind"], "equal_metric_default_routes");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["family"], "ipv4");
        assert_eq!(json["table"], "main");
        assert_eq!(json["metric"], 1024);
        assert_eq!(json["interfaces"][1], "ens6");
        assert!(json["message"].is_string() && json["remediation"].is_string());
    }
}
