//! Predicting what systemd-networkd will do with each ENI — present or still to
//! come — from its `.network` files and drop-ins: which file manages it, whether
//! DHCPv4 gives it a default route, and with which metric. Two interfaces whose
//! default routes would share the best metric are a tie for the kernel and for
//! Cilium's default-route lookup.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use super::{Check, Location, Status};
use crate::pin::networkd::{self as files, ConfigFile, LinkFacts, NetworkdConfig};

/// networkd's metric for DHCPv4 routes when no `RouteMetric=` is set.
pub const DEFAULT_DHCP_METRIC: u32 = 1024;

/// The ENI naming schemes: a primary and two secondaries each, for interfaces
/// that do not exist yet (a secondary ENI arrives when Cilium attaches it).
const SCHEMES: [(&str, [&str; 3]); 3] = [
    ("ens", ["ens5", "ens6", "ens7"]),
    ("eth", ["eth0", "eth1", "eth2"]),
    ("enp", ["enp39s0", "enp40s0", "enp41s0"]),
];

/// What networkd will do with one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// Interface name.
    pub interface: String,
    /// Whether it exists now (else it is a future ENI of its naming scheme).
    pub present: bool,
    /// The `.network` file that will manage it, if any.
    pub file: Option<PathBuf>,
    /// `[Link] Unmanaged=yes`.
    pub unmanaged: bool,
    /// The metric of its DHCPv4 default route, when it gets one.
    pub dhcp_metric: Option<u32>,
}

/// The naming scheme of an ENI-like name (`ens`, `eth`, `enp`), if it is one.
pub fn scheme_of(name: &str) -> Option<&'static str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if name.strip_prefix("ens").is_some_and(digits) {
        Some("ens")
    } else if name.strip_prefix("eth").is_some_and(digits) {
        Some("eth")
    } else if name
        .strip_prefix("enp")
        .and_then(|rest| rest.strip_suffix("s0"))
        .is_some_and(digits)
    {
        Some("enp")
    } else {
        None
    }
}

/// The settings of a file and its drop-ins: the last assignment of a key wins.
struct Effective(Vec<files::Assignment>);

impl Effective {
    fn of(file: &ConfigFile, drop_ins: &[ConfigFile]) -> Self {
        Self(
            std::iter::once(file)
                .chain(drop_ins)
                .flat_map(|f| files::assignments(&f.content))
                .collect(),
        )
    }

    fn get(&self, sections: &[&str], key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|a| a.key == key && sections.contains(&a.section.as_str()))
            .map(|a| a.value.as_str())
    }
}

/// systemd's boolean parsing.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Predicts what networkd does with `link`.
fn predict(
    config: &NetworkdConfig,
    link: &LinkFacts,
    present: bool,
) -> std::io::Result<Prediction> {
    let mut prediction = Prediction {
        interface: link.name.clone(),
        present,
        file: None,
        unmanaged: false,
        dhcp_metric: None,
    };
    let Some(file) = config.matching(link).next() else {
        return Ok(prediction);
    };
    prediction.file = Some(file.path.clone());
    let settings = Effective::of(file, &config.drop_ins(&file.file_name())?);
    prediction.unmanaged = settings
        .get(&["Link"], "Unmanaged")
        .and_then(boolean)
        .unwrap_or(false);
    if prediction.unmanaged {
        return Ok(prediction);
    }
    let dhcp4 = settings.get(&["Network"], "DHCP").is_some_and(|v| {
        matches!(v.to_ascii_lowercase().as_str(), "ipv4" | "v4" | "both")
            || boolean(v) == Some(true)
    });
    let dhcp_section = ["DHCPv4", "DHCP"];
    let use_routes = settings.get(&dhcp_section, "UseRoutes").and_then(boolean);
    let use_gateway = settings
        .get(&dhcp_section, "UseGateway")
        .and_then(boolean)
        .or(use_routes)
        .unwrap_or(true);
    if dhcp4 && use_gateway {
        prediction.dhcp_metric = Some(
            settings
                .get(&dhcp_section, "RouteMetric")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_DHCP_METRIC),
        );
    }
    Ok(prediction)
}

/// The interfaces to predict, grouped by naming scheme: present ENI-like links
/// (`present`, with what networkd's `[Match]` sees) and, per scheme in use (all
/// schemes when none is present), its primary and two secondaries.
fn candidates(present: &[LinkFacts]) -> BTreeMap<&'static str, Vec<(LinkFacts, bool)>> {
    let mut groups: BTreeMap<&'static str, Vec<(LinkFacts, bool)>> = BTreeMap::new();
    for link in present {
        if let Some(scheme) = scheme_of(&link.name) {
            groups.entry(scheme).or_default().push((link.clone(), true));
        }
    }
    let in_use: Vec<&str> = groups.keys().copied().collect();
    for (scheme, names) in SCHEMES {
        if !in_use.is_empty() && !in_use.contains(&scheme) {
            continue;
        }
        let group = groups.entry(scheme).or_default();
        for name in names {
            if group.iter().all(|(l, _)| l.name != name) {
                group.push((hypothetical(name), false));
            }
        }
        group.sort_by_key(|(l, _)| interface_number(&l.name));
    }
    groups
}

/// What a future ENI looks like to `[Match]`: an Ethernet link of the ENA driver.
fn hypothetical(name: &str) -> LinkFacts {
    LinkFacts {
        name: name.to_owned(),
        link_type: "ether".into(),
        driver: Some("ena".into()),
        ..LinkFacts::default()
    }
}

/// Sort key: the numbers in the name (`ens10` after `ens9`).
fn interface_number(name: &str) -> Vec<u32> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Everything the networkd checks found, with what `--fix` needs.
pub struct Outcome {
    /// The checks.
    pub checks: Vec<Check>,
    /// Every prediction, by scheme.
    pub predictions: Vec<Prediction>,
    /// Per scheme with a problem: (primary, its file, secondaries to unmanage).
    pub fixes: Vec<(String, Option<PathBuf>, Vec<String>)>,
}

/// Predicts and checks. `present` are the links that exist (empty for files
/// checked away from a node); `primary` overrides the first ENI of each scheme.
pub fn check(config: &NetworkdConfig, present: &[LinkFacts], primary: Option<&str>) -> Outcome {
    let mut outcome = Outcome {
        checks: Vec::new(),
        predictions: Vec::new(),
        fixes: Vec::new(),
    };
    let dirs = config
        .dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let at = |source: String| Location {
        source,
        path: None,
        line: None,
    };
    let groups = candidates(present);
    let mut predicted: Vec<(&'static str, Vec<Prediction>)> = Vec::new();
    for (scheme, links) in &groups {
        let mut predictions = Vec::new();
        for (link, is_present) in links {
            match predict(config, link, *is_present) {
                Ok(p) => predictions.push(p),
                Err(err) => outcome.checks.push(Check::new(
                    "networkd.read",
                    Status::Error,
                    at(dirs.clone()),
                    format!("cannot read a drop-in: {err}"),
                )),
            }
        }
        predicted.push((scheme, predictions));
    }
    // Away from a node, a scheme no file manages is not the node's naming scheme:
    // checking it would only report its primary as unmanaged.
    if present.is_empty() && predicted.iter().any(|(_, p)| managed(p)) {
        predicted.retain(|(_, p)| managed(p));
    }
    for (scheme, predictions) in predicted {
        let Some(first) = predictions.first() else {
            continue;
        };
        let primary_name = primary
            .filter(|p| predictions.iter().any(|x| x.interface == *p))
            .unwrap_or(&first.interface)
            .to_owned();
        let secondaries_managed: Vec<String> = predictions
            .iter()
            .filter(|p| p.interface != primary_name && p.file.is_some() && !p.unmanaged)
            .map(|p| p.interface.clone())
            .collect();
        let checks = scheme_checks(
            scheme,
            &primary_name,
            &predictions,
            &secondaries_managed,
            &dirs,
        );
        let tie = checks
            .iter()
            .any(|c| c.id == "networkd.equal_metric" && c.status == Status::Error);
        outcome.checks.extend(checks);
        if tie || !secondaries_managed.is_empty() {
            let file = predictions
                .iter()
                .find(|p| p.interface == primary_name)
                .and_then(|p| p.file.clone());
            outcome
                .fixes
                .push((primary_name.clone(), file, secondaries_managed));
        }
        outcome.predictions.extend(predictions);
    }
    outcome.checks.extend(file_checks(config));
    outcome
}

/// Whether networkd manages any of these interfaces.
fn managed(predictions: &[Prediction]) -> bool {
    predictions.iter().any(|p| p.file.is_some() && !p.unmanaged)
}

/// The checks of one naming scheme; `secondaries` are the interfaces other than
/// `primary` that networkd would manage.
fn scheme_checks(
    scheme: &'static str,
    primary: &str,
    predictions: &[Prediction],
    secondaries: &[String],
    dirs: &str,
) -> Vec<Check> {
    let at = || Location {
        source: dirs.to_owned(),
        path: Some(scheme.to_owned()),
        line: None,
    };
    let describe = |p: &Prediction| {
        let file = p.file.as_ref().map_or_else(
            || "no .network file".to_owned(),
            |f| f.display().to_string(),
        );
        let state = match (p.unmanaged, p.dhcp_metric) {
            (true, _) => "unmanaged".to_owned(),
            (false, Some(m)) => format!("DHCPv4 default route metric {m}"),
            (false, None) if p.file.is_some() => "managed, no DHCPv4 default route".to_owned(),
            (false, None) => "not managed".to_owned(),
        };
        let when = if p.present { "" } else { " (when it appears)" };
        format!("{}{when}: {state} ({file})", p.interface)
    };
    let mut checks = vec![Check::new(
        "networkd.prediction",
        Status::Info,
        at(),
        predictions
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; "),
    )];
    let with_default: Vec<&Prediction> = predictions
        .iter()
        .filter(|p| p.dhcp_metric.is_some())
        .collect();
    let best = with_default.iter().filter_map(|p| p.dhcp_metric).min();
    let at_best: Vec<&&Prediction> = with_default
        .iter()
        .filter(|p| p.dhcp_metric == best)
        .collect();
    let primary_prediction = predictions.iter().find(|p| p.interface == primary);
    if at_best.len() >= 2 {
        let names: Vec<&str> = at_best.iter().map(|p| p.interface.as_str()).collect();
        checks.push(
            Check::new(
                "networkd.equal_metric",
                Status::Error,
                at(),
                format!(
                    "{} would all get a DHCPv4 default route with metric {}: equal-metric default \
                     routes, on which Cilium's default-route lookup fails and egress can change \
                     ENI without any route change",
                    names.join(", "),
                    best.unwrap_or(DEFAULT_DHCP_METRIC)
                ),
            )
            .fix(format!(
                "give {primary} a lower metric: /etc/systemd/network/05-{primary}.network with \
                 [Match] Name={primary}, its DHCP settings and [DHCPv4] RouteMetric=1000 \
                 (`routemon doctor --fix DIR` writes it), then restart systemd-networkd"
            )),
        );
    } else if let Some(best) = best
        && primary_prediction.and_then(|p| p.dhcp_metric) != Some(best)
    {
        let winner = at_best
            .first()
            .map_or("another interface", |p| p.interface.as_str());
        checks.push(
            Check::new(
                "networkd.primary_not_preferred",
                Status::Warning,
                at(),
                format!("{winner}, not the primary {primary}, would carry the best default route (metric {best})"),
            )
            .fix(format!("give {primary} the lowest RouteMetric, or leave {winner} unmanaged")),
        );
    } else if with_default.len() >= 2 {
        checks.push(Check::new(
            "networkd.equal_metric",
            Status::Ok,
            at(),
            format!("{primary} alone has the best default-route metric"),
        ));
    }
    if primary_prediction.is_none_or(|p| p.file.is_none() || p.unmanaged) {
        checks.push(
            Check::new(
                "networkd.primary_unmanaged",
                Status::Warning,
                at(),
                format!("no .network file manages the primary {primary}: it gets no address or default route from networkd"),
            )
            .fix(format!("add a .network file matching {primary} with DHCP=ipv4")),
        );
    }
    if !secondaries.is_empty() {
        checks.push(
            Check::new(
                "networkd.secondary_managed",
                Status::Warning,
                at(),
                format!(
                    "networkd would manage {}, which the Cilium agent should own (it configures \
                     secondary ENIs itself)",
                    secondaries.join(", ")
                ),
            )
            .fix(format!(
                "a .network file with [Match] Name={} and [Link] Unmanaged=yes, by explicit \
                 name (not a pattern that also catches lo or veths)",
                secondaries.join(" ")
            )),
        );
    }
    checks
}

/// Per-file checks: deprecated sections and negated `Name=` matches broad enough to
/// catch loopback or veths.
fn file_checks(config: &NetworkdConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let loopback = LinkFacts {
        name: "lo".into(),
        link_type: "loopback".into(),
        ..LinkFacts::default()
    };
    let veth = LinkFacts {
        name: "lxc0123456789ab".into(),
        link_type: "ether".into(),
        kind: Some("veth".into()),
        driver: Some("veth".into()),
        ..LinkFacts::default()
    };
    for file in &config.files {
        let at = |line: Option<usize>, path: &str| Location {
            source: file.path.display().to_string(),
            path: Some(path.to_owned()),
            line,
        };
        let line_of = |needle: &str| {
            file.content
                .lines()
                .position(|l| l.trim().starts_with(needle))
                .map(|i| i + 1)
        };
        if files::assignments(&file.content)
            .iter()
            .any(|a| a.section == "DHCP")
        {
            checks.push(
                Check::new(
                    "networkd.deprecated_section",
                    Status::Warning,
                    at(line_of("[DHCP]"), "[DHCP]"),
                    "the [DHCP] section is deprecated (networkd still reads it for DHCPv4)",
                )
                .fix("rename it to [DHCPv4]"),
            );
        }
        let negated = files::assignments(&file.content)
            .into_iter()
            .any(|a| a.section == "Match" && a.key == "Name" && a.value.starts_with('!'));
        if negated {
            let caught: Vec<&str> = [("lo", &loopback), ("veths", &veth)]
                .into_iter()
                .filter(|(_, link)| files::matches(&file.content, link))
                .map(|(what, _)| what)
                .collect();
            if !caught.is_empty() {
                checks.push(
                    Check::new(
                        "networkd.broad_match",
                        Status::Warning,
                        at(line_of("Name="), "[Match] Name="),
                        format!("a negated Name= also matches {}", caught.join(" and ")),
                    )
                    .fix("match the secondary ENIs by explicit name, or add Type=ether and Kind=!veth"),
                );
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme_of("ens5"), Some("ens"));
        assert_eq!(scheme_of("eth1"), Some("eth"));
        assert_eq!(scheme_of("enp39s0"), Some("enp"));
        for other in ["lo", "ens", "enp39s1", "eth0.100", "lxc123", "cilium_host"] {
            assert_eq!(scheme_of(other), None, "{other}");
        }
    }
}
