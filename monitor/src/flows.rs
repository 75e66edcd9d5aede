//! Top flows: the kernel's flow table, turned into each interface's busiest flows
//! over an interval, with cross-ENI and asymmetric flows marked.
//!
//! The table (`FLOWS`, 65 536 flows, least recently used evicted) holds cumulative
//! counters per flow. [`FlowDeltas`] subtracts the previous reading, so a
//! long-lived flow ranks by what it did in the last interval; a flow evicted and
//! seen again starts from zero.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use monitor_common::{FlowKey, FlowState, PacketCounters};
use serde::Serialize;

use crate::{findings::FlowReport, model::NetworkModel};

/// A flow's traffic over an interval, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowTraffic {
    /// The 5-tuple in the node's egress direction (`src` is the node's end).
    #[serde(flatten)]
    pub flow: FlowReport,
    /// Interface its incoming packets arrived on, if any arrived.
    pub arrived_on: Option<String>,
    /// Interface its outgoing packets left by, if any left.
    pub left_by: Option<String>,
    /// Outgoing packets in the interval.
    pub egress_packets: u64,
    /// Outgoing bytes in the interval, link-layer header included.
    pub egress_bytes: u64,
    /// Incoming packets in the interval.
    pub ingress_packets: u64,
    /// Incoming bytes in the interval.
    pub ingress_bytes: u64,
    /// It arrived on one interface and left by another (the VPC drops such replies
    /// or they cross AZs).
    pub asymmetric: bool,
    /// It left by an interface that does not own its source address (the VPC's
    /// source/destination check drops it).
    pub cross_eni: bool,
}

impl FlowTraffic {
    /// Both directions' bytes: what flows are ranked by.
    pub fn bytes(&self) -> u64 {
        self.egress_bytes + self.ingress_bytes
    }
}

/// Cumulative counters between readings.
#[derive(Debug, Default)]
pub struct FlowDeltas {
    previous: HashMap<FlowKey, FlowState>,
}

impl FlowDeltas {
    /// Each flow's traffic since the previous reading (all of it for a flow not seen
    /// then); flows without traffic in between are left out.
    pub fn advance(&mut self, now: Vec<(FlowKey, FlowState)>) -> Vec<(FlowKey, FlowState)> {
        let mut active = Vec::new();
        let mut current = HashMap::with_capacity(now.len());
        for (key, state) in now {
            let before = self.previous.get(&key);
            // A counter below its last reading: the flow was evicted and came back.
            let since = |now: PacketCounters, before: Option<PacketCounters>| {
                now.since(&before.unwrap_or_default())
            };
            let delta = FlowState {
                ingress: since(state.ingress, before.map(|b| b.ingress)),
                egress: since(state.egress, before.map(|b| b.egress)),
                ..state
            };
            if delta.ingress.packets + delta.egress.packets > 0 {
                active.push((key, delta));
            }
            current.insert(key, state);
        }
        self.previous = current;
        active
    }
}

/// The `limit` busiest flows (by bytes both ways) of each interface a flow used,
/// keyed by ifindex. A flow that arrived on one interface and left by another is
/// listed under both.
pub fn top_per_interface(
    model: &NetworkModel,
    flows: &[(FlowKey, FlowState)],
    limit: usize,
) -> BTreeMap<u32, Vec<FlowTraffic>> {
    let owners: HashMap<IpAddr, u32> = model.owned_addresses(|_| true).collect();
    let mut by_interface: BTreeMap<u32, Vec<FlowTraffic>> = BTreeMap::new();
    for (key, state) in flows {
        let report = describe(model, &owners, key, state);
        let mut interfaces = [state.arrived_on, state.left_by];
        if interfaces[0] == interfaces[1] {
            interfaces[1] = 0;
        }
        for ifindex in interfaces.into_iter().filter(|i| *i != 0) {
            by_interface
                .entry(ifindex)
                .or_default()
                .push(report.clone());
        }
    }
    for list in by_interface.values_mut() {
        list.sort_unstable_by(|a, b| {
            b.bytes()
                .cmp(&a.bytes())
                .then_with(|| a.flow.src.cmp(&b.flow.src))
        });
        list.truncate(limit);
    }
    by_interface
}

fn describe(
    model: &NetworkModel,
    owners: &HashMap<IpAddr, u32>,
    key: &FlowKey,
    state: &FlowState,
) -> FlowTraffic {
    let flow = FlowReport::from_key(key);
    let name = |ifindex: u32| (ifindex != 0).then(|| model.link_name(ifindex));
    let owner = flow
        .src
        .parse::<IpAddr>()
        .ok()
        .and_then(|src| owners.get(&src).copied());
    FlowTraffic {
        flow,
        arrived_on: name(state.arrived_on),
        left_by: name(state.left_by),
        egress_packets: state.egress.packets,
        egress_bytes: state.egress.bytes,
        ingress_packets: state.ingress.packets,
        ingress_bytes: state.ingress.bytes,
        asymmetric: state.arrived_on != 0
            && state.left_by != 0
            && state.arrived_on != state.left_by,
        cross_eni: state.left_by != 0 && owner.is_some_and(|o| o != state.left_by),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[10, 0, 1, 10]);
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&[198, 51, 100, 10]);
        FlowKey {
            ip_version: 4,
            protocol: 17,
            src_port: port,
            dst_port: 53,
            src,
            dst,
            ..FlowKey::default()
        }
    }

    fn state(egress: u64, arrived_on: u32, left_by: u32) -> FlowState {
        FlowState {
            arrived_on,
            left_by,
            ingress: PacketCounters::default(),
            egress: PacketCounters {
                packets: egress,
                bytes: egress * 100,
            },
        }
    }

    #[test]
    fn deltas_subtract_the_previous_reading_and_restart_after_eviction() {
        let mut deltas = FlowDeltas::default();
        let first = deltas.advance(vec![(key(1), state(5, 0, 2))]);
        assert_eq!(first[0].1.egress.packets, 5, "a new flow counts whole");
        let second = deltas.advance(vec![(key(1), state(8, 0, 2)), (key(2), state(1, 0, 2))]);
        assert_eq!(second.len(), 2);
        assert_eq!(second[0].1.egress.packets, 3);
        assert!(
            deltas.advance(vec![(key(1), state(8, 0, 2))]).is_empty(),
            "idle flows are left out"
        );
        let back = deltas.advance(vec![(key(1), state(2, 0, 2))]);
        assert_eq!(back[0].1.egress.packets, 2, "evicted and back: from zero");
    }

    #[test]
    fn flows_rank_per_interface_and_asymmetric_ones_appear_under_both() {
        let model = NetworkModel::default();
        let flows = vec![
            (key(1), state(1, 0, 2)),
            (key(2), state(9, 0, 2)),
            (key(3), state(4, 3, 2)),
        ];
        let top = top_per_interface(&model, &flows, 2);
        let ports =
            |ifindex: u32| -> Vec<u16> { top[&ifindex].iter().map(|f| f.flow.src_port).collect() };
        assert_eq!(ports(2), [2, 3], "by bytes, limited");
        assert_eq!(ports(3), [3]);
        assert!(top[&3][0].asymmetric);
        assert!(!top[&2][0].asymmetric);
        assert_eq!(top[&2][0].flow.protocol, "udp");
        assert_eq!(top[&2][0].flow.dst, "198.51.100.10");
    }
}
