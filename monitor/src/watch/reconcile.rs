//! `watch`'s reconcile steps: after a batch of routing changes, bring the kernel
//! side in line with the model — attach to matching interfaces and release the
//! ones that went away, record address owners, rewrite the route tries — and say
//! what changed as events. The kernel is reached through [`DataPath`] only.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use monitor_common::IfaceCounters;

use super::{
    events::Event,
    flapping::{FlappingCondition, Transition},
    kernel::DataPath,
    route_ids::RouteIds,
};
use crate::{
    attribution::{AttributionPlan, SourceRule},
    ebpf::{AttachMode, pinning::PERSISTENT_ROUTE_IDS},
    model::{Link, NetworkModel},
    selection::{self, InterfacePattern},
};

/// Least time between two logged starts of "routes without a counter".
const UNCOUNTED_LOG_PERIOD: Duration = Duration::from_secs(600);

/// What `watch` has put into the kernel, as it last reconciled.
#[derive(Debug)]
pub struct Reconciler {
    /// Attached interfaces: ifindex → name.
    pub attached: BTreeMap<u32, String>,
    /// Matching interfaces that could not be attached (e.g. beyond the counter
    /// map's capacity); retried on every change.
    pub unattached: BTreeSet<u32>,
    /// Counters of interfaces that went away, by name.
    pub retired: BTreeMap<String, IfaceCounters>,
    /// Address → owning interface, as recorded in the kernel.
    pub owners: HashMap<IpAddr, u32>,
    /// Stable route ids.
    pub route_ids: RouteIds,
    /// Routes left without a counter at the last sync.
    pub uncounted_routes: usize,
    /// When "routes without a counter" was last logged.
    uncounted_log: FlappingCondition,
    /// Source rules as recorded in the kernel.
    pub source_rules: Vec<SourceRule>,
}

impl Reconciler {
    /// Starts from what a previous routemon left: its route ids and address owners.
    pub fn new(route_ids: RouteIds, owners: HashMap<IpAddr, u32>) -> Self {
        Self {
            attached: BTreeMap::new(),
            unattached: BTreeSet::new(),
            retired: BTreeMap::new(),
            owners,
            route_ids,
            uncounted_routes: 0,
            uncounted_log: FlappingCondition::new(UNCOUNTED_LOG_PERIOD),
            source_rules: Vec::new(),
        }
    }

    /// Attaches to the interfaces that match `patterns` and releases the ones that
    /// went away (deleted) or no longer match (renamed: deselected), keeping their
    /// last counters under their name.
    pub async fn sync_interfaces(
        &mut self,
        model: &NetworkModel,
        patterns: &[InterfacePattern],
        mode: AttachMode,
        kernel: &mut impl DataPath,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let wanted = selection::matching_interfaces(model, patterns);
        let current: Vec<(u32, String)> =
            self.attached.iter().map(|(i, n)| (*i, n.clone())).collect();
        for (ifindex, name) in current {
            let still_there = model.links.get(&ifindex).is_some_and(|l| l.name == name);
            if still_there && wanted.contains(&ifindex) {
                continue;
            }
            // Renamed or no longer matching (the device stays) versus deleted.
            let reason = if model.links.contains_key(&ifindex) {
                if let Err(err) = kernel.detach(ifindex).await {
                    tracing::warn!(interface = %name, "detaching failed: {err}");
                }
                "deselected"
            } else {
                "deleted"
            };
            match kernel.release(ifindex) {
                Ok(last) => self
                    .retired
                    .entry(name.clone())
                    .or_default()
                    .accumulate(&last),
                Err(err) => {
                    tracing::warn!(interface = %name, "reading final counters failed: {err}")
                }
            }
            self.attached.remove(&ifindex);
            events.push(Event::InterfaceDetached {
                interface: name,
                ifindex,
                reason,
            });
        }
        // Interfaces gone or no longer matching are no longer owed an attachment.
        self.unattached.retain(|i| wanted.contains(i));
        for ifindex in wanted {
            if self.attached.contains_key(&ifindex) {
                continue;
            }
            let Some(link) = model.links.get(&ifindex) else {
                continue;
            };
            match kernel.attach(link, mode) {
                Ok(attached) => {
                    tracing::info!(interface = %link.name, via = %attached.via, adopted = attached.adopted, "attached");
                    self.unattached.remove(&ifindex);
                    self.attached.insert(ifindex, link.name.clone());
                    events.push(Event::InterfaceAttached {
                        interface: link.name.clone(),
                        ifindex,
                        via: attached.via,
                        adopted: attached.adopted,
                    });
                }
                Err(err) => {
                    if self.unattached.insert(ifindex) {
                        tracing::warn!(interface = %link.name, "cannot attach: {err}");
                    } else {
                        tracing::debug!(interface = %link.name, "still cannot attach: {err}");
                    }
                    // Undo a half attachment; the next change retries.
                    if let Err(err) = kernel.detach(ifindex).await {
                        tracing::warn!(interface = %link.name, "undoing the half attachment failed: {err}");
                    }
                }
            }
        }
        // Stacks change with the links (a port enslaved, a macvlan added).
        let monitored: Vec<&Link> = self
            .attached
            .keys()
            .filter_map(|i| model.links.get(i))
            .collect();
        if let Err(err) = kernel.set_stacking(&monitored) {
            tracing::warn!("recording which monitored devices are stacked failed: {err}");
        }
        events
    }

    /// Records in the kernel which attached interface owns each address, and
    /// forgets addresses that went away.
    pub fn sync_owners(&mut self, model: &NetworkModel, kernel: &mut impl DataPath) {
        let wanted: HashMap<IpAddr, u32> = model
            .owned_addresses(|i| self.attached.contains_key(&i))
            .collect();
        let removed: Vec<IpAddr> = self
            .owners
            .keys()
            .filter(|addr| !wanted.contains_key(*addr))
            .copied()
            .collect();
        for addr in removed {
            if let Err(err) = kernel.set_source_owner(addr, None) {
                tracing::warn!("cannot forget the owner of {addr}: {err}");
            }
            self.owners.remove(&addr);
        }
        for (addr, owner) in wanted {
            if self.owners.get(&addr) == Some(&owner) {
                continue;
            }
            match kernel.set_source_owner(addr, Some(owner)) {
                Ok(()) => {
                    self.owners.insert(addr, owner);
                }
                Err(err) => tracing::warn!("cannot record the owner of {addr}: {err}"),
            }
        }
    }

    /// Rewrites the route tries for the attached interfaces with stable route ids.
    pub fn sync_routes(&mut self, model: &NetworkModel, kernel: &mut impl DataPath) {
        let monitored: BTreeSet<u32> = self.attached.keys().copied().collect();
        let plan = AttributionPlan::build(model, &monitored);
        let assignment = self.route_ids.assign(model, &plan);
        // Said when it starts and when it ends, not at every change of the count
        // (routemon_routes_uncounted has the figure), and when it keeps coming
        // back with route batches, once per period.
        match self
            .uncounted_log
            .update(assignment.uncounted > 0, Instant::now())
        {
            Transition::Started { unlogged_starts } => tracing::warn!(
                routes = assignment.uncounted,
                unlogged_starts,
                "routes without a counter: all {PERSISTENT_ROUTE_IDS} route ids are in use \
                 (routemon_routes_uncounted follows the count; this is said at most once \
                 every {} min, unlogged_starts counts the times in between)",
                self.uncounted_log.period().as_secs() / 60
            ),
            Transition::Ended => tracing::info!("every route has a counter again"),
            Transition::Quiet => {}
        }
        self.uncounted_routes = assignment.uncounted;
        // Flows cache their route id until the routing state's generation moves on
        // (each update moves it). So a freed id is out of the tries and out of every
        // cache before it is zeroed and given to its new route.
        let (to_fresh, others): (Vec<_>, Vec<_>) = assignment
            .trie_changes
            .iter()
            .copied()
            .partition(|(_, id)| id.is_some_and(|id| assignment.fresh_ids.contains(&id)));
        let mut result = kernel.update_route_entries(&others);
        for id in &assignment.fresh_ids {
            result = result.and_then(|()| kernel.reset_route_counter(*id));
        }
        if !to_fresh.is_empty() {
            result = result.and_then(|()| kernel.update_route_entries(&to_fresh));
        }
        if plan.source_rules != self.source_rules {
            result = result.and_then(|()| kernel.replace_source_rules(&plan.source_rules));
            self.source_rules = plan.source_rules;
        }
        if let Err(err) = result {
            tracing::warn!("updating the kernel's route tries failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ebpf::{EbpfError, TrieKey},
        model::Address,
        testutil::{default_route, model_with_links, push_routes, route},
    };

    /// Records every call; attaching fails for the ifindexes in `refuse`.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        refuse: BTreeSet<u32>,
        /// Counters `release` returns.
        last: IfaceCounters,
    }

    impl DataPath for Recorder {
        fn attach(
            &mut self,
            link: &Link,
            _mode: AttachMode,
        ) -> Result<super::super::kernel::Attached, EbpfError> {
            self.calls.push(format!("attach {}", link.name));
            if self.refuse.contains(&link.index) {
                return Err(EbpfError::Other("no free slot".into()));
            }
            Ok(super::super::kernel::Attached {
                via: "tcx".into(),
                adopted: false,
            })
        }
        async fn detach(&mut self, ifindex: u32) -> Result<(), EbpfError> {
            self.calls.push(format!("detach {ifindex}"));
            Ok(())
        }
        fn release(&mut self, ifindex: u32) -> Result<IfaceCounters, EbpfError> {
            self.calls.push(format!("release {ifindex}"));
            Ok(self.last)
        }
        fn set_stacking(&mut self, links: &[&Link]) -> Result<(), EbpfError> {
            let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            self.calls.push(format!("stacking {}", names.join(",")));
            Ok(())
        }
        fn set_source_owner(&mut self, addr: IpAddr, owner: Option<u32>) -> Result<(), EbpfError> {
            self.calls.push(format!("owner {addr} {owner:?}"));
            Ok(())
        }
        fn update_route_entries(
            &mut self,
            changes: &[(TrieKey, Option<u32>)],
        ) -> Result<(), EbpfError> {
            let ids: Vec<String> = changes
                .iter()
                .map(|(_, id)| id.map_or_else(|| "-".to_owned(), |id| id.to_string()))
                .collect();
            self.calls.push(format!("tries {}", ids.join(",")));
            Ok(())
        }
        fn reset_route_counter(&mut self, id: u32) -> Result<(), EbpfError> {
            self.calls.push(format!("reset {id}"));
            Ok(())
        }
        fn replace_source_rules(&mut self, rules: &[SourceRule]) -> Result<(), EbpfError> {
            self.calls.push(format!("source rules {}", rules.len()));
            Ok(())
        }
    }

    fn reconciler() -> Reconciler {
        Reconciler::new(RouteIds::new(16, Vec::new()), HashMap::new())
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn event_names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::InterfaceAttached { interface, .. } => format!("attached {interface}"),
                Event::InterfaceDetached {
                    interface, reason, ..
                } => format!("detached {interface} {reason}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn interfaces_are_attached_released_and_their_counters_kept() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut kernel = Recorder::default();
        let mut state = reconciler();
        let events = run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert_eq!(event_names(&events), ["attached ens5", "attached ens6"]);
        assert_eq!(kernel.calls.last().unwrap(), "stacking ens5,ens6");

        // ens6 deleted: released (not detached: the device is gone), counters kept.
        kernel.calls.clear();
        kernel.last.egress_packets = 7;
        model.links.remove(&3);
        let events = run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert_eq!(event_names(&events), ["detached ens6 deleted"]);
        assert_eq!(kernel.calls, ["release 3", "stacking ens5"]);
        assert_eq!(state.retired["ens6"].egress_packets, 7);

        // ens5 renamed so that it no longer matches: detached, then released.
        kernel.calls.clear();
        model.links.get_mut(&2).unwrap().name = "lxc0".into();
        let events = run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert_eq!(event_names(&events), ["detached ens5 deselected"]);
        assert_eq!(kernel.calls, ["detach 2", "release 2", "stacking "]);
    }

    #[test]
    fn an_interface_that_cannot_be_attached_is_retried_and_forgotten_when_gone() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut kernel = Recorder {
            refuse: BTreeSet::from([3]),
            ..Recorder::default()
        };
        let mut state = reconciler();
        let events = run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert_eq!(event_names(&events), ["attached ens5"]);
        assert!(state.unattached.contains(&3));
        assert!(
            kernel.calls.contains(&"detach 3".to_owned()),
            "half attachment undone"
        );
        // Retried on the next change; forgotten once the device is gone.
        kernel.calls.clear();
        run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert!(kernel.calls.contains(&"attach ens6".to_owned()));
        model.links.remove(&3);
        run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        assert!(state.unattached.is_empty());
    }

    #[test]
    fn owners_follow_the_addresses_of_attached_interfaces() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        model.addresses = vec![
            Address {
                ifindex: 2,
                addr: "10.0.1.10/24".parse().unwrap(),
            },
            Address {
                ifindex: 1,
                addr: "127.0.0.1/8".parse().unwrap(),
            },
        ];
        let mut kernel = Recorder::default();
        let mut state = reconciler();
        run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        kernel.calls.clear();
        state.sync_owners(&model, &mut kernel);
        assert_eq!(
            kernel.calls,
            ["owner 10.0.1.10 Some(2)"],
            "lo is not attached"
        );
        kernel.calls.clear();
        state.sync_owners(&model, &mut kernel);
        assert!(kernel.calls.is_empty(), "nothing changed, nothing written");
        model.addresses.remove(0);
        state.sync_owners(&model, &mut kernel);
        assert_eq!(kernel.calls, ["owner 10.0.1.10 None"]);
    }

    #[test]
    fn a_new_route_id_is_zeroed_before_the_tries_point_at_it() {
        let mut model = model_with_links(&["lo", "ens5"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, crate::model::table::MAIN),
                route("10.0.1.0/24", 2, None, 0, crate::model::table::MAIN),
            ],
        );
        let mut kernel = Recorder::default();
        let mut state = reconciler();
        run(state.sync_interfaces(&model, &[], AttachMode::Auto, &mut kernel));
        state.sync_routes(&model, &mut kernel);
        assert_eq!(state.route_ids.routes().len(), 2);

        // The default route is replaced by another (same trie key, new route): the
        // old route's id is freed and given to the new one in the same assignment,
        // zeroed after the other trie changes; the key already points at it.
        kernel.calls.clear();
        model.routes.remove(0);
        push_routes(
            &mut model,
            [default_route(
                2,
                Some("10.0.1.1"),
                500,
                crate::model::table::MAIN,
            )],
        );
        state.sync_routes(&model, &mut kernel);
        assert_eq!(kernel.calls, ["tries ", "reset 0"]);

        // A new route with a key of its own: its id is zeroed before its key is
        // written.
        kernel.calls.clear();
        push_routes(
            &mut model,
            [route("10.7.0.0/16", 2, None, 0, crate::model::table::MAIN)],
        );
        state.sync_routes(&model, &mut kernel);
        assert_eq!(kernel.calls, ["tries ", "reset 2", "tries 2"]);
        // Nothing changed: the tries are left alone.
        kernel.calls.clear();
        state.sync_routes(&model, &mut kernel);
        assert_eq!(kernel.calls, ["tries "]);
    }
}
