//! Decides which route each `(egress interface, prefix)` key of the kernel's LPM
//! tries stands for, and numbers the routes whose egress the kernel counts.
//!
//! The data path sees the device a packet leaves by and its destination, not the FIB
//! lookup that chose them. For every monitored interface, the tries hold the
//! prefixes of the routes that leave by it; the longest match for the destination is
//! the route that carried the packet, with the default route via the interface
//! catching everything else (see `monitor-ebpf` for the kernel side).
//!
//! Source-based policy routing (`ip rule from <prefix> lookup <table>`, the per-ENI
//! tables of amazon-ec2-net-utils, nodeadm and the VPC CNI) is modelled with table
//! slots: each table such a rule selects gets its own slot of keys, the rules'
//! source prefixes map sources to slots, and the kernel side looks up the slot of
//! the packet's source before the main table's slot 0.
//!
//! When several routes share a key (same slot, prefix and device: a route in the main
//! table and one in a table no rule selects, or two metrics) only one can be counted;
//! the main table wins, then the lowest metric, then the kernel's dump order. The
//! others are reported with no counters of their own.

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    net::IpAddr,
};

use ipnet::IpNet;

use monitor_common::MAIN_TABLE_SLOT;

use crate::{
    model::{NetworkModel, Route, Rule, table},
    preference::FastHash,
};

/// Priority of the stock `lookup main` rule: source rules that matter come before it.
const MAIN_RULE_PRIORITY: u32 = 32766;

/// One entry of an LPM trie: traffic to `prefix` leaving by `ifindex` belongs to
/// route `route_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrieEntry {
    /// Egress interface.
    pub ifindex: u32,
    /// Table slot ([`MAIN_TABLE_SLOT`] or a source rule's table).
    pub table_slot: u32,
    /// Destination prefix (network address, host bits zero).
    pub prefix: IpNet,
    /// Index into the route counter array.
    pub route_id: u32,
}

/// A source prefix whose packets are looked up in a table slot first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRule {
    /// The rule's `from` prefix.
    pub prefix: IpNet,
    /// The slot of the rule's table.
    pub table_slot: u32,
}

/// The content of the kernel's route tries and the meaning of each route id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributionPlan {
    /// Trie entries of both families.
    pub entries: Vec<TrieEntry>,
    /// Source prefixes of policy rules and the slots they select.
    pub source_rules: Vec<SourceRule>,
    /// `route_ids[id]` is the index in `NetworkModel::routes` of the route counted
    /// under `id`.
    pub route_ids: Vec<usize>,
    /// The inverse of `route_ids`.
    id_by_route: HashMap<usize, u32, FastHash>,
}

impl AttributionPlan {
    /// Builds the plan for the routes of `monitored` interfaces.
    pub fn build(model: &NetworkModel, monitored: &BTreeSet<u32>) -> Self {
        let (slots, source_rules) = table_slots(&model.rules);
        // (ifindex, table slot, prefix) → index of the winning route in model.routes
        let mut winners: HashMap<(u32, u32, IpNet), usize, FastHash> =
            HashMap::with_capacity_and_hasher(model.routes.len(), FastHash::default());
        for (index, route) in model.routes.iter().enumerate() {
            if !route.forwards() || route.table == table::LOCAL {
                continue;
            }
            let prefix = route.dst.trunc();
            let table_slot = slots.get(&route.table).copied().unwrap_or(MAIN_TABLE_SLOT);
            for ifindex in route.ifindexes().filter(|i| monitored.contains(i)) {
                match winners.entry((ifindex, table_slot, prefix)) {
                    Entry::Vacant(entry) => {
                        entry.insert(index);
                    }
                    Entry::Occupied(mut entry) => {
                        if rank(route) < rank(&model.routes[*entry.get()]) {
                            entry.insert(index);
                        }
                    }
                }
            }
        }

        let mut plan = Self {
            source_rules,
            ..Self::default()
        };
        let mut keys: Vec<_> = winners.into_iter().collect();
        // Deterministic ids: in the order the kernel listed the routes.
        keys.sort_unstable_by_key(|((ifindex, slot, prefix), index)| {
            (*index, *ifindex, *slot, *prefix)
        });
        for ((ifindex, table_slot, prefix), index) in keys {
            let next_id = u32::try_from(plan.route_ids.len()).expect("fewer than 2^32 routes");
            let route_id = *plan.id_by_route.entry(index).or_insert(next_id);
            if route_id == next_id {
                plan.route_ids.push(index);
            }
            plan.entries.push(TrieEntry {
                ifindex,
                table_slot,
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

    /// Finds the route a packet from `src` to `dst` leaving by `ifindex` is
    /// attributed to, the way the kernel side does. Used to explain and test it.
    pub fn attribute(&self, ifindex: u32, src: IpAddr, dst: IpAddr) -> Option<u32> {
        let lookup = |slot: u32| {
            self.entries
                .iter()
                .filter(|e| e.ifindex == ifindex && e.table_slot == slot && e.prefix.contains(&dst))
                .max_by_key(|e| e.prefix.prefix_len())
                .map(|e| e.route_id)
        };
        self.source_rules
            .iter()
            .filter(|r| r.prefix.contains(&src))
            .max_by_key(|r| r.prefix.prefix_len())
            .and_then(|r| lookup(r.table_slot))
            .or_else(|| lookup(MAIN_TABLE_SLOT))
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

/// Gives each table that a plain source rule (`from <prefix> lookup <table>`, no
/// other selector, before the main rule) selects a slot, and lists the rules'
/// prefixes with their slots. The first rule (lowest priority) for a prefix wins.
fn table_slots(rules: &[Rule]) -> (HashMap<u32, u32>, Vec<SourceRule>) {
    let mut rules: Vec<&Rule> = rules
        .iter()
        .filter(|r| {
            r.action == "lookup"
                && r.src.is_some()
                && r.dst.is_none()
                && r.iif.is_none()
                && r.oif.is_none()
                && r.fwmark.is_none()
                && r.priority < MAIN_RULE_PRIORITY
                && ![table::MAIN, table::LOCAL, table::DEFAULT].contains(&r.table)
        })
        .collect();
    rules.sort_by_key(|r| r.priority);
    let mut slots: HashMap<u32, u32> = HashMap::new();
    let mut source_rules: Vec<SourceRule> = Vec::new();
    for rule in rules {
        let next = u32::try_from(slots.len()).expect("few tables") + 1;
        let table_slot = *slots.entry(rule.table).or_insert(next);
        let prefix = rule.src.expect("filtered").trunc();
        if !source_rules.iter().any(|r| r.prefix == prefix) {
            source_rules.push(SourceRule { prefix, table_slot });
        }
    }
    (slots, source_rules)
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
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("198.51.100.10")),
            Some(id(0))
        );
        assert_eq!(
            plan.attribute(3, ip("10.0.2.10"), ip("198.51.100.10")),
            Some(id(1))
        );
        // Subnet and host routes beat the default.
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("10.0.1.20")),
            Some(id(2))
        );
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("10.0.1.1")),
            Some(id(4))
        );
        // A route of another interface never matches: 10.0.2.0/24 leaving by ens5
        // falls back to ens5's default route.
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("10.0.2.20")),
            Some(id(0))
        );
    }

    #[test]
    fn only_monitored_interfaces_get_entries() {
        let model = eks_model();
        let plan = AttributionPlan::build(&model, &BTreeSet::from([3]));
        assert!(plan.entries.iter().all(|e| e.ifindex == 3));
        assert_eq!(plan.entry_counts(), (2, 0));
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("198.51.100.10")),
            None
        );
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
        assert_eq!(plan.attribute(2, ip("10.0.1.10"), ip("1.1.1.1")), Some(0));
    }

    #[test]
    fn multipath_route_keys_every_device_with_one_id() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut ecmp = default_route(2, Some("10.0.1.1"), 0, table::MAIN);
        ecmp.nexthops.push(crate::model::NextHop {
            gateway: Some(ip("10.0.2.1")),
            ifindex: Some(3),
            hops: 0,
            flags: 0,
        });
        ecmp.multipath = true;
        push_routes(&mut model, [ecmp]);
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2, 3]));
        assert_eq!(plan.entries.len(), 2);
        assert_eq!(
            plan.attribute(2, ip("10.0.1.10"), ip("1.1.1.1")),
            plan.attribute(3, ip("10.0.2.10"), ip("1.1.1.1"))
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
        assert_eq!(
            plan.attribute(2, ip("2001:db8:1::10"), ip("2001:db8:1::99")),
            plan.route_id_of(1)
        );
        assert_eq!(
            plan.attribute(2, ip("2001:db8:1::10"), ip("2001:db8:2::1")),
            plan.route_id_of(0)
        );
    }

    #[test]
    fn source_rules_select_their_table_first() {
        let mut model = eks_model();
        // amazon-ec2-net-utils style: ens6's address looks up table 10002.
        push_routes(&mut model, [default_route(3, Some("10.0.2.1"), 0, 10_002)]);
        model.rules.push(crate::model::Rule {
            family: crate::model::Family::Ipv4,
            priority: 1000,
            table: 10_002,
            src: Some("10.0.2.10/32".parse().unwrap()),
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            action: "lookup".to_owned(),
        });
        let plan = AttributionPlan::build(&model, &BTreeSet::from([2, 3]));
        let id = |index| plan.route_id_of(index).unwrap();
        assert_eq!(plan.source_rules.len(), 1);
        // ens6's address out of ens6: table 10002's default route carried it.
        assert_eq!(
            plan.attribute(3, ip("10.0.2.10"), ip("198.51.100.10")),
            Some(id(5))
        );
        // Another source out of ens6: the main table's route.
        assert_eq!(
            plan.attribute(3, ip("10.0.1.10"), ip("198.51.100.10")),
            Some(id(1))
        );
        // Table 10002 has no subnet route, so the kernel sends even on-link
        // destinations from that source through its default route.
        assert_eq!(
            plan.attribute(3, ip("10.0.2.10"), ip("10.0.2.20")),
            Some(id(5))
        );
        // Out of ens5, table 10002 has no route at all: the main table's.
        assert_eq!(
            plan.attribute(2, ip("10.0.2.10"), ip("198.51.100.10")),
            Some(id(0))
        );
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
