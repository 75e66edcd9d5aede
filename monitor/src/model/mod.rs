//! The node's network state as routemon sees it: links, addresses, routes and
//! policy rules of the current network namespace.
//!
//! The types here are plain data, independent of netlink: [`convert`] turns rtnetlink
//! messages into them (pure, unit-tested) and [`dump`] fetches them from the kernel.

pub mod audit;
pub mod convert;
pub mod dump;
pub mod events;
pub mod live;
mod names;
pub mod nexthops;
pub mod sysctl;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

pub use names::{protocol_name, scope_name, table_name};

/// Routing table ids with a name in `/etc/iproute2/rt_tables`.
pub mod table {
    /// `main`: where DHCP and `ip route add` put routes.
    pub const MAIN: u32 = 254;
    /// `local`: local and broadcast addresses, maintained by the kernel.
    pub const LOCAL: u32 = 255;
    /// `default`: the empty table consulted last.
    pub const DEFAULT: u32 = 253;
}

/// Address family of an address, route or rule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Ipv4,
    /// IPv6 (`AF_INET6`).
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// The default-route prefix of this family (`0.0.0.0/0` or `::/0`).
    pub fn default_prefix(self) -> IpNet {
        match self {
            Self::Ipv4 => "0.0.0.0/0".parse().expect("valid literal"),
            Self::Ipv6 => "::/0".parse().expect("valid literal"),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        })
    }
}

/// How frames on a link begin, which decides where the IP header starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkLayer {
    /// Ethernet header (ENIs, veths, bridges, VLANs).
    Ethernet,
    /// Bare IP packets (tun, wireguard, ip tunnels).
    None,
    /// The loopback device.
    Loopback,
    /// Anything else (ARPHRD value).
    Other(u16),
}

/// Operational state (RFC 2863) as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    /// Up and passing traffic.
    Up,
    /// Down.
    Down,
    /// Down because a lower device is down (e.g. the veth peer).
    LowerLayerDown,
    /// Not reported by the driver (common for virtual devices that are up).
    Unknown,
    /// Dormant, testing or not present.
    Other,
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::LowerLayerDown => "lowerlayerdown",
            Self::Unknown => "unknown",
            Self::Other => "other",
        })
    }
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, …); `None` for physical devices.
    pub kind: Option<String>,
    /// Link-layer type.
    pub link_layer: LinkLayer,
    /// Operational state.
    pub oper_state: OperState,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// `IFLA_LINK` of a device stacked on another of this namespace (macvlan,
    /// ipvlan, VLAN): the device its packets also cross. `None` when the link is in
    /// another namespace (a veth's peer) or there is none.
    pub lower: Option<u32>,
    /// `IFLA_MASTER`: the bond, team, bridge or VRF this device is a port of.
    pub controller: Option<u32>,
}

impl Link {
    /// Whether this is the loopback device.
    pub fn is_loopback(&self) -> bool {
        self.link_layer == LinkLayer::Loopback
    }
}

/// An address assigned to an interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Interface index the address belongs to.
    pub ifindex: u32,
    /// The address with its prefix length, e.g. `10.0.1.10/24`.
    pub addr: IpNet,
}

/// A route's next hops, stored inline for the usual single hop (no allocation per
/// route in a table of a million).
pub type NextHops = smallvec::SmallVec<[NextHop; 1]>;

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Gateway, if the next hop is not directly connected.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub ifindex: Option<u32>,
    /// `rtnh_hops` of a multipath next hop: its weight minus one (0 for a single hop).
    pub hops: u8,
    /// `rtnh_flags` of a multipath next hop (`RTNH_F_*`; 0 for a single hop, whose
    /// flags are the route's [`Route::flags`]).
    pub flags: u8,
}

/// Route type (`RTN_*`), restricted to what matters for egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Ordinary route that forwards packets.
    Unicast,
    /// Local address (table `local`).
    Local,
    /// Broadcast address.
    Broadcast,
    /// Multicast route.
    Multicast,
    /// Drops silently.
    Blackhole,
    /// Drops with ICMP unreachable.
    Unreachable,
    /// Drops with ICMP prohibited.
    Prohibit,
    /// Anything else.
    Other,
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unicast => "unicast",
            Self::Local => "local",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::Blackhole => "blackhole",
            Self::Unreachable => "unreachable",
            Self::Prohibit => "prohibit",
            Self::Other => "other",
        })
    }
}

/// A route of any table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Address family.
    pub family: Family,
    /// Routing table id (`RTA_TABLE`, which also covers ids above 255).
    pub table: u32,
    /// Destination prefix; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    /// Next hops: one for an ordinary route, several for a multipath route, none for
    /// blackhole/unreachable routes.
    pub nexthops: NextHops,
    /// Metric (`RTA_PRIORITY`); 0 when absent. Lower is preferred.
    pub metric: u32,
    /// Who installed the route (`RTPROT_*`).
    pub protocol: u8,
    /// Route scope (`RT_SCOPE_*`).
    pub scope: u8,
    /// Route type.
    pub kind: RouteKind,
    /// Preferred source address (`src` in `ip route`).
    pub pref_src: Option<IpAddr>,
    /// `rtm_flags`: the next-hop flags of a single-hop route (`RTNH_F_ONLINK`,
    /// `RTNH_F_LINKDOWN`, …) and the message flags (`RTM_F_CLONED`, …).
    pub flags: u32,
    /// `RTA_FLOW`: the route's realms (destination in the low 16 bits), 0 when absent.
    pub realm: u32,
    /// The nexthop object the route uses (`RTA_NH_ID`, `ip route … nhid N`); the
    /// kernel also sends that object's next hops, which are in `nexthops`.
    pub nexthop_id: Option<u32>,
    /// Whether the kernel sent the next hops as `RTA_MULTIPATH`: an IPv4
    /// `nexthop … nexthop …` route, IPv6 routes the kernel merged, or a nexthop
    /// group. Such a route has no `RTA_OIF` of its own.
    pub multipath: bool,
    /// Position in the kernel's dump. Among routes of equal prefix and metric the
    /// kernel's IPv4 FIB uses the first one it lists.
    pub order: usize,
}

impl Route {
    /// Whether the route matches every destination of its family.
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    /// Whether the route carries traffic out of an interface (not a drop route).
    pub fn forwards(&self) -> bool {
        matches!(self.kind, RouteKind::Unicast)
            && self.nexthops.iter().any(|nh| nh.ifindex.is_some())
    }

    /// The output interfaces of the route, in next-hop order, without duplicates.
    pub fn ifindexes(&self) -> impl Iterator<Item = u32> + '_ {
        // No allocation: this runs for every route on every reconcile, and next-hop
        // lists are short, so the quadratic de-duplication costs nothing.
        self.nexthops.iter().enumerate().filter_map(|(i, nh)| {
            let ifindex = nh.ifindex?;
            let seen = self.nexthops[..i]
                .iter()
                .any(|p| p.ifindex == Some(ifindex));
            (!seen).then_some(ifindex)
        })
    }

    /// Whether one of the route's next hops leaves by `ifindex`.
    pub fn uses_ifindex(&self, ifindex: u32) -> bool {
        self.nexthops.iter().any(|nh| nh.ifindex == Some(ifindex))
    }

    /// `RTA_OIF` as a netlink library reads it: the single next hop's interface, 0
    /// for a multipath route or a route without an output device (an IPv4
    /// blackhole, unreachable or prohibit route).
    pub fn oif(&self) -> u32 {
        if self.multipath {
            0
        } else {
            self.nexthops.first().and_then(|nh| nh.ifindex).unwrap_or(0)
        }
    }

    /// Whether the route drops what it matches (blackhole, unreachable, prohibit).
    pub fn rejects(&self) -> bool {
        matches!(
            self.kind,
            RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit
        )
    }

    /// The first next hop's gateway.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.nexthops.first().and_then(|nh| nh.gateway)
    }
}

/// A policy routing rule (`ip rule`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Address family.
    pub family: Family,
    /// Rule priority; rules are evaluated in ascending order.
    pub priority: u32,
    /// Table looked up when the rule matches (0 for non-lookup actions).
    pub table: u32,
    /// `from` selector.
    pub src: Option<IpNet>,
    /// `to` selector.
    pub dst: Option<IpNet>,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `fwmark` selector.
    pub fwmark: Option<u32>,
    /// Action: `lookup`, `goto`, `blackhole`, …
    pub action: String,
}

/// Everything routemon knows about the namespace's networking at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkModel {
    /// Links by ifindex.
    pub links: BTreeMap<u32, Link>,
    /// Addresses of all links.
    pub addresses: Vec<Address>,
    /// Routes of all tables and both families, in dump order.
    pub routes: Vec<Route>,
    /// Policy rules of both families.
    pub rules: Vec<Rule>,
    /// Effective IPv4 reverse-path filter mode per ifindex: the larger of
    /// `net.ipv4.conf.all.rp_filter` and the interface's own (0 off, 1 strict,
    /// 2 loose). Missing when unreadable.
    pub rp_filter: BTreeMap<u32, u8>,
}

impl NetworkModel {
    /// The link with this name.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|link| link.name == name)
    }

    /// The name of the link with this index, or `if<N>` for an unknown one.
    pub fn link_name(&self, ifindex: u32) -> String {
        self.links
            .get(&ifindex)
            .map_or_else(|| format!("if{ifindex}"), |link| link.name.clone())
    }

    /// The names of the links a route leaves by, joined with `+` (`ens5+ens6` for
    /// a multipath route).
    pub fn route_devices(&self, route: &Route) -> String {
        route
            .ifindexes()
            .map(|i| self.link_name(i))
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Addresses of one link, in dump order.
    pub fn addresses_of(&self, ifindex: u32) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(move |a| a.ifindex == ifindex)
    }

    /// Every address of the links in `ifindexes`, with its owner.
    pub fn owned_addresses<'a>(
        &'a self,
        ifindexes: impl Fn(u32) -> bool + 'a,
    ) -> impl Iterator<Item = (IpAddr, u32)> + 'a {
        self.addresses
            .iter()
            .filter(move |a| ifindexes(a.ifindex))
            .map(|a| (a.addr.addr(), a.ifindex))
    }

    /// Default routes that forward traffic, of every table and family.
    pub fn default_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(|r| r.is_default() && r.forwards())
    }
}
