//! Comparing a model kept current from notifications with a fresh dump.
//!
//! `watch` keeps its model from rtnetlink notifications and from its own
//! knowledge of what the kernel flushes without telling ([`super::live`]). An
//! audit is how that is checked: the kept model and a dump taken at a quiet moment
//! must hold the same links, addresses, routes, rules and `rp_filter` modes.
//! Order does not count, except that routes are compared with their position
//! among the routes of equal table, prefix and metric, because the kernel's IPv4
//! FIB uses the first of those.

use std::{
    collections::HashMap,
    hash::{Hash as _, Hasher as _},
};

use ipnet::IpNet;
use serde::Serialize;

use super::{Address, Family, Link, NetworkModel, Route, Rule};

/// How two models differ, per kind of object; every entry is one object's
/// description (its `Debug` form). Empty lists: the models hold the same state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelDiff {
    /// Objects in the dump that the kept model lacks.
    pub missing: Vec<String>,
    /// Objects in the kept model that the dump lacks (stale).
    pub extra: Vec<String>,
}

impl ModelDiff {
    /// Compares `kept` with `dump`. Objects are compared by fingerprint (a hash of
    /// every field), so a model of a million routes needs no copy; only the
    /// objects that differ are described.
    pub fn between(kept: &NetworkModel, dump: &NetworkModel) -> Self {
        let (kept_prints, dump_prints) = (fingerprints(kept), fingerprints(dump));
        Self {
            missing: surplus(dump, &dump_prints, &kept_prints),
            extra: surplus(kept, &kept_prints, &dump_prints),
        }
    }

    /// Whether the models hold the same state.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }

    /// Number of objects that differ.
    pub fn len(&self) -> usize {
        self.missing.len() + self.extra.len()
    }
}

/// One object of a model.
#[derive(Debug, Hash)]
enum Object<'a> {
    Link(&'a Link),
    Address(&'a Address),
    /// A route with its `order` cleared and its rank among the routes of equal
    /// family, table, prefix and metric.
    Route(Route, usize),
    Rule(&'a Rule),
    RpFilter(u32, u8),
}

impl Object<'_> {
    fn fingerprint(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// Every object of `model`.
fn objects(model: &NetworkModel) -> impl Iterator<Item = Object<'_>> {
    model
        .links
        .values()
        .map(Object::Link)
        .chain(model.addresses.iter().map(Object::Address))
        .chain(ranked_routes(model).map(|(rank, route)| {
            Object::Route(
                Route {
                    order: 0,
                    ..route.clone()
                },
                rank,
            )
        }))
        .chain(model.rules.iter().map(Object::Rule))
        .chain(
            model
                .rp_filter
                .iter()
                .map(|(i, m)| Object::RpFilter(*i, *m)),
        )
}

/// How often each fingerprint occurs in `model`.
fn fingerprints(model: &NetworkModel) -> HashMap<u64, usize> {
    let mut prints = HashMap::new();
    for object in objects(model) {
        *prints.entry(object.fingerprint()).or_insert(0) += 1;
    }
    prints
}

/// The objects of `model` (with fingerprints `prints`) that `other` holds fewer
/// times, described.
fn surplus(
    model: &NetworkModel,
    prints: &HashMap<u64, usize>,
    other: &HashMap<u64, usize>,
) -> Vec<String> {
    let mut left: HashMap<u64, usize> = prints
        .iter()
        .filter_map(|(print, &count)| {
            let surplus = count.saturating_sub(other.get(print).copied().unwrap_or(0));
            (surplus > 0).then_some((*print, surplus))
        })
        .collect();
    if left.is_empty() {
        return Vec::new();
    }
    objects(model)
        .filter(|object| match left.get_mut(&object.fingerprint()) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        })
        .map(|object| match object {
            Object::Route(route, rank) => format!("{route:?} rank {rank}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Routes with their rank among the routes of the same family, table, prefix and
/// metric, in the order the model lists them (by `order`).
fn ranked_routes(model: &NetworkModel) -> impl Iterator<Item = (usize, &Route)> {
    let mut routes: Vec<&Route> = model.routes.iter().collect();
    routes.sort_by_key(|r| r.order);
    let mut seen: HashMap<(Family, u32, IpNet, u32), usize> = HashMap::new();
    routes.into_iter().map(move |route| {
        let rank = seen
            .entry((route.family, route.table, route.dst, route.metric))
            .or_insert(0);
        *rank += 1;
        (*rank - 1, route)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::table,
        testutil::{default_route, model_with_links, push_routes},
    };

    #[test]
    fn equal_models_in_another_order_do_not_differ() {
        let mut kept = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut kept,
            [
                default_route(2, Some("10.0.1.1"), 1000, table::MAIN),
                default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
            ],
        );
        let mut dump = kept.clone();
        dump.routes.reverse();
        for (order, route) in dump.routes.iter_mut().enumerate() {
            route.order = order + 7;
        }
        assert!(ModelDiff::between(&kept, &dump).is_empty());
    }

    #[test]
    fn a_stale_route_and_a_missing_address_are_named() {
        let mut kept = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut kept,
            [default_route(3, Some("10.0.2.1"), 1024, table::MAIN)],
        );
        let mut dump = model_with_links(&["lo", "ens5", "ens6"]);
        dump.addresses.push(crate::model::Address {
            ifindex: 2,
            addr: "10.0.1.10/24".parse().unwrap(),
        });
        let diff = ModelDiff::between(&kept, &dump);
        assert_eq!(diff.len(), 2);
        assert!(diff.extra[0].contains("10.0.2.1"), "{diff:?}");
        assert!(diff.missing[0].contains("10.0.1.10/24"), "{diff:?}");
    }

    #[test]
    fn which_of_two_equal_routes_comes_first_counts() {
        let mut kept = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut kept,
            [
                default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
                default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
            ],
        );
        let mut dump = kept.clone();
        dump.routes[0].order = 5;
        assert_eq!(ModelDiff::between(&kept, &dump).len(), 4, "both ranks swap");
    }
}
