//! Cilium's default-route verdict against real routing states, and what the kernel
//! does with tied default routes.
//!
//! Each case builds a routing state in a fresh namespace with `ip route` (or, for
//! router-advertised routes, with real router advertisements), runs `routemon routes
//! --json` and checks the `cilium` entry of the family. Every expected verdict is
//! derived from Cilium's code; the `cite` of each case names the lines that decide
//! it. `L:` is `pkg/datapath/linux/route/route_linux.go` and `N:` the vendored
//! `github.com/vishvananda/netlink/route_linux.go`, both of cilium/cilium main at
//! 4df675e3 (1.21.0-dev), as listed in docs/design/cilium-verdict.md:
//! - L:525 `RouteListFiltered(family, &netlink.Route{Dst: nil}, RT_FILTER_DST)`;
//! - L:527 `sort.Slice(routes, … Priority …)` (insertion sort, stable, up to 12);
//! - L:530-531 `Default route not found for family %d`;
//! - L:532-533 `routes[0].Priority == routes[1].Priority` → `Found multiple default
//!   routes with the same priority: %v vs %v`;
//! - L:537 `return routes[0]`;
//! - L:574-575 `IPv4/IPv6 have different link indices` (guarded by `linkIndex != 0`);
//! - L:579-581 `netlink.LinkByIndex(linkIndex)` (index 0: the kernel's `EINVAL`);
//! - N:1291 cloned routes skipped; N:1295-1300 `msg.Table != RT_TABLE_MAIN` skipped
//!   (the 8-bit `rtm_table`); N:1328-1336 `RT_FILTER_DST`: exact /0; no type, link
//!   state or protocol filter; N:1412 `RTA_PRIORITY` (absent: 0); N:1424-1493
//!   `RTA_MULTIPATH` → `MultiPath`, `LinkIndex` 0.

use std::net::{Ipv6Addr, SocketAddrV6};

use routemon_testbed::{
    cmd::require_root,
    kernel::ifindex,
    netns::{NetNs, veth_pair},
    routemon::routes_json,
};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

routemon_testbed::new_machine_view!();

/// A node namespace with eth0, eth1 and eth2, each a veth to a peer namespace
/// where its gateway (10.0.N.1, fd0N::1) lives.
struct Node {
    node: NetNs,
    peer: NetNs,
}

impl Node {
    fn new() -> Self {
        let node = NetNs::new("cnode").unwrap();
        let peer = NetNs::new("cpeer").unwrap();
        for ns in [&node, &peer] {
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.router_solicitations=0",
            ])
            .unwrap();
        }
        for i in 0..3 {
            let (dev, peer_dev) = (format!("eth{i}"), format!("p{i}"));
            veth_pair(&node, &dev, &peer, &peer_dev).unwrap();
            node.ip(&["addr", "add", &format!("10.0.{i}.2/24"), "dev", &dev])
                .unwrap();
            node.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd0{i}::2/64"),
                "dev",
                &dev,
                "nodad",
            ])
            .unwrap();
            peer.ip(&["addr", "add", &format!("10.0.{i}.1/24"), "dev", &peer_dev])
                .unwrap();
            peer.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd0{i}::1/64"),
                "dev",
                &peer_dev,
                "nodad",
            ])
            .unwrap();
            node.ip(&["link", "set", &dev, "up"]).unwrap();
            peer.ip(&["link", "set", &peer_dev, "up"]).unwrap();
        }
        Self { node, peer }
    }

    fn ip(&self, command: &str) {
        let args: Vec<&str> = command.split_whitespace().collect();
        self.node
            .ip(&args)
            .unwrap_or_else(|err| panic!("ip {command}: {err:#}"));
    }

    fn index(&self, dev: &str) -> u64 {
        ifindex(&self.node, dev).unwrap()
    }

    /// Sends a router advertisement (router lifetime 1800 s) from the peer side of
    /// `dev` to all nodes, from the peer's link-local address.
    fn advertise_router(&self, peer_dev: &'static str) {
        let lladdr = link_local(&self.peer, peer_dev);
        let scope = u32::try_from(ifindex(&self.peer, peer_dev).unwrap()).unwrap();
        self.peer
            .run_in(move || {
                let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
                socket
                    .bind(&SocketAddrV6::new(lladdr, 0, 0, scope).into())
                    .unwrap();
                socket.set_multicast_hops_v6(255).unwrap();
                socket.set_multicast_if_v6(scope).unwrap();
                // Type 134, code 0, checksum (kernel), hop limit 64, flags 0,
                // router lifetime 1800, reachable time 0, retransmit timer 0.
                let ra = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
                let all_nodes = SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, scope);
                socket.send_to(&ra, &all_nodes.into()).unwrap();
            })
            .unwrap();
    }

    fn verdict(&self, family: &str) -> Value {
        let report = routes_json(&self.node, &["--cilium-family", "dual"]);
        report["cilium"]
            .as_array()
            .expect("cilium array")
            .iter()
            .find(|v| v["family"] == family)
            .unwrap_or_else(|| panic!("no {family} verdict in {report:#}"))
            .clone()
    }
}

fn link_local(ns: &NetNs, dev: &str) -> Ipv6Addr {
    let out = ns
        .ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"])
        .unwrap();
    let addr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on {dev}: {out}"));
    addr.split('/').next().unwrap().parse().unwrap()
}

/// How a case's state is built.
enum Build {
    /// `ip` commands in the node namespace.
    Ip(&'static [&'static str]),
    /// Router advertisements from the peers of these node interfaces.
    RouterAdvertisements(&'static [&'static str]),
    /// `ip` commands, then the peer of eth1 goes down (eth1 loses carrier).
    IpThenCarrierDownEth1(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    cite: &'static str,
    build: Build,
    family: &'static str,
    outcome: &'static str,
    device: Option<&'static str>,
    /// The exact error, with `{ethN}` replaced by that interface's index; `None` for
    /// no error.
    error: Option<&'static str>,
}

const TIE: &str = "Found multiple default routes with the same priority: ";
/// eth0's and eth1's gateway defaults at networkd's metric 1024.
const EQUAL_METRIC_ETH0_ETH1: &[&str] = &[
    "route add default via 10.0.0.1 dev eth0 metric 1024",
    "route append default via 10.0.1.1 dev eth1 metric 1024",
];
/// Cilium's error for eth0's and eth1's plain gateway defaults at one metric.
const TIE_ETH0_ETH1: &str = "Found multiple default routes with the same priority: \
     {Ifindex: {eth0} Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0} vs \
     {Ifindex: {eth1} Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.1.1 Flags: [] Table: 254 Realm: 0}";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "one default route",
            cite: "L:537, L:579",
            build: Build::Ip(&["route add default via 10.0.0.1 dev eth0"]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth0"),
            error: None,
        },
        Case {
            name: "distinct metrics: the lowest wins",
            cite: "L:527, L:537",
            build: Build::Ip(&[
                "route add default via 10.0.1.1 dev eth1 metric 200",
                "route add default via 10.0.0.1 dev eth0 metric 100",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth0"),
            error: None,
        },
        Case {
            name: "networkd's equal metric 1024 on two ENIs",
            cite: "L:532-533",
            build: Build::Ip(EQUAL_METRIC_ETH0_ETH1),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(TIE_ETH0_ETH1),
        },
        Case {
            name: "metric 0 and no metric are the same priority",
            cite: "N:1412 (absent RTA_PRIORITY is 0), L:532",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 metric 0",
                "route append default via 10.0.1.1 dev eth1",
            ]),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(TIE_ETH0_ETH1),
        },
        Case {
            name: "three routes with a unique best below a tie",
            cite: "L:527, L:532 (only [0] vs [1])",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 metric 100",
                "route append default via 10.0.1.1 dev eth1 metric 100",
                "route add default via 10.0.2.1 dev eth2 metric 50",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth2"),
            error: None,
        },
        Case {
            name: "a tie above the unique best is ignored",
            cite: "L:532 (only [0] vs [1])",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 metric 100",
                "route add default via 10.0.1.1 dev eth1 metric 200",
                "route append default via 10.0.2.1 dev eth2 metric 200",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth0"),
            error: None,
        },
        Case {
            name: "blackhole at the metric of a real default",
            cite: "N: no RT_FILTER_TYPE, L:532-533",
            build: Build::Ip(&[
                "route add blackhole default metric 100",
                "route append default via 10.0.0.1 dev eth0 metric 100",
            ]),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(
                "Found multiple default routes with the same priority: \
                 {Ifindex: 0 Dst: 0.0.0.0/0 Src: <nil> Gw: <nil> Flags: [] Table: 254 Realm: 0} vs \
                 {Ifindex: {eth0} Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0}",
            ),
        },
        Case {
            name: "unreachable default as the unique best (IPv4: no link)",
            cite: "L:537, L:579-581 (LinkByIndex(0))",
            build: Build::Ip(&[
                "route add unreachable default metric 50",
                "route add default via 10.0.0.1 dev eth0 metric 100",
            ]),
            family: "ipv4",
            outcome: "reject_default",
            device: None,
            error: Some("invalid argument"),
        },
        Case {
            name: "IPv6 blackhole as the unique best (the kernel gives it lo)",
            cite: "L:537, L:579",
            build: Build::Ip(&[
                "-6 route add blackhole default metric 100",
                "-6 route add default via fe80::1 dev eth0 metric 1024",
            ]),
            family: "ipv6",
            outcome: "reject_default",
            device: Some("lo"),
            error: None,
        },
        Case {
            name: "IPv4 multipath default: one route, link index 0",
            cite: "N:1424-1493, L:537, L:579-581",
            build: Build::Ip(&[
                "route add default nexthop via 10.0.0.1 dev eth0 nexthop via 10.0.1.1 dev eth1",
            ]),
            family: "ipv4",
            outcome: "multipath_default",
            device: None,
            error: Some("invalid argument"),
        },
        Case {
            name: "multipath behind a better single route",
            cite: "L:527, L:537",
            build: Build::Ip(&[
                "route add default metric 200 nexthop via 10.0.0.1 dev eth0 nexthop via 10.0.1.1 dev eth1",
                "route add default via 10.0.2.1 dev eth2 metric 100",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth2"),
            error: None,
        },
        Case {
            name: "IPv6 gateway routes at one metric: the kernel merges them",
            cite: "kernel rt6_qualify_for_ecmp + N:1424, L:537, L:579-581",
            build: Build::Ip(&[
                "-6 route add default via fe80::1 dev eth0",
                "-6 route append default via fe80::2 dev eth1",
            ]),
            family: "ipv6",
            outcome: "multipath_default",
            device: None,
            error: Some("invalid argument"),
        },
        Case {
            name: "IPv6 defaults learned from router advertisements stay separate",
            cite: "kernel rt6_qualify_for_ecmp (RTF_ADDRCONF), L:532-533",
            build: Build::RouterAdvertisements(&["p0", "p1"]),
            family: "ipv6",
            outcome: "tie",
            device: None,
            error: Some(TIE),
        },
        Case {
            name: "IPv6 defaults through nexthop objects stay separate",
            cite: "kernel rt6_qualify_for_ecmp (f6i->nh), L:532-533",
            build: Build::Ip(&[
                "nexthop add id 1 via fe80::1 dev eth0",
                "nexthop add id 2 via fe80::2 dev eth1",
                "-6 route add default nhid 1",
                "-6 route append default nhid 2",
            ]),
            family: "ipv6",
            outcome: "tie",
            device: None,
            error: Some(
                "Found multiple default routes with the same priority: \
                 {Ifindex: {eth0} Dst: ::/0 Src: <nil> Gw: fe80::1 Flags: [] Table: 254 Realm: 0} vs \
                 {Ifindex: {eth1} Dst: ::/0 Src: <nil> Gw: fe80::2 Flags: [] Table: 254 Realm: 0}",
            ),
        },
        Case {
            name: "IPv6 metric 0 is stored as 1024; device-only routes stay separate",
            cite: "kernel (fc_metric 0 → IP6_RT_PRIO_USER), L:532-533",
            build: Build::Ip(&[
                "-6 route add default dev eth0 metric 0",
                "-6 route append default dev eth1",
            ]),
            family: "ipv6",
            outcome: "tie",
            device: None,
            error: Some(
                "Found multiple default routes with the same priority: \
                 {Ifindex: {eth0} Dst: ::/0 Src: <nil> Gw: <nil> Flags: [] Table: 254 Realm: 0} vs \
                 {Ifindex: {eth1} Dst: ::/0 Src: <nil> Gw: <nil> Flags: [] Table: 254 Realm: 0}",
            ),
        },
        Case {
            name: "a device-only IPv4 default",
            cite: "L:537, L:579",
            build: Build::Ip(&["route add default dev eth1"]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth1"),
            error: None,
        },
        Case {
            name: "onlink gateway: printed in Flags",
            cite: "N: testFlags (onlink), L:532-533",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 metric 1024",
                "route append default via 192.0.2.1 dev eth1 onlink metric 1024",
            ]),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(
                "Found multiple default routes with the same priority: \
                 {Ifindex: {eth0} Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0} vs \
                 {Ifindex: {eth1} Dst: 0.0.0.0/0 Src: <nil> Gw: 192.0.2.1 Flags: [onlink] Table: 254 Realm: 0}",
            ),
        },
        Case {
            name: "src is printed, not compared",
            cite: "deserializeRoute RTA_PREFSRC → Src, L:532-533",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 src 10.0.0.2 metric 1024",
                "route append default via 10.0.1.1 dev eth1 metric 1024",
            ]),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(
                "Found multiple default routes with the same priority: \
                 {Ifindex: {eth0} Dst: 0.0.0.0/0 Src: 10.0.0.2 Gw: 10.0.0.1 Flags: [] Table: 254 Realm: 0} vs \
                 {Ifindex: {eth1} Dst: 0.0.0.0/0 Src: <nil> Gw: 10.0.1.1 Flags: [] Table: 254 Realm: 0}",
            ),
        },
        Case {
            name: "a tie in a table above 255 is invisible",
            cite: "N:1295-1300 (rtm_table is 252 for table 1000)",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0",
                "route add default via 10.0.1.1 dev eth1 table 1000",
                "route append default via 10.0.2.1 dev eth2 table 1000",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth0"),
            error: None,
        },
        Case {
            name: "defaults only in other tables",
            cite: "N:1295-1300, L:530-531",
            build: Build::Ip(&[
                "route add default via 10.0.1.1 dev eth1 table 100",
                "route add default via 10.0.2.1 dev eth2 table 1000",
            ]),
            family: "ipv4",
            outcome: "no_default_route",
            device: None,
            error: Some("Default route not found for family 2"),
        },
        Case {
            name: "no IPv6 default route",
            cite: "L:530-531",
            build: Build::Ip(&["route add default via 10.0.0.1 dev eth0"]),
            family: "ipv6",
            outcome: "no_default_route",
            device: None,
            error: Some("Default route not found for family 10"),
        },
        Case {
            name: "linkdown (carrier lost) keeps the route in the tie",
            cite: "N: no link-state filter, L:532-533",
            build: Build::IpThenCarrierDownEth1(EQUAL_METRIC_ETH0_ETH1),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(TIE_ETH0_ETH1),
        },
        Case {
            name: "admin down: the kernel removes the route, no tie",
            cite: "kernel fib_sync_down_dev, L:537",
            build: Build::Ip(&[
                "route add default via 10.0.0.1 dev eth0 metric 1024",
                "route append default via 10.0.1.1 dev eth1 metric 1024",
                "link set eth1 down",
            ]),
            family: "ipv4",
            outcome: "ok",
            device: Some("eth0"),
            error: None,
        },
        Case {
            name: "IPv4 nexthop objects at one metric",
            cite: "nexthop_compat_mode=1 sends RTA_OIF/RTA_GATEWAY, L:532-533",
            build: Build::Ip(&[
                "nexthop add id 11 via 10.0.0.1 dev eth0",
                "nexthop add id 12 via 10.0.1.1 dev eth1",
                "route add default nhid 11 metric 10",
                "route append default nhid 12 metric 10",
            ]),
            family: "ipv4",
            outcome: "tie",
            device: None,
            error: Some(TIE),
        },
    ]
}

fn expected_error(node: &Node, template: &str) -> String {
    let mut text = template.to_owned();
    for dev in ["eth0", "eth1", "eth2"] {
        text = text.replace(&format!("{{{dev}}}"), &node.index(dev).to_string());
    }
    text
}

#[test]
fn verdicts_match_cilium_on_real_routing_states() {
    require_root();
    let mut failures = Vec::new();
    for case in cases() {
        let node = Node::new();
        match &case.build {
            Build::Ip(commands) => commands.iter().for_each(|c| node.ip(c)),
            Build::IpThenCarrierDownEth1(commands) => {
                commands.iter().for_each(|c| node.ip(c));
                node.peer.ip(&["link", "set", "p1", "down"]).unwrap();
                let mut routes = String::new();
                for _ in 0..50 {
                    routes = node.node.ip(&["route", "show", "default"]).unwrap();
                    if routes.contains("linkdown") {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                assert!(routes.contains("linkdown"), "eth1 lost carrier: {routes}");
            }
            Build::RouterAdvertisements(peers) => {
                for peer in *peers {
                    node.advertise_router(peer);
                }
                let mut routes = String::new();
                for _ in 0..50 {
                    routes = node.node.ip(&["-6", "route", "show", "default"]).unwrap();
                    if routes.matches("proto ra").count() == peers.len() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                assert_eq!(
                    routes.matches("proto ra").count(),
                    peers.len(),
                    "the kernel did not learn one default route per router: {routes}"
                );
                assert!(
                    !routes.contains("nexthop"),
                    "RA routes are not merged: {routes}"
                );
            }
        }
        let verdict = node.verdict(case.family);
        let error = verdict["error"].as_str();
        let error_ok = match case.error {
            None => error.is_none(),
            Some(TIE) => error.is_some_and(|e| e.starts_with(TIE) && e.contains(" vs {")),
            Some(template) => error == Some(expected_error(&node, template).as_str()),
        };
        if verdict["outcome"] != case.outcome
            || verdict["device"].as_str() != case.device
            || !error_ok
        {
            failures.push(format!(
                "{} ({}): expected {} device {:?} error {:?}, got {verdict}\n{}",
                case.name,
                case.cite,
                case.outcome,
                case.device,
                case.error,
                node.node
                    .ip(&["-d", "route", "show", "table", "all"])
                    .unwrap_or_default()
                    + &node
                        .node
                        .ip(&["-6", "-d", "route", "show"])
                        .unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `LinkByIndex(0)` sends `RTM_GETLINK` with index 0 and no name; the kernel's
/// `rtnl_getlink` answers `EINVAL`, which Go prints as "invalid argument" — the
/// text routemon reports for a multipath or IPv4 reject default.
#[test]
fn the_kernel_refuses_link_index_zero_with_einval() {
    require_root();
    let node = NetNs::new("cgetlink").unwrap();
    let script = r#"
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
msg = struct.pack("=IHHII", 16 + len(ifinfo), 18, 0x1 | 0x4, 1, 0) + ifinfo  # RTM_GETLINK, REQUEST|ACK
s.send(msg)
reply = s.recv(65536)
length, kind = struct.unpack("=IH", reply[:6])
assert kind == 2, kind  # NLMSG_ERROR
(error,) = struct.unpack("=i", reply[16:20])
print(error)
"#;
    let out = node.exec("python3", &["-c", script]).unwrap();
    assert_eq!(out.trim(), (-libc::EINVAL).to_string());
    assert_eq!(
        std::io::Error::from_raw_os_error(libc::EINVAL)
            .to_string()
            .to_lowercase()
            .split(" (os error")
            .next()
            .unwrap(),
        "invalid argument"
    );
}

/// With `--cilium-family dual`, different IPv4 and IPv6 links are their own
/// finding; a multipath IPv4 default (link 0) skips the comparison (L:574).
#[test]
fn dual_stack_links_are_a_finding_only_with_dual() {
    require_root();
    let node = Node::new();
    node.ip("route add default via 10.0.0.1 dev eth0");
    node.ip("-6 route add default via fe80::2 dev eth1");
    let kinds = |args: &[&str]| -> Vec<String> {
        routemon_testbed::routemon::finding_kinds(&routes_json(&node.node, args))
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let dual = kinds(&["--cilium-family", "dual"]);
    assert!(
        dual.contains(&"cilium_dual_stack_links".to_owned()),
        "{dual:?}"
    );
    assert!(!kinds(&[]).contains(&"cilium_dual_stack_links".to_owned()));
    assert!(!kinds(&["--cilium-family", "ipv6"]).contains(&"cilium_dual_stack_links".to_owned()));

    let node = Node::new();
    node.ip("route add default nexthop via 10.0.0.1 dev eth0 nexthop via 10.0.1.1 dev eth1");
    node.ip("-6 route add default via fe80::2 dev eth1");
    let report = routes_json(&node.node, &["--cilium-family", "dual"]);
    let kinds = routemon_testbed::routemon::finding_kinds(&report);
    assert!(!kinds.contains(&"cilium_dual_stack_links"), "{report:#}");
    assert!(
        kinds.contains(&"cilium_default_route"),
        "the IPv4 multipath warning"
    );
}

/// Findings are raised only for the families Cilium uses; the verdict of both is
/// always reported.
#[test]
fn findings_follow_cilium_family_and_the_verdict_is_always_reported() {
    require_root();
    let node = Node::new();
    node.ip("route add default via 10.0.0.1 dev eth0 metric 1024");
    node.ip("route append default via 10.0.1.1 dev eth1 metric 1024");
    node.ip("-6 route add default via fe80::1 dev eth0");
    let cilium_findings = |args: &[&str]| -> Vec<(String, String)> {
        let report = routes_json(&node.node, args);
        assert_eq!(report["cilium"].as_array().unwrap().len(), 2, "{report:#}");
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "cilium_default_route")
            .map(|f| {
                (
                    f["family"].as_str().unwrap().to_owned(),
                    f["severity"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        cilium_findings(&[]),
        [("ipv4".to_owned(), "critical".to_owned())]
    );
    assert!(cilium_findings(&["--cilium-family", "ipv6"]).is_empty());
    let text = routemon_testbed::routemon::run(Some(&node.node), &["routes"])
        .unwrap()
        .success()
        .stdout;
    assert!(text.contains("CILIUM"), "{text}");
    assert!(text.contains("Found multiple default routes with the same priority"));
}

/// What docs/findings.md and the `equal_metric_default_routes` message say the kernel
/// does with tied IPv4 defaults (net/ipv4/fib_semantics.c `fib_select_default`,
/// called from `fib_select_path` for output lookups only): the node's own traffic
/// stays on the first route while its gateway's neighbour entry is reachable,
/// rotates per lookup while entries are only valid (stale, permanent), and skips a
/// failed gateway; forwarded traffic takes the first route of the list.
#[test]
fn tied_ipv4_defaults_follow_neighbour_state_for_the_nodes_own_traffic_only() {
    require_root();
    let node = Node::new();
    node.node.sysctl(&["net.ipv4.ip_forward=1"]).unwrap();
    node.ip("route add default via 10.0.0.1 dev eth0 metric 1024");
    node.ip("route append default via 10.0.1.1 dev eth1 metric 1024");
    let local = || node.node.ip(&["route", "get", "198.51.100.1"]).unwrap();
    let forwarded = || {
        node.node
            .ip(&[
                "route",
                "get",
                "198.51.100.1",
                "from",
                "10.0.2.9",
                "iif",
                "eth2",
            ])
            .unwrap()
    };
    assert!(local().contains("dev eth0"), "{}", local());
    assert!(forwarded().contains("dev eth0"), "{}", forwarded());

    // Both gateways' entries only valid (permanent here; stale behaves the same):
    // the node's own lookups rotate between the routes, forwarded ones do not.
    node.ip("neigh replace 10.0.0.1 dev eth0 lladdr 02:00:00:00:00:01 nud permanent");
    node.ip("neigh replace 10.0.1.1 dev eth1 lladdr 02:00:00:00:00:02 nud permanent");
    let devices: Vec<bool> = (0..4).map(|_| local().contains("dev eth0")).collect();
    assert!(
        devices.windows(2).all(|w| w[0] != w[1]),
        "alternates per lookup: {devices:?}"
    );
    assert!(forwarded().contains("dev eth0"), "{}", forwarded());
    // Reachable: the first route keeps it.
    node.ip("neigh replace 10.0.0.1 dev eth0 lladdr 02:00:00:00:00:01 nud reachable");
    node.ip("neigh replace 10.0.1.1 dev eth1 lladdr 02:00:00:00:00:02 nud reachable");
    for _ in 0..3 {
        assert!(local().contains("dev eth0"), "{}", local());
    }

    // eth0's gateway fails: the node's own traffic moves to eth1, forwarded traffic
    // does not.
    node.ip("neigh replace 10.0.0.1 dev eth0 lladdr 02:00:00:00:00:01 nud failed");
    assert!(local().contains("dev eth1"), "{}", local());
    assert!(forwarded().contains("dev eth0"), "{}", forwarded());

    // A route prepended (no NLM_F_APPEND) goes first in the list: forwarded traffic
    // follows it.
    node.ip("route prepend default via 10.0.2.1 dev eth2 metric 1024");
    assert!(forwarded().contains("dev eth2"), "{}", forwarded());
    node.ip("route del default via 10.0.2.1 dev eth2 metric 1024");

    // The first of the list is what `routes --json` reports first in the tie.
    let report = routes_json(&node.node, &[]);
    let tie = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "equal_metric_default_routes")
        .unwrap();
    assert_eq!(tie["interfaces"][0], "eth0");
    assert!(
        tie["message"]
            .as_str()
            .unwrap()
            .contains("fib_select_default"),
        "{tie:#}"
    );
}
