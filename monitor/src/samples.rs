//! Packets the kernel sampled (rate-limited) with their 5-tuples, grouped for
//! findings.

use std::collections::BTreeMap;

use monitor_common::{FlowKey, SAMPLE_CROSS_ENI, SampleEvent};

/// Distinct flows kept per cross-ENI pair; later new flows are only counted.
pub const MAX_FLOWS_PER_PAIR: usize = 256;

/// Samples collected during a count.
#[derive(Clone, Debug, Default)]
pub struct SampleCollector {
    /// (egress ifindex, source-owner ifindex) → flow → sampled packets.
    cross_eni: BTreeMap<(u32, u32), BTreeMap<FlowKey, u64>>,
}

impl SampleCollector {
    /// Adds samples drained from the ring buffer.
    pub fn add(&mut self, events: impl IntoIterator<Item = SampleEvent>) {
        for event in events {
            if event.kind != SAMPLE_CROSS_ENI {
                continue;
            }
            let flows = self
                .cross_eni
                .entry((event.egress_ifindex, event.source_ifindex))
                .or_default();
            if flows.len() < MAX_FLOWS_PER_PAIR || flows.contains_key(&event.flow) {
                *flows.entry(event.flow).or_default() += 1;
            }
        }
    }

    /// The sampled flows of a cross-ENI pair, most sampled first, and the number of
    /// sampled packets in all.
    pub fn cross_eni(&self, egress: u32, source: u32) -> (Vec<(FlowKey, u64)>, u64) {
        let Some(flows) = self.cross_eni.get(&(egress, source)) else {
            return (Vec::new(), 0);
        };
        let mut sorted: Vec<(FlowKey, u64)> = flows.iter().map(|(k, n)| (*k, *n)).collect();
        sorted.sort_by_key(|(key, n)| (std::cmp::Reverse(*n), *key));
        (sorted, flows.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(egress: u32, source: u32, port: u16) -> SampleEvent {
        SampleEvent {
            kind: SAMPLE_CROSS_ENI,
            egress_ifindex: egress,
            source_ifindex: source,
            pad: 0,
            flow: FlowKey {
                ip_version: 4,
                protocol: 17,
                src_port: port,
                dst_port: 9,
                ..FlowKey::default()
            },
        }
    }

    #[test]
    fn groups_by_pair_and_flow_most_sampled_first() {
        let mut samples = SampleCollector::default();
        samples.add([
            event(2, 3, 1000),
            event(2, 3, 2000),
            event(2, 3, 2000),
            event(3, 2, 5),
        ]);
        let (flows, total) = samples.cross_eni(2, 3);
        assert_eq!(total, 3);
        assert_eq!(flows[0].0.src_port, 2000);
        assert_eq!(flows[0].1, 2);
        assert_eq!(samples.cross_eni(3, 2).1, 1);
        assert_eq!(samples.cross_eni(9, 9), (Vec::new(), 0));
    }

    #[test]
    fn distinct_flows_per_pair_are_bounded() {
        let mut samples = SampleCollector::default();
        samples.add((0..1000).map(|port| event(2, 3, port)));
        let (flows, total) = samples.cross_eni(2, 3);
        assert_eq!(flows.len(), MAX_FLOWS_PER_PAIR);
        assert_eq!(total, MAX_FLOWS_PER_PAIR as u64);
    }
}
