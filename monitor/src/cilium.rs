//! What the Cilium agent concludes from this node's default routes.
//!
//! Cilium finds "the node's default route" with `lookupDefaultRoute(family)` in
//! `pkg/datapath/linux/route/route_linux.go`: it lists the family's routes with
//! vishvananda/netlink's `RouteListFiltered(family, &Route{Dst: nil},
//! RT_FILTER_DST)`, sorts them by `Priority` and fails when there is none ("Default
//! route not found for family %d") or when the first two have the same priority
//! ("Found multiple default routes with the same priority: %v vs %v").
//! `NodeDeviceWithDefaultRoute(v4, v6)` calls it per enabled family, fails with
//! "IPv4/IPv6 have different link indices" when both families resolve to different
//! non-zero links, and then resolves the link with `LinkByIndex`, which fails for the
//! index 0 of a multipath route ("invalid argument", the kernel's `EINVAL`).
//!
//! netlink's filter decides what Cilium sees, and it is not routemon's view of
//! egress: only the main table (the 8-bit `rtm_table`, so tables above 255 are never
//! main), only exact `/0` destinations, cloned routes skipped, every route type kept
//! (a blackhole default competes like a real one), link state never checked, a
//! missing `RTA_PRIORITY` read as 0, and a multipath route listed once with link
//! index 0. [`Verdict::of`] reproduces that from the model, in the kernel's dump
//! order, and renders the error with netlink's `Route.String()`.

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::model::{Family, NetworkModel, Route, table};

/// `RTM_F_CLONED`: a cached clone, which netlink's route listing skips.
const RTM_F_CLONED: u32 = 0x200;
/// `RTNH_F_PERVASIVE`, printed as `pervasive` by netlink.
const RTNH_F_PERVASIVE: u32 = 2;
/// `RTNH_F_ONLINK`, printed as `onlink` by netlink.
const RTNH_F_ONLINK: u32 = 4;
/// What netlink's `LinkByIndex(0)` returns: the kernel answers `RTM_GETLINK` for
/// index 0 without a name with `EINVAL`, which Go prints like this.
pub const LINK_INDEX_ZERO_ERROR: &str = "invalid argument";
/// `NodeDeviceWithDefaultRoute`'s error when the families disagree.
pub const DIFFERENT_LINKS_ERROR: &str = "IPv4/IPv6 have different link indices";

/// The address families the Cilium agent runs with (`enable-ipv4`, `enable-ipv6`):
/// cluster configuration routemon cannot see, so the operator says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CiliumFamilies {
    /// IPv4 only (the EKS default).
    #[default]
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both (dual stack).
    Dual,
}

impl CiliumFamilies {
    /// Whether Cilium looks up the default route of `family`.
    pub fn enables(self, family: Family) -> bool {
        matches!(
            (self, family),
            (Self::Dual, _) | (Self::Ipv4, Family::Ipv4) | (Self::Ipv6, Family::Ipv6)
        )
    }
}

/// The result of Cilium's default-route lookup for one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// One route has the lowest priority and one output link: Cilium uses it.
    Ok,
    /// The two lowest-priority routes tie: `lookupDefaultRoute` fails.
    Tie,
    /// The main table has no default route of the family: `lookupDefaultRoute` fails.
    NoDefaultRoute,
    /// The best route is one multipath route: the lookup succeeds, but the route has
    /// no single link, so resolving the node's device fails.
    MultipathDefault,
    /// The best route is a blackhole, unreachable or prohibit route: the lookup
    /// returns it; IPv4 has no link (resolving the device fails), IPv6 names `lo`.
    RejectDefault,
}

impl Outcome {
    /// Every outcome, for metrics that export one series per value.
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::Tie,
        Self::NoDefaultRoute,
        Self::MultipathDefault,
        Self::RejectDefault,
    ];

    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Tie => "tie",
            Self::NoDefaultRoute => "no_default_route",
            Self::MultipathDefault => "multipath_default",
            Self::RejectDefault => "reject_default",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cilium's default-route verdict for one family (the JSON `cilium` array's entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyVerdict {
    /// Address family.
    pub family: Family,
    /// Whether the agent uses this family (`--cilium-family`); findings are raised
    /// only for enabled families.
    pub enabled: bool,
    /// What the lookup concludes.
    pub outcome: Outcome,
    /// The device Cilium would take as the node's default-route device, when it
    /// resolves to one.
    pub device: Option<String>,
    /// The exact error text Cilium would get, when it fails.
    pub error: Option<String>,
    /// The chosen route's link index as netlink reports it (0 when there is none).
    #[serde(skip)]
    pub link_index: u32,
    /// The chosen route (or the first of the tied ones), for messages.
    #[serde(skip)]
    pub route: Option<usize>,
}

/// Cilium's verdict for both families, with the families the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The families the agent uses.
    pub families: CiliumFamilies,
    /// One entry per family, IPv4 first.
    pub per_family: Vec<FamilyVerdict>,
}

impl Verdict {
    /// Computes the verdict of both families from `model`.
    pub fn of(model: &NetworkModel, families: CiliumFamilies) -> Self {
        Self {
            families,
            per_family: [Family::Ipv4, Family::Ipv6]
                .into_iter()
                .map(|family| lookup_default_route(model, family, families.enables(family)))
                .collect(),
        }
    }

    /// The verdict of one family.
    pub fn family(&self, family: Family) -> &FamilyVerdict {
        self.per_family
            .iter()
            .find(|v| v.family == family)
            .expect("both families are always evaluated")
    }

    /// `NodeDeviceWithDefaultRoute(true, true)`'s different-link failure: both
    /// lookups succeed, IPv4's link is not 0 and IPv6's differs. Only with
    /// `--cilium-family dual`. Returns the two devices.
    pub fn dual_stack_links(&self, model: &NetworkModel) -> Option<(String, String)> {
        if self.families != CiliumFamilies::Dual {
            return None;
        }
        let v4 = self.family(Family::Ipv4);
        let v6 = self.family(Family::Ipv6);
        let looked_up =
            |v: &FamilyVerdict| !matches!(v.outcome, Outcome::Tie | Outcome::NoDefaultRoute);
        (looked_up(v4) && looked_up(v6) && v4.link_index != 0 && v4.link_index != v6.link_index)
            .then(|| {
                (
                    model.link_name(v4.link_index),
                    link_or_none(model, v6.link_index),
                )
            })
    }
}

fn link_or_none(model: &NetworkModel, index: u32) -> String {
    if index == 0 {
        "none (link index 0)".to_owned()
    } else {
        model.link_name(index)
    }
}

/// The routes `RouteListFiltered(family, &Route{Dst: nil}, RT_FILTER_DST)` returns,
/// as indexes into `model.routes`, in the kernel's dump order.
pub fn candidates(model: &NetworkModel, family: Family) -> Vec<usize> {
    let mut listed: Vec<usize> = model
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.family == family
                && r.flags & RTM_F_CLONED == 0
                && r.table == table::MAIN
                && r.dst.prefix_len() == 0
        })
        .map(|(i, _)| i)
        .collect();
    listed.sort_by_key(|&i| model.routes[i].order);
    listed
}

fn lookup_default_route(model: &NetworkModel, family: Family, enabled: bool) -> FamilyVerdict {
    let mut listed = candidates(model, family);
    // Go's sort.Slice is an insertion sort (stable) up to 12 elements; beyond that
    // the pair printed for a tie is unspecified, the outcome is not.
    listed.sort_by_key(|&i| model.routes[i].metric);
    let mut verdict = FamilyVerdict {
        family,
        enabled,
        outcome: Outcome::Ok,
        device: None,
        error: None,
        link_index: 0,
        route: listed.first().copied(),
    };
    let Some(&best) = listed.first() else {
        verdict.outcome = Outcome::NoDefaultRoute;
        verdict.error = Some(format!(
            "Default route not found for family {}",
            family_number(family)
        ));
        return verdict;
    };
    let best_route = &model.routes[best];
    if let Some(&second) = listed.get(1)
        && model.routes[second].metric == best_route.metric
    {
        verdict.outcome = Outcome::Tie;
        verdict.error = Some(format!(
            "Found multiple default routes with the same priority: {} vs {}",
            go_route_string(best_route),
            go_route_string(&model.routes[second])
        ));
        return verdict;
    }
    verdict.link_index = best_route.oif();
    verdict.outcome = if best_route.multipath {
        Outcome::MultipathDefault
    } else if best_route.rejects() {
        Outcome::RejectDefault
    } else {
        Outcome::Ok
    };
    if verdict.link_index == 0 {
        verdict.error = Some(LINK_INDEX_ZERO_ERROR.to_owned());
    } else if model.links.contains_key(&verdict.link_index) {
        verdict.device = Some(model.link_name(verdict.link_index));
    } else {
        verdict.error = Some("Link not found".to_owned());
    }
    verdict
}

/// `AF_INET`/`AF_INET6` as Cilium prints the family.
fn family_number(family: Family) -> u8 {
    match family {
        Family::Ipv4 => 2,
        Family::Ipv6 => 10,
    }
}

/// A Go `net.IP` as `%s` prints it (`<nil>` when absent).
fn go_ip(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "<nil>".to_owned(), |ip| ip.to_string())
}

/// netlink's `listFlags`: only `onlink` and `pervasive` are named.
fn go_flags(flags: u32) -> String {
    let mut names = Vec::new();
    if flags & RTNH_F_ONLINK != 0 {
        names.push("onlink");
    }
    if flags & RTNH_F_PERVASIVE != 0 {
        names.push("pervasive");
    }
    format!("[{}]", names.join(" "))
}

/// A gateway of another family than the route is sent as `RTA_VIA`, which netlink
/// keeps in `Via` (printed as `Via: Family: 10, Address: …`) instead of `Gw`.
fn split_gateway(family: Family, gateway: Option<IpAddr>) -> (Option<IpAddr>, Option<IpAddr>) {
    match gateway {
        Some(gw) if Family::of(&gw) != family => (None, Some(gw)),
        other => (other, None),
    }
}

fn go_via(via: IpAddr) -> String {
    format!(
        "Via: Family: {}, Address: {via}",
        family_number(Family::of(&via))
    )
}

/// vishvananda/netlink's `Route.String()` for a route as Cilium's error prints it.
/// The `Expires:` element newer netlink versions append for routes with a lifetime
/// is not rendered (routemon does not model route lifetimes).
pub fn go_route_string(route: &Route) -> String {
    let mut elems = Vec::new();
    if !route.multipath {
        elems.push(format!("Ifindex: {}", route.oif()));
    }
    elems.push(format!("Dst: {}", route.dst));
    let (gateway, via) = if route.multipath {
        (None, None)
    } else {
        split_gateway(route.family, route.gateway())
    };
    if let Some(via) = via {
        elems.push(go_via(via));
    }
    elems.push(format!("Src: {}", go_ip(route.pref_src)));
    if route.multipath {
        let mut hops = String::from("[");
        for (i, hop) in route.nexthops.iter().enumerate() {
            if i > 0 {
                hops.push(' ');
            }
            let (gateway, via) = split_gateway(route.family, hop.gateway);
            let _ = write!(hops, "{{Ifindex: {}", hop.ifindex.unwrap_or(0));
            if let Some(via) = via {
                let _ = write!(hops, " {}", go_via(via));
            }
            let _ = write!(
                hops,
                " Weight: {} Gw: {} Flags: {}}}",
                u32::from(hop.hops) + 1,
                go_ip(gateway),
                go_flags(u32::from(hop.flags))
            );
        }
        hops.push(']');
        elems.push(format!("Gw: {hops}"));
    } else {
        elems.push(format!("Gw: {}", go_ip(gateway)));
    }
    elems.push(format!("Flags: {}", go_flags(route.flags)));
    elems.push(format!("Table: {}", route.table));
    elems.push(format!("Realm: {}", route.realm));
    format!("{{{}}}", elems.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{NextHop, RouteKind},
        testutil::{default_route, model_with_links, push_routes, route},
    };

    fn v6_default(ifindex: u32, gw: Option<&str>, metric: u32) -> Route {
        route("::/0", ifindex, gw, metric, table::MAIN)
    }

    fn multipath(family: Family, hops: &[(u32, &str)], metric: u32) -> Route {
        let dst = match family {
            Family::Ipv4 => "0.0.0.0/0",
            Family::Ipv6 => "::/0",
        };
        let mut r = route(dst, hops[0].0, Some(hops[0].1), metric, table::MAIN);
        r.nexthops = hops
            .iter()
            .map(|(ifindex, gw)| NextHop {
                gateway: Some(gw.parse().unwrap()),
                ifindex: Some(*ifindex),
                hops: 0,
                flags: 0,
            })
            .collect();
        r.multipath = true;
        r
    }

    fn reject(family: Family, kind: RouteKind, metric: u32) -> Route {
        let mut r = match family {
            Family::Ipv4 => default_route(0, None, metric, table::MAIN),
            // The kernel gives IPv6 reject routes the loopback device.
            Family::Ipv6 => v6_default(1, None, metric),
        };
        r.kind = kind;
        if family == Family::Ipv4 {
            r.nexthops.clear();
        }
        r
    }

    fn verdict(routes: Vec<Route>, family: Family) -> FamilyVerdict {
        let mut model = model_with_links(&["lo", "eth0", "eth1", "eth2"]);
        push_routes(&mut model, routes);
        Verdict::of(&model, CiliumFamilies::Dual)
            .family(family)
            .clone()
    }

    /// (case, routes, family, outcome, device, error).
    type Case = (
        &'static str,
        Vec<Route>,
        Family,
        Outcome,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// Each case names the part of Cilium's or netlink's code that decides it.
    #[test]
    fn verdicts_follow_cilium_lookup_default_route() {
        use Family::{Ipv4, Ipv6};
        use Outcome::*;
        let eth0 = |m| default_route(2, Some("10.0.0.1"), m, table::MAIN);
        let eth1 = |m| default_route(3, Some("10.0.1.1"), m, table::MAIN);
        let eth2 = |m| default_route(4, Some("10.0.2.1"), m, table::MAIN);
        let tie01 = "Found multiple default routes with the same priority: \
             {Ifindex: 2 Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0} vs \
             {Ifindex: 3 Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.1.1 Flags: [] Table: 254 Realm: 0}";
        let cases: Vec<Case> = vec![
            // lookupDefaultRoute: one route, routes[0] returned.
            ("single", vec![eth0(0)], Ipv4, Ok, Some("eth0"), None),
            // sort by Priority, routes[0] wins.
            (
                "distinct metrics",
                vec![eth1(200), eth0(100)],
                Ipv4,
                Ok,
                Some("eth0"),
                None,
            ),
            // routes[0].Priority == routes[1].Priority → the tie error.
            (
                "equal metrics",
                vec![eth0(1024), eth1(1024)],
                Ipv4,
                Tie,
                None,
                Some(tie01),
            ),
            // a missing RTA_PRIORITY is Priority 0 (deserializeRoute).
            (
                "no metric on either",
                vec![eth0(0), eth1(0)],
                Ipv4,
                Tie,
                None,
                Some(tie01),
            ),
            // only [0] vs [1] is compared: a tie above the minimum is ignored.
            (
                "tie above the best",
                vec![eth0(100), eth1(200), eth2(200)],
                Ipv4,
                Ok,
                Some("eth0"),
                None,
            ),
            (
                "tie below a unique best",
                vec![eth0(100), eth1(100), eth2(50)],
                Ipv4,
                Ok,
                Some("eth2"),
                None,
            ),
            // RouteListFiltered keeps every type: the blackhole competes.
            (
                "blackhole tied with a real route",
                vec![reject(Ipv4, RouteKind::Blackhole, 100), eth0(100)],
                Ipv4,
                Tie,
                None,
                Some(
                    "Found multiple default routes with the same priority: \
                     {Ifindex: 0 Dst: 0.0.0.0/0 Src: <nil> Gw: <nil> Flags: [] Table: 254 Realm: 0} vs \
                     {Ifindex: 2 Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0}",
                ),
            ),
            // the unique best is returned; LinkByIndex(0) fails.
            (
                "unreachable as the unique best",
                vec![reject(Ipv4, RouteKind::Unreachable, 50), eth0(100)],
                Ipv4,
                RejectDefault,
                None,
                Some(LINK_INDEX_ZERO_ERROR),
            ),
            // IPv6 reject routes leave by lo: Cilium would take lo.
            (
                "IPv6 blackhole as the unique best",
                vec![
                    reject(Ipv6, RouteKind::Blackhole, 100),
                    v6_default(2, Some("fe80::1"), 1024),
                ],
                Ipv6,
                RejectDefault,
                Some("lo"),
                None,
            ),
            // one multipath route is one candidate with LinkIndex 0.
            (
                "IPv4 multipath",
                vec![multipath(Ipv4, &[(2, "10.0.0.1"), (3, "10.0.1.1")], 0)],
                Ipv4,
                MultipathDefault,
                None,
                Some(LINK_INDEX_ZERO_ERROR),
            ),
            (
                "multipath behind a better single route",
                vec![
                    multipath(Ipv4, &[(2, "10.0.0.1"), (3, "10.0.1.1")], 200),
                    eth0(100),
                ],
                Ipv4,
                Ok,
                Some("eth0"),
                None,
            ),
            (
                "IPv6 merged multipath",
                vec![multipath(Ipv6, &[(2, "fe80::1"), (3, "fe80::2")], 1024)],
                Ipv6,
                MultipathDefault,
                None,
                Some(LINK_INDEX_ZERO_ERROR),
            ),
            // RouteListFiltered skips tables other than main.
            (
                "ties in another table only",
                vec![
                    eth0(1024),
                    default_route(3, Some("10.0.1.1"), 10, 100),
                    default_route(4, Some("10.0.2.1"), 10, 100),
                ],
                Ipv4,
                Ok,
                Some("eth0"),
                None,
            ),
            (
                "no default in main",
                vec![default_route(3, Some("10.0.1.1"), 10, 1000)],
                Ipv4,
                NoDefaultRoute,
                None,
                Some("Default route not found for family 2"),
            ),
            (
                "no IPv6 default",
                vec![eth0(0)],
                Ipv6,
                NoDefaultRoute,
                None,
                Some("Default route not found for family 10"),
            ),
        ];
        for (case, routes, family, outcome, device, error) in cases {
            let v = verdict(routes, family);
            assert_eq!(v.outcome, outcome, "{case}");
            assert_eq!(v.device.as_deref(), device, "{case}");
            assert_eq!(v.error.as_deref(), error, "{case}");
        }
    }

    #[test]
    fn routes_render_like_netlink() {
        let mut r = default_route(3, Some("192.0.2.1"), 1024, table::MAIN);
        r.flags = RTNH_F_ONLINK | 0x10; // onlink + linkdown (not printed)
        r.pref_src = Some("10.0.0.5".parse().unwrap());
        assert_eq!(
            go_route_string(&r),
            "{Ifindex: 3 Dst: 0.0.0.0/0 Src: 10.0.0.5 Gw: 192.0.2.1 Flags: [onlink] Table: 254 Realm: 0}"
        );
        let mut v4_via_v6 = default_route(2, Some("fe80::1"), 0, table::MAIN);
        v4_via_v6.realm = 7;
        assert_eq!(
            go_route_string(&v4_via_v6),
            "{Ifindex: 2 Dst: 0.0.0.0/0 Via: Family: 10, Address: fe80::1 Src: <nil> Gw: <nil> \
             Flags: [] Table: 254 Realm: 7}"
        );
        let mut mp = multipath(Family::Ipv4, &[(2, "10.0.0.1"), (3, "10.0.1.1")], 0);
        mp.nexthops[1].hops = 2;
        mp.nexthops[1].flags = RTNH_F_ONLINK as u8;
        assert_eq!(
            go_route_string(&mp),
            "{Dst: 0.0.0.0/0 Src: <nil> Gw: [{Ifindex: 2 Weight: 1 Gw: 10.0.0.1 Flags: []} \
             {Ifindex: 3 Weight: 3 Gw: 10.0.1.1 Flags: [onlink]}] Flags: [] Table: 254 Realm: 0}"
        );
    }

    #[test]
    fn cloned_routes_are_not_candidates() {
        let mut cloned = default_route(3, Some("10.0.1.1"), 0, table::MAIN);
        cloned.flags = RTM_F_CLONED;
        let v = verdict(
            vec![default_route(2, Some("10.0.0.1"), 0, table::MAIN), cloned],
            Family::Ipv4,
        );
        assert_eq!(v.outcome, Outcome::Ok);
    }

    #[test]
    fn dual_stack_links_follow_node_device_with_default_route() {
        let mut model = model_with_links(&["lo", "eth0", "eth1"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.0.1"), 0, table::MAIN),
                v6_default(3, Some("fe80::2"), 1024),
            ],
        );
        let dual = Verdict::of(&model, CiliumFamilies::Dual);
        assert_eq!(
            dual.dual_stack_links(&model),
            Some(("eth0".into(), "eth1".into()))
        );
        assert_eq!(
            Verdict::of(&model, CiliumFamilies::Ipv4).dual_stack_links(&model),
            None
        );

        // IPv4 multipath (link 0) + IPv6 single: the `linkIndex != 0` guard skips
        // the comparison; no different-links error.
        let mut model = model_with_links(&["lo", "eth0", "eth1"]);
        push_routes(
            &mut model,
            [
                multipath(Family::Ipv4, &[(2, "10.0.0.1"), (3, "10.0.1.1")], 0),
                v6_default(3, Some("fe80::2"), 1024),
            ],
        );
        assert_eq!(
            Verdict::of(&model, CiliumFamilies::Dual).dual_stack_links(&model),
            None
        );

        // IPv4 single + IPv6 multipath (link 0): they differ.
        let mut model = model_with_links(&["lo", "eth0", "eth1"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.0.1"), 0, table::MAIN),
                multipath(Family::Ipv6, &[(2, "fe80::1"), (3, "fe80::2")], 1024),
            ],
        );
        assert_eq!(
            Verdict::of(&model, CiliumFamilies::Dual).dual_stack_links(&model),
            Some(("eth0".into(), "none (link index 0)".into()))
        );
    }
}
