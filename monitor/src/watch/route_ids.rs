//! Route ids that stay the same while a route exists, so its counters keep
//! counting across routing changes and daemon restarts.
//!
//! [`AttributionPlan`] numbers routes afresh each time; a long-running monitor maps
//! those numbers onto stable ids kept here: a route keeps its id while it exists, a
//! freed id is zeroed in the kernel before another route gets it, and at start the
//! ids already in a pinned trie are taken over for the routes they belong to.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use crate::{
    attribution::AttributionPlan,
    ebpf::TrieKey,
    model::{Family, NetworkModel, NextHop, Route},
    preference::FastHash,
};

/// What makes a route the same route for counting.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Identity {
    family: Family,
    table: u32,
    dst: IpNet,
    metric: u32,
    /// Inline for one hop: an identity is built for every route on every change.
    nexthops: smallvec::SmallVec<[(Option<std::net::IpAddr>, Option<u32>); 1]>,
}

impl Identity {
    fn of(route: &Route) -> Self {
        Self {
            family: route.family,
            table: route.table,
            dst: route.dst,
            metric: route.metric,
            nexthops: route
                .nexthops
                .iter()
                .map(
                    |NextHop {
                         gateway, ifindex, ..
                     }| (*gateway, *ifindex),
                )
                .collect(),
        }
    }
}

/// The result of mapping a plan onto stable ids.
#[derive(Debug, Default)]
pub struct Assignment {
    /// Trie keys to write (`Some(id)`) or remove (`None`).
    pub trie_changes: Vec<(TrieKey, Option<u32>)>,
    /// Ids handed to a new route; their kernel counters must be zeroed first.
    pub fresh_ids: Vec<u32>,
    /// Routes left uncounted because every id is in use.
    pub uncounted: usize,
}

/// Stable route ids and the trie content that uses them.
#[derive(Debug)]
pub struct RouteIds {
    capacity: u32,
    by_identity: HashMap<Identity, u32, FastHash>,
    /// Counted routes by id, as last seen (for labelling their counters).
    routes: BTreeMap<u32, Route>,
    free: Vec<u32>,
    next: u32,
    trie: HashMap<TrieKey, u32, FastHash>,
    /// Ids found in a pinned trie at start, by trie key: honoured once each.
    inherited: HashMap<TrieKey, u32, FastHash>,
}

impl RouteIds {
    /// An empty registry of at most `capacity` ids; `inherited` is the content of
    /// the kernel's tries left by a previous routemon (empty for fresh maps).
    pub fn new(capacity: u32, inherited: Vec<(TrieKey, u32)>) -> Self {
        Self {
            capacity,
            by_identity: HashMap::default(),
            routes: BTreeMap::new(),
            free: Vec::new(),
            next: 0,
            trie: inherited.iter().copied().collect(),
            inherited: inherited
                .into_iter()
                .filter(|(_, id)| *id < capacity)
                .collect(),
        }
    }

    /// Counted routes by id.
    pub fn routes(&self) -> &BTreeMap<u32, Route> {
        &self.routes
    }

    /// Number of trie entries in the kernel.
    pub fn trie_len(&self) -> usize {
        self.trie.len()
    }

    /// Maps `plan` (built on `model`) onto stable ids and returns the changes to
    /// make in the kernel.
    pub fn assign(&mut self, model: &NetworkModel, plan: &AttributionPlan) -> Assignment {
        let mut out = Assignment::default();
        // Ids of routes that are gone become free first, so that routes still
        // waiting for an id (every id was in use) get one in this same assignment:
        // after a burst, no further change may come to trigger another.
        let present: std::collections::HashSet<Identity, FastHash> = plan
            .route_ids
            .iter()
            .map(|&index| Identity::of(&model.routes[index]))
            .collect();
        self.free_gone(|identity| present.contains(identity));
        let mut wanted: HashMap<TrieKey, u32, FastHash> = HashMap::default();
        let mut live: HashMap<Identity, u32, FastHash> = HashMap::default();
        // Plan route ids (one per route, whatever its number of trie entries).
        let mut uncounted_routes: std::collections::HashSet<u32, FastHash> =
            std::collections::HashSet::default();
        for entry in &plan.entries {
            let key = TrieKey::from(entry);
            let route = &model.routes[plan.route_ids[entry.route_id as usize]];
            let identity = Identity::of(route);
            let id = match live
                .get(&identity)
                .or_else(|| self.by_identity.get(&identity))
            {
                Some(id) => Some(*id),
                None => self.allocate(&key, &mut out.fresh_ids),
            };
            let Some(id) = id else {
                uncounted_routes.insert(entry.route_id);
                continue;
            };
            live.insert(identity, id);
            self.routes.insert(id, route.clone());
            wanted.insert(key, id);
        }
        out.uncounted = uncounted_routes.len();
        // Routes that lost their last trie entry in this plan are gone too.
        self.free_gone(|identity| live.contains_key(identity));
        self.by_identity.extend(live);
        for (key, id) in &wanted {
            if self.trie.get(key) != Some(id) {
                out.trie_changes.push((*key, Some(*id)));
            }
        }
        for key in self.trie.keys() {
            if !wanted.contains_key(key) {
                out.trie_changes.push((*key, None));
            }
        }
        self.trie = wanted;
        self.inherited.clear();
        out
    }

    /// Frees the ids of the routes for which `kept` is false.
    fn free_gone(&mut self, kept: impl Fn(&Identity) -> bool) {
        let gone: Vec<(Identity, u32)> = self
            .by_identity
            .iter()
            .filter(|(identity, _)| !kept(identity))
            .map(|(identity, id)| (identity.clone(), *id))
            .collect();
        for (identity, id) in gone {
            self.by_identity.remove(&identity);
            self.routes.remove(&id);
            self.free.push(id);
        }
    }

    fn allocate(&mut self, key: &TrieKey, fresh: &mut Vec<u32>) -> Option<u32> {
        if let Some(id) = self.inherited.remove(key)
            && !self.routes.contains_key(&id)
        {
            // A previous routemon counted this route under this id: continue.
            self.free.retain(|f| *f != id);
            return Some(id);
        }
        let id = loop {
            if let Some(id) = self.free.pop() {
                break id;
            }
            if self.next >= self.capacity {
                return None;
            }
            let id = self.next;
            self.next += 1;
            let taken = self.routes.contains_key(&id) || self.inherited.values().any(|v| *v == id);
            if !taken {
                break id;
            }
        };
        fresh.push(id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::testutil::{default_route, model_with_links, push_routes, route};

    fn plan_for(model: &NetworkModel) -> AttributionPlan {
        AttributionPlan::build(model, &BTreeSet::from([2, 3]))
    }

    #[test]
    fn ids_survive_unrelated_changes_and_are_reused_after_zeroing() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, 254),
                route("10.0.1.0/24", 2, None, 1024, 254),
            ],
        );
        let mut ids = RouteIds::new(8, Vec::new());
        let first = ids.assign(&model, &plan_for(&model));
        assert_eq!(first.fresh_ids.len(), 2);
        assert_eq!(first.trie_changes.len(), 2);
        let default_id = ids.by_identity[&Identity::of(&model.routes[0])];

        // A new route in front shifts the plan's numbering, not the stable ids.
        model
            .routes
            .insert(0, route("10.9.0.0/16", 3, None, 0, 254));
        let second = ids.assign(&model, &plan_for(&model));
        assert_eq!(second.fresh_ids.len(), 1);
        assert_eq!(second.trie_changes.len(), 1, "only the new key is written");
        assert_eq!(ids.by_identity[&Identity::of(&model.routes[1])], default_id);

        // Removing a route frees its id and its key; the next route gets the id.
        model.routes.remove(0);
        let third = ids.assign(&model, &plan_for(&model));
        assert_eq!(third.trie_changes.len(), 1);
        assert_eq!(third.trie_changes[0].1, None);
        model.routes.push(route("10.8.0.0/16", 3, None, 0, 254));
        let fourth = ids.assign(&model, &plan_for(&model));
        assert_eq!(fourth.fresh_ids, vec![2], "the freed id, to be zeroed");
    }

    #[test]
    fn inherited_ids_are_taken_over_and_capacity_is_respected() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, 254),
                route("10.0.1.0/24", 2, None, 1024, 254),
            ],
        );
        let plan = plan_for(&model);
        let key = TrieKey::from(&plan.entries[0]);
        let mut ids = RouteIds::new(2, vec![(key, 1)]);
        let assignment = ids.assign(&model, &plan);
        let route_index = plan.route_ids[plan.entries[0].route_id as usize];
        assert_eq!(
            ids.by_identity[&Identity::of(&model.routes[route_index])],
            1
        );
        assert_eq!(assignment.fresh_ids, vec![0], "only the other route is new");
        assert_eq!(assignment.uncounted, 0);

        model.routes.push(route("10.8.0.0/16", 3, None, 0, 254));
        let full = ids.assign(&model, &plan_for(&model));
        assert_eq!(full.uncounted, 1);
    }

    /// After a burst that used every id, a route waiting for one gets the id a
    /// removed route frees in the same assignment: no later change is needed.
    #[test]
    fn a_waiting_route_gets_a_freed_id_in_the_same_assignment() {
        let mut model = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut model,
            [
                route("10.1.0.0/16", 2, None, 0, 254),
                route("10.2.0.0/16", 2, None, 0, 254),
                route("10.3.0.0/16", 2, None, 0, 254),
            ],
        );
        let mut ids = RouteIds::new(2, Vec::new());
        assert_eq!(ids.assign(&model, &plan_for(&model)).uncounted, 1);
        model.routes.remove(0);
        let after = ids.assign(&model, &plan_for(&model));
        assert_eq!(after.uncounted, 0, "the freed id went to the waiting route");
        assert_eq!(ids.routes().len(), 2);
        // The reused id is zeroed before a trie entry points at it.
        assert_eq!(after.fresh_ids.len(), 1);
        let reused = after.fresh_ids[0];
        assert!(
            after.trie_changes.iter().any(|(_, id)| *id == Some(reused)),
            "{after:?}"
        );
    }
}
