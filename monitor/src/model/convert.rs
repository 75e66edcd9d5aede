//! Conversion of rtnetlink messages into the model's types.
//!
//! Pure functions: each takes one decoded message and returns the model value, or
//! `None` for messages routemon does not model (other address families, MPLS
//! routes, …).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};

use super::{
    Address, Family, Link, LinkLayer, NextHop, NextHops, OperState, Route, RouteKind, Rule,
};

fn family(af: AddressFamily) -> Option<Family> {
    match af {
        AddressFamily::Inet => Some(Family::Ipv4),
        AddressFamily::Inet6 => Some(Family::Ipv6),
        _ => None,
    }
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Converts an `RTM_NEWLINK` message.
pub fn link(msg: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        link_layer: match msg.header.link_layer_type {
            LinkLayerType::Ether => LinkLayer::Ethernet,
            LinkLayerType::Loopback => LinkLayer::Loopback,
            LinkLayerType::None | LinkLayerType::Rawip => LinkLayer::None,
            other => LinkLayer::Other(u16::from(other)),
        },
        oper_state: OperState::Unknown,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
        mtu: None,
        lower: None,
        controller: None,
    };
    let mut link_netns = false;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::OperState(state) => {
                link.oper_state = match state {
                    State::Up => OperState::Up,
                    State::Down => OperState::Down,
                    State::LowerLayerDown => OperState::LowerLayerDown,
                    State::Unknown => OperState::Unknown,
                    _ => OperState::Other,
                }
            }
            LinkAttribute::Address(bytes) if !bytes.is_empty() => {
                link.mac = Some(format_mac(bytes))
            }
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            // A device's own index is what the kernel reports when it has no lower.
            LinkAttribute::Link(lower) if *lower != 0 && *lower != msg.header.index => {
                link.lower = Some(*lower)
            }
            LinkAttribute::LinkNetNsId(_) => link_netns = true,
            LinkAttribute::Controller(controller) if *controller != 0 => {
                link.controller = Some(*controller)
            }
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    // IFLA_LINK names a device of another namespace (a veth's peer), or a device
    // that is not stacked under this one (a veth's peer in the same namespace).
    if link_netns || !link.kind.as_deref().is_some_and(is_stacked_kind) {
        link.lower = None;
    }
    (!link.name.is_empty()).then_some(link)
}

/// Device kinds whose packets also cross their lower device (`IFLA_LINK`) on the
/// same CPU, in the same call: egress goes on to the lower's transmit, ingress
/// comes from the lower's receive.
pub fn is_stacked_kind(kind: &str) -> bool {
    matches!(kind, "macvlan" | "macvtap" | "ipvlan" | "ipvtap" | "vlan")
}

/// Converts an `RTM_NEWADDR` message.
///
/// For point-to-point IPv4 links `IFA_ADDRESS` is the peer, so `IFA_LOCAL` wins.
pub fn address(msg: &AddressMessage) -> Option<Address> {
    family(msg.header.family)?;
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let addr = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some(Address {
        ifindex: msg.header.index,
        addr,
    })
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn via_ip(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteVia::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_kind(kind: RouteType) -> RouteKind {
    match kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        _ => RouteKind::Other,
    }
}

/// Converts an `RTM_NEWROUTE` message; `order` is its position in the dump.
pub fn route(msg: &RouteMessage, order: usize) -> Option<Route> {
    let family = family(msg.header.address_family)?;
    let mut dst_addr = None;
    let mut table = u32::from(msg.header.table);
    let mut metric = 0;
    let mut pref_src = None;
    let mut single = NextHop {
        gateway: None,
        ifindex: None,
        hops: 0,
        flags: 0,
    };
    let mut realm = 0;
    let mut nexthop_id = None;
    let mut multipath = NextHops::new();
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(addr) => dst_addr = route_ip(addr),
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Priority(prio) => metric = *prio,
            RouteAttribute::PrefSource(addr) => pref_src = route_ip(addr),
            RouteAttribute::Gateway(addr) => single.gateway = route_ip(addr),
            RouteAttribute::Via(via) => single.gateway = via_ip(via),
            RouteAttribute::Oif(index) => single.ifindex = Some(*index),
            RouteAttribute::NhId(id) => nexthop_id = Some(*id),
            RouteAttribute::Realm(r) => {
                realm = (u32::from(r.source) << 16) | u32::from(r.destination)
            }
            RouteAttribute::MultiPath(hops) => {
                multipath = hops
                    .iter()
                    .map(|hop| NextHop {
                        gateway: hop.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(addr) => route_ip(addr),
                            RouteAttribute::Via(via) => via_ip(via),
                            _ => None,
                        }),
                        ifindex: (hop.interface_index != 0).then_some(hop.interface_index),
                        hops: hop.hops,
                        flags: hop.flags.bits(),
                    })
                    .collect();
            }
            _ => {}
        }
    }
    let dst_ip = dst_addr.unwrap_or(match family {
        Family::Ipv4 => IpAddr::from([0u8; 4]),
        Family::Ipv6 => IpAddr::from([0u8; 16]),
    });
    let dst = IpNet::new(dst_ip, msg.header.destination_prefix_length).ok()?;
    let is_multipath = !multipath.is_empty();
    let nexthops = if is_multipath {
        multipath
    } else if single.gateway.is_some() || single.ifindex.is_some() {
        smallvec::smallvec![single]
    } else {
        NextHops::new()
    };
    Some(Route {
        family,
        table,
        dst,
        nexthops,
        metric,
        protocol: u8::from(msg.header.protocol),
        scope: u8::from(msg.header.scope),
        kind: route_kind(msg.header.kind),
        pref_src,
        flags: msg.header.flags.bits(),
        realm,
        nexthop_id,
        multipath: is_multipath,
        order,
    })
}

/// Converts an `RTM_NEWRULE` message.
pub fn rule(msg: &RuleMessage) -> Option<Rule> {
    let family = family(msg.header.family)?;
    let mut rule = Rule {
        family,
        priority: 0,
        table: u32::from(msg.header.table),
        src: None,
        dst: None,
        iif: None,
        oif: None,
        fwmark: None,
        action: match msg.header.action {
            RuleAction::ToTable => "lookup".to_owned(),
            RuleAction::Goto => "goto".to_owned(),
            RuleAction::Nop => "nop".to_owned(),
            RuleAction::Blackhole => "blackhole".to_owned(),
            RuleAction::Unreachable => "unreachable".to_owned(),
            RuleAction::Prohibit => "prohibit".to_owned(),
            other => format!("{other:?}").to_lowercase(),
        },
    };
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Source(ip) => rule.src = IpNet::new(*ip, msg.header.src_len).ok(),
            RuleAttribute::Destination(ip) => rule.dst = IpNet::new(*ip, msg.header.dst_len).ok(),
            RuleAttribute::Iifname(name) => rule.iif = Some(name.clone()),
            RuleAttribute::Oifname(name) => rule.oif = Some(name.clone()),
            RuleAttribute::FwMark(mark) => rule.fwmark = Some(*mark),
            _ => {}
        }
    }
    Some(rule)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_route::{
        link::InfoKind,
        route::{RouteNextHop, RouteProtocol, RouteScope},
    };

    use super::*;

    fn v4_route(dst: Option<(Ipv4Addr, u8)>, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = 254;
        msg.header.protocol = RouteProtocol::Dhcp;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if let Some((addr, len)) = dst {
            msg.header.destination_prefix_length = len;
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(addr)));
        }
        msg.attributes.extend(attrs);
        msg
    }

    #[test]
    fn default_route_with_gateway_metric_and_table() {
        let msg = v4_route(
            None,
            vec![
                RouteAttribute::Table(254),
                RouteAttribute::Priority(1024),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 1, 1))),
                RouteAttribute::Oif(2),
                RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(10, 0, 1, 10))),
            ],
        );
        let route = route(&msg, 7).unwrap();
        assert_eq!(route.family, Family::Ipv4);
        assert_eq!(route.dst.to_string(), "0.0.0.0/0");
        assert!(route.is_default());
        assert!(route.forwards());
        assert_eq!(route.metric, 1024);
        assert_eq!(route.table, 254);
        assert_eq!(route.protocol, 16);
        assert_eq!(route.gateway(), Some("10.0.1.1".parse().unwrap()));
        assert_eq!(route.ifindexes().collect::<Vec<_>>(), vec![2]);
        assert_eq!(route.pref_src, Some("10.0.1.10".parse().unwrap()));
        assert_eq!(route.order, 7);
    }

    #[test]
    fn table_attribute_overrides_the_8_bit_header_field() {
        // Tables above 255 only fit in RTA_TABLE; the header then says 252 (RT_TABLE_COMPAT).
        let mut msg = v4_route(
            Some((Ipv4Addr::new(10, 0, 2, 0), 24)),
            vec![RouteAttribute::Table(10_001)],
        );
        msg.header.table = 252;
        assert_eq!(route(&msg, 0).unwrap().table, 10_001);
    }

    #[test]
    fn connected_route_without_gateway_has_metric_zero() {
        let msg = v4_route(
            Some((Ipv4Addr::new(10, 0, 1, 0), 24)),
            vec![RouteAttribute::Oif(3)],
        );
        let route = route(&msg, 0).unwrap();
        assert_eq!(route.dst.to_string(), "10.0.1.0/24");
        assert_eq!(route.metric, 0);
        assert_eq!(route.gateway(), None);
        assert!(!route.is_default());
    }

    #[test]
    fn multipath_route_lists_each_nexthop() {
        let hop = |ifindex, gw: Ipv4Addr| {
            let mut nh = RouteNextHop::default();
            nh.interface_index = ifindex;
            nh.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
            nh
        };
        let msg = v4_route(
            None,
            vec![RouteAttribute::MultiPath(vec![
                hop(2, Ipv4Addr::new(10, 0, 1, 1)),
                hop(3, Ipv4Addr::new(10, 0, 2, 1)),
            ])],
        );
        let route = route(&msg, 0).unwrap();
        assert_eq!(route.ifindexes().collect::<Vec<_>>(), vec![2, 3]);
        assert!(route.uses_ifindex(3));
        assert_eq!(route.nexthops[1].gateway, Some("10.0.2.1".parse().unwrap()));
    }

    #[test]
    fn ipv6_default_and_unreachable_routes() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.kind = RouteType::Unreachable;
        msg.attributes.push(RouteAttribute::Priority(4_278_198_272));
        let route = route(&msg, 0).unwrap();
        assert_eq!(route.family, Family::Ipv6);
        assert_eq!(route.dst.to_string(), "::/0");
        assert_eq!(route.kind, RouteKind::Unreachable);
        assert!(!route.forwards(), "an unreachable route carries no traffic");
    }

    #[test]
    fn non_ip_routes_are_skipped() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Mpls;
        assert!(route(&msg, 0).is_none());
    }

    #[test]
    fn link_fields() {
        let mut msg = LinkMessage::default();
        msg.header.index = 4;
        msg.header.link_layer_type = LinkLayerType::Ether;
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("ens6".into()),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Address(vec![0x02, 0, 0, 0, 0, 0x06]),
            LinkAttribute::Mtu(9001),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let link = link(&msg).unwrap();
        assert_eq!(link.name, "ens6");
        assert_eq!(link.index, 4);
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.oper_state, OperState::Up);
        assert!(link.admin_up);
        assert_eq!(link.mac.as_deref(), Some("02:00:00:00:00:06"));
        assert_eq!(link.mtu, Some(9001));
        assert!(!link.is_loopback());
    }

    #[test]
    fn stacking_comes_from_ifla_link_of_stacked_kinds_and_ifla_master() {
        let message = |kind: InfoKind, extra: Vec<LinkAttribute>| {
            let mut msg = LinkMessage::default();
            msg.header.index = 7;
            msg.attributes = vec![
                LinkAttribute::IfName("x".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]),
            ];
            msg.attributes.extend(extra);
            link(&msg).unwrap()
        };
        let macvlan = message(InfoKind::MacVlan, vec![LinkAttribute::Link(2)]);
        assert_eq!(macvlan.lower, Some(2));
        // A veth's IFLA_LINK is its peer, not a lower device.
        let veth = message(InfoKind::Veth, vec![LinkAttribute::Link(2)]);
        assert_eq!(veth.lower, None);
        // The lower of a device in another namespace is not one of ours.
        let moved = message(
            InfoKind::MacVlan,
            vec![LinkAttribute::Link(2), LinkAttribute::LinkNetNsId(1)],
        );
        assert_eq!(moved.lower, None);
        let port = message(InfoKind::Veth, vec![LinkAttribute::Controller(9)]);
        assert_eq!(port.controller, Some(9));
    }

    #[test]
    fn address_prefers_local_over_peer() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 24;
        msg.header.index = 2;
        msg.attributes = vec![
            AddressAttribute::Address("10.9.9.9".parse().unwrap()),
            AddressAttribute::Local("10.0.1.10".parse().unwrap()),
        ];
        let addr = address(&msg).unwrap();
        assert_eq!(addr.addr.to_string(), "10.0.1.10/24");
        assert_eq!(addr.ifindex, 2);
    }

    #[test]
    fn source_rule_with_table() {
        let mut msg = RuleMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.src_len = 32;
        msg.header.action = RuleAction::ToTable;
        msg.attributes = vec![
            RuleAttribute::Priority(32_765),
            RuleAttribute::Source("10.0.2.10".parse().unwrap()),
            RuleAttribute::Table(10_002),
        ];
        let rule = rule(&msg).unwrap();
        assert_eq!(rule.priority, 32_765);
        assert_eq!(rule.table, 10_002);
        assert_eq!(rule.src.unwrap().to_string(), "10.0.2.10/32");
        assert_eq!(rule.action, "lookup");
    }
}
