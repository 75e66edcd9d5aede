//! Findings from Cilium's default-route verdict ([`crate::cilium`]), for the
//! families the agent uses.

use super::{Finding, FindingKind, Severity, routing::networkd_remediation};
use crate::{
    cilium::{Outcome, Verdict},
    model::NetworkModel,
    selection::Primary,
};

/// Findings from Cilium's verdict, for the families the agent uses.
pub(super) fn findings(
    model: &NetworkModel,
    cilium: &Verdict,
    primary: Option<&Primary>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for verdict in cilium.per_family.iter().filter(|v| v.enabled) {
        let family = verdict.family;
        let error = verdict.error.clone().unwrap_or_default();
        let route = verdict.route.map(|i| &model.routes[i]);
        let fix_on = primary.map_or_else(
            || route.map_or_else(|| "<primary>".to_owned(), |r| model.route_devices(r)),
            |p| p.name.clone(),
        );
        let (severity, message, remediation) = match verdict.outcome {
            Outcome::Ok => continue,
            Outcome::Tie => (
                Severity::Critical,
                format!(
                    "Cilium's default-route lookup for {family} fails: the two best {family} \
                     default routes of table main have the same metric, and Cilium \
                     (lookupDefaultRoute) stops with \"{error}\". The agent needs this lookup in \
                     ENI IPAM mode, for egress gateway policies that name no interface, and for \
                     IPsec; depending on the version it exits at start or reports degraded health \
                     and retries."
                ),
                networkd_remediation(&fix_on, family),
            ),
            Outcome::NoDefaultRoute => (
                Severity::Warning,
                format!(
                    "Cilium's default-route lookup for {family} fails with \"{error}\": table main \
                     has no {family} default route (Cilium does not look at other tables). This \
                     matters in ENI IPAM mode, for egress gateway policies that name no \
                     interface, and for IPsec."
                ),
                format!(
                    "Give the node a {family} default route in table main, or run Cilium without \
                     {family} (--cilium-family tells routemon which families the agent uses)."
                ),
            ),
            Outcome::MultipathDefault => (
                Severity::Warning,
                format!(
                    "Cilium's default-route lookup for {family} returns one multipath route ({}), \
                     which is not a tie, but it has no single output interface: resolving the \
                     node's default-route device fails with \"{error}\". Only Cilium features that \
                     need that device fail (ENI IPAM, egress gateway policies that name no \
                     interface, IPsec); others are unaffected.",
                    route.map(|r| model.route_devices(r)).unwrap_or_default()
                ),
                format!(
                    "Replace the multipath default by single default routes with distinct \
                     metrics. {}",
                    networkd_remediation(&fix_on, family)
                ),
            ),
            Outcome::RejectDefault => {
                let kind = route.map(|r| r.kind.to_string()).unwrap_or_default();
                let consequence = match &verdict.device {
                    Some(dev) => {
                        format!("Cilium would take {dev} as the node's default-route device")
                    }
                    None => {
                        format!("resolving the node's default-route device fails with \"{error}\"")
                    }
                };
                (
                    Severity::Warning,
                    format!(
                        "The best {family} default route of table main is a {kind} route: the kernel \
                         drops traffic that only the default route matches, and Cilium's lookup \
                         returns it, so {consequence}."
                    ),
                    format!(
                        "Remove the {kind} default route or give it a higher metric than the real \
                         default route."
                    ),
                )
            }
        };
        findings.push(Finding {
            kind: FindingKind::CiliumDefaultRoute {
                family,
                outcome: verdict.outcome,
                device: verdict.device.clone(),
                error: verdict.error.clone(),
            },
            severity,
            message,
            remediation,
        });
    }
    if let Some((ipv4_device, ipv6_device)) = cilium.dual_stack_links(model) {
        findings.push(Finding {
            kind: FindingKind::CiliumDualStackLinks {
                ipv4_device: ipv4_device.clone(),
                ipv6_device: ipv6_device.clone(),
            },
            severity: Severity::Warning,
            message: format!(
                "The IPv4 default route leaves by {ipv4_device} and the IPv6 one by {ipv6_device}: \
                 Cilium's NodeDeviceWithDefaultRoute, asked for both families, fails with \
                 \"{}\". Cilium calls it with both families in ENI IPAM mode with IPv6 enabled \
                 (up to 1.19) and for IPsec (up to 1.17).",
                crate::cilium::DIFFERENT_LINKS_ERROR
            ),
            remediation: format!(
                "Make both families' best default routes leave by the same interface \
                 ({ipv4_device}): pin the primary's IPv4 and IPv6 metrics ([DHCPv4] and \
                 [IPv6AcceptRA] RouteMetric=1000 in 05-{ipv4_device}.network)."
            ),
        });
    }
    findings
}
