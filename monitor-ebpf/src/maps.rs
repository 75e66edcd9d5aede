//! Everything the programs share with userspace: the maps and the globals the
//! loader sets, each looked up by its name (so the names, types and sizes here are
//! the layout userspace expects), and the small accessors the programs read them
//! through.
use aya_ebpf::{
    Global,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
    },
};
use monitor_common::{
    AsymmetricKey, CrossEniKey, DEFAULT_MAX_INTERFACES, DEFAULT_MAX_OWNED_ADDRESSES,
    DEFAULT_MAX_ROUTES, DataPathConfig, DropConfig, DropKey, FEATURES_ALL, FlowEntry, FlowKey,
    FlowKeyV4, IFACE_SLOT_BUCKETS, IfaceCounters, IfaceSlot, MAX_ASYMMETRIC_FLOWS,
    MAX_CROSS_ENI_PAIRS, MAX_DROP_KEYS, MAX_INBOUND_TUPLES, MAX_SOURCE_RULES, MAX_TRACKED_FLOWS,
    PacketCounters, RouteId, RouteKeyV4, RouteKeyV6, SAMPLES_RING_BYTES, SamplerState, TableStats,
};

/// What egress may skip ([`DataPathConfig`]); userspace rewrites it with the maps.
#[map(name = "CONFIG")]
pub(crate) static CONFIG: Array<DataPathConfig> = Array::with_max_entries(1, 0);

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
pub(crate) fn iface_slot(ifindex: u32) -> Option<IfaceSlot> {
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
pub(crate) fn iface_counters(slot: &IfaceSlot) -> Option<&'static mut IfaceCounters> {
    // SAFETY: per-CPU value, and TC programs run with migration disabled, so no
    // other program instance writes this copy concurrently.
    IFACE_COUNTERS
        .get_ptr_mut(slot.slot)
        .map(|counters| unsafe { &mut *counters })
}

/// Per-route egress counters, indexed by the route id stored in the tries.
#[map(name = "ROUTE_COUNTERS")]
pub(crate) static ROUTE_COUNTERS: PerCpuArray<PacketCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv4 routes of monitored interfaces: `(ifindex, prefix)` → route id.
#[map(name = "ROUTES_V4")]
pub(crate) static ROUTES_V4: LpmTrie<RouteKeyV4, RouteId> =
    LpmTrie::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv6 routes of monitored interfaces: `(ifindex, prefix)` → route id.
#[map(name = "ROUTES_V6")]
pub(crate) static ROUTES_V6: LpmTrie<RouteKeyV6, RouteId> =
    LpmTrie::with_max_entries(DEFAULT_MAX_ROUTES, 0);

/// IPv4 source prefixes of `from <prefix> lookup <table>` rules → table slot.
#[map(name = "SOURCE_RULES_V4")]
pub(crate) static SOURCE_RULES_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(MAX_SOURCE_RULES, 0);

/// IPv6 source prefixes of source rules → table slot.
#[map(name = "SOURCE_RULES_V6")]
pub(crate) static SOURCE_RULES_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(MAX_SOURCE_RULES, 0);

/// IPv4 addresses of monitored interfaces → the ifindex that owns each.
#[map(name = "SOURCE_OWNERS_V4")]
pub(crate) static SOURCE_OWNERS_V4: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(DEFAULT_MAX_OWNED_ADDRESSES, 0);

/// IPv6 addresses of monitored interfaces → the ifindex that owns each.
#[map(name = "SOURCE_OWNERS_V6")]
pub(crate) static SOURCE_OWNERS_V6: HashMap<[u8; 16], u32> =
    HashMap::with_max_entries(DEFAULT_MAX_OWNED_ADDRESSES, 0);

/// Egress whose source address belongs to another monitored interface.
#[map(name = "CROSS_ENI")]
pub(crate) static CROSS_ENI: PerCpuHashMap<CrossEniKey, PacketCounters> =
    PerCpuHashMap::with_max_entries(MAX_CROSS_ENI_PAIRS, 0);

/// Sampled packets for userspace (5-tuples of cross-ENI egress).
#[map(name = "SAMPLES")]
pub(crate) static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLES_RING_BYTES, 0);

/// Per-CPU token bucket limiting the samples.
#[map(name = "SAMPLER")]
pub(crate) static SAMPLER: PerCpuArray<SamplerState> = PerCpuArray::with_max_entries(1, 0);

/// Recently seen flows, keyed by the node's egress-direction 5-tuple (for a flow
/// that arrives, the tuple its replies will carry): where they arrived and left,
/// their cached egress route, and their traffic each way. A shared LRU: the kernel
/// inlines its lookup to one call (a per-CPU LRU's is a helper that calls it).
#[map(name = "FLOWS")]
pub(crate) static FLOWS: LruHashMap<FlowKeyV4, FlowEntry> =
    LruHashMap::with_max_entries(MAX_TRACKED_FLOWS, 0);

/// The IPv6 flows, as `FLOWS` the IPv4 ones.
#[map(name = "FLOWS_V6")]
pub(crate) static FLOWS_V6: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(MAX_TRACKED_FLOWS, 0);

/// IPv4 tuples that arrived and were never answered (see `FLOWS_INBOUND_MAP`).
#[map(name = "FLOWS_INBOUND")]
pub(crate) static FLOWS_INBOUND: LruHashMap<FlowKeyV4, FlowEntry> =
    LruHashMap::with_max_entries(MAX_INBOUND_TUPLES, 0);

/// IPv6 tuples that arrived and were never answered.
#[map(name = "FLOWS_INBOUND_V6")]
pub(crate) static FLOWS_INBOUND_V6: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(MAX_INBOUND_TUPLES, 0);

/// This CPU's template of a new flow entry. Its padding is never written, so an
/// insert copies it from here instead of zeroing 184 bytes on the stack (which the
/// compiler would do with a byte-wise memset subprogram).
#[map(name = "FLOW_TEMPLATE")]
pub(crate) static FLOW_TEMPLATE: PerCpuArray<FlowEntry> = PerCpuArray::with_max_entries(1, 0);

/// Packets that left by another interface than their flow arrived on.
#[map(name = "ASYMMETRIC_FLOWS")]
pub(crate) static ASYMMETRIC_FLOWS: LruPerCpuHashMap<AsymmetricKey, PacketCounters> =
    LruPerCpuHashMap::with_max_entries(MAX_ASYMMETRIC_FLOWS, 0);

/// What the bounded tables let through and dropped (see [`TableStats`]); touched
/// only when a table gains a key or refuses one, never for a known flow.
#[map(name = "TABLE_STATS")]
static TABLE_STATS: PerCpuArray<TableStats> = PerCpuArray::with_max_entries(1, 0);

/// Applies `change` to this CPU's [`TableStats`].
#[inline(always)]
pub(crate) fn table_stats(change: impl FnOnce(&mut TableStats)) {
    if let Some(stats) = TABLE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, as in count_ingress.
        change(unsafe { &mut *stats });
    }
}

/// How much of the data path runs (`FEATURES_*`): everything, except in the
/// bench's ablation. A frozen global, so the verifier prunes the checks on it in
/// [`crate::counting`].
#[unsafe(no_mangle)]
pub(crate) static FEATURES: Global<u32> = Global::new(FEATURES_ALL);

/// Where to find the dropped packet's device and namespace; filled in by the loader
/// from the kernel's BTF (see `DropConfig`).
#[unsafe(no_mangle)]
pub(crate) static DROP_CONFIG: Global<DropConfig> = Global::new(DropConfig {
    enabled: 0,
    skb_dev: 0,
    dev_ifindex: 0,
    dev_net: 0,
    net_inum: 0,
    netns_inum: 0,
});

/// Packets the kernel dropped on monitored interfaces, by reason.
#[map(name = "DROPS")]
pub(crate) static DROPS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);
