//! Traffic findings over time: cross-ENI egress and asymmetric flows are raised when
//! packets were counted in the last window, and cleared after a quiet period.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use monitor_common::{AsymmetricKey, CrossEniKey, PacketCounters};

use crate::findings::Finding;

/// Counter growth between two reads of a kernel map. Keys that shrank (an LRU
/// entry evicted and re-created) count from zero.
pub fn growth<K: Ord + Copy>(
    previous: &BTreeMap<K, PacketCounters>,
    now: &BTreeMap<K, PacketCounters>,
) -> BTreeMap<K, PacketCounters> {
    now.iter()
        .filter_map(|(key, c)| {
            let delta = c.since(&previous.get(key).copied().unwrap_or_default());
            (delta.packets > 0).then_some((*key, delta))
        })
        .collect()
}

/// Active traffic findings with the time each was last seen.
#[derive(Debug, Default)]
pub struct TrafficFindings {
    active: HashMap<String, (Finding, Instant)>,
    previous_cross_eni: BTreeMap<CrossEniKey, PacketCounters>,
    previous_asymmetric: BTreeMap<AsymmetricKey, PacketCounters>,
    /// Asymmetric egress summed per (ingress, egress) interface, monotonic although
    /// the kernel's flow table evicts.
    pub asymmetric_totals: BTreeMap<(u32, u32), PacketCounters>,
}

/// What one evaluation changed.
#[derive(Debug, Default)]
pub struct TrafficChanges {
    /// Newly raised.
    pub raised: Vec<Finding>,
    /// Cleared (as last raised).
    pub cleared: Vec<Finding>,
}

impl TrafficFindings {
    /// The growth since the last call: (cross-ENI, asymmetric). Also accumulates
    /// the asymmetric totals.
    pub fn advance(
        &mut self,
        cross_eni: BTreeMap<CrossEniKey, PacketCounters>,
        asymmetric: BTreeMap<AsymmetricKey, PacketCounters>,
    ) -> (
        BTreeMap<CrossEniKey, PacketCounters>,
        BTreeMap<AsymmetricKey, PacketCounters>,
    ) {
        let cross_growth = growth(&self.previous_cross_eni, &cross_eni);
        let asym_growth = growth(&self.previous_asymmetric, &asymmetric);
        for (key, delta) in &asym_growth {
            self.asymmetric_totals
                .entry((key.ingress_ifindex, key.egress_ifindex))
                .or_default()
                .accumulate(delta);
        }
        self.previous_cross_eni = cross_eni;
        self.previous_asymmetric = asymmetric;
        (cross_growth, asym_growth)
    }

    /// Records the findings seen now and clears those unseen for `quiet`.
    pub fn update(&mut self, seen: Vec<Finding>, quiet: Duration) -> TrafficChanges {
        let now = Instant::now();
        let mut changes = TrafficChanges::default();
        for finding in seen {
            let key = finding.key();
            if !self.active.contains_key(&key) {
                changes.raised.push(finding.clone());
            }
            self.active.insert(key, (finding, now));
        }
        let expired: Vec<String> = self
            .active
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) >= quiet)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some((finding, _)) = self.active.remove(&key) {
                changes.cleared.push(finding);
            }
        }
        changes
    }

    /// The active findings.
    pub fn active(&self) -> impl Iterator<Item = &Finding> {
        self.active.values().map(|(f, _)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_skips_idle_keys_and_restarts_evicted_ones() {
        let c = |packets, bytes| PacketCounters { packets, bytes };
        let before = BTreeMap::from([(1u32, c(10, 1000)), (2, c(5, 500)), (3, c(9, 900))]);
        let now = BTreeMap::from([
            (1u32, c(12, 1200)),
            (2, c(5, 500)),
            (3, c(1, 60)),
            (4, c(2, 2)),
        ]);
        let delta = growth(&before, &now);
        assert_eq!(
            delta,
            BTreeMap::from([(1, c(2, 200)), (3, c(1, 60)), (4, c(2, 2))])
        );
    }
}
