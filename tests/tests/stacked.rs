//! Stacked devices: a packet that crosses an upper device and its lower one (a
//! macvlan and its parent, a bond and its port) is counted on each device's own
//! counters, but as a flow and to a route once, on the upper, and never makes a
//! finding out of the hop between the two.

use std::net::{IpAddr, Ipv4Addr};

use routemon_testbed::{
    cmd::require_root,
    kernel::{self, LinkStats},
    netns::{NetNs, veth_pair},
    routemon::{Running, interface, main_route as route},
    traffic::{UdpBurst, send_udp, spawn_udp_echo},
};
use serde_json::Value;

routemon_testbed::new_machine_view!();

/// Outside the node, behind both default routes.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Fewer than fit in the echo socket's default receive buffer (about 270 such
/// datagrams), so a slow echo thread on a loaded machine loses none.
const ECHOES: usize = 200;

/// Every flow of the report, with the interface it is listed under.
fn flows(report: &Value) -> Vec<(String, Value)> {
    report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|iface| {
            let name = iface["name"].as_str().unwrap_or_default().to_owned();
            iface["top_flows"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |flow| (name.clone(), flow))
        })
        .collect()
}

fn findings_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// `count` datagrams of 64 bytes to `dst` (port 9), by `device` if given.
fn datagrams(dst: Ipv4Addr, device: Option<&str>, count: usize) -> UdpBurst {
    UdpBurst {
        dst: dst.into(),
        device: device.map(str::to_owned),
        src: None,
        count,
        payload: 64,
    }
}

/// Checks one device's counters against the kernel's own.
fn assert_counts_match_kernel(report: &Value, name: &str, delta: LinkStats) {
    let iface = interface(report, name);
    assert_eq!(
        iface["egress_packets"], delta.tx_packets,
        "{name}: {iface:#}"
    );
    assert_eq!(iface["egress_bytes"], delta.tx_bytes, "{name}");
    assert_eq!(iface["ingress_packets"], delta.rx_packets, "{name}");
    assert_eq!(iface["ingress_bytes"], delta.rx_bytes, "{name}");
}

/// The reproduction: a macvlan `enp1s0mv` on `enp1s0`, defaults via the
/// macvlan (metric 100) and via `enp1s0` (metric 200), UDP echoes from the
/// macvlan's address. Each device counts what the kernel says it carried; the flow
/// shows every echo each way once, on the macvlan; the metric-200 default is credited
/// nothing; no asymmetric or cross-ENI finding.
#[test]
fn macvlan_traffic_is_one_flow_on_the_macvlan_and_no_finding() {
    require_root();
    let node = NetNs::new("node").unwrap();
    let peer = NetNs::new("peer").unwrap();
    // IPv6 autoconfiguration would add chatter to the kernel counters' deltas.
    for ns in [&node, &peer] {
        ns.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .unwrap();
    }
    veth_pair(&node, "enp1s0", &peer, "p0").unwrap();
    node.ip(&[
        "link", "add", "enp1s0mv", "link", "enp1s0", "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    for (ns, commands) in [
        (
            &node,
            &[
                &["addr", "add", "10.77.0.2/24", "dev", "enp1s0"][..],
                &["addr", "add", "10.77.0.3/24", "dev", "enp1s0mv"],
                &["link", "set", "enp1s0", "up"],
                &["link", "set", "enp1s0mv", "up"],
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.77.0.1",
                    "dev",
                    "enp1s0mv",
                    "metric",
                    "100",
                ],
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.77.0.1",
                    "dev",
                    "enp1s0",
                    "metric",
                    "200",
                ],
            ][..],
        ),
        (
            &peer,
            &[
                &["addr", "add", "10.77.0.1/24", "dev", "p0"][..],
                &["addr", "add", "198.51.100.10/32", "dev", "lo"],
                &["link", "set", "p0", "up"],
            ][..],
        ),
    ] {
        for args in commands {
            ns.ip(args).unwrap();
        }
    }
    // Neighbours resolved before the counting starts (no echo listens yet: the
    // peer answers with an ICMP error, before the counting too).
    for device in ["enp1s0mv", "enp1s0"] {
        send_udp(&node, &datagrams(REMOTE, Some(device), 1)).unwrap();
    }
    let devices = ["enp1s0", "enp1s0mv"];
    kernel::wait_quiet(&node, &devices, 1000).unwrap();
    let before: Vec<LinkStats> = devices
        .iter()
        .map(|d| kernel::link_stats(&node, d).unwrap())
        .collect();

    let echo = spawn_udp_echo(&peer, IpAddr::V4(REMOTE), 9, ECHOES).unwrap();
    let running = Running::start(
        &node,
        &["snapshot", "--duration", "3s", "--json", "-i", "enp1s0*"],
    )
    .unwrap();
    send_udp(&node, &datagrams(REMOTE, None, ECHOES)).unwrap();
    assert_eq!(echo.join().unwrap(), ECHOES);
    let report = running.report();
    let after: Vec<LinkStats> = devices
        .iter()
        .map(|d| kernel::link_stats(&node, d).unwrap())
        .collect();

    // 1. Each device's counters are its own, exact against the kernel's.
    for (i, name) in devices.iter().enumerate() {
        assert_counts_match_kernel(&report, name, after[i].since(before[i]));
    }
    assert!(after[0].since(before[0]).tx_packets >= ECHOES as u64);

    // 2. One flow, on the macvlan, every echo each way.
    let echoes: Vec<(String, Value)> = flows(&report)
        .into_iter()
        .filter(|(_, f)| f["protocol"] == "udp" && f["dst_port"] == 9)
        .collect();
    assert_eq!(echoes.len(), 1, "one flow, listed once: {echoes:#?}");
    let (listed_under, flow) = &echoes[0];
    assert_eq!(listed_under, "enp1s0mv", "{flow:#}");
    assert_eq!(flow["src"], "10.77.0.3");
    assert_eq!(flow["left_by"], "enp1s0mv");
    assert_eq!(flow["arrived_on"], "enp1s0mv");
    assert_eq!(flow["egress_packets"], ECHOES as u64);
    assert_eq!(flow["ingress_packets"], ECHOES as u64);
    assert_eq!(flow["asymmetric"], false);
    assert_eq!(flow["cross_eni"], false);

    // 3. Routes: the default the kernel chose carries the datagrams; the unused
    // metric-200 one via the lower device is credited nothing.
    let packets = |dev: &str| route(&report, "0.0.0.0/0", dev)["egress_packets"].as_u64();
    assert!(packets("enp1s0mv") >= Some(ECHOES as u64), "{report:#}");
    assert_eq!(packets("enp1s0"), Some(0), "{report:#}");

    // 4. No finding out of the hop between the macvlan and its parent.
    for kind in ["asymmetric_flow", "cross_eni_egress"] {
        let found = findings_of(&report, kind);
        assert!(found.is_empty(), "{kind}: {found:#?}");
    }
}

/// A bond with a veth port: the port's counters are its own; the flow and the
/// route are counted once, on the bond. Skipped where the kernel has no bonding
/// driver (it says so).
#[test]
fn bond_traffic_is_one_flow_on_the_bond() {
    require_root();
    let node = NetNs::new("node").unwrap();
    let peer = NetNs::new("peer").unwrap();
    if node.ip(&["link", "add", "bond0", "type", "bond"]).is_err() {
        println!("skipped: this kernel has no bonding driver (ip link add type bond fails)");
        return;
    }
    veth_pair(&node, "enp2s0", &peer, "p0").unwrap();
    for args in [
        &["link", "set", "enp2s0", "master", "bond0"][..],
        &["addr", "add", "10.78.0.2/24", "dev", "bond0"],
        &["link", "set", "bond0", "up"],
        &["link", "set", "enp2s0", "up"],
    ] {
        node.ip(args).unwrap();
    }
    peer.ip(&["addr", "add", "10.78.0.1/24", "dev", "p0"])
        .unwrap();
    peer.ip(&["link", "set", "p0", "up"]).unwrap();
    send_udp(&node, &datagrams("10.78.0.1".parse().unwrap(), None, 1)).unwrap();

    let echo = spawn_udp_echo(&peer, "10.78.0.1".parse().unwrap(), 9, ECHOES).unwrap();
    let running = Running::start(
        &node,
        &[
            "snapshot",
            "--duration",
            "3s",
            "--json",
            "-i",
            "bond0",
            "-i",
            "enp2s0",
        ],
    )
    .unwrap();
    send_udp(
        &node,
        &datagrams("10.78.0.1".parse().unwrap(), None, ECHOES),
    )
    .unwrap();
    assert_eq!(echo.join().unwrap(), ECHOES);
    let report = running.report();

    assert!(interface(&report, "enp2s0")["egress_packets"].as_u64() >= Some(ECHOES as u64));
    let echoes: Vec<(String, Value)> = flows(&report)
        .into_iter()
        .filter(|(_, f)| f["protocol"] == "udp" && f["dst_port"] == 9)
        .collect();
    assert_eq!(echoes.len(), 1, "{echoes:#?}");
    assert_eq!(echoes[0].0, "bond0");
    assert_eq!(echoes[0].1["egress_packets"], ECHOES as u64);
    assert_eq!(echoes[0].1["ingress_packets"], ECHOES as u64);
    let route = route(&report, "10.78.0.0/24", "bond0");
    assert!(route["egress_packets"].as_u64() >= Some(ECHOES as u64));
    for kind in ["asymmetric_flow", "cross_eni_egress"] {
        let found = findings_of(&report, kind);
        assert!(found.is_empty(), "{kind}: {found:#?}");
    }
}

/// Veths into pods are forwarding, not stacking: a pod's datagrams arrive on its
/// veth and leave by the uplink, the replies the other way. Each orientation of the
/// 5-tuple is one flow that arrived and left by one interface, with every packet
/// counted once each way, and nothing is asymmetric or cross-ENI.
#[test]
fn pod_veth_traffic_is_two_symmetric_flows_and_no_finding() {
    require_root();
    let node = NetNs::new("node").unwrap();
    let peer = NetNs::new("peer").unwrap();
    let pod = NetNs::new("pod").unwrap();
    for ns in [&node, &peer, &pod] {
        ns.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .unwrap();
    }
    veth_pair(&node, "enp1s0", &peer, "p0").unwrap();
    veth_pair(&node, "vethpod", &pod, "eth0").unwrap();
    for (ns, commands) in [
        (
            &node,
            &[
                &["addr", "add", "10.77.0.2/24", "dev", "enp1s0"][..],
                &["addr", "add", "10.200.0.1/24", "dev", "vethpod"],
                &["link", "set", "enp1s0", "up"],
                &["link", "set", "vethpod", "up"],
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.77.0.1",
                    "dev",
                    "enp1s0",
                ],
            ][..],
        ),
        (
            &peer,
            &[
                &["addr", "add", "10.77.0.1/24", "dev", "p0"][..],
                &["addr", "add", "198.51.100.10/32", "dev", "lo"],
                &["link", "set", "p0", "up"],
                &["route", "add", "10.200.0.0/24", "via", "10.77.0.2"],
            ][..],
        ),
        (
            &pod,
            &[
                &["addr", "add", "10.200.0.2/24", "dev", "eth0"][..],
                &["link", "set", "eth0", "up"],
                &["route", "add", "default", "via", "10.200.0.1"],
            ][..],
        ),
    ] {
        for args in commands {
            ns.ip(args).unwrap();
        }
    }
    node.sysctl(&["net.ipv4.ip_forward=1"]).unwrap();
    send_udp(&pod, &datagrams(REMOTE, None, 1)).unwrap();

    let echo = spawn_udp_echo(&peer, IpAddr::V4(REMOTE), 9, ECHOES).unwrap();
    let running = Running::start(
        &node,
        &[
            "snapshot",
            "--duration",
            "3s",
            "--json",
            "-i",
            "enp1s0",
            "-i",
            "vethpod",
        ],
    )
    .unwrap();
    send_udp(&pod, &datagrams(REMOTE, None, ECHOES)).unwrap();
    assert_eq!(echo.join().unwrap(), ECHOES);
    let report = running.report();

    let flow = |src: &str, listed_under: &str| {
        let found: Vec<Value> = flows(&report)
            .into_iter()
            .filter(|(name, f)| name == listed_under && f["protocol"] == "udp" && f["src"] == src)
            .map(|(_, f)| f)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one flow from {src} on {listed_under}: {report:#}"
        );
        found[0].clone()
    };
    // The pod's orientation: leaves by the uplink, its replies arrive there.
    let out = flow("10.200.0.2", "enp1s0");
    assert_eq!(out["dst"], REMOTE.to_string());
    assert_eq!(
        (out["arrived_on"].as_str(), out["left_by"].as_str()),
        (Some("enp1s0"), Some("enp1s0"))
    );
    assert_eq!(out["egress_packets"], ECHOES as u64);
    assert_eq!(out["ingress_packets"], ECHOES as u64);
    // The other orientation: arrives from the pod on its veth, the replies leave there.
    let back = flow(&REMOTE.to_string(), "vethpod");
    assert_eq!(
        (back["arrived_on"].as_str(), back["left_by"].as_str()),
        (Some("vethpod"), Some("vethpod"))
    );
    assert_eq!(back["ingress_packets"], ECHOES as u64);
    assert_eq!(back["egress_packets"], ECHOES as u64);
    for kind in ["asymmetric_flow", "cross_eni_egress"] {
        let found = findings_of(&report, kind);
        assert!(found.is_empty(), "{kind}: {found:#?}");
    }
}
