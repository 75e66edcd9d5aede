//! Findings on measured traffic: packets that left by one ENI with another ENI's
//! source address, and flows whose directions used different interfaces.

use std::collections::BTreeMap;

use monitor_common::{AsymmetricKey, CrossEniKey, PacketCounters};

use super::{Finding, FindingKind, FlowReport, SampledFlow, Severity};
use crate::{model::NetworkModel, samples::SampleCollector, selection::Primary};

/// Sampled flows listed per cross-ENI finding.
const LISTED_SAMPLES: usize = 5;

/// Findings for egress measured leaving by one interface with another interface's
/// source address: the EC2 source/destination check drops these packets.
pub fn cross_eni_egress(
    model: &NetworkModel,
    counters: &BTreeMap<CrossEniKey, PacketCounters>,
    samples: &SampleCollector,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    counters
        .iter()
        .filter(|(key, c)| c.packets > 0 && key.egress_ifindex != key.source_ifindex)
        .map(|(key, c)| {
            let egress = model.link_name(key.egress_ifindex);
            let source = model.link_name(key.source_ifindex);
            let addresses: Vec<String> = model
                .addresses_of(key.source_ifindex)
                .map(|a| a.addr.addr().to_string())
                .collect();
            let pin = primary.map_or_else(|| egress.clone(), |p| p.name.clone());
            let (flows, sampled) = samples.cross_eni(key.egress_ifindex, key.source_ifindex);
            let listed: Vec<SampledFlow> = flows
                .iter()
                .take(LISTED_SAMPLES)
                .map(|(flow, n)| SampledFlow {
                    flow: FlowReport::from_key(flow),
                    sampled_packets: *n,
                })
                .collect();
            let mut message = format!(
                "{} packets ({} bytes) left by {egress} with a source address of {source} ({}). \
                 The VPC only accepts traffic from an ENI with that ENI's own addresses \
                 (source/destination check), so these packets are dropped: connections from \
                 {source}'s address that the routing table sends out of {egress} fail or hang.",
                c.packets,
                c.bytes,
                addresses.join(", ")
            );
            if let Some(first) = listed.first() {
                message.push_str(&format!(" For example: {}.", first.flow));
            }
            Finding {
                kind: FindingKind::CrossEniEgress {
                    egress_interface: egress.clone(),
                    source_interface: source.clone(),
                    source_addresses: addresses.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                    samples: listed,
                    unsampled_packets: c.packets.saturating_sub(sampled),
                },
                severity: Severity::Critical,
                message,
                remediation: format!(
                    "Send each ENI's traffic out of that ENI: add a source-based policy rule per \
                     secondary ENI (`ip rule add from <{source} address> lookup <table>` with \
                     `default via <{source} gateway> dev {source}` in that table, as \
                     amazon-ec2-net-utils does); pin the primary's metric so unsourced traffic \
                     uses {pin} (05-{pin}.network with [DHCPv4] RouteMetric=1000); or, if Cilium \
                     owns {source}, mark it `[Link] Unmanaged=yes` in networkd by its name."
                ),
            }
        })
        .collect()
}

/// Asymmetric flows listed one by one at most; the rest are summed in the last.
pub const MAX_LISTED_ASYMMETRIC_FLOWS: usize = 20;

/// Findings for flows whose packets left by another interface than the flow
/// arrived on, the busiest first.
pub fn asymmetric_flows(
    model: &NetworkModel,
    flows: &BTreeMap<AsymmetricKey, PacketCounters>,
) -> Vec<Finding> {
    let mut flows: Vec<(&AsymmetricKey, &PacketCounters)> =
        flows.iter().filter(|(_, c)| c.packets > 0).collect();
    flows.sort_by_key(|(key, c)| (std::cmp::Reverse(c.packets), **key));
    let total = flows.len();
    flows
        .into_iter()
        .take(MAX_LISTED_ASYMMETRIC_FLOWS)
        .map(|(key, c)| {
            let ingress = model.link_name(key.ingress_ifindex);
            let egress = model.link_name(key.egress_ifindex);
            let flow = FlowReport::from_key(&key.flow);
            let mut message = format!(
                "Flow {flow} arrived on {ingress} but {} of its packets ({} bytes) left by {egress}. \
                 In a VPC the reply leaves by another ENI than the request came in on: with \
                 the sender's address it is dropped by the source/destination check, and \
                 stateful firewalls and load balancers see only half of the connection.",
                c.packets, c.bytes
            );
            if total > MAX_LISTED_ASYMMETRIC_FLOWS {
                message.push_str(&format!(
                    " ({total} asymmetric flows in all; the {MAX_LISTED_ASYMMETRIC_FLOWS} busiest are listed.)"
                ));
            }
            Finding {
                kind: FindingKind::AsymmetricFlow {
                    flow,
                    ingress_interface: ingress.clone(),
                    egress_interface: egress.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                },
                severity: Severity::Critical,
                message,
                remediation: format!(
                    "Make replies leave by the ENI the request arrived on: a source-based policy \
                     rule for {ingress}'s addresses (`ip rule add from <{ingress} address> lookup \
                     <table>` with `default via <{ingress} gateway> dev {ingress}` in that table, \
                     as amazon-ec2-net-utils installs). Pinning the primary's metric alone does \
                     not fix traffic that arrives on a secondary ENI."
                ),
            }
        })
        .collect()
}

/// Every traffic finding of one reading: cross-ENI egress, then asymmetric flows.
pub fn traffic(
    model: &NetworkModel,
    cross_eni: &BTreeMap<CrossEniKey, PacketCounters>,
    asymmetric: &BTreeMap<AsymmetricKey, PacketCounters>,
    samples: &SampleCollector,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    let mut findings = cross_eni_egress(model, cross_eni, samples, primary);
    findings.extend(asymmetric_flows(model, asymmetric));
    findings
}
