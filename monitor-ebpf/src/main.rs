//! routemon's kernel side: TC classifiers that count, per interface and per route,
//! what leaves and enters the node.
//!
//! Every program returns `TC_ACT_UNSPEC` whatever happens: it never drops, redirects
//! or alters a packet, and with TCX links (and clsact's default) `TC_ACT_UNSPEC`
//! lets the next program or the stack carry on as if routemon were not there.
//!
//! # Route attribution
//!
//! Userspace loads, per family, an LPM trie whose keys are
//! `(egress ifindex, route destination prefix)` with prefix length
//! `32 + route prefix length`. An egress packet is attributed to the longest match
//! for `(its egress ifindex, its destination address)`: the most specific route for
//! that destination that leaves by this interface, or else the default route via this
//! interface — the "default-route choice" the kernel made when it picked this device.
//! Source-based policy routing: when the packet's source matches the prefix of an
//! `ip rule from <prefix> lookup <table>` (longest prefix wins), the lookup is done
//! first in that table's slot of the trie, then in the main table's.
//!
//! Limits: the program sees the device, not the FIB lookup, so it cannot tell which
//! of two routes of the same prefix on the same device and table slot was used
//! (userspace keeps the lowest metric), rules with other selectors (fwmark, iif, to)
//! are not modelled, and traffic to prefixes no route of the interface covers is
//! counted as unattributed.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    Global,
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{classifier, map, raw_tracepoint},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
        lpm_trie::Key,
    },
    programs::{RawTracePointContext, TcContext},
};
use monitor_common::{
    AsymmetricKey, CROSS_ENI_POSSIBLE, CrossEniKey, DEFAULT_MAX_INTERFACES,
    DEFAULT_MAX_OWNED_ADDRESSES, DEFAULT_MAX_ROUTES, DataPathConfig, DropConfig, DropKey,
    FEATURES_ALL, FEATURES_INTERFACES, FEATURES_ROUTES, FLOW_SAMPLED, FlowEntry, FlowKey,
    FlowKeyV4, HAS_SOURCE_RULES_V4, HAS_SOURCE_RULES_V6, IFACE_SLOT_BUCKETS, IfaceCounters,
    IfaceSlot, MAIN_TABLE_SLOT, MAX_ASYMMETRIC_FLOWS, MAX_CROSS_ENI_PAIRS, MAX_DROP_KEYS,
    MAX_INBOUND_TUPLES, MAX_SOURCE_RULES, MAX_TRACKED_FLOWS, NO_ROUTE, PacketCounters,
    ROLE_ADDRESS_LOWER, ROLE_BOND_PORT, ROLE_VLAN_LOWER, ROUTE_KEY_PREFIX_BITS, RouteId,
    RouteKeyV4, RouteKeyV6, SAMPLE_BURST, SAMPLE_CROSS_ENI, SAMPLES_PER_SECOND_PER_CPU,
    SAMPLES_RING_BYTES, SampleEvent, SamplerState, TableStats,
};

/// What egress may skip ([`DataPathConfig`]); userspace rewrites it with the maps.
#[map(name = "CONFIG")]
static CONFIG: Array<DataPathConfig> = Array::with_max_entries(1, 0);

/// Where each monitored interface counts: bucket `ifindex % IFACE_SLOT_BUCKETS`.
/// Userspace fills it before it attaches the programs. An array, so the kernel
/// inlines the lookup: no helper call per packet.
#[map(name = "IFACE_SLOTS")]
static IFACE_SLOTS: Array<IfaceSlot> = Array::with_max_entries(IFACE_SLOT_BUCKETS, 0);

/// Monitored interfaces whose bucket in `IFACE_SLOTS` another one holds.
#[map(name = "IFACE_SLOTS_OVERFLOW")]
static IFACE_SLOTS_OVERFLOW: HashMap<u32, IfaceSlot> =
    HashMap::with_max_entries(DEFAULT_MAX_INTERFACES, 0);

/// Per-interface counters, indexed by the interface's slot (inlined lookup).
#[map(name = "IFACE_COUNTERS")]
static IFACE_COUNTERS: PerCpuArray<IfaceCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_INTERFACES, 0);

/// Where `ifindex` counts, when it is monitored.
#[inline(always)]
fn iface_slot(ifindex: u32) -> Option<IfaceSlot> {
    match IFACE_SLOTS.get(ifindex & (IFACE_SLOT_BUCKETS - 1)) {
        Some(bucket) if bucket.ifindex == ifindex => Some(*bucket),
        // SAFETY: a valid pointer into the hash map's value.
        _ => IFACE_SLOTS_OVERFLOW
            .get_ptr(ifindex)
            .map(|slot| unsafe { *slot }),
    }
}

/// The counters of a monitored interface on this CPU.
#[inline(always)]
fn iface_counters(slot: &IfaceSlot) -> Option<&'static mut IfaceCounters> {
    // SAFETY: per-CPU value, and TC programs run with migration disabled, so no
    // other program instance writes this copy concurrently.
    IFACE_COUNTERS
        .get_ptr_mut(slot.slot)
        .map(|counters| unsafe { &mut *counters })
}

/// Per-route egress counters, indexed by the route id stored in the tries.
#[map(name = "ROUTE_COUNTERS")]
static ROUTE_COUNTERS: PerCpuArray<PacketCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv4 routes of monitored interfaces: `(ifindex, prefix)` → route id.
#[map(name = "ROUTES_V4")]
static ROUTES_V4: LpmTrie<RouteKeyV4, RouteId> = LpmTrie::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv6 routes of monitored interfaces: `(ifindex, prefix)` → route id.
#[map(name = "ROUTES_V6")]
static ROUTES_V6: LpmTrie<RouteKeyV6, RouteId> = LpmTrie::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv4 source prefixes of `from <prefix> lookup <table>` rules → table slot.
#[map(name = "SOURCE_RULES_V4")]
static SOURCE_RULES_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_SOURCE_RULES, 0);

/// IPv6 source prefixes of source rules → table slot.
#[map(name = "SOURCE_RULES_V6")]
static SOURCE_RULES_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_SOURCE_RULES, 0);

/// IPv4 addresses of monitored interfaces → the ifindex that owns each.
#[map(name = "SOURCE_OWNERS_V4")]
static SOURCE_OWNERS_V4: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(DEFAULT_MAX_OWNED_ADDRESSES, 0);

/// IPv6 addresses of monitored interfaces → the ifindex that owns each.
#[map(name = "SOURCE_OWNERS_V6")]
static SOURCE_OWNERS_V6: HashMap<[u8; 16], u32> =
    HashMap::with_max_entries(DEFAULT_MAX_OWNED_ADDRESSES, 0);

/// Egress whose source address belongs to another monitored interface.
#[map(name = "CROSS_ENI")]
static CROSS_ENI: PerCpuHashMap<CrossEniKey, PacketCounters> =
    PerCpuHashMap::with_max_entries(MAX_CROSS_ENI_PAIRS, 0);

/// Sampled packets for userspace (5-tuples of cross-ENI egress).
#[map(name = "SAMPLES")]
static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLES_RING_BYTES, 0);

/// Per-CPU token bucket limiting the samples.
#[map(name = "SAMPLER")]
static SAMPLER: PerCpuArray<SamplerState> = PerCpuArray::with_max_entries(1, 0);

/// Recently seen flows, keyed by the node's egress-direction 5-tuple (for a flow
/// that arrives, the tuple its replies will carry): where they arrived and left,
/// their cached egress route, and their traffic each way. A shared LRU: the kernel
/// inlines its lookup to one call (a per-CPU LRU's is a helper that calls it).
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKeyV4, FlowEntry> = LruHashMap::with_max_entries(MAX_TRACKED_FLOWS, 0);

/// The IPv6 flows, as `FLOWS` the IPv4 ones.
#[map(name = "FLOWS_V6")]
static FLOWS_V6: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(MAX_TRACKED_FLOWS, 0);

/// IPv4 tuples that arrived and were never answered (see `FLOWS_INBOUND_MAP`).
#[map(name = "FLOWS_INBOUND")]
static FLOWS_INBOUND: LruHashMap<FlowKeyV4, FlowEntry> =
    LruHashMap::with_max_entries(MAX_INBOUND_TUPLES, 0);

/// IPv6 tuples that arrived and were never answered.
#[map(name = "FLOWS_INBOUND_V6")]
static FLOWS_INBOUND_V6: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(MAX_INBOUND_TUPLES, 0);

/// This CPU's template of a new flow entry. Its padding is never written, so an
/// insert copies it from here instead of zeroing 184 bytes on the stack (which the
/// compiler would do with a byte-wise memset subprogram).
#[map(name = "FLOW_TEMPLATE")]
static FLOW_TEMPLATE: PerCpuArray<FlowEntry> = PerCpuArray::with_max_entries(1, 0);

/// Packets that left by another interface than their flow arrived on.
#[map(name = "ASYMMETRIC_FLOWS")]
static ASYMMETRIC_FLOWS: LruPerCpuHashMap<AsymmetricKey, PacketCounters> =
    LruPerCpuHashMap::with_max_entries(MAX_ASYMMETRIC_FLOWS, 0);

/// What the bounded tables let through and dropped (see [`TableStats`]); touched
/// only when a table gains a key or refuses one, never for a known flow.
#[map(name = "TABLE_STATS")]
static TABLE_STATS: PerCpuArray<TableStats> = PerCpuArray::with_max_entries(1, 0);

/// Applies `change` to this CPU's [`TableStats`].
#[inline(always)]
fn table_stats(change: impl FnOnce(&mut TableStats)) {
    if let Some(stats) = TABLE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, as in count_ingress.
        change(unsafe { &mut *stats });
    }
}

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

const ETH_HLEN: usize = 14;
const ETH_TYPE_OFFSET: usize = 12;
const VLAN_HLEN: usize = 4;
/// Tags skipped before giving up on a frame (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

/// Fixed IPv4 header; source at 12..16, destination at 16..20.
const IPV4_HLEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
/// Fixed IPv6 header; source at 8..24, destination at 24..40.
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers that stand between the fixed header and the transport
/// header (RFC 8200 section 4; AH, RFC 4302, counts its length in 4-byte words).
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers walked before a packet counts as unparsed (a usual packet has
/// none; hop-by-hop + destination options + routing + fragment is already rare).
const MAX_IPV6_EXTENSIONS: usize = 4;

/// Egress of interfaces with an Ethernet header.
#[classifier]
pub fn routemon_tx(ctx: TcContext) -> i32 {
    count_egress(&ctx, LinkLayer::Ethernet);
    TC_ACT_UNSPEC
}

/// Ingress of interfaces with an Ethernet header.
#[classifier]
pub fn routemon_rx(ctx: TcContext) -> i32 {
    count_ingress(&ctx, LinkLayer::Ethernet);
    TC_ACT_UNSPEC
}

/// Egress of interfaces that carry bare IP packets (tun, wireguard).
#[classifier]
pub fn routemon_tx_l3(ctx: TcContext) -> i32 {
    count_egress(&ctx, LinkLayer::None);
    TC_ACT_UNSPEC
}

/// Ingress of interfaces that carry bare IP packets.
#[classifier]
pub fn routemon_rx_l3(ctx: TcContext) -> i32 {
    count_ingress(&ctx, LinkLayer::None);
    TC_ACT_UNSPEC
}

#[derive(Clone, Copy)]
enum LinkLayer {
    Ethernet,
    None,
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the kernel hands TC programs a valid __sk_buff context.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
fn count_ingress(ctx: &TcContext, link_layer: LinkLayer) {
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

/// Counts an incoming packet of `reply`'s flow (keyed in the egress direction).
#[inline(always)]
fn arrive<T: Tuple>(reply: &T, ifindex: u32, len: u64) {
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

#[inline(always)]
fn count_egress(ctx: &TcContext, link_layer: LinkLayer) {
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

/// Counts an outgoing packet of `flow` in its entry and returns its route and
/// source owner: cached in the entry while the routing state is the one they were
/// looked up in and the flow still leaves by this interface, else looked up.
#[inline(always)]
fn leave<T: Tuple>(flow: &T, ifindex: u32, len: u64, config: &DataPathConfig) -> Resolved {
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
trait Tuple: Copy + 'static {
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

/// Which address of a packet is the node's: the source on egress, the destination
/// on ingress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// Whether a packet on a device with a stack role (see `IfaceSlot::role`) belongs
/// to a monitored device stacked with it, whose hooks count its flow and route. The
/// kernel runs the upper's egress and then the lower's on one skb (and ingress the
/// other way round); nothing in the skb names the other device, so the roles come
/// from userspace's view of the links.
#[inline(always)]
fn is_upper_packet(ctx: &TcContext, slot: &IfaceSlot, packet: &Packet, side: Side) -> bool {
    if slot.role & ROLE_BOND_PORT != 0 {
        return true;
    }
    if slot.role & ROLE_VLAN_LOWER != 0 && is_tagged(ctx) {
        return true;
    }
    if slot.role & ROLE_ADDRESS_LOWER != 0 {
        let owner = match packet {
            Packet::V4(flow) => {
                let addr = if side == Side::Source {
                    flow.src
                } else {
                    flow.dst
                };
                SOURCE_OWNERS_V4.get_ptr(addr)
            }
            Packet::V6(flow) => {
                let addr = if side == Side::Source {
                    flow.src
                } else {
                    flow.dst
                };
                SOURCE_OWNERS_V6.get_ptr(addr)
            }
        };
        // SAFETY: a valid pointer into the hash map's value.
        if let Some(owner) = owner.map(|owner| unsafe { *owner }) {
            return owner != slot.ifindex
                && iface_slot(owner).is_some_and(|upper| upper.lower == slot.ifindex);
        }
    }
    false
}

/// Whether the frame carries a VLAN tag: in the skb's metadata (where the VLAN
/// device puts it on egress and the receive path moves it on ingress) or in band.
#[inline(always)]
fn is_tagged(ctx: &TcContext) -> bool {
    // SAFETY: the kernel hands TC programs a valid __sk_buff context.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return true;
    }
    matches!(
        bytes::<2>(ctx, ETH_TYPE_OFFSET).map(u16::from_be_bytes),
        Some(ETH_P_8021Q | ETH_P_8021AD)
    )
}

/// What egress looked up for a flow leaving by one interface.
#[derive(Clone, Copy)]
struct Resolved {
    /// Its route, or [`NO_ROUTE`].
    route_id: RouteId,
    /// The monitored interface owning its source, 0 when none or not looked up.
    source_owner: u32,
}

/// The maps of one address family that egress consults; `None` where the
/// [`DataPathConfig`] says the lookup cannot find anything that matters.
struct Tables<A: 'static, K: 'static> {
    owners: Option<&'static HashMap<A, u32>>,
    rules: Option<&'static LpmTrie<A, u32>>,
    routes: &'static LpmTrie<K, RouteId>,
    addr_bits: u32,
}

impl<A: Copy, K> Tables<A, K> {
    /// The source's owner, and the route: looked up in the table slot the source
    /// selects, then in the main table's.
    #[inline(always)]
    fn resolve(&self, src: &A, key: impl Fn(u32) -> K) -> Resolved {
        let source_owner = self
            .owners
            .and_then(|owners| owners.get_ptr(src))
            // SAFETY: a valid pointer into the hash map's value.
            .map_or(0, |owner| unsafe { *owner });
        let slot = self
            .rules
            .and_then(|rules| rules.get(Key::new(self.addr_bits, *src)))
            .copied();
        let lookup = |table_slot| {
            self.routes
                .get(Key::new(
                    ROUTE_KEY_PREFIX_BITS + self.addr_bits,
                    key(table_slot),
                ))
                .copied()
        };
        Resolved {
            route_id: slot
                .and_then(lookup)
                .or_else(|| lookup(MAIN_TABLE_SLOT))
                .unwrap_or(NO_ROUTE),
            source_owner,
        }
    }
}

/// How much of the data path runs (`FEATURES_*`): everything, except in the
/// bench's ablation. A frozen global, so the verifier prunes the checks below.
#[unsafe(no_mangle)]
static FEATURES: Global<u32> = Global::new(FEATURES_ALL);

/// Where to find the dropped packet's device and namespace; filled in by the loader
/// from the kernel's BTF (see `DropConfig`).
#[unsafe(no_mangle)]
static DROP_CONFIG: Global<DropConfig> = Global::new(DropConfig {
    enabled: 0,
    skb_dev: 0,
    dev_ifindex: 0,
    dev_net: 0,
    net_inum: 0,
    netns_inum: 0,
});

/// Packets the kernel dropped on monitored interfaces, by reason.
#[map(name = "DROPS")]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);

/// `kfree_skb(skb, location, reason, rx_sk)`: a packet dropped anywhere in the
/// kernel. Counted when its device is a monitored interface of routemon's
/// namespace. Runs only for drops, never on the forwarding path.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn routemon_drop(ctx: RawTracePointContext) -> i32 {
    let _ = count_drop(&ctx);
    0
}

#[inline(always)]
fn count_drop(ctx: &RawTracePointContext) -> Option<()> {
    let config = DROP_CONFIG.load();
    if config.enabled == 0 {
        return None;
    }
    let skb: u64 = ctx.arg(0);
    let reason: u64 = ctx.arg(2);
    let dev: u64 = read_kernel(skb, config.skb_dev)?;
    if dev == 0 {
        return None;
    }
    let ifindex: u32 = read_kernel(dev, config.dev_ifindex)?;
    // Monitored interfaces only (the cheap test first)…
    iface_slot(ifindex)?;
    // …of routemon's namespace: ifindexes repeat across namespaces.
    let net: u64 = read_kernel(dev, config.dev_net)?;
    let inum: u32 = read_kernel(net, config.net_inum)?;
    if inum != config.netns_inum {
        return None;
    }
    let key = DropKey {
        ifindex,
        reason: reason as u32,
    };
    match DROPS.get_ptr_mut(key) {
        // SAFETY: per-CPU value; tracing programs run with migration disabled.
        Some(count) => unsafe { *count += 1 },
        None => {
            if DROPS.insert(key, 1, 0).is_err() {
                table_stats(|s| s.drops_uncounted += 1);
            }
        }
    }
    Some(())
}

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails on a bad one.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// Adds one packet of `len` bytes to counters that every CPU writes.
#[inline(always)]
fn add_shared(counters: &mut PacketCounters, len: u64) {
    // The BPF target has no atomic read-modify-write types; the intrinsic compiles
    // to the instruction (BPF_ATOMIC | BPF_ADD, "lock xadd").
    // SAFETY: the fields are valid, aligned u64s for the duration of the calls.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut counters.packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut counters.bytes, len);
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

/// Counts a packet that leaves by `egress` with a source address owned by `owner`
/// (another interface): the VPC's source/destination check drops such packets.
#[inline(always)]
fn count_cross_eni(egress: u32, owner: u32, len: u64) {
    let key = CrossEniKey {
        egress_ifindex: egress,
        source_ifindex: owner,
    };
    if add_packet!(CROSS_ENI, &key, len) == Added::Lost {
        table_stats(|s| s.cross_eni_uncounted_packets += 1);
    }
}

/// Sends userspace the 5-tuple of a cross-ENI flow (once per flow: the caller
/// remembers a sample that went through); says whether it did.
#[inline(always)]
fn sample_cross_eni<T: Tuple>(egress: u32, found: &Resolved, flow: &T) -> bool {
    sample(&SampleEvent {
        kind: SAMPLE_CROSS_ENI,
        egress_ifindex: egress,
        source_ifindex: found.source_owner,
        pad: 0,
        flow: flow.flow_key(),
    })
}

/// Sends `event` to userspace unless this CPU's token bucket is empty or the ring
/// buffer is full; either way the outcome is counted in `SAMPLER`. Says whether it
/// was sent.
#[inline(always)]
fn sample(event: &SampleEvent) -> bool {
    let Some(state) = SAMPLER.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, as in count_ingress.
    let state = unsafe { &mut *state };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let earned = now.saturating_sub(state.refilled_ns) * SAMPLES_PER_SECOND_PER_CPU / 1_000_000_000;
    if earned > 0 {
        state.tokens = (state.tokens + earned).min(SAMPLE_BURST);
        state.refilled_ns = now;
    }
    if state.tokens == 0 {
        state.suppressed += 1;
        return false;
    }
    state.tokens -= 1;
    match SAMPLES.output::<SampleEvent>(event, 0) {
        Ok(()) => {
            state.sampled += 1;
            true
        }
        Err(_) => {
            state.suppressed += 1;
            false
        }
    }
}

/// Counts a packet of a flow that arrived on `ingress` but leaves by `egress`.
#[inline(always)]
fn count_asymmetric(flow: FlowKey, ingress: u32, egress: u32, len: u64) {
    let key = AsymmetricKey {
        flow,
        ingress_ifindex: ingress,
        egress_ifindex: egress,
    };
    if add_packet!(ASYMMETRIC_FLOWS, &key, len) == Added::Inserted {
        table_stats(|s| s.asymmetric_inserted += 1);
    }
}

/// What the programs read from an IP packet: its 5-tuple, in the form of its
/// family's flow table.
enum Packet {
    V4(FlowKeyV4),
    V6(FlowKey),
}

/// What [`parse`] made of a frame.
enum Parsed {
    /// An IP packet with its 5-tuple.
    Ip(Packet),
    /// Not IP (ARP, LLDP, …): counted on the interface only.
    NotIp,
    /// IP by its ethertype, but a header that is truncated or invalid (IPv4 IHL
    /// below 5, a wrong version, more IPv6 extension headers than are walked): no
    /// 5-tuple can be trusted, so it is counted as unparsed, never as a flow.
    Malformed,
}

impl Parsed {
    /// The packet, if any; a malformed one is counted in `iface`'s `unparsed_*`.
    #[inline(always)]
    fn counted_in(self, iface: &mut IfaceCounters, len: u64) -> Option<Packet> {
        match self {
            Parsed::Ip(packet) => Some(packet),
            Parsed::NotIp => None,
            Parsed::Malformed => {
                iface.unparsed_packets += 1;
                iface.unparsed_bytes += len;
                None
            }
        }
    }
}

/// Reads `N` bytes at `offset` of the packet: straight from the linear data when
/// they are there (no helper call, no copy through the stack), else with
/// `bpf_skb_load_bytes` (headers in paged data, rare on the TC hooks).
#[inline(always)]
fn bytes<const N: usize>(ctx: &TcContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N <= end {
        // SAFETY: the N bytes are inside the linear packet data (checked just above,
        // and again by the verifier); [u8; N] has no alignment requirement.
        Some(unsafe { ((start + offset) as *const [u8; N]).read() })
    } else {
        ctx.load(offset).ok()
    }
}

/// A flow key built whole: field-by-field zeroing would cost a call to a memset
/// subprogram.
#[inline(always)]
fn flow_key(
    ip_version: u8,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    src: [u8; 16],
    dst: [u8; 16],
) -> FlowKey {
    FlowKey {
        ip_version,
        protocol,
        pad: [0; 2],
        src_port,
        dst_port,
        src,
        dst,
    }
}

/// `N` bytes of `header` from `at`.
#[inline(always)]
fn field<const N: usize, const H: usize>(header: &[u8; H], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// An IPv4 address of `header` at `at`, in the first 4 bytes of a 16-byte slot.
/// Built from words, which the compiler stores whole (byte-wise zeroing of the
/// other 12 would be a call to a memset subprogram).
#[inline(always)]
fn v4_in_v6_slot<const H: usize>(header: &[u8; H], at: usize) -> [u8; 16] {
    let words = [u32::from_ne_bytes(field(header, at)), 0, 0, 0];
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}

/// Reads the IP header and the ports (or ICMP echo identifier) of a packet.
#[inline(always)]
fn parse(ctx: &TcContext, link_layer: LinkLayer) -> Parsed {
    let (ethertype, l3_offset) = match link_layer {
        LinkLayer::Ethernet => match ethertype_and_l3_offset(ctx) {
            Some(found) => found,
            None => return Parsed::NotIp,
        },
        // skb->protocol holds the ethertype in network byte order in its low 16 bits.
        LinkLayer::None => (u16::from_be(ctx.skb.protocol() as u16), 0),
    };
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3_offset),
        ETH_P_IPV6 => parse_ipv6(ctx, l3_offset),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, l3_offset: usize) -> Parsed {
    let Some(header) = bytes::<IPV4_HLEN>(ctx, l3_offset) else {
        return Parsed::Malformed;
    };
    let header_words = header[0] & 0x0f;
    // Version 4 and at least the fixed header: below 5 words the "ports" would be
    // read from inside the IP header (the kernel drops such packets: IP_INHDR).
    if header[0] >> 4 != 4 || header_words < 5 {
        return Parsed::Malformed;
    }
    let protocol = header[9];
    // Only the first fragment carries the transport header: the others are keyed
    // with ports 0.
    let fragment_offset = u16::from_be_bytes([header[6] & 0x1f, header[7]]);
    let (src_port, dst_port) = if fragment_offset == 0 {
        let header_len = usize::from(header_words) * 4;
        ports(ctx, l3_offset + header_len, protocol, IPPROTO_ICMP)
    } else {
        (0, 0)
    };
    Parsed::Ip(Packet::V4(FlowKeyV4 {
        src: field(&header, 12),
        dst: field(&header, 16),
        src_port,
        dst_port,
        protocol,
        pad: [0; 3],
    }))
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, l3_offset: usize) -> Parsed {
    let Some(header) = bytes::<IPV6_HLEN>(ctx, l3_offset) else {
        return Parsed::Malformed;
    };
    if header[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    // Walk the extension headers to the transport protocol, so that a UDP and a TCP
    // flow between the same addresses never merge under the extension's number.
    let mut protocol = header[6];
    let mut offset = l3_offset + IPV6_HLEN;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match protocol {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(ext) = bytes::<2>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = bytes::<4>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                // The fragment offset (upper 13 bits): not 0, no transport header.
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    first_fragment = false;
                }
                offset += 8;
            }
            IPPROTO_AH => {
                let Some(ext) = bytes::<2>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    if matches!(
        protocol,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    ) {
        return Parsed::Malformed;
    }
    let (src_port, dst_port) = if first_fragment {
        ports(ctx, offset, protocol, IPPROTO_ICMPV6)
    } else {
        (0, 0)
    };
    Parsed::Ip(Packet::V6(flow_key(
        6,
        protocol,
        src_port,
        dst_port,
        field(&header, 8),
        field(&header, 24),
    )))
}

/// The flow's ports from the transport header at `offset`: TCP, UDP and SCTP
/// ports, or the identifier of an ICMP echo request/reply in both; 0 and 0 for
/// anything else (or a truncated header).
#[inline(always)]
fn ports(ctx: &TcContext, offset: usize, protocol: u8, icmp: u8) -> (u16, u16) {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => match bytes::<4>(ctx, offset) {
            Some(ports) => (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
            ),
            None => (0, 0),
        },
        protocol if protocol == icmp => match bytes::<6>(ctx, offset) {
            // Echo request/reply: 8/0 for ICMP, 128/129 for ICMPv6.
            Some(header) if matches!(header[0], 0 | 8 | 128 | 129) => {
                let id = u16::from_be_bytes([header[4], header[5]]);
                (id, id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

/// Reads the ethertype of an Ethernet frame, skipping up to two in-band VLAN tags
/// (tags offloaded to `skb->vlan_tci` are not in the packet data at all).
#[inline(always)]
fn ethertype_and_l3_offset(ctx: &TcContext) -> Option<(u16, usize)> {
    let mut type_offset = ETH_TYPE_OFFSET;
    let mut l3_offset = ETH_HLEN;
    for _ in 0..=MAX_VLAN_TAGS {
        let ethertype = u16::from_be_bytes(bytes(ctx, type_offset)?);
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Some((ethertype, l3_offset));
        }
        type_offset += VLAN_HLEN;
        l3_offset += VLAN_HLEN;
    }
    None
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
