//! Findings: what is wrong with the node's default routing and its traffic, how bad
//! it is, and how to fix it.
//!
//! One file per family of findings: [`routing`] judges the routing state (tied
//! default routes, a primary that does not win, strict reverse-path filtering),
//! [`cilium`] turns Cilium's default-route verdict into findings, [`traffic`] judges
//! measured traffic (cross-ENI egress, asymmetric flows); [`flows`] holds the flow
//! types findings print.

mod cilium;
mod flows;
mod routing;
mod traffic;

use serde::Serialize;

pub use flows::{FlowReport, SampledFlow};
pub use routing::networkd_remediation;
pub use traffic::{MAX_LISTED_ASYMMETRIC_FLOWS, asymmetric_flows, cross_eni_egress, traffic};

use crate::{
    cilium::{Outcome, Verdict},
    model::{Family, NetworkModel},
    selection::Primary,
};

/// How urgent a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Likely to cause trouble.
    Warning,
    /// Breaks the node now (Cilium's default-route lookup fails, egress can change
    /// uplink).
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        })
    }
}

/// One default route named in a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    /// Output interface.
    pub dev: String,
    /// Gateway, if any.
    pub gateway: Option<String>,
    /// Metric.
    pub metric: u32,
}

/// The kind-specific part of a finding. Serialized flat next to the common fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// Two or more default routes of one table and family share a metric.
    EqualMetricDefaultRoutes {
        /// Address family.
        family: Family,
        /// Table name (`main`, or the number).
        table: String,
        /// The shared metric.
        metric: u32,
        /// Interfaces of the tied routes, in the kernel's order (a drop route is named
        /// by its type: `blackhole`, `unreachable`, `prohibit`).
        interfaces: Vec<String>,
        /// Gateways of the tied routes, in the same order.
        gateways: Vec<Option<String>>,
        /// Whether the tie is between the best routes (critical) or backups (warning).
        best: bool,
        /// Whether the kernel merged the tied routes into one multipath (ECMP) route,
        /// as it does for IPv6 routes added over netlink with the same metric.
        multipath: bool,
    },
    /// Cilium's default-route lookup fails, or resolves to no usable device, for a
    /// family the agent uses (see [`crate::cilium`]).
    CiliumDefaultRoute {
        /// Address family.
        family: Family,
        /// The lookup's outcome (never `ok`).
        outcome: Outcome,
        /// The device Cilium would take, if any.
        device: Option<String>,
        /// The exact error Cilium would get, if any.
        error: Option<String>,
    },
    /// With both families enabled, the IPv4 and IPv6 default routes leave by
    /// different links, which `NodeDeviceWithDefaultRoute` rejects.
    CiliumDualStackLinks {
        /// The IPv4 default route's device.
        ipv4_device: String,
        /// The IPv6 default route's device.
        ipv6_device: String,
    },
    /// Packets left by one interface with a source address of another.
    CrossEniEgress {
        /// The interface the packets left by.
        egress_interface: String,
        /// The interface that owns their source address.
        source_interface: String,
        /// Addresses of the source interface (any of them may be the source).
        source_addresses: Vec<String>,
        /// Packets counted.
        packets: u64,
        /// Bytes counted, link-layer header included.
        bytes: u64,
        /// Sampled packets' flows, most sampled first (at most 5).
        samples: Vec<SampledFlow>,
        /// Packets counted but not sampled (rate limit), so not in `samples`.
        unsampled_packets: u64,
    },
    /// A flow's packets left by another interface than the flow arrived on.
    AsymmetricFlow {
        /// The egress direction's 5-tuple.
        flow: FlowReport,
        /// Where the flow's incoming packets arrived.
        ingress_interface: String,
        /// Where this direction left.
        egress_interface: String,
        /// Packets that left asymmetrically.
        packets: u64,
        /// Their bytes, link-layer header included.
        bytes: u64,
    },
    /// Strict reverse-path filtering on an uplink that does not carry the default
    /// route drops traffic that arrives on it from addresses routed elsewhere.
    StrictRpFilter {
        /// The interface with `rp_filter=1`.
        interface: String,
        /// The interface the preferred IPv4 default route uses.
        default_route_interface: String,
    },
    /// The default route the kernel prefers does not leave by the primary interface.
    PrimaryNotPreferred {
        /// Address family.
        family: Family,
        /// Table name.
        table: String,
        /// The primary interface.
        primary: String,
        /// The primary's best default route metric, if it has one.
        primary_metric: Option<u32>,
        /// The route the kernel prefers.
        preferred: RouteRef,
    },
}

/// A problem routemon found, with its remediation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Kind and kind-specific fields.
    #[serde(flatten)]
    pub kind: FindingKind,
    /// Severity.
    pub severity: Severity,
    /// What is wrong, in plain language.
    pub message: String,
    /// What to do about it.
    pub remediation: String,
}

impl Finding {
    /// What identifies this finding over time, for raising and clearing it: its kind
    /// and the interfaces, routes or flow it is about, not its counts.
    pub fn key(&self) -> String {
        match &self.kind {
            FindingKind::EqualMetricDefaultRoutes {
                family,
                table,
                metric,
                interfaces,
                ..
            } => format!(
                "equal_metric_default_routes/{family}/{table}/{metric}/{}",
                interfaces.join(",")
            ),
            FindingKind::PrimaryNotPreferred {
                family,
                table,
                primary,
                ..
            } => format!("primary_not_preferred/{family}/{table}/{primary}"),
            FindingKind::CiliumDefaultRoute {
                family, outcome, ..
            } => format!("cilium_default_route/{family}/{outcome}"),
            FindingKind::CiliumDualStackLinks {
                ipv4_device,
                ipv6_device,
            } => format!("cilium_dual_stack_links/{ipv4_device}/{ipv6_device}"),
            FindingKind::CrossEniEgress {
                egress_interface,
                source_interface,
                ..
            } => format!("cross_eni_egress/{egress_interface}/{source_interface}"),
            FindingKind::AsymmetricFlow {
                flow,
                ingress_interface,
                egress_interface,
                ..
            } => format!("asymmetric_flow/{flow}/{ingress_interface}/{egress_interface}"),
            FindingKind::StrictRpFilter { interface, .. } => {
                format!("strict_rp_filter/{interface}")
            }
        }
    }

    /// The kind's name as it appears in JSON (`equal_metric_default_routes`, …).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FindingKind::EqualMetricDefaultRoutes { .. } => "equal_metric_default_routes",
            FindingKind::PrimaryNotPreferred { .. } => "primary_not_preferred",
            FindingKind::CiliumDefaultRoute { .. } => "cilium_default_route",
            FindingKind::CiliumDualStackLinks { .. } => "cilium_dual_stack_links",
            FindingKind::CrossEniEgress { .. } => "cross_eni_egress",
            FindingKind::AsymmetricFlow { .. } => "asymmetric_flow",
            FindingKind::StrictRpFilter { .. } => "strict_rp_filter",
        }
    }
}

/// Evaluates every finding on the model. `preferred` holds the indexes of the
/// routes the kernel prefers (see [`crate::preference`]).
pub fn evaluate(
    model: &NetworkModel,
    preferred: &crate::preference::RouteIndexSet,
    primary: Option<&Primary>,
    cilium: &Verdict,
) -> Vec<Finding> {
    let mut findings = cilium::findings(model, cilium, primary);
    findings.extend(routing::equal_metric_default_routes(model, primary, cilium));
    findings.extend(routing::primary_not_preferred(model, preferred, primary));
    findings.extend(routing::strict_rp_filter(model, preferred));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

/// Adds traffic findings to routing findings and orders them most severe first.
pub fn merge(mut routing: Vec<Finding>, traffic: Vec<Finding>) -> Vec<Finding> {
    routing.extend(traffic);
    routing.sort_by_key(|f| std::cmp::Reverse(f.severity));
    routing
}

#[cfg(test)]
mod tests;
