//! Deciding a pin: which metric each interface gets, whether the result leaves
//! exactly one best default route on the primary, which live routes change, and
//! which networkd files are written. Pure functions of the dumped state.

use std::{collections::BTreeSet, fmt, path::Path, str::FromStr};

use serde::Serialize;

use super::{
    PinError,
    files::{FileChange, FileError, read_optional},
    kernel_route::{DefaultRoutes, RouteKey},
    networkd::{self, ConfigFile, LinkFacts, NetworkdConfig, UnmanageMatch},
    transition::Replacement,
};
use crate::{
    model::{Family, NetworkModel},
    selection::Primary,
};

/// The metric systemd-networkd gives every DHCP and RA route by default.
pub const NETWORKD_DEFAULT_METRIC: u32 = 1024;
/// The seed scheme's default metric for the primary.
pub const SEED_DEFAULT_METRIC: u32 = 1000;
/// The base of the ec2 scheme: `512 + 100 × network card + device number`.
pub const EC2_BASE_METRIC: u32 = 512;
/// The file that leaves secondary interfaces unmanaged.
pub const UNMANAGED_FILE: &str = "05-routemon-unmanaged.network";

/// How pinned metrics are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// The primary gets `--metric` (default 1000); the others keep theirs.
    Seed,
    /// Every ENI gets 512 + 100 × network card + device number, as
    /// amazon-ec2-net-utils and nodeadm do.
    Ec2,
}

/// `--device IF=DEVICE[@CARD]`: an ENI's device number (and network card) for the
/// ec2 scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNumber {
    /// Interface name.
    pub interface: String,
    /// Device number (attachment index on its card).
    pub device: u32,
    /// Network card index.
    pub card: u32,
}

impl FromStr for DeviceNumber {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("invalid --device '{text}': expected IF=DEVICE or IF=DEVICE@CARD, e.g. ens6=1")
        };
        let (interface, numbers) = text.split_once('=').ok_or_else(usage)?;
        let (device, card) = numbers.split_once('@').unwrap_or((numbers, "0"));
        let device: u32 = device.parse().map_err(|_| usage())?;
        let card: u32 = card.parse().map_err(|_| usage())?;
        if interface.is_empty() || device > 99 || card > 99 {
            return Err(format!("{} (device and card are 0-99)", usage()));
        }
        Ok(Self {
            interface: interface.to_owned(),
            device,
            card,
        })
    }
}

/// The metric one interface is pinned to, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub interface: String,
    /// Its metric after the pin.
    pub metric: u32,
    /// How the metric was derived.
    pub reason: String,
}

/// The live part of a pin.
#[derive(Clone, Debug, Default)]
pub struct RoutePlan {
    /// Metric per interface.
    pub targets: Vec<Target>,
    /// Route replacements, primary first, with the interface name.
    pub replacements: Vec<(String, Replacement)>,
}

/// Options of a pin.
#[derive(Clone, Debug)]
pub struct PinRequest<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The seed scheme's metric.
    pub metric: u32,
    /// Explicit device numbers for the ec2 scheme.
    pub devices: &'a [DeviceNumber],
    /// ENI candidates for the ec2 scheme and `--unmanage-others`, by ifindex.
    pub enis: &'a BTreeSet<u32>,
}

/// Computes the metric per interface and the route replacements, and refuses a
/// plan that would not leave the primary with the only best default route.
pub fn plan_routes(
    model: &NetworkModel,
    defaults: &DefaultRoutes,
    primary: &Primary,
    request: &PinRequest<'_>,
) -> Result<RoutePlan, PinError> {
    let primary_routes: Vec<_> = defaults.of_interface(primary.ifindex).collect();
    if primary_routes.is_empty() {
        let holders: BTreeSet<String> = defaults
            .routes
            .iter()
            .map(|r| model.link_name(r.key.ifindex))
            .collect();
        return Err(PinError::NoDefaultRoute {
            interface: primary.name.clone(),
            holders: if holders.is_empty() {
                "none".to_owned()
            } else {
                holders.into_iter().collect::<Vec<_>>().join(", ")
            },
        });
    }
    if let Some(key) = defaults
        .multipath
        .iter()
        .find(|k| k.ifindex == primary.ifindex)
    {
        return Err(PinError::Multipath {
            interface: primary.name.clone(),
            route: key.to_string(),
        });
    }
    let targets = match request.scheme {
        Scheme::Seed => vec![Target {
            ifindex: primary.ifindex,
            interface: primary.name.clone(),
            metric: request.metric,
            reason: format!(
                "seed scheme: --metric {} (networkd's default is {NETWORKD_DEFAULT_METRIC})",
                request.metric
            ),
        }],
        Scheme::Ec2 => ec2_targets(model, primary, request)?,
    };
    check_outcome(model, defaults, primary, &targets)?;

    let mut replacements = Vec::new();
    for target in &targets {
        for route in defaults.of_interface(target.ifindex) {
            if route.key.metric != target.metric {
                replacements.push((
                    target.interface.clone(),
                    Replacement {
                        before: route.clone(),
                        after: route.with_metric(target.metric),
                    },
                ));
            }
        }
    }
    Ok(RoutePlan {
        targets,
        replacements,
    })
}

fn ec2_targets(
    model: &NetworkModel,
    primary: &Primary,
    request: &PinRequest<'_>,
) -> Result<Vec<Target>, PinError> {
    for explicit in request.devices {
        if model.link_by_name(&explicit.interface).is_none() {
            return Err(PinError::UnknownDevice(explicit.interface.clone()));
        }
    }
    let mut enis: BTreeSet<u32> = request.enis.clone();
    enis.insert(primary.ifindex);
    let mut targets: Vec<(Target, (u32, u32))> = Vec::new();
    for (order, ifindex) in enis.iter().enumerate() {
        let name = model.link_name(*ifindex);
        let (device, card, how) = match request.devices.iter().find(|d| d.interface == name) {
            Some(d) => (d.device, d.card, "--device"),
            None => (
                u32::try_from(order).unwrap_or(u32::MAX),
                0,
                "order by interface index",
            ),
        };
        if let Some((other, _)) = targets.iter().find(|(_, slot)| *slot == (card, device)) {
            return Err(PinError::DuplicateDevice {
                first: other.interface.clone(),
                second: name,
                card,
                device,
            });
        }
        let metric = EC2_BASE_METRIC + 100 * card + device;
        targets.push((
            Target {
                ifindex: *ifindex,
                interface: name,
                metric,
                reason: format!("ec2 scheme: 512 + 100 × card {card} + device {device} ({how})"),
            },
            (card, device),
        ));
    }
    // The primary first: it must be preferred before any other route moves.
    targets.sort_by_key(|(t, _)| t.ifindex != primary.ifindex);
    Ok(targets.into_iter().map(|(t, _)| t).collect())
}

/// Fails unless, after the pin, in every family where the primary has a default
/// route, the primary alone holds the lowest metric.
fn check_outcome(
    model: &NetworkModel,
    defaults: &DefaultRoutes,
    primary: &Primary,
    targets: &[Target],
) -> Result<(), PinError> {
    let metric_after = |key: &RouteKey| {
        targets
            .iter()
            .find(|t| t.ifindex == key.ifindex)
            .map_or(key.metric, |t| t.metric)
    };
    let primary_metric = targets
        .iter()
        .find(|t| t.ifindex == primary.ifindex)
        .map(|t| t.metric);
    for family in [Family::Ipv4, Family::Ipv6] {
        let routes: Vec<&RouteKey> = defaults.keys(family).collect();
        if !routes.iter().any(|k| k.ifindex == primary.ifindex) {
            continue;
        }
        let mine = primary_metric.unwrap_or(u32::MAX);
        let rival = routes
            .iter()
            .filter(|k| k.ifindex != primary.ifindex)
            .map(|k| (metric_after(k), *k))
            .chain(
                defaults
                    .multipath
                    .iter()
                    .filter(|k| k.family == family)
                    .map(|k| (k.metric, k)),
            )
            .min_by_key(|(metric, _)| *metric);
        if let Some((metric, key)) = rival
            && metric <= mine
        {
            let other = model.link_name(key.ifindex);
            return Err(if metric == mine {
                PinError::Tie {
                    family,
                    primary: primary.name.clone(),
                    other,
                    metric,
                }
            } else {
                PinError::NotPreferred {
                    family,
                    primary: primary.name.clone(),
                    metric: mine,
                    other,
                    other_metric: metric,
                }
            });
        }
    }
    Ok(())
}

/// The networkd side of a pin.
pub struct FilePlanInput<'a> {
    /// networkd's configuration on disk.
    pub config: &'a NetworkdConfig,
    /// Where routemon writes (`--networkd-dir`).
    pub dir: &'a Path,
    /// The node's state.
    pub model: &'a NetworkModel,
    /// Default routes.
    pub defaults: &'a DefaultRoutes,
    /// Interfaces whose metric is persisted (the primary; every ENI with ec2).
    pub persist: Vec<&'a Target>,
    /// Secondary interfaces to leave unmanaged, with how to match them.
    pub unmanage: Option<(Vec<u32>, UnmanageMatch)>,
}

/// The file name routemon writes for an interface's pin.
pub fn pinned_file_name(interface: &str) -> String {
    format!("05-{interface}.network")
}

/// Computes the file changes, refusing conflicting configuration.
pub fn plan_files(input: &FilePlanInput<'_>) -> Result<Vec<FileChange>, PinError> {
    let mut changes = Vec::new();
    for target in &input.persist {
        let link = input
            .model
            .links
            .get(&target.ifindex)
            .ok_or_else(|| PinError::UnknownDevice(target.interface.clone()))?;
        let facts = LinkFacts::of(link);
        let name = pinned_file_name(&link.name);
        let path = input.dir.join(&name);
        let before = read(&path)?;
        ensure_ours(&path, before.as_deref())?;
        check_precedence(input.config, &facts, &name, &path)?;
        let current = input.config.current(link.index, &facts);
        let base = match current {
            Some(file) if !file.written_by_routemon() && file.path != path => Some(file),
            _ => input
                .config
                .matching(&facts)
                .find(|f| !f.written_by_routemon() && f.path != path),
        }
        .ok_or_else(|| PinError::NotManaged {
            interface: link.name.clone(),
        })?;
        let drop_ins = input
            .config
            .drop_ins(&base.file_name())
            .map_err(|source| config_error(input.dir, source))?;
        for drop_in in input
            .config
            .drop_ins(&name)
            .map_err(|source| config_error(input.dir, source))?
        {
            if !networkd::route_metrics(&drop_in.content).is_empty() {
                return Err(PinError::Conflict {
                    path: drop_in.path,
                    reason: format!("it sets RouteMetric= for {name} and would override the pin"),
                });
            }
        }
        let ipv6 = input
            .defaults
            .of_interface(link.index)
            .any(|r| r.key.family == Family::Ipv6)
            || enables_ipv6(base);
        let after = networkd::render_pinned(&link.name, target.metric, base, &drop_ins, ipv6);
        changes.push(FileChange {
            path,
            before,
            after: Some(after),
        });
    }
    if let Some((secondaries, by)) = &input.unmanage {
        let facts: Vec<LinkFacts> = secondaries
            .iter()
            .filter_map(|i| input.model.links.get(i))
            .filter(|l| !l.is_loopback())
            .map(LinkFacts::of)
            .collect();
        if !facts.is_empty() {
            let path = input.dir.join(UNMANAGED_FILE);
            let before = read(&path)?;
            ensure_ours(&path, before.as_deref())?;
            for link in &facts {
                check_precedence(input.config, link, UNMANAGED_FILE, &path)?;
            }
            changes.push(FileChange {
                path,
                before,
                after: Some(networkd::render_unmanaged(&facts, *by)),
            });
        }
    }
    Ok(changes)
}

fn read(path: &Path) -> Result<Option<String>, PinError> {
    read_optional(path).map_err(|source| FileError::new("reading", path, source).into())
}

/// A failure to read networkd's configuration for `dir`.
pub fn config_error(dir: &Path, source: std::io::Error) -> PinError {
    FileError::new("reading the networkd configuration in", dir, source).into()
}

/// An existing file routemon did not write is never overwritten.
fn ensure_ours(path: &Path, content: Option<&str>) -> Result<(), PinError> {
    match content {
        Some(content) if !networkd::is_routemon_file(content) => Err(PinError::Conflict {
            path: path.to_path_buf(),
            reason: "it exists and was not written by routemon; merge the pin into it by hand \
                     or move it away"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The file routemon writes must be the one networkd uses for the link: no file
/// of another author may come first, and none may mask it.
fn check_precedence(
    config: &NetworkdConfig,
    link: &LinkFacts,
    name: &str,
    path: &Path,
) -> Result<(), PinError> {
    if let Some(mask) = config
        .files
        .iter()
        .find(|f| f.file_name() == name && f.path != path)
    {
        return Err(PinError::Conflict {
            path: mask.path.clone(),
            reason: format!(
                "it has the same name in a directory of higher precedence and would mask {}",
                path.display()
            ),
        });
    }
    if let Some(earlier) = config
        .matching(link)
        .find(|f| f.file_name().as_str() < name && !f.written_by_routemon())
    {
        return Err(PinError::Conflict {
            path: earlier.path.clone(),
            reason: format!(
                "it matches {} and sorts before {name}, so networkd would never read routemon's file",
                link.name
            ),
        });
    }
    Ok(())
}

fn enables_ipv6(file: &ConfigFile) -> bool {
    networkd::assignments(&file.content).iter().any(|a| {
        a.section == "Network"
            && ((a.key == "DHCP" && matches!(a.value.as_str(), "yes" | "ipv6" | "true"))
                || (a.key == "IPv6AcceptRA" && matches!(a.value.as_str(), "yes" | "true" | "1")))
    })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → metric {} ({})",
            self.interface, self.metric, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_parse() {
        assert_eq!(
            "ens6=1".parse::<DeviceNumber>().unwrap(),
            DeviceNumber {
                interface: "ens6".into(),
                device: 1,
                card: 0
            }
        );
        assert_eq!("ens7=0@1".parse::<DeviceNumber>().unwrap().card, 1);
        for bad in ["ens6", "=1", "ens6=x", "ens6=1@", "ens6=100"] {
            assert!(bad.parse::<DeviceNumber>().is_err(), "{bad}");
        }
    }
}
