//! Keeping a [`NetworkModel`] current from kernel notifications.
//!
//! Most changes are applied one by one. Where a notification alone cannot say what
//! the kernel's state became, the affected part is re-read instead:
//! - default routes, whose order in the kernel's list decides equal-metric ties;
//! - IPv6 multipath routes, whose next hops the kernel adds and removes one by one;
//! - IPv6 routes after a link goes down or disappears;
//! - rules (few, and their order matters);
//! - the `rp_filter` modes after a link appears or is renamed (sysctls, which
//!   rtnetlink does not carry);
//! - everything after [`Notification::Overrun`].
//!
//! The kernel removes IPv4 routes without any notification when their device goes
//! down or loses its last IPv4 address, and routes of the main table whose
//! preferred source was a removed address (`fib_disable_ip` → `fib_sync_down_dev`,
//! `fib_sync_down_addr`, then `fib_flush`, net/ipv4/fib_frontend.c). It announces
//! the link or address change *before* it flushes (`dev_close_many` sends
//! `RTM_NEWLINK` before `NETDEV_DOWN`; `inet_del_ifa` sends `RTM_DELADDR` before
//! `inetaddr_chain`), and route dumps do not wait for the flush, so a re-read at
//! that moment can see half of it. Those routes are therefore removed here with
//! the kernel's rules, not re-read. The same holds for the IPv4 routes that use a
//! deleted nexthop object ([`super::nexthops`]).

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
    /// `rp_filter` modes.
    pub rp_filter: bool,
}

impl Stale {
    /// Everything: after lost notifications.
    pub const ALL: Self = Self {
        links: true,
        addresses: true,
        ipv4_routes: true,
        ipv6_routes: true,
        rules: true,
        rp_filter: true,
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
        self.rp_filter |= other.rp_filter;
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
                flush_ipv4_device(model, link.index, false);
                stale.ipv6_routes = true;
            }
            let named_anew = model
                .links
                .get(&link.index)
                .is_none_or(|old| old.name != link.name);
            stale.rp_filter |= named_anew;
            model.links.insert(link.index, link);
        }
        Notification::LinkRemoved(link) => {
            flush_ipv4_device(model, link.index, true);
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
            match address.addr.addr() {
                ip @ std::net::IpAddr::V4(_) => {
                    flush_ipv4_source(model, ip);
                    let last = !model
                        .addresses_of(address.ifindex)
                        .any(|a| a.addr.addr().is_ipv4());
                    if last {
                        flush_ipv4_device(model, address.ifindex, true);
                    }
                }
                std::net::IpAddr::V6(_) => stale.ipv6_routes = true,
            }
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
        Notification::NexthopRemoved(id) => {
            // `__remove_nexthop_fib`: the IPv4 routes go with `fib_flush`, silently;
            // the IPv6 ones are announced one by one.
            model
                .routes
                .retain(|r| r.family != Family::Ipv4 || r.nexthop_id != Some(id));
        }
        Notification::NexthopChanged(id) => {
            // A replaced object or a group that lost a member: the routes using
            // it now have other next hops. The change is complete when announced.
            for route in model.routes.iter().filter(|r| r.nexthop_id == Some(id)) {
                stale.routes(route.family);
            }
        }
        Notification::Overrun => stale = Stale::ALL,
    }
    stale
}

/// `fib_sync_down_dev` + `fib_flush`: every IPv4 route all of whose next hops leave
/// by `ifindex` goes (in every table; a multipath route with another live next hop
/// stays). Host-scope routes (the device's own addresses in table local) stay when
/// the device only goes down; they go too when it loses its last address or is
/// deleted (`force`: the kernel then matches every next-hop scope).
fn flush_ipv4_device(model: &mut NetworkModel, ifindex: u32, force: bool) {
    /// `RT_SCOPE_HOST`.
    const SCOPE_HOST: u8 = 254;
    model.routes.retain(|r| {
        r.family != Family::Ipv4
            || r.nexthops.is_empty()
            || (!force && r.scope == SCOPE_HOST)
            || !r.nexthops.iter().all(|nh| nh.ifindex == Some(ifindex))
    });
}

/// `fib_sync_down_addr` + `fib_flush`: main-table IPv4 routes whose preferred
/// source was `addr` go.
fn flush_ipv4_source(model: &mut NetworkModel, addr: std::net::IpAddr) {
    model.routes.retain(|r| {
        !(r.family == Family::Ipv4 && r.table == super::table::MAIN && r.pref_src == Some(addr))
    });
}

/// Re-reads the stale parts from the kernel.
pub async fn reread(
    netlink: &Netlink,
    model: &mut NetworkModel,
    stale: Stale,
) -> Result<(), DumpError> {
    if stale.links {
        model.links = netlink.links().await?;
    }
    if stale.links || stale.rp_filter {
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

    #[test]
    fn a_device_going_down_takes_its_ipv4_routes_like_the_kernel() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        let mut multipath = route("10.9.0.0/16", 3, Some("10.0.2.1"), 0, 254);
        multipath.nexthops.push(crate::model::NextHop {
            gateway: Some("10.0.1.1".parse().unwrap()),
            ifindex: Some(2),
            hops: 0,
            flags: 0,
        });
        multipath.multipath = true;
        let mut own = route("10.0.2.10/32", 3, None, 0, 255);
        own.scope = 254;
        for r in [
            own,
            route("0.0.0.0/0", 3, Some("10.0.2.1"), 1024, 254),
            route("10.8.0.0/16", 3, None, 0, 100),
            route("10.1.0.0/16", 2, None, 0, 254),
            route("::/0", 3, Some("fe80::1"), 1024, 254),
            multipath,
        ] {
            model.routes.push(r);
        }
        let mut down = model.links[&3].clone();
        down.admin_up = false;
        let stale = apply(&mut model, Notification::LinkChanged(down));
        let left: Vec<String> = model.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(
            left,
            ["10.0.2.10/32", "10.1.0.0/16", "::/0", "10.9.0.0/16"],
            "the address's own host route stays while the device is only down"
        );
        assert!(!stale.ipv4_routes, "not re-read: a dump can race the flush");
        assert!(stale.ipv6_routes);
    }

    #[test]
    fn an_ipv4_address_going_takes_the_routes_that_depended_on_it() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let address = |a: &str| crate::model::Address {
            ifindex: 2,
            addr: a.parse().unwrap(),
        };
        model.addresses = vec![address("10.0.1.10/24"), address("10.0.3.10/24")];
        let mut sourced = route("10.5.0.0/16", 2, Some("10.0.1.1"), 0, 254);
        sourced.pref_src = Some("10.0.1.10".parse().unwrap());
        model.routes = vec![sourced, route("10.6.0.0/16", 2, Some("10.0.1.1"), 0, 254)];
        apply(
            &mut model,
            Notification::AddressRemoved(address("10.0.1.10/24")),
        );
        let left: Vec<String> = model.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(left, ["10.6.0.0/16"], "the route sourced from it went");
        // The last IPv4 address: the device's IPv4 routes go.
        apply(
            &mut model,
            Notification::AddressRemoved(address("10.0.3.10/24")),
        );
        assert!(model.routes.is_empty());
    }

    #[test]
    fn a_deleted_nexthop_object_takes_its_ipv4_routes_like_the_kernel() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let with_id = |dst, id| {
            let mut r = route(dst, 2, Some("10.0.1.1"), 0, 254);
            r.nexthop_id = id;
            r
        };
        let mut ipv6 = route("fd00:1::/64", 2, None, 1024, 254);
        ipv6.nexthop_id = Some(7);
        crate::testutil::push_routes(
            &mut model,
            [
                with_id("10.7.0.0/16", Some(7)),
                with_id("10.8.0.0/16", Some(8)),
                with_id("10.9.0.0/16", None),
                ipv6.clone(),
            ],
        );
        let stale = apply(&mut model, Notification::NexthopRemoved(7));
        assert!(!stale.any());
        let left: Vec<_> = model.routes.iter().map(|r| r.dst.to_string()).collect();
        // The IPv6 route is announced by the kernel itself (RTM_DELROUTE).
        assert_eq!(left, ["10.8.0.0/16", "10.9.0.0/16", "fd00:1::/64"]);

        // A changed object: the routes that use it are re-read, in their family.
        assert_eq!(
            apply(&mut model, Notification::NexthopChanged(8)),
            Stale {
                ipv4_routes: true,
                ..Stale::default()
            }
        );
        assert!(!apply(&mut model, Notification::NexthopChanged(99)).any());
        assert!(apply(&mut model, Notification::NexthopChanged(7)).ipv6_routes);
    }

    #[test]
    fn a_new_or_renamed_link_makes_rp_filter_stale_and_a_state_change_does_not() {
        let mut model = model_with_links(&["lo", "ens5"]);
        let mut ens6 = model.links[&2].clone();
        ens6.index = 3;
        ens6.name = "ens6".to_owned();
        let appeared = apply(&mut model, Notification::LinkChanged(ens6.clone()));
        assert!(appeared.rp_filter, "a new link's rp_filter is read");
        ens6.mtu = Some(9001);
        let changed = apply(&mut model, Notification::LinkChanged(ens6.clone()));
        assert_eq!(changed, Stale::default());
        ens6.name = "eth1".to_owned();
        let renamed = apply(&mut model, Notification::LinkChanged(ens6));
        assert!(renamed.rp_filter, "the sysctl path follows the name");
    }
}
