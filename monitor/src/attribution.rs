//! Decides which route each `(egress interface, prefix)` key of the kernel's LPM
//! tries stands for, and numbers the routes whose egress the kernel counts.
//!
//! The data path sees the device a packet leaves by and its destination, not the FIB
//! lookup that chose them. For every monitored interface, the tries hold the
//! prefixes of the routes that leave by it; the longest match for the destination is
//! the route that carried the packet, with the default route via the interface
//! catching everything else (see `monitor-ebpf` for the kernel side).
//!
//! When several routes share a key (same prefix, same device: a route in the main
//! table and one in a per-ENI table, or two metrics) only one can be counted; the
//! main table wins, then the lowest metric, then the kernel's dump order. The others
//! are reported with no counters of their own.

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::model::{NetworkModel, Route, table};

/// One entry of an LPM trie: traffic to `prefix` leaving by `ifindex` belongs to
/// route `route_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrieEntry {
    /// Egress interface.
    pub ifindex: u32,
    /// Destination prefix (network address, host bits zero).
    pub prefix: IpNet,
    /// Index into the route counter array.
    pub route_id: u32,
}

/// The content of the kernel's route tries and the meaning of each route id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributionPlan {
    /// Trie entries of both families.
    pub entries: Vec<TrieEntry>,
    /// `route_ids[id]` is the index in `NetworkModel::routes` of the route counted
    /// under `id`.
    pub route_ids: Vec<usize>,
    /// The inverse of `route_ids`.
    id_by_route: HashMap<usize, u32>,
}

impl AttributionPlan {
    /// Builds the plan for the routes of `monitored` interfaces.
    pub fn build(model: &NetworkModel, monitored: &BTreeSet<u32>) -> Self {
        // (ifindex, prefix) → index of the winning route in model.routes
        let mut winners: HashMap<(u32, IpNet), usize> = HashMap::new();
        for (index, route) in model.routes.iter().enumerate() {
            if !route.forwards() || route.table == table::LOCAL {
                continue;
            }
            let prefix = route.dst.trunc();
            for ifindex in route
                .ifindexes()
                .into_iter()
                .filter(|i| monitored.contains(i))
            {
                match winners.entry((ifindex, prefix)) {
                    Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                    Entry::Occupied(mut slot) => {
                        if rank(route) < rank(&model.routes[*slot.get()]) {
                            slot.insert(index);
                        }
                    }
                }
            }
        }

        let mut plan = Self::default();
        let mut keys: Vec<_> = winners.into_iter().collect();
        // Deterministic ids: in the order the kernel listed the routes.
        keys.sort_by_key(|((ifindex, prefix), index)| (*index, *ifindex, *prefix));
        for ((ifindex, prefix), index) in keys {
            let next_id = u32::try_from(plan.route_ids.len()).expect("fewer than 2^32 routes");
            let route_id = *plan.id_by_route.entry(index).or_insert(next_id);
            if route_id == next_id {
                plan.route_ids.push(index);
            }
            plan.entries.push(TrieEntry {
                ifindex,
                prefix,
                route_id,
            });
        }
        plan
    }

    /// The route id counting `model.routes[index]`, if it is counted.
    pub fn route_id_of(&self, index: usize) -> Option<u32> {
        self.id_by_route.get(&index).copied()
    }

    /// Finds the route a packet to `dst` leaving by `ifindex` is attributed to, the
    /// way the kernel's LPM lookup does. Used to explain and test the rule.
    pub fn attribute(&self, ifindex: u32, dst: IpAddr) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.ifindex == ifindex && e.prefix.contains(&dst))
            .max_by_key(|e| e.prefix.prefix_len())
            .map(|e| e.route_id)
    }

    /// Number of trie entries of each family: (IPv4, IPv6).
    pub fn entry_counts(&self) -> (usize, usize) {
        let v4 = self
            .entries
            .iter()
            .filter(|e| matches!(e.prefix, IpNet::V4(_)))
            .count();
        (v4, self.entries.len() - v4)
    }
}

/// Lower is better: the main table first, then the metric, then dump order.
fn rank(route: &Route) -> (bool, u32, usize) {
    (route.table != table::MAIN, route.metric, route.order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{default_route, model_with_links, push_routes, route};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// lo=1, ens5=2, ens6=3 with the EKS failure state plus connected routes.
    fn eks_model() -> NetworkModel {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
                default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
                route("10.0.1.0/24", 2, None, 0, table::MAIN),
                route("10.0.2.0/24", 3, None, 0, table::MAIN),
                route("10.0.1.1/32", 2, None, 1024, table::MAIN),
            ],
        );
        model
    }

    #[test]
    fn most_specific_route_of_the_egress_interface_wins() {
        let model = eks_model();
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2, 3]));
        let id = |index| plan.route_id_of(index).unwrap();
        // Internet traffic: the default route via the interface it left by.
        assert_eq!(plan.attribute(2, ip("198.51.100.10")), Some(id(0)));
        assert_eq!(plan.attribute(3, ip("198.51.100.10")), Some(id(1)));
        // Subnet and host routes beat the default.
        assert_eq!(plan.attribute(2, ip("10.0.1.20")), Some(id(2)));
        assert_eq!(plan.attribute(2, ip("10.0.1.1")), Some(id(4)));
        // A route of another interface never matches: 10.0.2.0/24 leaving by ens5
        // falls back to ens5's default route.
        assert_eq!(plan.attribute(2, ip("10.0.2.20")), Some(id(0)));
    }

    #[test]
    fn only_monitored_interfaces_get_entries() {
        let model = eks_model();
        let plan = AttributionPlan::build(&model, &BTreeSet::from([3]));
        assert!(plan.entries.iter().all(|e| e.ifindex == 3));
        assert_eq!(plan.entry_counts(), (2, 0));
        assert_eq!(plan.attribute(2, ip("198.51.100.10")), None);
    }

    #[test]
    fn shared_key_prefers_main_table_then_metric() {
        let mut model = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 0, 10_001),
                default_route(2, Some("10.0.1.1"), 2048, table::MAIN),
                default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
            ],
        );
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2]));
        assert_eq!(plan.route_ids, vec![2]);
        assert_eq!(plan.route_id_of(0), None);
        assert_eq!(plan.attribute(2, ip("1.1.1.1")), Some(0));
    }

    #[test]
    fn multipath_route_keys_every_device_with_one_id() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut ecmp = default_route(2, Some("10.0.1.1"), 0, table::MAIN);
        ecmp.nexthops.push(crate::model::NextHop {
            gateway: Some(ip("10.0.2.1")),
            ifindex: Some(3),
        });
        push_routes(&mut model, [ecmp]);
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2, 3]));
        assert_eq!(plan.entries.len(), 2);
        assert_eq!(
            plan.attribute(2, ip("1.1.1.1")),
            plan.attribute(3, ip("1.1.1.1"))
        );
    }

    #[test]
    fn ipv6_routes_and_host_bits() {
        let mut model = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut model,
            [
                route("::/0", 2, Some("fe80::1"), 1024, table::MAIN),
                // a prefix with host bits set is stored truncated
                route("2001:db8:1::5/64", 2, None, 256, table::MAIN),
            ],
        );
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2]));
        assert_eq!(plan.entry_counts(), (0, 2));
        assert!(
            plan.entries
                .iter()
                .any(|e| e.prefix.to_string() == "2001:db8:1::/64")
        );
        assert_eq!(plan.attribute(2, ip("2001:db8:1::99")), plan.route_id_of(1));
        assert_eq!(plan.attribute(2, ip("2001:db8:2::1")), plan.route_id_of(0));
    }

    #[test]
    fn local_table_and_drop_routes_are_ignored() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let mut local = route("10.0.1.10/32", 2, None, 0, table::LOCAL);
        local.kind = crate::model::RouteKind::Local;
        let mut blackhole = route("10.9.0.0/16", 2, None, 0, table::MAIN);
        blackhole.kind = crate::model::RouteKind::Blackhole;
        push_routes(&mut model, [local, blackhole]);
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2]));
        assert!(plan.entries.is_empty());
    }
}
