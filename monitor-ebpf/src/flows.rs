//! The flow tables: per 5-tuple (keyed in the egress direction), where a flow
//! arrived and left, its cached route and source owner, and its traffic each way;
//! tuples that only ever arrived wait in tables of their own. [`Tuple`] gives both
//! address families one code path.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::maps::LruHashMap;
use monitor_common::{
    CROSS_ENI_POSSIBLE, DataPathConfig, FLOW_SAMPLED, FlowEntry, FlowKey, FlowKeyV4,
    HAS_SOURCE_RULES_V4, HAS_SOURCE_RULES_V6, NO_ROUTE, PacketCounters, RouteKeyV4, RouteKeyV6,
    TableStats,
};

use crate::{
    counting::{add_shared, count_asymmetric},
    debug_log::debug_log,
    maps::{
        FLOW_TEMPLATE, FLOWS, FLOWS_INBOUND, FLOWS_INBOUND_V6, FLOWS_V6, ROUTES_V4, ROUTES_V6,
        SOURCE_OWNERS_V4, SOURCE_OWNERS_V6, SOURCE_RULES_V4, SOURCE_RULES_V6, table_stats,
    },
    parse::{flow_key, v4_in_v6_slot},
    routes::{Resolved, Tables},
    sampling::sample_cross_eni,
};

/// Counts an incoming packet of `reply`'s flow (keyed in the egress direction).
#[inline(always)]
pub(crate) fn arrive<T: Tuple>(reply: &T, ifindex: u32, len: u64) {
    let arrive = |entry: &mut FlowEntry| {
        if entry.arrived_on != ifindex {
            entry.arrived_on = ifindex;
        }
        add_shared(&mut entry.ingress, len);
    };
    // A flow the node sent on, else a tuple only ever seen arriving: those wait in
    // a table of their own, so a flood of them never evicts an established flow.
    let entry = match T::table().get_ptr_mut(reply) {
        Some(entry) => Some(entry),
        None => T::inbound_table().get_ptr_mut(reply),
    };
    match entry {
        // SAFETY: a valid pointer into the map's value; shared by all CPUs, so the
        // counters are added atomically.
        Some(entry) => arrive(unsafe { &mut *entry }),
        None => {
            new_entry(
                T::inbound_table(),
                reply,
                T::count_inbound_insert,
                |entry| {
                    entry.arrived_on = ifindex;
                    entry.left_by = 0;
                    entry.route_id = NO_ROUTE;
                    entry.source_owner = 0;
                    // Never current: the first egress packet looks its route up.
                    entry.generation = 0;
                    entry.flags = 0;
                    entry.ingress = PacketCounters {
                        packets: 1,
                        bytes: len,
                    };
                    entry.egress = PacketCounters::default();
                },
                arrive,
            );
        }
    }
}

/// Counts an outgoing packet of `flow` in its entry and returns its route and
/// source owner: cached in the entry while the routing state is the one they were
/// looked up in and the flow still leaves by this interface, else looked up.
#[inline(always)]
pub(crate) fn leave<T: Tuple>(
    flow: &T,
    ifindex: u32,
    len: u64,
    config: &DataPathConfig,
) -> Resolved {
    let Some(entry) = T::table().get_ptr_mut(flow) else {
        let found = flow.resolve(ifindex, config);
        let sent = is_cross_eni(&found, ifindex) && sample_cross_eni(ifindex, &found, flow);
        // What arrived of the flow before the node answered moves into its entry.
        let (arrived_on, taken) = match T::inbound_table().get_ptr(flow) {
            // SAFETY: a valid pointer into the map's value; plain loads of whole
            // words, whatever ingress adds meanwhile stays there as residue.
            Some(inbound) => unsafe { ((*inbound).arrived_on, (*inbound).ingress) },
            None => (0, PacketCounters::default()),
        };
        let inserted = new_entry(
            T::table(),
            flow,
            T::count_insert,
            |entry| {
                entry.arrived_on = arrived_on;
                entry.left_by = ifindex;
                entry.route_id = found.route_id;
                entry.source_owner = found.source_owner;
                entry.generation = config.generation;
                entry.flags = if sent { FLOW_SAMPLED } else { 0 };
                entry.ingress = taken;
                entry.egress = PacketCounters {
                    packets: 1,
                    bytes: len,
                };
            },
            |entry| count_leaving(entry, flow, ifindex, len),
        );
        if inserted {
            if taken.packets != 0 {
                take_inbound(flow, &taken);
            }
            if arrived_on != 0 && arrived_on != ifindex {
                count_asymmetric(flow.flow_key(), arrived_on, ifindex, len);
            }
        }
        return found;
    };
    // SAFETY: as in arrive.
    let entry = unsafe { &mut *entry };
    if entry.generation != config.generation || entry.left_by != ifindex {
        let found = flow.resolve(ifindex, config);
        entry.route_id = found.route_id;
        entry.source_owner = found.source_owner;
        entry.left_by = ifindex;
        entry.generation = config.generation;
    }
    let found = Resolved {
        route_id: entry.route_id,
        source_owner: entry.source_owner,
    };
    count_leaving(entry, flow, ifindex, len);
    if is_cross_eni(&found, ifindex)
        && entry.flags & FLOW_SAMPLED == 0
        && sample_cross_eni(ifindex, &found, flow)
    {
        entry.flags |= FLOW_SAMPLED;
    }
    found
}

/// Adds an outgoing packet to an existing entry, and to the asymmetric flows when
/// the flow arrived on another interface.
#[inline(always)]
fn count_leaving<T: Tuple>(entry: &mut FlowEntry, flow: &T, ifindex: u32, len: u64) {
    add_shared(&mut entry.egress, len);
    let arrived_on = entry.arrived_on;
    if arrived_on != 0 && arrived_on != ifindex {
        count_asymmetric(flow.flow_key(), arrived_on, ifindex, len);
    }
}

#[inline(always)]
fn is_cross_eni(found: &Resolved, ifindex: u32) -> bool {
    found.source_owner != 0 && found.source_owner != ifindex
}

/// A flow's 5-tuple in the form its family's flow table keys it.
pub(crate) trait Tuple: Copy + 'static {
    /// The family's flow table.
    fn table() -> &'static LruHashMap<Self, FlowEntry>;
    /// The family's table of tuples that arrived and were never answered.
    fn inbound_table() -> &'static LruHashMap<Self, FlowEntry>;
    /// Counts an insert into [`Self::inbound_table`].
    fn count_inbound_insert(stats: &mut TableStats);
    /// The family-independent form (for samples and asymmetric-flow keys).
    fn flow_key(&self) -> FlowKey;
    /// Counts an insert into [`Self::table`].
    fn count_insert(stats: &mut TableStats);
    /// The route and source owner of a packet of this flow leaving by `ifindex`.
    fn resolve(&self, ifindex: u32, config: &DataPathConfig) -> Resolved;
}

impl Tuple for FlowKeyV4 {
    #[inline(always)]
    fn table() -> &'static LruHashMap<Self, FlowEntry> {
        &FLOWS
    }

    #[inline(always)]
    fn inbound_table() -> &'static LruHashMap<Self, FlowEntry> {
        &FLOWS_INBOUND
    }

    #[inline(always)]
    fn count_inbound_insert(stats: &mut TableStats) {
        stats.inbound_inserted += 1;
    }

    #[inline(always)]
    fn flow_key(&self) -> FlowKey {
        flow_key(
            4,
            self.protocol,
            self.src_port,
            self.dst_port,
            v4_in_v6_slot(&self.src, 0),
            v4_in_v6_slot(&self.dst, 0),
        )
    }

    #[inline(always)]
    fn count_insert(stats: &mut TableStats) {
        stats.flows_inserted += 1;
    }

    #[inline(always)]
    fn resolve(&self, ifindex: u32, config: &DataPathConfig) -> Resolved {
        let flags = config.flags;
        let tables = Tables {
            owners: (flags & CROSS_ENI_POSSIBLE != 0).then_some(&SOURCE_OWNERS_V4),
            rules: (flags & HAS_SOURCE_RULES_V4 != 0).then_some(&SOURCE_RULES_V4),
            routes: &ROUTES_V4,
            addr_bits: 32,
        };
        tables.resolve(&self.src, |table_slot| RouteKeyV4 {
            ifindex,
            table_slot,
            addr: self.dst,
        })
    }
}

impl Tuple for FlowKey {
    #[inline(always)]
    fn table() -> &'static LruHashMap<Self, FlowEntry> {
        &FLOWS_V6
    }

    #[inline(always)]
    fn inbound_table() -> &'static LruHashMap<Self, FlowEntry> {
        &FLOWS_INBOUND_V6
    }

    #[inline(always)]
    fn count_inbound_insert(stats: &mut TableStats) {
        stats.inbound_v6_inserted += 1;
    }

    #[inline(always)]
    fn flow_key(&self) -> FlowKey {
        *self
    }

    #[inline(always)]
    fn count_insert(stats: &mut TableStats) {
        stats.flows_v6_inserted += 1;
    }

    #[inline(always)]
    fn resolve(&self, ifindex: u32, config: &DataPathConfig) -> Resolved {
        let flags = config.flags;
        let tables = Tables {
            owners: (flags & CROSS_ENI_POSSIBLE != 0).then_some(&SOURCE_OWNERS_V6),
            rules: (flags & HAS_SOURCE_RULES_V6 != 0).then_some(&SOURCE_RULES_V6),
            routes: &ROUTES_V6,
            addr_bits: 128,
        };
        tables.resolve(&self.src, |table_slot| RouteKeyV6 {
            ifindex,
            table_slot,
            addr: self.dst,
        })
    }
}

/// `BPF_NOEXIST`: create only.
const BPF_NOEXIST: u64 = 1;

/// Adds an entry to `table` (evicting the least recently used when full), with the
/// entry `fill` writes holding this packet, and says whether it did. When another
/// CPU created the entry since this one's lookup missed, the create fails and
/// `add_to_existing` counts the packet in the winner's entry instead: overwriting
/// it would lose the winner's packet.
#[inline(always)]
fn new_entry<T: Tuple>(
    table: &'static LruHashMap<T, FlowEntry>,
    key: &T,
    count_insert: fn(&mut TableStats),
    fill: impl FnOnce(&mut FlowEntry),
    add_to_existing: impl FnOnce(&mut FlowEntry),
) -> bool {
    let Some(template) = FLOW_TEMPLATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, as in count_ingress.
    let template = unsafe { &mut *template };
    fill(template);
    if table.insert(key, template, BPF_NOEXIST).is_ok() {
        table_stats(count_insert);
        return true;
    }
    if let Some(existing) = table.get_ptr_mut(key) {
        // SAFETY: a valid pointer into the map's value, as in count_ingress.
        add_to_existing(unsafe { &mut *existing });
    } else {
        debug_log!("flow table: insert refused and no entry to add to; packet not counted");
    }
    false
}

/// Subtracts from `flow`'s unanswered-tuple entry the counts its new flow entry
/// took over; what arrived since the take stays there, and userspace adds it to
/// the flow. An entry with fewer packets than were taken is a new one (the old was
/// evicted meanwhile): its packets are all new, and it is left alone.
#[inline(always)]
fn take_inbound<T: Tuple>(flow: &T, taken: &PacketCounters) {
    if let Some(inbound) = T::inbound_table().get_ptr_mut(flow) {
        // SAFETY: a valid pointer into the map's value.
        let inbound = unsafe { &mut *inbound };
        if inbound.ingress.packets >= taken.packets {
            // SAFETY: valid, aligned u64s; a wrapping add of the negation subtracts.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    &raw mut inbound.ingress.packets,
                    taken.packets.wrapping_neg(),
                );
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    &raw mut inbound.ingress.bytes,
                    taken.bytes.wrapping_neg(),
                );
            }
        }
    }
}
