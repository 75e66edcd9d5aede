//! Keeping a [`NetworkModel`] current from kernel notifications.
//!
//! Most changes are applied one by one. Where a notification alone cannot say what
//! the kernel's state became, the affected part is re-read instead:
//! - default routes, whose order in the kernel's list decides equal-metric ties;
//! - IPv6 multipath routes, whose next hops the kernel adds and removes one by one;
//! - routes after a link or address disappears: the kernel flushes IPv4 routes of a
//!   deleted device or address without notifying each one;
//! - rules (few, and their order matters);
//! - everything after [`Notification::Overrun`].

use super::{Family, NetworkModel, Route, dump::DumpError, dump::Netlink, events::Notification};

/// Parts of the model that must be re-read from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// Links (and so every derived part).
    pub links: bool,
    /// Addresses.
    pub addresses: bool,
    /// IPv4 routes.
    pub ipv4_routes: bool,
    /// IPv6 routes.
    pub ipv6_routes: bool,
    /// Policy rules.
    pub rules: bool,
}

impl Stale {
    /// Everything: after lost notifications.
    pub const ALL: Self = Self {
        links: true,
        addresses: true,
        ipv4_routes: true,
        ipv6_routes: true,
        rules: true,
    };

    /// Whether anything must be re-read.
    pub fn any(self) -> bool {
        self != Self::default()
    }

    /// Adds what `other` marks stale.
    pub fn merge(&mut self, other: Self) {
        self.links |= other.links;
        self.addresses |= other.addresses;
        self.ipv4_routes |= other.ipv4_routes;
        self.ipv6_routes |= other.ipv6_routes;
        self.rules |= other.rules;
    }

    fn routes(&mut self, family: Family) {
        match family {
            Family::Ipv4 => self.ipv4_routes = true,
            Family::Ipv6 => self.ipv6_routes = true,
        }
    }
}

/// Applies one notification to `model`, returning what must be re-read because
/// the notification does not say it exactly.
pub fn apply(model: &mut NetworkModel, notification: Notification) -> Stale {
    let mut stale = Stale::default();
    match notification {
        Notification::LinkChanged(link) => {
            let went_down = model
                .links
                .get(&link.index)
                .is_some_and(|old| old.admin_up && !link.admin_up);
            if went_down {
                // Routes through a device that goes down are flushed silently.
                stale = Stale {
                    ipv4_routes: true,
                    ipv6_routes: true,
                    ..Stale::default()
                };
            }
            model.links.insert(link.index, link);
        }
        Notification::LinkRemoved(link) => {
            model.links.remove(&link.index);
            model.addresses.retain(|a| a.ifindex != link.index);
            model.rp_filter.remove(&link.index);
            stale = Stale {
                ipv4_routes: true,
                ipv6_routes: true,
                ..Stale::default()
            };
        }
        Notification::AddressAdded(address) => {
            if !model.addresses.contains(&address) {
                model.addresses.push(address);
            }
        }
        Notification::AddressRemoved(address) => {
            model.addresses.retain(|a| *a != address);
            stale.routes(Family::of(&address.addr.addr()));
        }
        Notification::RouteAdded { route, replace } => {
            if needs_reread(model, &route) {
                stale.routes(route.family);
            } else {
                add_route(model, route, replace);
            }
        }
        Notification::RouteRemoved(route) => {
            if needs_reread(model, &route) {
                stale.routes(route.family);
            } else if let Some(index) = model.routes.iter().position(|r| same_route(r, &route)) {
                model.routes.remove(index);
            }
        }
        Notification::RulesChanged => {
            stale.rules = true;
        }
        Notification::Overrun => stale = Stale::ALL,
    }
    stale
}

/// Re-reads the stale parts from the kernel.
pub async fn reread(
    netlink: &Netlink,
    model: &mut NetworkModel,
    stale: Stale,
) -> Result<(), DumpError> {
    if stale.links {
        model.links = netlink.links().await?;
        model.rp_filter = super::sysctl::rp_filter(model.links.values());
    }
    if stale.addresses {
        model.addresses = netlink.addresses().await?;
    }
    for (family, is_stale) in [
        (Family::Ipv4, stale.ipv4_routes),
        (Family::Ipv6, stale.ipv6_routes),
    ] {
        if is_stale {
            let fresh = netlink.routes(family, next_order(model)).await?;
            model.routes.retain(|r| r.family != family);
            model.routes.extend(fresh);
        }
    }
    if stale.rules {
        model.rules = netlink.rules().await?;
    }
    Ok(())
}

/// Whether a route change must be read back from the kernel rather than applied.
fn needs_reread(model: &NetworkModel, route: &Route) -> bool {
    route.is_default()
        || route.nexthops.len() > 1
        || (route.family == Family::Ipv6
            && model
                .routes
                .iter()
                .any(|r| same_key(r, route) && r.nexthops.len() > 1))
}

/// The kernel's identity of a route within its table.
fn same_key(a: &Route, b: &Route) -> bool {
    a.family == b.family && a.table == b.table && a.dst == b.dst && a.metric == b.metric
}

fn same_route(a: &Route, b: &Route) -> bool {
    same_key(a, b) && a.kind == b.kind && a.nexthops == b.nexthops
}

fn next_order(model: &NetworkModel) -> usize {
    model.routes.iter().map(|r| r.order + 1).max().unwrap_or(0)
}

fn add_route(model: &mut NetworkModel, mut route: Route, replace: bool) {
    route.order = next_order(model);
    if replace && let Some(existing) = model.routes.iter_mut().find(|r| same_key(r, &route)) {
        route.order = existing.order;
        *existing = route;
        return;
    }
    if !model.routes.iter().any(|r| same_route(r, &route)) {
        model.routes.push(route);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{model_with_links, route};

    #[test]
    fn ordinary_routes_apply_and_defaults_are_reread() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let r = route("10.1.0.0/16", 2, None, 100, 254);
        let stale = apply(
            &mut model,
            Notification::RouteAdded {
                route: r.clone(),
                replace: false,
            },
        );
        assert!(!stale.any());
        assert_eq!(model.routes.len(), 1);
        // The same notification twice does not duplicate it.
        apply(
            &mut model,
            Notification::RouteAdded {
                route: r.clone(),
                replace: false,
            },
        );
        assert_eq!(model.routes.len(), 1);
        let stale = apply(&mut model, Notification::RouteRemoved(r));
        assert!(!stale.any());
        assert!(model.routes.is_empty());

        let default = route("0.0.0.0/0", 2, Some("10.0.1.1"), 1024, 254);
        let stale = apply(
            &mut model,
            Notification::RouteAdded {
                route: default,
                replace: false,
            },
        );
        assert!(stale.ipv4_routes && !stale.ipv6_routes);
    }

    #[test]
    fn link_removal_drops_addresses_and_rereads_routes() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        model.addresses.push(crate::model::Address {
            ifindex: 3,
            addr: "10.0.2.10/24".parse().unwrap(),
        });
        let link = model.links[&3].clone();
        let stale = apply(&mut model, Notification::LinkRemoved(link));
        assert!(model.addresses.is_empty());
        assert!(!model.links.contains_key(&3));
        assert!(stale.ipv4_routes && stale.ipv6_routes);
        assert_eq!(apply(&mut model, Notification::Overrun), Stale::ALL);
    }
}
