//! Types shared by routemon's eBPF programs and its userspace loader.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into BPF
//! maps and userspace reads it back byte for byte. With the `user` feature the
//! types implement [`aya::Pod`] so they can be used as map keys and values.
#![cfg_attr(not(test), no_std)]

/// Name of the per-CPU array of [`IfaceCounters`], indexed by the slot [`IFACE_SLOTS_MAP`] gives.
pub const IFACE_COUNTERS_MAP: &str = "IFACE_COUNTERS";
/// Name of the per-CPU array of [`PacketCounters`], indexed by [`RouteId`].
pub const ROUTE_COUNTERS_MAP: &str = "ROUTE_COUNTERS";
/// Name of the IPv4 LPM trie: [`RouteKeyV4`] → [`RouteId`].
pub const ROUTES_V4_MAP: &str = "ROUTES_V4";
/// Name of the IPv6 LPM trie: [`RouteKeyV6`] → [`RouteId`].
pub const ROUTES_V6_MAP: &str = "ROUTES_V6";

/// Name of the IPv4 address-owner hash: address (`[u8; 4]`) → ifindex.
pub const SOURCE_OWNERS_V4_MAP: &str = "SOURCE_OWNERS_V4";
/// Name of the IPv6 address-owner hash: address (`[u8; 16]`) → ifindex.
pub const SOURCE_OWNERS_V6_MAP: &str = "SOURCE_OWNERS_V6";
/// Name of the per-CPU hash of cross-ENI egress: [`CrossEniKey`] → [`PacketCounters`].
pub const CROSS_ENI_MAP: &str = "CROSS_ENI";

/// Name of the LRU hash of recently seen IPv4 flows: [`FlowKeyV4`] in the node's
/// egress direction (for a flow that arrived, the tuple its replies carry) →
/// [`FlowEntry`].
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the LRU hash of IPv6 flows: [`FlowKey`] → [`FlowEntry`].
pub const FLOWS_V6_MAP: &str = "FLOWS_V6";
/// Name of the LRU hash of IPv4 tuples that arrived and were never answered
/// ([`FlowKeyV4`] in the reply direction → [`FlowEntry`], ingress counts only). They
/// live apart from the flows, so a flood of unanswered tuples (a scan, a SYN flood)
/// evicts only its own kind, never an established flow; when the node answers, the
/// tuple's counts move into the flow table.
pub const FLOWS_INBOUND_MAP: &str = "FLOWS_INBOUND";
/// The IPv6 counterpart of [`FLOWS_INBOUND_MAP`].
pub const FLOWS_INBOUND_V6_MAP: &str = "FLOWS_INBOUND_V6";
/// Capacity of each unanswered-tuple table.
pub const MAX_INBOUND_TUPLES: u32 = 16_384;
/// Name of the LRU per-CPU hash of asymmetric flows: [`AsymmetricKey`] → [`PacketCounters`].
pub const ASYMMETRIC_FLOWS_MAP: &str = "ASYMMETRIC_FLOWS";
/// Flows remembered at ingress; the least recently used are evicted first.
pub const MAX_TRACKED_FLOWS: u32 = 65_536;
/// Asymmetric flows counted individually; the least recently used are evicted first.
pub const MAX_ASYMMETRIC_FLOWS: u32 = 4_096;

/// Name of the per-CPU array (one entry) of [`TableStats`]: what the bounded
/// tables above let through and what they had to drop.
pub const TABLE_STATS_MAP: &str = "TABLE_STATS";

/// Name of the ring buffer of sampled events ([`SampleEvent`]).
pub const SAMPLES_MAP: &str = "SAMPLES";
/// Name of the per-CPU sampler state ([`SamplerState`], one entry).
pub const SAMPLER_MAP: &str = "SAMPLER";
/// Size of the sample ring buffer in bytes (a power of two, page aligned).
pub const SAMPLES_RING_BYTES: u32 = 256 * 1024;
/// Samples each CPU may emit per second, on average…
pub const SAMPLES_PER_SECOND_PER_CPU: u64 = 64;
/// …and at most in a burst. Packets beyond this are counted, not sampled.
pub const SAMPLE_BURST: u64 = 64;
/// [`SampleEvent::kind`] of a cross-ENI packet.
pub const SAMPLE_CROSS_ENI: u32 = 1;

/// Default capacity of the address-owner maps (addresses of monitored interfaces).
pub const DEFAULT_MAX_OWNED_ADDRESSES: u32 = 4096;
/// Capacity of the cross-ENI map: (egress, owner) pairs.
pub const MAX_CROSS_ENI_PAIRS: u32 = 1024;

/// Names of the TC programs in the eBPF object.
pub mod program {
    /// Egress classifier for interfaces with an Ethernet header (ENIs, veths).
    pub const EGRESS: &str = "routemon_tx";
    /// Ingress classifier for interfaces with an Ethernet header.
    pub const INGRESS: &str = "routemon_rx";
    /// Egress classifier for interfaces without a link-layer header (tun, wireguard).
    pub const EGRESS_L3: &str = "routemon_tx_l3";
    /// Ingress classifier for interfaces without a link-layer header.
    pub const INGRESS_L3: &str = "routemon_rx_l3";
    /// Raw tracepoint program on `kfree_skb`: packets the kernel dropped, by reason.
    pub const DROPS: &str = "routemon_drop";
}

/// The raw tracepoint [`program::DROPS`] attaches to.
pub const DROP_TRACEPOINT: &str = "kfree_skb";
/// Name of the per-CPU hash of kernel drops on monitored interfaces:
/// [`DropKey`] → packets.
pub const DROPS_MAP: &str = "DROPS";
/// (interface, reason) pairs counted; the kernel has about 130 reasons.
pub const MAX_DROP_KEYS: u32 = 4096;
/// Name of the global [`DropConfig`] the loader fills in.
pub const DROP_CONFIG_GLOBAL: &str = "DROP_CONFIG";

/// Key of the drop counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// The device the dropped packet was on (`skb->dev`).
    pub ifindex: u32,
    /// `enum skb_drop_reason`.
    pub reason: u32,
}

/// Where the drop program finds what it needs in kernel structures (byte offsets
/// from the kernel's BTF, which differ between kernels), and the network namespace
/// to count in. All zero: the program counts nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// Non-zero when the offsets below are valid.
    pub enabled: u32,
    /// `offsetof(struct sk_buff, dev)`.
    pub skb_dev: u32,
    /// `offsetof(struct net_device, ifindex)`.
    pub dev_ifindex: u32,
    /// `offsetof(struct net_device, nd_net.net)`.
    pub dev_net: u32,
    /// `offsetof(struct net, ns.inum)`.
    pub net_inum: u32,
    /// The inode number of routemon's network namespace.
    pub netns_inum: u32,
}

/// Index into the route counter array. Userspace hands these out; the kernel only
/// reads them from the LPM tries.
pub type RouteId = u32;

/// Number of leading bits of every route LPM key that hold the ifindex and the table
/// slot. A lookup always matches all of them, so a route is only ever found for the
/// interface it leaves by, in the table the packet's source selects.
pub const ROUTE_KEY_PREFIX_BITS: u32 = 64;

/// Table slot of the main table (and of tables no source rule selects).
pub const MAIN_TABLE_SLOT: u32 = 0;

/// Name of the load-time global that switches the data path's features off for the
/// bench's ablation (one of the `FEATURES_*` levels). Production loads leave it at
/// [`FEATURES_ALL`]; it lives in `.rodata`, which the kernel freezes, so the
/// verifier knows its value and removes the checks.
pub const FEATURES_GLOBAL: &str = "FEATURES";
/// Interface counters only.
pub const FEATURES_INTERFACES: u32 = 1;
/// + the IP header parsed and each egress packet's route looked up (no flow table).
pub const FEATURES_ROUTES: u32 = 2;
/// + the flow table, with each flow's route cached in its entry.
pub const FEATURES_FLOWS: u32 = 3;
/// + source-owner lookups (cross-ENI) and asymmetric-flow counting: everything.
pub const FEATURES_ALL: u32 = 4;

/// Name of the one-element array holding the [`DataPathConfig`].
pub const CONFIG_MAP: &str = "CONFIG";

/// What the data path may skip, written by userspace whenever the maps it
/// summarises change (an inlined array read per packet, against an LPM or hash
/// lookup whose answer is known in advance).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPathConfig {
    /// [`HAS_SOURCE_RULES_V4`], [`HAS_SOURCE_RULES_V6`], [`CROSS_ENI_POSSIBLE`].
    pub flags: u32,
    /// The routing state's version: userspace moves it on after every change of the
    /// routes, rules, owners or interfaces the data path reads. A flow entry whose
    /// [`FlowEntry::generation`] equals it reuses its cached route and owner; any
    /// other value (0 is never current) makes the next egress packet look them up.
    pub generation: u32,
}

/// The IPv4 source-rule trie has an entry: egress looks up the source's table.
pub const HAS_SOURCE_RULES_V4: u32 = 1;
/// The IPv6 source-rule trie has an entry.
pub const HAS_SOURCE_RULES_V6: u32 = 1 << 1;
/// Addresses have owners, and the owners and monitored interfaces are at least two
/// interfaces: a packet can leave by another interface than its source's owner.
pub const CROSS_ENI_POSSIBLE: u32 = 1 << 2;

/// Name of the IPv4 source-rule LPM trie: source prefix → table slot.
pub const SOURCE_RULES_V4_MAP: &str = "SOURCE_RULES_V4";
/// Name of the IPv6 source-rule LPM trie: source prefix → table slot.
pub const SOURCE_RULES_V6_MAP: &str = "SOURCE_RULES_V6";
/// Capacity of the source-rule tries (`ip rule … from <prefix> lookup <table>`).
pub const MAX_SOURCE_RULES: u32 = 1024;

/// Default capacity of the route maps when userspace does not size them at load time.
pub const DEFAULT_MAX_ROUTES: u32 = 16_384;
/// Interfaces routemon can monitor at once: the slots of the interface counter array.
pub const DEFAULT_MAX_INTERFACES: u32 = 256;

/// Name of the array that maps an ifindex to its counter slot: entry
/// `ifindex % IFACE_SLOT_BUCKETS` holds an [`IfaceSlot`] when that ifindex is
/// monitored (an inlined array read on every packet, where a hash lookup would be a
/// call).
pub const IFACE_SLOTS_MAP: &str = "IFACE_SLOTS";
/// Entries of [`IFACE_SLOTS_MAP`] (a power of two).
pub const IFACE_SLOT_BUCKETS: u32 = 4096;
/// Name of the hash `ifindex → slot` for a monitored ifindex whose bucket another
/// monitored ifindex holds (rare: ifindexes of one node seldom collide modulo 4096).
pub const IFACE_SLOTS_OVERFLOW_MAP: &str = "IFACE_SLOTS_OVERFLOW";

/// A monitored interface's place in the interface counter array, and its place in
/// a stack of monitored devices.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceSlot {
    /// The interface (0: the bucket is free).
    pub ifindex: u32,
    /// Its index in `IFACE_COUNTERS`.
    pub slot: u32,
    /// [`ROLE_BOND_PORT`], [`ROLE_VLAN_LOWER`], [`ROLE_ADDRESS_LOWER`]: which of the
    /// packets it sees another monitored device of its stack also sees, and counts
    /// as a flow and to a route instead of it.
    pub role: u32,
    /// The monitored device this one is stacked on (macvlan, ipvlan, VLAN), or 0.
    pub lower: u32,
}

/// A port of a monitored bond or team: every IP packet it carries also crosses the
/// bond's hooks, which count its flow and route.
pub const ROLE_BOND_PORT: u32 = 1;
/// The lower device of a monitored VLAN: its tagged packets are the VLAN's.
pub const ROLE_VLAN_LOWER: u32 = 1 << 1;
/// The lower device of a monitored macvlan or ipvlan: packets whose node-side
/// address (egress source, ingress destination) an upper stacked on it owns are
/// that upper's.
pub const ROLE_ADDRESS_LOWER: u32 = 1 << 2;

/// Per-interface packet and byte counters. One copy per CPU; userspace sums them.
///
/// Byte counts are `skb->len` as the TC hook sees it, which includes the link-layer
/// header on both egress and ingress (the kernel pushes the MAC header back before
/// running ingress classifiers), so they compare directly with `ip -s link`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Packets seen on egress (GSO super-packets count once, as the driver sees them).
    pub egress_packets: u64,
    /// Bytes seen on egress.
    pub egress_bytes: u64,
    /// Packets seen on ingress.
    pub ingress_packets: u64,
    /// Bytes seen on ingress.
    pub ingress_bytes: u64,
    /// Egress packets that no route of this interface matched (non-IP frames such as
    /// ARP, or IP packets sent here by policy routing or a socket bound elsewhere).
    pub egress_unattributed_packets: u64,
    /// Bytes of [`Self::egress_unattributed_packets`].
    pub egress_unattributed_bytes: u64,
    /// Packets, both ways, whose IP header is truncated or invalid (IPv4 IHL below
    /// 5, a wrong version, IPv6 extension headers past the walked depth): counted
    /// here and in the totals, never as a flow (and on egress never to a route).
    pub unparsed_packets: u64,
    /// Bytes of [`Self::unparsed_packets`].
    pub unparsed_bytes: u64,
}

impl IfaceCounters {
    /// What was counted since an earlier reading, pair by pair (packets with their
    /// bytes) with [`PacketCounters::since`]'s rule.
    pub fn since(&self, before: &Self) -> Self {
        let pair = |packets, bytes, before_packets, before_bytes| {
            PacketCounters { packets, bytes }.since(&PacketCounters {
                packets: before_packets,
                bytes: before_bytes,
            })
        };
        let egress = pair(
            self.egress_packets,
            self.egress_bytes,
            before.egress_packets,
            before.egress_bytes,
        );
        let ingress = pair(
            self.ingress_packets,
            self.ingress_bytes,
            before.ingress_packets,
            before.ingress_bytes,
        );
        let unattributed = pair(
            self.egress_unattributed_packets,
            self.egress_unattributed_bytes,
            before.egress_unattributed_packets,
            before.egress_unattributed_bytes,
        );
        let unparsed = pair(
            self.unparsed_packets,
            self.unparsed_bytes,
            before.unparsed_packets,
            before.unparsed_bytes,
        );
        Self {
            egress_packets: egress.packets,
            egress_bytes: egress.bytes,
            ingress_packets: ingress.packets,
            ingress_bytes: ingress.bytes,
            egress_unattributed_packets: unattributed.packets,
            egress_unattributed_bytes: unattributed.bytes,
            unparsed_packets: unparsed.packets,
            unparsed_bytes: unparsed.bytes,
        }
    }

    /// Adds another CPU's counters to these.
    pub fn accumulate(&mut self, other: &Self) {
        self.egress_packets += other.egress_packets;
        self.egress_bytes += other.egress_bytes;
        self.ingress_packets += other.ingress_packets;
        self.ingress_bytes += other.ingress_bytes;
        self.egress_unattributed_packets += other.egress_unattributed_packets;
        self.egress_unattributed_bytes += other.egress_unattributed_bytes;
        self.unparsed_packets += other.unparsed_packets;
        self.unparsed_bytes += other.unparsed_bytes;
    }
}

/// Packet and byte counters (of a route, or of a cross-ENI pair). One copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (link-layer header included).
    pub bytes: u64,
}

/// What a monotonic counter counted since an earlier reading `before`: below it, the
/// counter was restarted and all of `now` is new. [`PacketCounters::since`] applies
/// the same rule to a packet count and its bytes together.
pub const fn counted_since(now: u64, before: u64) -> u64 {
    if now < before { now } else { now - before }
}

impl PacketCounters {
    /// Adds another CPU's counters to these.
    pub fn accumulate(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }

    /// What was counted since an earlier reading `before` of the same counter. A
    /// counter below its earlier reading was restarted (its map entry evicted and
    /// created again, its interface attached again): all of it is new. The one rule
    /// for every delta routemon computes.
    pub fn since(&self, before: &Self) -> Self {
        if self.packets < before.packets {
            *self
        } else {
            Self {
                packets: self.packets - before.packets,
                bytes: self.bytes.saturating_sub(before.bytes),
            }
        }
    }
}

/// Data part of an IPv4 route LPM key: egress ifindex, table slot, destination.
///
/// The trie's prefix length is `ROUTE_KEY_PREFIX_BITS + route prefix length`, so the
/// longest match for `(ifindex, slot, destination)` is the most specific route for
/// that destination that leaves by that interface in that table, and a default
/// route via the interface (prefix `/0`) matches everything else that leaves by it.
/// Slot [`MAIN_TABLE_SLOT`] holds the main table; other slots hold the tables that
/// source-based policy rules select (see `SOURCE_RULES_V4`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKeyV4 {
    /// Egress interface index, native byte order (all 32 bits are always matched).
    pub ifindex: u32,
    /// Table slot, native byte order (always matched).
    pub table_slot: u32,
    /// Destination address in network byte order.
    pub addr: [u8; 4],
}

/// Data part of an IPv6 route LPM key; see [`RouteKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKeyV6 {
    /// Egress interface index, native byte order.
    pub ifindex: u32,
    /// Table slot, native byte order.
    pub table_slot: u32,
    /// Destination address in network byte order.
    pub addr: [u8; 16],
}

/// Key of cross-ENI egress counters: a packet left by `egress_ifindex` with a source
/// address that belongs to `source_ifindex`, another monitored interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrossEniKey {
    /// The interface the packet left by.
    pub egress_ifindex: u32,
    /// The interface that owns the packet's source address.
    pub source_ifindex: u32,
}

/// A flow's 5-tuple in the direction of the packets it describes. IPv4 addresses
/// use the first 4 bytes of `src`/`dst`, the rest zero. For ICMP echo, both ports
/// hold the echo identifier (so a request and its reply match); other ICMP messages
/// and non-first fragments have ports 0.
///
/// Aligned to 8 bytes (its size is a multiple of 8 anyway) so the eBPF programs
/// copy and compare it in words, not bytes; the layout is that of plain `repr(C)`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub protocol: u8,
    /// Padding, always zero.
    pub pad: [u8; 2],
    /// Source port (host byte order).
    pub src_port: u16,
    /// Destination port (host byte order).
    pub dst_port: u16,
    /// Source address (network byte order).
    pub src: [u8; 16],
    /// Destination address (network byte order).
    pub dst: [u8; 16],
}

impl FlowKey {
    /// The same flow seen from the other direction.
    pub fn reversed(&self) -> Self {
        Self {
            ip_version: self.ip_version,
            protocol: self.protocol,
            pad: [0; 2],
            src_port: self.dst_port,
            dst_port: self.src_port,
            src: self.dst,
            dst: self.src,
        }
    }
}

/// An IPv4 flow's 5-tuple, as the IPv4 flow table keys it: 16 bytes, so the
/// kernel hashes and compares 4 words per lookup instead of [`FlowKey`]'s 10.
/// Ports as in [`FlowKey`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKeyV4 {
    /// Source address (network byte order).
    pub src: [u8; 4],
    /// Destination address (network byte order).
    pub dst: [u8; 4],
    /// Source port (host byte order).
    pub src_port: u16,
    /// Destination port (host byte order).
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Padding, always zero.
    pub pad: [u8; 3],
}

impl FlowKeyV4 {
    /// The same flow seen from the other direction.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
            pad: [0; 3],
        }
    }

    /// The same 5-tuple in the family-independent form.
    pub fn flow_key(&self) -> FlowKey {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&self.src);
        dst[..4].copy_from_slice(&self.dst);
        FlowKey {
            ip_version: 4,
            protocol: self.protocol,
            pad: [0; 2],
            src_port: self.src_port,
            dst_port: self.dst_port,
            src,
            dst,
        }
    }
}

/// What routemon reports of one flow (from its [`FlowEntry`]): where it arrived and
/// left last, and its packets and bytes each way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Interface its incoming packets arrived on last; 0 until one arrives.
    pub arrived_on: u32,
    /// Interface its outgoing packets left by last; 0 until one leaves.
    pub left_by: u32,
    /// Incoming packets and bytes.
    pub ingress: PacketCounters,
    /// Outgoing packets and bytes.
    pub egress: PacketCounters,
}

/// [`FlowEntry::route_id`] of a flow whose egress no route of its interface matched.
pub const NO_ROUTE: u32 = u32::MAX;

/// [`FlowEntry::flags`]: a cross-ENI sample of this flow reached userspace.
pub const FLOW_SAMPLED: u32 = 1;

/// What the flow table holds for one flow: where it arrived and left last, the
/// egress route and source owner looked up for it (cached until the routing state's
/// [`DataPathConfig::generation`] moves on), and its packets and bytes each way.
///
/// Every CPU updates the one entry, the counters with atomic adds. The three groups
/// are written by different paths: the cache by the rare lookup, `egress` by the
/// sending CPU, `ingress` by the receiving one (a TCP stream's ACKs usually arrive
/// on another CPU than its data leaves from). 64 bytes of padding between groups
/// keep them on separate cache lines wherever the kernel places the entry, so one
/// direction's adds never take the line the other direction or the cache is on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// Interface its incoming packets arrived on last; 0 until one arrives.
    pub arrived_on: u32,
    /// Interface its outgoing packets left by last; 0 until one leaves.
    pub left_by: u32,
    /// The route id its egress via `left_by` is counted to, or [`NO_ROUTE`].
    pub route_id: u32,
    /// The monitored interface owning its source address, 0 when none (or when the
    /// node cannot send cross-ENI: [`CROSS_ENI_POSSIBLE`] clear).
    pub source_owner: u32,
    /// The [`DataPathConfig::generation`] `route_id` and `source_owner` were looked up
    /// in; 0 when never.
    pub generation: u32,
    /// [`FLOW_SAMPLED`].
    pub flags: u32,
    /// Keeps `egress` off the cache group's line.
    pub pad_cache: [u64; 8],
    /// Outgoing packets and bytes.
    pub egress: PacketCounters,
    /// Keeps `ingress` off `egress`'s line.
    pub pad_egress: [u64; 8],
    /// Incoming packets and bytes.
    pub ingress: PacketCounters,
}

impl Default for FlowEntry {
    fn default() -> Self {
        Self {
            arrived_on: 0,
            left_by: 0,
            route_id: NO_ROUTE,
            source_owner: 0,
            generation: 0,
            flags: 0,
            pad_cache: [0; 8],
            egress: PacketCounters::default(),
            pad_egress: [0; 8],
            ingress: PacketCounters::default(),
        }
    }
}

impl FlowEntry {
    /// What userspace reports of the entry.
    pub fn state(&self) -> FlowState {
        FlowState {
            arrived_on: self.arrived_on,
            left_by: self.left_by,
            ingress: self.ingress,
            egress: self.egress,
        }
    }
}

/// Key of asymmetric-flow counters: packets of `flow` (egress direction) left by
/// `egress_ifindex` although the flow's packets arrived on `ingress_ifindex`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsymmetricKey {
    /// The egress packet's 5-tuple.
    pub flow: FlowKey,
    /// Where the flow's incoming packets arrived.
    pub ingress_ifindex: u32,
    /// Where this direction's packets left.
    pub egress_ifindex: u32,
}

/// One sampled packet, sent to userspace through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleEvent {
    /// What was seen ([`SAMPLE_CROSS_ENI`]).
    pub kind: u32,
    /// The interface the packet left by.
    pub egress_ifindex: u32,
    /// For cross-ENI samples, the interface that owns the source address.
    pub source_ifindex: u32,
    /// Padding, always zero.
    pub pad: u32,
    /// The packet's 5-tuple.
    pub flow: FlowKey,
}

/// Per-CPU token bucket that limits samples, with what it let through and held back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerState {
    /// Tokens left (one per sample).
    pub tokens: u64,
    /// When tokens were last added (`bpf_ktime_get_ns`).
    pub refilled_ns: u64,
    /// Samples written to the ring buffer.
    pub sampled: u64,
    /// Sampling candidates dropped by the rate limit or a full ring buffer.
    pub suppressed: u64,
}

impl SamplerState {
    /// Adds another CPU's counts to these (tokens and time are not summed).
    pub fn accumulate(&mut self, other: &Self) {
        self.sampled += other.sampled;
        self.suppressed += other.suppressed;
    }
}

/// Per-CPU counts of what the bounded tables took in and what they dropped. With
/// the number of entries a table holds, they give its evictions: an LRU table has
/// evicted `inserted - entries` flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Flows added to the IPv4 flow table (new keys).
    pub flows_inserted: u64,
    /// Flows added to the IPv6 flow table.
    pub flows_v6_inserted: u64,
    /// Unanswered tuples added to the IPv4 unanswered-tuple table.
    pub inbound_inserted: u64,
    /// Unanswered tuples added to the IPv6 unanswered-tuple table.
    pub inbound_v6_inserted: u64,
    /// Flows added to the asymmetric-flow table.
    pub asymmetric_inserted: u64,
    /// Cross-ENI packets not counted because the pair table was full.
    pub cross_eni_uncounted_packets: u64,
    /// Kernel drops not counted because the (interface, reason) table was full.
    pub drops_uncounted: u64,
}

impl TableStats {
    /// Adds another CPU's counts to these.
    pub fn accumulate(&mut self, other: &Self) {
        self.flows_inserted += other.flows_inserted;
        self.flows_v6_inserted += other.flows_v6_inserted;
        self.inbound_inserted += other.inbound_inserted;
        self.inbound_v6_inserted += other.inbound_v6_inserted;
        self.asymmetric_inserted += other.asymmetric_inserted;
        self.cross_eni_uncounted_packets += other.cross_eni_uncounted_packets;
        self.drops_uncounted += other.drops_uncounted;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are #[repr(C)], contain only integers and byte arrays,
    // have no padding, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::IfaceCounters {}
    unsafe impl aya::Pod for super::PacketCounters {}
    unsafe impl aya::Pod for super::RouteKeyV4 {}
    unsafe impl aya::Pod for super::RouteKeyV6 {}
    unsafe impl aya::Pod for super::CrossEniKey {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKeyV4 {}
    unsafe impl aya::Pod for super::AsymmetricKey {}
    unsafe impl aya::Pod for super::SampleEvent {}
    unsafe impl aya::Pod for super::SamplerState {}
    unsafe impl aya::Pod for super::TableStats {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::IfaceSlot {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::DropConfig {}
    unsafe impl aya::Pod for super::DataPathConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_subtracts_and_a_restarted_counter_counts_from_zero() {
        let c = |packets, bytes| PacketCounters { packets, bytes };
        assert_eq!(c(8, 800).since(&c(5, 500)), c(3, 300));
        assert_eq!(c(5, 500).since(&c(5, 500)), c(0, 0));
        assert_eq!(c(5, 500).since(&PacketCounters::default()), c(5, 500));
        // Below the earlier reading: restarted, all of it is new (never clamped to 0).
        assert_eq!(c(2, 200).since(&c(5, 500)), c(2, 200));
        assert_eq!(counted_since(7, 5), 2);
        assert_eq!(counted_since(3, 5), 3);
    }

    #[test]
    fn interface_deltas_apply_the_rule_pair_by_pair() {
        let before = IfaceCounters {
            egress_packets: 10,
            egress_bytes: 1000,
            ingress_packets: 4,
            ingress_bytes: 400,
            ..IfaceCounters::default()
        };
        let now = IfaceCounters {
            egress_packets: 12,
            egress_bytes: 1200,
            ingress_packets: 1,
            ingress_bytes: 100,
            unparsed_packets: 1,
            unparsed_bytes: 60,
            ..IfaceCounters::default()
        };
        let delta = now.since(&before);
        assert_eq!((delta.egress_packets, delta.egress_bytes), (2, 200));
        assert_eq!((delta.ingress_packets, delta.ingress_bytes), (1, 100));
        assert_eq!((delta.unparsed_packets, delta.unparsed_bytes), (1, 60));
    }
}
