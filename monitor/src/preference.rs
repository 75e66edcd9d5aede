//! Which route the kernel prefers among routes to the same destination.
//!
//! Among routes with the same table and prefix the kernel uses the lowest metric.
//! Among equal metrics the IPv4 FIB takes the first route it lists (a route added
//! later without `append` is listed first), while IPv6 may rotate among equal-metric
//! routers. The static rule here captures the first two; where the kernel can be
//! asked, [`kernel_default_choice`] records the route it actually picks for a
//! destination outside every more specific route, and that answer wins.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::model::{Family, NetworkModel, Route};

/// Addresses used to ask the kernel for its default-route choice: well-known public
/// resolvers, used only as FIB lookup keys (`ip route get`); nothing is sent.
const PROBES_V4: [&str; 4] = ["1.1.1.1", "8.8.8.8", "9.9.9.9", "208.67.222.222"];
const PROBES_V6: [&str; 3] = [
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2620:fe::fe",
];

/// A probe address of `family` that no non-default forwarding route covers, so
/// the kernel's answer for it is a default route. `None` if all are covered.
pub fn default_probe(model: &NetworkModel, family: Family) -> Option<IpAddr> {
    let candidates: &[&str] = match family {
        Family::Ipv4 => &PROBES_V4,
        Family::Ipv6 => &PROBES_V6,
    };
    candidates
        .iter()
        .map(|s| s.parse::<IpAddr>().expect("valid literal"))
        .find(|probe| {
            !model
                .routes
                .iter()
                .any(|r| !r.is_default() && r.family == family && r.dst.contains(probe))
        })
}

/// The kernel's answer for a default probe: the table, device and gateway it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelChoice {
    /// Family of the probe.
    pub family: Family,
    /// Table of the chosen route.
    pub table: u32,
    /// Output interface.
    pub ifindex: Option<u32>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
}

impl KernelChoice {
    /// Builds a choice from the kernel's `RTM_GETROUTE` reply.
    pub fn from_reply(reply: &Route) -> Self {
        Self {
            family: reply.family,
            table: reply.table,
            ifindex: reply.nexthops.first().and_then(|nh| nh.ifindex),
            gateway: reply.gateway(),
        }
    }
}

/// Whether routes to this prefix are scoped to their device, so that one per device
/// is used rather than one overall: IPv6 link-local (`fe80::/10`) and multicast
/// (`ff00::/8`) destinations always name their interface.
fn device_scoped(prefix: &IpNet) -> bool {
    match prefix {
        IpNet::V6(net) => {
            let first = net.network().segments()[0];
            net.prefix_len() >= 10 && first & 0xffc0 == 0xfe80
                || net.prefix_len() >= 8 && first & 0xff00 == 0xff00
        }
        IpNet::V4(_) => false,
    }
}

/// Key of the group of routes among which the kernel uses one.
type GroupKey = (Family, u32, IpNet, Option<u32>);

fn group_key(route: &Route) -> GroupKey {
    let prefix = route.dst.trunc();
    let device = device_scoped(&prefix)
        .then(|| route.nexthops.first().and_then(|nh| nh.ifindex))
        .flatten();
    (route.family, route.table, prefix, device)
}

/// Indexes (into `model.routes`) of the preferred route of every group of routes
/// with the same family, table and prefix (and device, for device-scoped prefixes).
pub fn preferred_routes(model: &NetworkModel, kernel: &[KernelChoice]) -> HashSet<usize> {
    let mut best: HashMap<GroupKey, usize> = HashMap::new();
    for (index, route) in model.routes.iter().enumerate() {
        let key = group_key(route);
        best.entry(key)
            .and_modify(|current| {
                let cur = &model.routes[*current];
                if (route.metric, route.order) < (cur.metric, cur.order) {
                    *current = index;
                }
            })
            .or_insert(index);
    }
    for choice in kernel {
        let key = (
            choice.family,
            choice.table,
            choice.family.default_prefix(),
            None,
        );
        let matching = model.routes.iter().enumerate().find(|(_, r)| {
            group_key(r) == key
                && r.nexthops
                    .iter()
                    .any(|nh| nh.ifindex == choice.ifindex && nh.gateway == choice.gateway)
        });
        if let Some((index, _)) = matching {
            best.insert(key, index);
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::table,
        testutil::{default_route, model_with_links, push_routes, route},
    };

    fn two_defaults(metric5: u32, metric6: u32) -> NetworkModel {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), metric5, table::MAIN),
                default_route(3, Some("10.0.2.1"), metric6, table::MAIN),
                route("10.0.1.0/24", 2, None, 0, table::MAIN),
            ],
        );
        model
    }

    #[test]
    fn lowest_metric_wins() {
        let model = two_defaults(1024, 1000);
        let preferred = preferred_routes(&model, &[]);
        assert!(preferred.contains(&1));
        assert!(!preferred.contains(&0));
        assert!(
            preferred.contains(&2),
            "a route alone in its group is preferred"
        );
    }

    #[test]
    fn tie_goes_to_the_first_listed_unless_the_kernel_says_otherwise() {
        let model = two_defaults(1024, 1024);
        let preferred = preferred_routes(&model, &[]);
        assert!(preferred.contains(&0) && !preferred.contains(&1));
        let kernel = KernelChoice {
            family: Family::Ipv4,
            table: table::MAIN,
            ifindex: Some(3),
            gateway: Some("10.0.2.1".parse().unwrap()),
        };
        let preferred = preferred_routes(&model, &[kernel]);
        assert!(preferred.contains(&1) && !preferred.contains(&0));
    }

    #[test]
    fn link_local_and_multicast_routes_are_per_device() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                route("fe80::/64", 2, None, 256, table::MAIN),
                route("fe80::/64", 3, None, 256, table::MAIN),
                route("ff00::/8", 2, None, 256, table::LOCAL),
                route("ff00::/8", 3, None, 256, table::LOCAL),
                route("10.0.0.0/24", 2, None, 0, table::MAIN),
                route("10.0.0.0/24", 3, None, 0, table::MAIN),
            ],
        );
        let preferred = preferred_routes(&model, &[]);
        assert!((0..4).all(|i| preferred.contains(&i)), "{preferred:?}");
        // The same IPv4 subnet on two devices does compete: the first listed wins.
        assert!(preferred.contains(&4) && !preferred.contains(&5));
    }

    #[test]
    fn probe_avoids_more_specific_routes() {
        let mut model = two_defaults(1024, 1024);
        assert_eq!(
            default_probe(&model, Family::Ipv4),
            Some("1.1.1.1".parse().unwrap())
        );
        push_routes(&mut model, [route("1.0.0.0/8", 2, None, 0, table::MAIN)]);
        assert_eq!(
            default_probe(&model, Family::Ipv4),
            Some("8.8.8.8".parse().unwrap())
        );
        assert!(default_probe(&model, Family::Ipv6).is_some());
    }
}
