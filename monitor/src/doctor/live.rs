//! `doctor --live`: the running node against networkd's prediction — each present
//! ENI's IPv4 default-route metric, Cilium's default-route verdict per family, and
//! the live routing findings.

use super::{Check, Location, Status, networkd};
use crate::{
    cilium::{CiliumFamilies, Outcome, Verdict},
    findings::{self, Severity},
    model::{Family, NetworkModel, table},
    preference,
};

/// The running node against the prediction: each present ENI's IPv4 default
/// routes in the main table, and the live findings.
pub fn checks(
    model: &NetworkModel,
    predictions: &[networkd::Prediction],
    cilium_family: CiliumFamilies,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for prediction in predictions.iter().filter(|p| p.present) {
        let Some(link) = model
            .links
            .values()
            .find(|l| l.name == prediction.interface)
        else {
            continue;
        };
        let live: Vec<u32> = model
            .default_routes()
            .filter(|r| r.family == Family::Ipv4 && r.table == table::MAIN)
            .filter(|r| r.uses_ifindex(link.index))
            .map(|r| r.metric)
            .collect();
        let at = Location {
            source: "live".into(),
            path: Some(prediction.interface.clone()),
            line: None,
        };
        let check = match prediction.dhcp_metric {
            Some(metric) if live.contains(&metric) => Check::new(
                "live.metric",
                Status::Ok,
                at,
                format!("default route metric {metric}, as configured"),
            ),
            Some(metric) => Check::new(
                "live.metric",
                Status::Warning,
                at,
                format!(
                    "default route metrics now {live:?}; the configuration gives {metric} at the \
                     next networkd restart or DHCP renewal"
                ),
            )
            .fix("restart systemd-networkd in a maintenance window, or `routemon pin` to change the live routes"),
            None => continue,
        };
        checks.push(check);
    }
    let preferred = preference::preferred_default_routes(model);
    let cilium = Verdict::of(model, cilium_family);
    for verdict in &cilium.per_family {
        let status = match (verdict.enabled, verdict.outcome) {
            (_, Outcome::Ok) | (false, _) => Status::Ok,
            (true, Outcome::Tie) => Status::Error,
            (true, _) => Status::Warning,
        };
        let device = verdict.device.as_deref().unwrap_or("none");
        let mut text = format!(
            "Cilium's {} default-route lookup: {} (device {device})",
            verdict.family, verdict.outcome
        );
        if let Some(error) = &verdict.error {
            text.push_str(&format!(": \"{error}\""));
        }
        if !verdict.enabled {
            text.push_str(" — family not used by the agent (--cilium-family)");
        }
        checks.push(Check::new(
            "live.cilium",
            status,
            Location {
                source: "live".into(),
                path: Some(verdict.family.to_string()),
                line: None,
            },
            text,
        ));
    }
    for finding in findings::evaluate(model, &preferred, None, &cilium) {
        if finding.kind_name() == "cilium_default_route" {
            continue; // reported above as live.cilium
        }
        let status = match finding.severity {
            Severity::Critical => Status::Error,
            Severity::Warning => Status::Warning,
            Severity::Info => Status::Info,
        };
        checks.push(Check::new(
            "live.finding",
            status,
            Location {
                source: "live".into(),
                path: Some(finding.kind_name().to_owned()),
                line: None,
            },
            finding.message.clone(),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{default_route, model_with_links, push_routes};

    fn prediction(interface: &str, metric: u32) -> networkd::Prediction {
        networkd::Prediction {
            interface: interface.to_owned(),
            present: true,
            file: None,
            unmanaged: false,
            dhcp_metric: Some(metric),
        }
    }

    #[test]
    fn a_live_tie_is_a_metric_warning_a_cilium_error_and_a_finding() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
                default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
            ],
        );
        let checks = checks(
            &model,
            &[prediction("ens5", 1000), prediction("ens6", 1024)],
            CiliumFamilies::Ipv4,
        );
        let by_id = |id: &str, path: &str| {
            checks
                .iter()
                .find(|c| c.id == id && c.location.path.as_deref() == Some(path))
                .map(|c| c.status)
        };
        assert_eq!(by_id("live.metric", "ens5"), Some(Status::Warning));
        assert_eq!(by_id("live.metric", "ens6"), Some(Status::Ok));
        assert_eq!(by_id("live.cilium", "ipv4"), Some(Status::Error));
        assert_eq!(
            by_id("live.cilium", "ipv6"),
            Some(Status::Ok),
            "not used by the agent"
        );
        assert_eq!(
            by_id("live.finding", "equal_metric_default_routes"),
            Some(Status::Error)
        );
        assert!(
            !checks
                .iter()
                .any(|c| c.location.path.as_deref() == Some("cilium_default_route")),
            "the Cilium finding is the live.cilium check, not repeated"
        );
    }
}
