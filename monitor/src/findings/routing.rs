//! Findings on the routing state: default routes tied at one metric (and what the
//! kernel does with them), a primary interface whose default route does not win,
//! and strict reverse-path filtering on an uplink without the default route.

use std::collections::{BTreeMap, HashSet};

use super::{Finding, FindingKind, RouteRef, Severity};
use crate::{
    cilium::{Outcome, Verdict},
    model::{Family, NetworkModel, Route, table, table_name},
    selection::Primary,
};

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
/// does it (see docs/findings.md, "What the kernel does with tied default routes").
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
pub(super) fn equal_metric_default_routes(
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
                && cilium_family.outcome == Outcome::Tie
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

/// On a node with default routes on several interfaces, an interface in strict
/// `rp_filter` mode that the preferred IPv4 default route does not use drops every
/// packet arriving on it from a source the node would route out of another
/// interface — which is every internet source.
pub(super) fn strict_rp_filter(
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

pub(super) fn primary_not_preferred(
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
