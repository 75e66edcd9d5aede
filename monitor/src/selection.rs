//! Which interfaces routemon monitors, and which one is the primary ENI.

use std::collections::BTreeSet;

use glob::Pattern;
use thiserror::Error;

use crate::model::{Link, NetworkModel};

/// Name patterns of interfaces that look like ENIs / uplinks on EC2 and similar
/// clouds: `ens5`, `enp39s0`, `eth0`.
pub const ENI_LIKE_PATTERNS: [&str; 3] = ["ens*", "enp*", "eth*"];

/// A bad `--interface` or `--primary` value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectionError {
    /// The pattern is not a valid glob.
    #[error("invalid interface pattern '{pattern}': {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A pattern matched no interface.
    #[error("unknown interface: no interface matches '{pattern}' (interfaces here: {available})")]
    NoMatch {
        /// The pattern as given.
        pattern: String,
        /// Comma-separated names of the interfaces that exist.
        available: String,
    },
    /// The `--primary` interface does not exist.
    #[error("unknown primary interface '{name}' (interfaces here: {available})")]
    UnknownPrimary {
        /// The name as given.
        name: String,
        /// Comma-separated names of the interfaces that exist.
        available: String,
    },
}

/// A shell-style interface name pattern (`ens*`, `enp*s0`, `eth?`, `ens5`).
#[derive(Clone, Debug)]
pub struct InterfacePattern {
    text: String,
    pattern: Pattern,
}

impl InterfacePattern {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Self, SelectionError> {
        let invalid = |reason: String| SelectionError::InvalidPattern {
            pattern: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("empty pattern".to_owned()));
        }
        // IFNAMSIZ is 16 including the NUL; a longer literal can never match.
        if !text.contains(['*', '?', '[']) && text.len() > 15 {
            return Err(invalid(
                "interface names are at most 15 characters".to_owned(),
            ));
        }
        let pattern = Pattern::new(text).map_err(|err| invalid(err.msg.to_owned()))?;
        Ok(Self {
            text: text.to_owned(),
            pattern,
        })
    }

    /// Whether `name` matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.pattern.matches(name)
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for InterfacePattern {
    type Err = SelectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether the name looks like an ENI / uplink (see [`ENI_LIKE_PATTERNS`]).
pub fn is_eni_like(name: &str) -> bool {
    ENI_LIKE_PATTERNS
        .iter()
        .any(|p| Pattern::new(p).is_ok_and(|p| p.matches(name)))
}

fn available(model: &NetworkModel) -> String {
    model
        .links
        .values()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the interfaces to monitor, as ifindexes in ascending order.
///
/// With patterns, every interface matching any of them; each pattern must match at
/// least one interface. Without, every interface that is not loopback and either
/// holds a default route (any table, either family) or has an ENI-like name: the
/// interfaces that carry, or could start carrying, the node's egress.
pub fn select_interfaces(
    model: &NetworkModel,
    patterns: &[InterfacePattern],
) -> Result<BTreeSet<u32>, SelectionError> {
    if let Some(pattern) = patterns
        .iter()
        .find(|p| !model.links.values().any(|l| p.matches(&l.name)))
    {
        return Err(SelectionError::NoMatch {
            pattern: pattern.as_str().to_owned(),
            available: available(model),
        });
    }
    Ok(matching_interfaces(model, patterns))
}

/// The interfaces `patterns` select now, without failing on a pattern that matches
/// nothing (yet): what a long-running monitor attaches to as interfaces come and go.
pub fn matching_interfaces(model: &NetworkModel, patterns: &[InterfacePattern]) -> BTreeSet<u32> {
    if patterns.is_empty() {
        let with_default: BTreeSet<u32> =
            model.default_routes().flat_map(|r| r.ifindexes()).collect();
        return model
            .links
            .values()
            .filter(|l| !l.is_loopback())
            .filter(|l| with_default.contains(&l.index) || is_eni_like(&l.name))
            .map(|l| l.index)
            .collect();
    }
    model
        .links
        .values()
        .filter(|l| patterns.iter().any(|p| p.matches(&l.name)))
        .map(|l| l.index)
        .collect()
}

/// How the primary interface was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimarySource {
    /// `--primary` named it.
    Explicit,
    /// The ENI-like interface with the lowest ifindex (the device attached first).
    LowestIfindex,
}

impl PrimarySource {
    /// The name JSON uses (`routes --json`, `pin --json`): `flag` or `lowest_ifindex`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "flag",
            Self::LowestIfindex => "lowest_ifindex",
        }
    }

    /// How the choice reads in text output.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Explicit => "named with --primary",
            Self::LowestIfindex => {
                "the ENI-named interface (ens*, enp*, eth*) with the lowest interface index"
            }
        }
    }
}

/// The node's primary interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    /// Its ifindex.
    pub ifindex: u32,
    /// Its name.
    pub name: String,
    /// How it was chosen.
    pub source: PrimarySource,
}

/// Finds the primary interface: `explicit` if given (it must exist), else the
/// ENI-like interface with the lowest ifindex. `None` when the node has no
/// ENI-like interface and none was named.
pub fn primary_interface(
    model: &NetworkModel,
    explicit: Option<&str>,
) -> Result<Option<Primary>, SelectionError> {
    let make = |link: &Link, source| Primary {
        ifindex: link.index,
        name: link.name.clone(),
        source,
    };
    if let Some(name) = explicit {
        return model
            .link_by_name(name)
            .map(|link| Some(make(link, PrimarySource::Explicit)))
            .ok_or_else(|| SelectionError::UnknownPrimary {
                name: name.to_owned(),
                available: available(model),
            });
    }
    Ok(model
        .links
        .values()
        .find(|l| !l.is_loopback() && is_eni_like(&l.name))
        .map(|link| make(link, PrimarySource::LowestIfindex)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinkLayer, OperState};
    use crate::testutil::{default_route, model_with_links};

    #[test]
    fn patterns_match_naming_schemes() {
        let ens = InterfacePattern::parse("ens*").unwrap();
        assert!(ens.matches("ens5"));
        assert!(ens.matches("ens6"));
        assert!(!ens.matches("eth0"));
        let enp = InterfacePattern::parse("enp*s0").unwrap();
        assert!(enp.matches("enp39s0"));
        assert!(!enp.matches("enp39s1"));
        let eth = InterfacePattern::parse("eth?").unwrap();
        assert!(eth.matches("eth1"));
        assert!(!eth.matches("eth10"));
        assert!(InterfacePattern::parse("ens5").unwrap().matches("ens5"));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(matches!(
            InterfacePattern::parse(""),
            Err(SelectionError::InvalidPattern { .. })
        ));
        assert!(matches!(
            InterfacePattern::parse("ens[5"),
            Err(SelectionError::InvalidPattern { .. })
        ));
        assert!(matches!(
            InterfacePattern::parse("averyveryverylongname"),
            Err(SelectionError::InvalidPattern { .. })
        ));
    }

    #[test]
    fn eni_like_names() {
        for name in ["ens5", "ens6", "enp39s0", "eth0", "eth1"] {
            assert!(is_eni_like(name), "{name}");
        }
        for name in ["lo", "lxc12ab", "cilium_host", "docker0", "veth1234"] {
            assert!(!is_eni_like(name), "{name}");
        }
    }

    #[test]
    fn default_selection_takes_uplinks_and_default_route_holders() {
        let mut model = model_with_links(&["lo", "ens5", "ens6", "lxc1", "wg0", "cilium_host"]);
        model.links.get_mut(&5).unwrap().link_layer = LinkLayer::None;
        // wg0 (ifindex 5) holds a default route in table 51820: it carries egress.
        let mut route = default_route(5, None, 0, 51_820);
        route.order = 0;
        model.routes.push(route);
        let selected = select_interfaces(&model, &[]).unwrap();
        let names: Vec<_> = selected.iter().map(|i| model.link_name(*i)).collect();
        assert_eq!(names, ["ens5", "ens6", "wg0"]);
    }

    #[test]
    fn explicit_patterns_must_each_match() {
        let model = model_with_links(&["lo", "ens5", "ens6"]);
        let p = |s| InterfacePattern::parse(s).unwrap();
        let selected = select_interfaces(&model, &[p("ens6")]).unwrap();
        assert_eq!(selected.into_iter().collect::<Vec<_>>(), [3]);
        let err = select_interfaces(&model, &[p("ens*"), p("eth*")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown interface: no interface matches 'eth*' (interfaces here: lo, ens5, ens6)"
        );
    }

    #[test]
    fn primary_is_lowest_ifindex_eni_unless_named() {
        let mut model = model_with_links(&["lo", "docker0", "ens6", "ens5"]);
        model.links.get_mut(&3).unwrap().oper_state = OperState::Down;
        let primary = primary_interface(&model, None).unwrap().unwrap();
        assert_eq!(primary.name, "ens6");
        assert_eq!(primary.source, PrimarySource::LowestIfindex);
        let primary = primary_interface(&model, Some("ens5")).unwrap().unwrap();
        assert_eq!((primary.name.as_str(), primary.ifindex), ("ens5", 4));
        assert_eq!(primary.source, PrimarySource::Explicit);
        assert!(matches!(
            primary_interface(&model, Some("ens9")),
            Err(SelectionError::UnknownPrimary { .. })
        ));
        let no_eni = model_with_links(&["lo", "docker0"]);
        assert_eq!(primary_interface(&no_eni, None).unwrap(), None);
    }
}
