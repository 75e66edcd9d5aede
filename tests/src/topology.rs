//! A static multi-uplink node: a `node` namespace with veth uplinks (named like
//! ENIs) to a `router` namespace that plays the VPC router and holds an
//! "internet" address.
//!
//! Uplink `n` (1-based) gets `10.0.n.10/24` with gateway `10.0.n.1`, and with IPv6
//! `fd00:n::10/64` with gateway `fd00:n::1`. The node is made quiet so that its
//! interfaces send nothing but the test's traffic: no IPv6 autoconfiguration,
//! router solicitations or DAD, and permanent neighbour entries for the gateways
//! (no ARP or neighbour discovery).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};

use crate::netns::NetNs;

/// The "internet" host in the router namespace (TEST-NET-2).
pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The IPv6 "internet" host in the router namespace (documentation prefix).
pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10);

/// One uplink to create.
#[derive(Clone, Debug)]
pub struct UplinkSpec {
    /// Interface name inside the node (`ens5`, `enp39s0`, `eth1`).
    pub name: String,
    /// Metric of its IPv4 default route; `None` for no default route.
    pub metric: Option<u32>,
    /// Metric of its IPv6 default route, when the testbed has IPv6.
    pub metric6: Option<u32>,
}

impl UplinkSpec {
    /// An uplink with a default route of `metric` in both families.
    pub fn new(name: &str, metric: u32) -> Self {
        Self {
            name: name.to_owned(),
            metric: Some(metric),
            metric6: Some(metric),
        }
    }
}

/// An uplink as created.
#[derive(Clone, Debug)]
pub struct Uplink {
    /// Interface name inside the node.
    pub name: String,
    /// Its peer's name inside the router.
    pub router_side: String,
    /// Node address.
    pub addr4: Ipv4Addr,
    /// Gateway address.
    pub gw4: Ipv4Addr,
    /// Node IPv6 address (when enabled).
    pub addr6: Ipv6Addr,
    /// IPv6 gateway.
    pub gw6: Ipv6Addr,
}

impl Uplink {
    /// The node address of `family` (IPv4 when `v6` is false).
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.addr6.into()
        } else {
            self.addr4.into()
        }
    }
}

/// The router and node namespaces with their uplinks. Dropping it deletes both
/// namespaces and every interface in them.
#[derive(Debug)]
pub struct Testbed {
    /// Uplinks in creation (ifindex) order.
    pub uplinks: Vec<Uplink>,
    /// Whether IPv6 is configured.
    pub ipv6: bool,
    /// The node namespace.
    pub node: NetNs,
    /// The router namespace.
    pub router: NetNs,
}

const QUIET_NODE_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.default.addr_gen_mode=1",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.dad_transmits=0",
];

impl Testbed {
    /// Builds the testbed. Default routes are appended in `uplinks` order, so with
    /// equal metrics the first uplink's route is the one the kernel lists first.
    pub fn new(uplinks: &[UplinkSpec], ipv6: bool) -> Result<Self> {
        crate::netns::cleanup_stale();
        let router = NetNs::new("r")?;
        let node = NetNs::new("n")?;
        let mut bed = Self {
            uplinks: Vec::new(),
            ipv6,
            node,
            router,
        };
        bed.node.sysctl(QUIET_NODE_SYSCTLS)?;
        if !ipv6 {
            bed.node.sysctl(&["net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        bed.router.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        bed.router
            .ip(&["addr", "add", &format!("{INTERNET_V4}/32"), "dev", "lo"])?;
        if ipv6 {
            bed.router
                .ip(&["addr", "add", &format!("{INTERNET_V6}/128"), "dev", "lo"])?;
        }
        for spec in uplinks {
            bed.add_uplink(spec)?;
        }
        Ok(bed)
    }

    /// The EKS shape: uplinks `ens5` and `ens6` with IPv4 default routes of the given
    /// metrics (IPv6 off).
    pub fn ens5_ens6(metric5: u32, metric6: u32) -> Result<Self> {
        Self::new(
            &[
                UplinkSpec::new("ens5", metric5),
                UplinkSpec::new("ens6", metric6),
            ],
            false,
        )
    }

    /// Attaches one more uplink (as Cilium attaches a secondary ENI): veth pair,
    /// addresses, neighbours and, if the spec has metrics, default routes.
    pub fn add_uplink(&mut self, spec: &UplinkSpec) -> Result<()> {
        let n = u8::try_from(self.uplinks.len() + 1).context("at most 254 uplinks")?;
        let uplink = self.plumb_uplink(n, spec)?;
        self.uplinks.push(uplink);
        Ok(())
    }

    /// Deletes uplink `spec.name` and creates it again with the same addresses and
    /// neighbours and the spec's default routes, under a new ifindex: an ENI
    /// detached and attached again.
    pub fn recreate_uplink(&mut self, spec: &UplinkSpec) -> Result<()> {
        let position = self
            .uplinks
            .iter()
            .position(|u| u.name == spec.name)
            .with_context(|| format!("no uplink {}", spec.name))?;
        self.node.ip(&["link", "del", &spec.name])?;
        let n = u8::try_from(position + 1).context("at most 254 uplinks")?;
        self.uplinks[position] = self.plumb_uplink(n, spec)?;
        Ok(())
    }

    /// Creates uplink number `n` (veth pair, addresses, neighbours, default routes).
    fn plumb_uplink(&self, n: u8, spec: &UplinkSpec) -> Result<Uplink> {
        let router_side = format!("gw{n}");
        let uplink = Uplink {
            name: spec.name.clone(),
            router_side: router_side.clone(),
            addr4: Ipv4Addr::new(10, 0, n, 10),
            gw4: Ipv4Addr::new(10, 0, n, 1),
            addr6: Ipv6Addr::new(0xfd00, u16::from(n), 0, 0, 0, 0, 0, 0x10),
            gw6: Ipv6Addr::new(0xfd00, u16::from(n), 0, 0, 0, 0, 0, 1),
        };
        crate::netns::veth_pair(&self.node, &spec.name, &self.router, &router_side)?;
        let (router, node) = (&self.router, &self.node);
        router.ip(&[
            "addr",
            "add",
            &format!("{}/24", uplink.gw4),
            "dev",
            &router_side,
        ])?;
        node.ip(&[
            "addr",
            "add",
            &format!("{}/24", uplink.addr4),
            "dev",
            &spec.name,
        ])?;
        if self.ipv6 {
            router.ip(&[
                "addr",
                "add",
                &format!("{}/64", uplink.gw6),
                "dev",
                &router_side,
                "nodad",
            ])?;
            node.ip(&[
                "addr",
                "add",
                &format!("{}/64", uplink.addr6),
                "dev",
                &spec.name,
                "nodad",
            ])?;
        }
        router.ip(&["link", "set", &router_side, "up"])?;
        node.ip(&["link", "set", &spec.name, "up"])?;

        // Permanent neighbours: no ARP or ND on the wire while tests count packets.
        let router_mac = link_mac(router, &router_side)?;
        let node_mac = link_mac(node, &spec.name)?;
        permanent_neighbour(node, uplink.gw4.into(), &router_mac, &spec.name)?;
        permanent_neighbour(router, uplink.addr4.into(), &node_mac, &router_side)?;
        if self.ipv6 {
            permanent_neighbour(node, uplink.gw6.into(), &router_mac, &spec.name)?;
            permanent_neighbour(router, uplink.addr6.into(), &node_mac, &router_side)?;
        }

        if let Some(metric) = spec.metric {
            self.set_default(&spec.name, &uplink.gw4.to_string(), metric)?;
        }
        if let (true, Some(metric)) = (self.ipv6, spec.metric6) {
            self.set_default(&spec.name, &uplink.gw6.to_string(), metric)?;
        }
        Ok(uplink)
    }

    /// Runs `ip route <verb> default via <gateway> dev <dev> metric <metric> <extra…>`
    /// in the node, in the gateway's family.
    fn default_route(
        &self,
        verb: &str,
        dev: &str,
        gateway: &str,
        metric: u32,
        extra: &[&str],
    ) -> Result<()> {
        let family = if gateway.contains(':') { "-6" } else { "-4" };
        let metric = metric.to_string();
        let mut args = vec![family, "route", verb, "default", "via", gateway, "dev", dev];
        args.extend(["metric", metric.as_str()]);
        args.extend_from_slice(extra);
        self.node.ip(&args).map(drop)
    }

    /// Appends a default route via `gateway` on `dev` with `metric`, marked as
    /// installed by DHCP like networkd's.
    pub fn set_default(&self, dev: &str, gateway: &str, metric: u32) -> Result<()> {
        self.default_route("append", dev, gateway, metric, &["proto", "dhcp"])
    }

    /// Deletes the default route via `gateway` on `dev` with `metric`.
    pub fn delete_default(&self, dev: &str, gateway: &str, metric: u32) -> Result<()> {
        self.default_route("del", dev, gateway, metric, &[])
    }

    /// The uplink named `name`.
    pub fn uplink(&self, name: &str) -> &Uplink {
        self.uplinks
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no uplink {name}"))
    }
}

fn permanent_neighbour(ns: &NetNs, addr: IpAddr, mac: &str, dev: &str) -> Result<()> {
    let addr = addr.to_string();
    ns.ip(&[
        "neigh",
        "replace",
        &addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])
    .map(drop)
}

fn link_mac(ns: &NetNs, dev: &str) -> Result<String> {
    let json = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let value: serde_json::Value = serde_json::from_str(&json)?;
    value[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {dev}"))
}
