//! What one packet does to the counters on each TC hook: its interface's always,
//! then, as far as [`FEATURES`] lets the data path run, its route's (egress), its
//! flow's, and the cross-ENI and asymmetric-flow tables.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::programs::TcContext;
use monitor_common::{
    AsymmetricKey, CROSS_ENI_POSSIBLE, CrossEniKey, FEATURES_ALL, FEATURES_INTERFACES,
    FEATURES_ROUTES, FlowKey, NO_ROUTE, PacketCounters,
};

use crate::{
    debug_log::debug_log,
    flows::{Tuple as _, arrive, leave},
    maps::{
        ASYMMETRIC_FLOWS, CONFIG, CROSS_ENI, FEATURES, ROUTE_COUNTERS, iface_counters, iface_slot,
        table_stats,
    },
    parse::{LinkLayer, Packet, parse},
    routes::Resolved,
    stacking::{Side, is_upper_packet},
};

/// How [`add_packet!`] counted a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Added {
    /// To a key the table already held.
    Existing,
    /// To a key it inserted.
    Inserted,
    /// Not at all: the table refused the new key (a full plain hash).
    Lost,
}

/// Adds one packet of `len` bytes to `key`'s per-CPU [`PacketCounters`] in `map`
/// (a per-CPU hash, plain or LRU), creating them on this CPU's first packet (the
/// other CPUs' copies start at zero), and says how ([`Added`]).
macro_rules! add_packet {
    ($map:expr, $key:expr, $len:expr) => {
        match $map.get_ptr_mut($key) {
            Some(counters) => {
                // SAFETY: per-CPU value, as in count_ingress.
                let counters = unsafe { &mut *counters };
                counters.packets += 1;
                counters.bytes += $len;
                Added::Existing
            }
            None => {
                let first = PacketCounters {
                    packets: 1,
                    bytes: $len,
                };
                match $map.insert($key, &first, 0) {
                    Ok(()) => Added::Inserted,
                    Err(_) => Added::Lost,
                }
            }
        }
    };
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the kernel hands TC programs a valid __sk_buff context.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
pub(crate) fn count_ingress(ctx: &TcContext, link_layer: LinkLayer) {
    let ifindex = ifindex(ctx);
    let Some(slot) = iface_slot(ifindex) else {
        return;
    };
    let Some(iface) = iface_counters(&slot) else {
        return;
    };
    let len = u64::from(ctx.len());
    iface.ingress_packets += 1;
    iface.ingress_bytes += len;
    let features = FEATURES.load();
    if features == FEATURES_INTERFACES {
        return;
    }

    // Remember where the flow arrived, keyed by the tuple its replies will carry,
    // and count its traffic.
    let Some(packet) = parse(ctx, link_layer).counted_in(iface, len) else {
        return;
    };
    if features == FEATURES_ROUTES {
        return;
    }
    // The packet of a monitored upper device of this one: the upper's ingress
    // (which runs next, on this CPU) counts its flow.
    if slot.role != 0 && is_upper_packet(ctx, &slot, &packet, Side::Destination) {
        return;
    }
    match packet {
        Packet::V4(flow) => arrive(&flow.reversed(), ifindex, len),
        Packet::V6(flow) => arrive(&flow.reversed(), ifindex, len),
    }
}

#[inline(always)]
pub(crate) fn count_egress(ctx: &TcContext, link_layer: LinkLayer) {
    let ifindex = ifindex(ctx);
    let Some(slot) = iface_slot(ifindex) else {
        return;
    };
    let Some(iface) = iface_counters(&slot) else {
        return;
    };
    let len = u64::from(ctx.len());
    iface.egress_packets += 1;
    iface.egress_bytes += len;
    let features = FEATURES.load();
    if features == FEATURES_INTERFACES {
        return;
    }

    let mut config = CONFIG.get(0).copied().unwrap_or_default();
    if features < FEATURES_ALL {
        config.flags &= !CROSS_ENI_POSSIBLE;
    }
    let packet = parse(ctx, link_layer)
        .counted_in(iface, len)
        // The packet of a monitored upper device of this one: its flow and route
        // were counted on the upper (whose egress ran first, on this CPU).
        .filter(|packet| slot.role == 0 || !is_upper_packet(ctx, &slot, packet, Side::Source));
    let found = match packet {
        Some(Packet::V4(flow)) if features == FEATURES_ROUTES => flow.resolve(ifindex, &config),
        Some(Packet::V6(flow)) if features == FEATURES_ROUTES => flow.resolve(ifindex, &config),
        Some(Packet::V4(flow)) => leave(&flow, ifindex, len, &config),
        Some(Packet::V6(flow)) => leave(&flow, ifindex, len, &config),
        None => Resolved {
            route_id: NO_ROUTE,
            source_owner: 0,
        },
    };
    if found.source_owner != 0 && found.source_owner != ifindex {
        count_cross_eni(ifindex, found.source_owner, len);
    }
    match ROUTE_COUNTERS.get_ptr_mut(found.route_id) {
        Some(route) => {
            // SAFETY: per-CPU value, as in iface_counters.
            let route = unsafe { &mut *route };
            route.packets += 1;
            route.bytes += len;
        }
        None => {
            iface.egress_unattributed_packets += 1;
            iface.egress_unattributed_bytes += len;
        }
    }
}

/// Adds one packet of `len` bytes to counters that every CPU writes.
#[inline(always)]
pub(crate) fn add_shared(counters: &mut PacketCounters, len: u64) {
    // The BPF target has no atomic read-modify-write types; the intrinsic compiles
    // to the instruction (BPF_ATOMIC | BPF_ADD, "lock xadd").
    // SAFETY: the fields are valid, aligned u64s for the duration of the calls.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut counters.packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut counters.bytes, len);
    }
}

/// Counts a packet that leaves by `egress` with a source address owned by `owner`
/// (another interface): the VPC's source/destination check drops such packets.
#[inline(always)]
fn count_cross_eni(egress: u32, owner: u32, len: u64) {
    let key = CrossEniKey {
        egress_ifindex: egress,
        source_ifindex: owner,
    };
    if add_packet!(CROSS_ENI, &key, len) == Added::Lost {
        debug_log!(
            "CROSS_ENI full: egress {} with source of {} not counted",
            egress,
            owner
        );
        table_stats(|s| s.cross_eni_uncounted_packets += 1);
    }
}

/// Counts a packet of a flow that arrived on `ingress` but leaves by `egress`.
#[inline(always)]
pub(crate) fn count_asymmetric(flow: FlowKey, ingress: u32, egress: u32, len: u64) {
    let key = AsymmetricKey {
        flow,
        ingress_ifindex: ingress,
        egress_ifindex: egress,
    };
    if add_packet!(ASYMMETRIC_FLOWS, &key, len) == Added::Inserted {
        table_stats(|s| s.asymmetric_inserted += 1);
    }
}
