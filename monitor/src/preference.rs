//! Which routes the kernel uses among routes to the same destination.
//!
//! Among routes with the same table and prefix the kernel uses the lowest metric.
//! When several share the lowest metric there is no single winner: for IPv4 default
//! routes `fib_select_default()` keeps the node's own traffic on the first route while
//! its gateway's neighbour entry is reachable and rotates between the gateways from
//! one lookup to the next while the entries are only stale or permanent (observed
//! here: unconnected UDP sends split across both uplinks), and IPv6 either merges
//! them into one multipath route or chooses among routers per lookup. Every
//! route at the lowest metric is therefore marked preferred, and a tie is what the
//! `equal_metric_default_routes` finding reports.

use std::collections::{HashMap, HashSet};

/// A fast hasher for routemon's own indexes and keys (not attacker-controlled).
pub type FastHash = foldhash::fast::RandomState;

/// Indexes into `NetworkModel::routes`.
pub type RouteIndexSet = HashSet<usize, FastHash>;

use ipnet::IpNet;

use crate::model::{Family, NetworkModel, Route};

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

/// Indexes (into `model.routes`) of the routes the kernel uses: in every group of
/// routes with the same family, table and prefix (and device, for device-scoped
/// prefixes), those with the group's lowest metric.
pub fn preferred_routes(model: &NetworkModel) -> RouteIndexSet {
    preferred_among(model, |_| true)
}

/// [`preferred_routes`] restricted to default routes: what the findings and the
/// daemon's default-route metrics need, without grouping every route of a large
/// table on each change.
pub fn preferred_default_routes(model: &NetworkModel) -> RouteIndexSet {
    preferred_among(model, Route::is_default)
}

/// Preferred routes among those `selected`, which must select whole groups (a
/// property of the prefix, such as being a default route).
fn preferred_among(model: &NetworkModel, selected: impl Fn(&Route) -> bool) -> RouteIndexSet {
    let keyed: Vec<(usize, GroupKey, u32)> = model
        .routes
        .iter()
        .enumerate()
        .filter(|(_, route)| selected(route))
        .map(|(index, route)| (index, group_key(route), route.metric))
        .collect();
    let mut lowest: HashMap<&GroupKey, u32, FastHash> = HashMap::default();
    for (_, key, metric) in &keyed {
        lowest
            .entry(key)
            .and_modify(|m| *m = (*m).min(*metric))
            .or_insert(*metric);
    }
    keyed
        .iter()
        .filter(|(_, key, metric)| lowest[key] == *metric)
        .map(|(index, _, _)| *index)
        .collect()
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
        let preferred = preferred_routes(&model);
        assert!(preferred.contains(&1));
        assert!(!preferred.contains(&0));
        assert!(
            preferred.contains(&2),
            "a route alone in its group is preferred"
        );
    }

    #[test]
    fn a_tie_has_no_single_winner() {
        let model = two_defaults(1024, 1024);
        let preferred = preferred_routes(&model);
        assert!(preferred.contains(&0) && preferred.contains(&1));
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
        let preferred = preferred_routes(&model);
        assert!((0..4).all(|i| preferred.contains(&i)), "{preferred:?}");
        // The same IPv4 subnet on two devices does compete.
        model.routes[5].metric = 100;
        let preferred = preferred_routes(&model);
        assert!(preferred.contains(&4) && !preferred.contains(&5));
    }
}
