//! How full routemon's bounded kernel tables are and what they had to drop.
//!
//! The kernel side keeps fixed-size tables (see `SECURITY.md`, "Resource bounds").
//! When one is full it degrades instead of failing: the LRU tables evict their
//! least recently used flows, the cross-ENI pair table stops counting new pairs,
//! the sampler holds samples back. This module reads what that cost.

use aya::Ebpf;
use monitor_common::{
    ASYMMETRIC_FLOWS_MAP, AsymmetricKey, CROSS_ENI_MAP, CrossEniKey, DROPS_MAP, DropKey,
    FLOWS_INBOUND_MAP, FLOWS_INBOUND_V6_MAP, FLOWS_MAP, FLOWS_V6_MAP, FlowEntry, FlowKey,
    FlowKeyV4, MAX_ASYMMETRIC_FLOWS, MAX_CROSS_ENI_PAIRS, MAX_DROP_KEYS, MAX_INBOUND_TUPLES,
    MAX_TRACKED_FLOWS, PacketCounters,
};
use serde::Serialize;

use super::{EbpfError, maps};

/// One LRU table: what it holds, what it took in, what it evicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LruUsage {
    /// Entries it can hold.
    pub capacity: u32,
    /// Entries it holds now.
    pub entries: u64,
    /// Keys inserted since its maps were created (they survive restarts when pinned).
    pub inserted: u64,
    /// Keys evicted to make room: `inserted - entries`. Two CPUs inserting the same
    /// new flow at the same instant count it twice, so this can overstate by a few.
    pub evicted: u64,
}

impl LruUsage {
    fn new(capacity: u32, entries: u64, inserted: u64) -> Self {
        Self {
            capacity,
            entries,
            inserted,
            evicted: inserted.saturating_sub(entries),
        }
    }
}

/// A table of counters per pair (cross-ENI pairs, interface and drop reason): a
/// plain hash, so when full new pairs go uncounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PairUsage {
    /// Pairs it can hold.
    pub capacity: u32,
    /// Pairs it holds now.
    pub entries: u64,
    /// Packets of pairs that found the table full.
    pub uncounted_packets: u64,
}

/// Packets sampled to userspace and held back by the rate limit or a full ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SampleUsage {
    /// Samples written to the ring buffer.
    pub sent: u64,
    /// Samples held back.
    pub suppressed: u64,
}

/// Every bounded kernel table's fill and losses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableUsage {
    /// IPv4 flows: their counts, and where they arrived to recognise their replies.
    pub flows: LruUsage,
    /// IPv6 flows, likewise.
    pub flows_v6: LruUsage,
    /// IPv4 tuples that arrived and were not answered (yet): a flood of them evicts
    /// only its own kind here, never a flow.
    pub unanswered: LruUsage,
    /// IPv6 tuples that arrived and were not answered.
    pub unanswered_v6: LruUsage,
    /// Asymmetric flows counted one by one.
    pub asymmetric_flows: LruUsage,
    /// (egress, source owner) pairs of cross-ENI egress.
    pub cross_eni_pairs: PairUsage,
    /// (interface, drop reason) pairs of kernel drops.
    pub drop_reasons: PairUsage,
    /// Packet samples.
    pub samples: SampleUsage,
}

/// How many flows each flow table holds: IPv4, IPv6.
pub type FlowEntries = (u64, u64);

/// Reads the tables of a loaded object. Walking a flow table costs one syscall per
/// entry (65 536 at most), so callers read it per report or scrape, not per packet
/// batch; a caller that has just read the flows passes how many (`flow_entries`)
/// and the tables are not walked again.
pub fn read(ebpf: &Ebpf, flow_entries: Option<FlowEntries>) -> Result<TableUsage, EbpfError> {
    let stats = maps::table_stats(ebpf)?;
    let sampler = maps::sampler_totals(ebpf)?;
    let (flows, flows_v6) = match flow_entries {
        Some(entries) => entries,
        None => (
            maps::key_count::<FlowKeyV4, FlowEntry>(ebpf, FLOWS_MAP, false, MAX_TRACKED_FLOWS)?,
            maps::key_count::<FlowKey, FlowEntry>(ebpf, FLOWS_V6_MAP, false, MAX_TRACKED_FLOWS)?,
        ),
    };
    let unanswered =
        |name| maps::key_count::<FlowKeyV4, FlowEntry>(ebpf, name, false, MAX_INBOUND_TUPLES);
    let asymmetric = maps::key_count::<AsymmetricKey, PacketCounters>(
        ebpf,
        ASYMMETRIC_FLOWS_MAP,
        true,
        MAX_ASYMMETRIC_FLOWS,
    )?;
    let pairs = maps::key_count::<CrossEniKey, PacketCounters>(
        ebpf,
        CROSS_ENI_MAP,
        true,
        MAX_CROSS_ENI_PAIRS,
    )?;
    Ok(TableUsage {
        flows: LruUsage::new(MAX_TRACKED_FLOWS, flows, stats.flows_inserted),
        flows_v6: LruUsage::new(MAX_TRACKED_FLOWS, flows_v6, stats.flows_v6_inserted),
        unanswered: LruUsage::new(
            MAX_INBOUND_TUPLES,
            unanswered(FLOWS_INBOUND_MAP)?,
            stats.inbound_inserted,
        ),
        unanswered_v6: LruUsage::new(
            MAX_INBOUND_TUPLES,
            maps::key_count::<FlowKey, FlowEntry>(
                ebpf,
                FLOWS_INBOUND_V6_MAP,
                false,
                MAX_INBOUND_TUPLES,
            )?,
            stats.inbound_v6_inserted,
        ),
        asymmetric_flows: LruUsage::new(
            MAX_ASYMMETRIC_FLOWS,
            asymmetric,
            stats.asymmetric_inserted,
        ),
        cross_eni_pairs: PairUsage {
            capacity: MAX_CROSS_ENI_PAIRS,
            entries: pairs,
            uncounted_packets: stats.cross_eni_uncounted_packets,
        },
        drop_reasons: PairUsage {
            capacity: MAX_DROP_KEYS,
            entries: maps::key_count::<DropKey, u64>(ebpf, DROPS_MAP, true, MAX_DROP_KEYS)?,
            uncounted_packets: stats.drops_uncounted,
        },
        samples: SampleUsage {
            sent: sampler.sampled,
            suppressed: sampler.suppressed,
        },
    })
}
