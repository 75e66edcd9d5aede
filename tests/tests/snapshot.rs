//! `routemon snapshot` counts, checked against the kernel's own interface counters
//! and against the traffic the test sent.

use std::time::Duration;

use routemon_testbed::{
    INTERNET_V4, INTERNET_V6, Testbed, UplinkSpec,
    cmd::require_root,
    kernel::{self, LinkStats},
    routemon::{Running, interface, main_route as route},
    traffic::{UdpBurst, send_udp},
};
use serde_json::Value;

routemon_testbed::new_machine_view!();

fn burst(
    dst: impl Into<std::net::IpAddr>,
    device: Option<&str>,
    count: usize,
    payload: usize,
) -> UdpBurst {
    UdpBurst {
        dst: dst.into(),
        device: device.map(str::to_owned),
        src: None,
        count,
        payload,
    }
}

#[test]
fn counts_match_ip_link_and_the_traffic_sent_per_route_with_tcx() {
    check_counts("tcx");
}

#[test]
fn counts_match_ip_link_and_the_traffic_sent_per_route_with_clsact() {
    check_counts("clsact");
}

fn check_counts(attach: &str) {
    require_root();
    let mut ens6 = UplinkSpec::new("ens6", 1024);
    ens6.metric6 = Some(1100); // separate IPv6 routes, so each can be checked
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1024), ens6], true).unwrap();
    let uplinks = ["ens5", "ens6"];
    kernel::wait_quiet(&bed.node, &uplinks, 1500).unwrap();
    let before: Vec<LinkStats> = uplinks
        .iter()
        .map(|d| kernel::link_stats(&bed.node, d).unwrap())
        .collect();

    let args = ["snapshot", "--duration", "3s", "--json", "--attach", attach];
    let running = Running::start(&bed.node, &args).unwrap();
    // While it runs, its programs are loaded and attached to both uplinks.
    if attach == "tcx" {
        assert_eq!(
            kernel::routemon_tcx_links().unwrap(),
            4,
            "egress+ingress on two uplinks"
        );
    } else {
        let filters = kernel::tc_filters(&bed.node, "ens6").unwrap();
        assert!(
            filters.contains("routemon_tx") && filters.contains("routemon_rx"),
            "{filters}"
        );
    }

    let via_ens5 = burst(INTERNET_V4, Some("ens5"), 100, 200);
    let via_ens6 = burst(INTERNET_V4, Some("ens6"), 37, 1000);
    let unbound = burst(INTERNET_V4, None, 23, 64);
    let subnet_ens5 = burst(bed.uplink("ens5").gw4, Some("ens5"), 5, 80);
    let v6_ens5 = burst(INTERNET_V6, Some("ens5"), 11, 300);
    let v6_ens6 = burst(INTERNET_V6, Some("ens6"), 13, 120);
    for b in [
        &via_ens5,
        &via_ens6,
        &unbound,
        &subnet_ens5,
        &v6_ens5,
        &v6_ens6,
    ] {
        send_udp(&bed.node, b).unwrap();
    }
    let report = running.report();
    let after: Vec<LinkStats> = uplinks
        .iter()
        .map(|d| kernel::link_stats(&bed.node, d).unwrap())
        .collect();

    assert_eq!(report["snapshot"]["attached_via"], attach);
    assert_eq!(report["snapshot"]["interrupted"], false);

    // 1. Per interface: exactly what the kernel's own counters say.
    for (i, name) in uplinks.iter().enumerate() {
        let delta = after[i].since(before[i]);
        let iface = interface(&report, name);
        assert_eq!(
            iface["egress_packets"], delta.tx_packets,
            "{name} tx packets: {iface:#}"
        );
        assert_eq!(iface["egress_bytes"], delta.tx_bytes, "{name} tx bytes");
        assert_eq!(
            iface["ingress_packets"], delta.rx_packets,
            "{name} rx packets"
        );
        assert_eq!(iface["ingress_bytes"], delta.rx_bytes, "{name} rx bytes");
        assert_eq!(
            iface["egress_unattributed_packets"], 0,
            "every egress packet has a route"
        );
    }

    // 2. Per route: the bytes of the bursts that took it, computed from sizes.
    let expect = [
        ("10.0.1.0/24", "ens5", subnet_ens5.wire_bytes()),
        ("10.0.2.0/24", "ens6", 0),
        ("::/0", "ens5", v6_ens5.wire_bytes()),
        ("::/0", "ens6", v6_ens6.wire_bytes()),
    ];
    for (dst, dev, bytes) in expect {
        assert_eq!(
            route(&report, dst, dev)["egress_bytes"],
            bytes,
            "route {dst} dev {dev}"
        );
    }

    // 3. The two IPv4 defaults tie at metric 1024, so the kernel may send the
    // unbound datagrams by either (it alternates): each default route carries its
    // bound burst plus whole unbound datagrams, and together all of them.
    let default_bytes = |dev: &str| {
        route(&report, "0.0.0.0/0", dev)["egress_bytes"]
            .as_u64()
            .unwrap()
    };
    let extra5 = default_bytes("ens5") - via_ens5.wire_bytes();
    let extra6 = default_bytes("ens6") - via_ens6.wire_bytes();
    let unit = unbound.wire_bytes() / unbound.count as u64;
    assert_eq!(
        extra5 + extra6,
        unbound.wire_bytes(),
        "unbound traffic attributed to the defaults"
    );
    assert_eq!(extra5 % unit, 0, "whole datagrams only");
    for dev in ["ens5", "ens6"] {
        assert_eq!(
            route(&report, "0.0.0.0/0", dev)["preferred"],
            true,
            "a tie has no single winner"
        );
    }

    // 4. Each interface's egress bytes are exactly the traffic sent through it.
    let sent_ens5 =
        via_ens5.wire_bytes() + extra5 + subnet_ens5.wire_bytes() + v6_ens5.wire_bytes();
    assert_eq!(after[0].since(before[0]).tx_bytes, sent_ens5);

    let left = kernel::routemon_programs_after(Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "programs unloaded after exit: {left:?}");
}

#[test]
fn an_interface_deleted_mid_snapshot_is_reported_gone_with_its_counts() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    kernel::wait_quiet(&bed.node, &["ens5", "ens6"], 500).unwrap();
    // The kernel's counters bracket routemon's start: a packet the peer sends
    // while routemon attaches (an ARP probe left over from the testbed's set-up)
    // is counted by the kernel but seen by routemon only if it came after the
    // attach, so routemon's count must lie between the two readings.
    let before_start = kernel::link_stats(&bed.node, "ens6").unwrap();
    // Long enough for the quiet wait below to end before the snapshot does.
    let running = Running::start(&bed.node, &["snapshot", "--duration", "4s", "--json"]).unwrap();
    let after_start = kernel::link_stats(&bed.node, "ens6").unwrap();
    let to_ens6 = burst(INTERNET_V4, Some("ens6"), 50, 100);
    send_udp(&bed.node, &to_ens6).unwrap();
    // Let the router's ICMP replies (rate-limited, so spread out) arrive and be
    // processed before taking the last reading: a reply the kernel has counted but
    // not yet run through the ingress hook would be lost with the interface.
    kernel::wait_quiet(&bed.node, &["ens6"], 500).unwrap();
    let before_delete = kernel::link_stats(&bed.node, "ens6").unwrap();
    bed.node.ip(&["link", "del", "ens6"]).unwrap();
    // Meanwhile a route and an interface appear.
    bed.node
        .ip(&[
            "route",
            "add",
            "10.9.0.0/16",
            "via",
            "10.0.1.1",
            "dev",
            "ens5",
        ])
        .unwrap();
    bed.node
        .ip(&[
            "link", "add", "ens9", "type", "veth", "peer", "name", "peer9",
        ])
        .unwrap();
    send_udp(&bed.node, &burst(INTERNET_V4, Some("ens5"), 20, 100)).unwrap();

    let report = running.report();
    let ens6 = interface(&report, "ens6");
    assert_eq!(ens6["state"], "gone");
    assert_eq!(
        ens6["egress_packets"], 50,
        "counts up to the deletion are kept"
    );
    let ingress = ens6["ingress_packets"].as_u64().unwrap();
    let most = before_delete.since(before_start).rx_packets;
    let least = before_delete.since(after_start).rx_packets;
    assert!(
        (least..=most).contains(&ingress),
        "ingress counts up to the deletion are kept: routemon {ingress}, kernel {least} \
         (since attached) to {most} (since started)"
    );
    assert_eq!(interface(&report, "ens5")["egress_packets"], 20);
    assert_eq!(interface(&report, "ens5")["state"], "up");
    let snapshot = &report["snapshot"];
    assert_eq!(snapshot["routes_added_during"], 1, "{snapshot:#}");
    assert!(
        snapshot["routes_removed_during"].as_u64().unwrap() >= 2,
        "ens6's routes went"
    );
    assert_eq!(
        snapshot["interfaces_added_during"],
        serde_json::json!(["ens9", "peer9"])
    );
    let left = kernel::routemon_programs_after(Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn source_rule_traffic_is_attributed_to_the_rules_table() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let ens6 = bed.uplink("ens6").clone();
    let gw = ens6.gw4.to_string();
    bed.node
        .ip(&[
            "route", "add", "default", "via", &gw, "dev", "ens6", "table", "10002",
        ])
        .unwrap();
    let src = ens6.addr4.to_string();
    bed.node
        .ip(&[
            "rule", "add", "from", &src, "lookup", "10002", "prio", "1000",
        ])
        .unwrap();
    kernel::wait_quiet(&bed.node, &["ens5", "ens6"], 500).unwrap();

    let running = Running::start(&bed.node, &["snapshot", "--duration", "2s", "--json"]).unwrap();
    let mut from_ens6 = burst(INTERNET_V4, None, 21, 300);
    from_ens6.src = Some(ens6.addr4.into());
    let unsourced = burst(INTERNET_V4, None, 9, 300);
    send_udp(&bed.node, &from_ens6).unwrap();
    send_udp(&bed.node, &unsourced).unwrap();
    let report = running.report();

    let default_in = |table: &str, dev: &str| {
        report["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == "0.0.0.0/0" && r["table"] == table && r["dev"] == dev)
            .unwrap_or_else(|| panic!("no default in table {table} dev {dev}: {report:#}"))["egress_bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        default_in("10002", "ens6"),
        from_ens6.wire_bytes(),
        "the rule's table carried it"
    );
    assert_eq!(
        default_in("main", "ens6"),
        0,
        "not the main table's ens6 route"
    );
    assert_eq!(default_in("main", "ens5"), unsourced.wire_bytes());
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "cross_eni_egress"),
        "sourced traffic leaving by its own ENI is not cross-ENI: {report:#}"
    );
}

/// A testbed whose IPv4 and IPv6 defaults both prefer ens5, and whose router sends
/// from its internet addresses to ens6's addresses: every reply is asymmetric.
#[test]
fn asymmetric_udp_and_icmpv6_flows_in_both_families() {
    use routemon_testbed::traffic::{send_icmpv6_echo, spawn_udp_echo};

    require_root();
    let mut ens6 = UplinkSpec::new("ens6", 1024);
    ens6.metric6 = Some(1024);
    let mut ens5 = UplinkSpec::new("ens5", 1000);
    ens5.metric6 = Some(1000);
    let bed = Testbed::new(&[ens5, ens6], true).unwrap();
    let target = bed.uplink("ens6").clone();
    let echo4 = spawn_udp_echo(&bed.node, target.addr4.into(), 9, 3).unwrap();
    let echo6 = spawn_udp_echo(&bed.node, target.addr6.into(), 9, 4).unwrap();

    let running = Running::start(&bed.node, &["snapshot", "--duration", "2s", "--json"]).unwrap();
    // From the internet host, in by ens6 (the router's gw2 side).
    let mut udp4 = burst(target.addr4, Some("gw2"), 3, 40);
    udp4.src = Some(INTERNET_V4.into());
    send_udp(&bed.router, &udp4).unwrap();
    let mut udp6 = burst(target.addr6, Some("gw2"), 4, 40);
    udp6.src = Some(INTERNET_V6.into());
    send_udp(&bed.router, &udp6).unwrap();
    send_icmpv6_echo(&bed.router, INTERNET_V6, target.addr6, 0x4242, 5).unwrap();
    let report = running.report();
    assert_eq!(echo4.join().unwrap(), 3);
    assert_eq!(echo6.join().unwrap(), 4);

    let flows: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "asymmetric_flow")
        .collect();
    let find = |protocol: &str, src: String| {
        flows
            .iter()
            .find(|f| f["flow"]["protocol"] == protocol && f["flow"]["src"] == src.as_str())
            .unwrap_or_else(|| panic!("no asymmetric {protocol} flow from {src}: {report:#}"))
    };
    let udp4 = find("udp", target.addr4.to_string());
    assert_eq!(udp4["flow"]["src_port"], 9);
    assert_eq!(udp4["flow"]["dst"], INTERNET_V4.to_string());
    assert_eq!(udp4["packets"], 3);
    let udp6 = find("udp", target.addr6.to_string());
    assert_eq!(udp6["packets"], 4);
    let icmp6 = find("icmpv6", target.addr6.to_string());
    assert_eq!(icmp6["flow"]["src_port"], 0x4242, "the echo identifier");
    assert_eq!(icmp6["packets"], 5);
    for flow in [udp4, udp6, icmp6] {
        assert_eq!(flow["ingress_interface"], "ens6");
        assert_eq!(flow["egress_interface"], "ens5");
    }
}

#[test]
fn a_secondary_ip_added_mid_snapshot_is_owned_at_once() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "2s", "--json"]).unwrap();
    // The VPC CNI assigns a secondary IP to ens6 while routemon is counting...
    bed.node
        .ip(&["addr", "add", "10.0.2.77/24", "dev", "ens6"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...and traffic from it leaves by ens5.
    let mut leak = burst(INTERNET_V4, Some("ens5"), 17, 64);
    leak.src = Some("10.0.2.77".parse().unwrap());
    send_udp(&bed.node, &leak).unwrap();
    let report = running.report();
    let cross = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "cross_eni_egress")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(cross["egress_interface"], "ens5");
    assert_eq!(cross["source_interface"], "ens6");
    assert_eq!(cross["packets"], 17);
}

/// A flood of unanswered tuples (a scan) fills the table kept for them, which
/// evicts and counts what it evicted, while an established flow that stays idle
/// through the flood keeps its exact counts: unanswered tuples never evict a flow.
#[test]
fn an_unanswered_flood_evicts_only_unanswered_tuples() {
    use routemon_testbed::traffic::spawn_udp_echo;

    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let gw = bed.uplink("ens5").gw4;
    let echo = spawn_udp_echo(&bed.router, gw.into(), 9, 10).unwrap();
    kernel::wait_quiet(&bed.node, &["ens5", "ens6"], 500).unwrap();
    let before = kernel::link_stats(&bed.node, "ens5").unwrap();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "6s", "--json"]).unwrap();
    // An established flow: 10 datagrams each way, then idle through the flood.
    send_udp(&bed.node, &burst(gw, Some("ens5"), 10, 100)).unwrap();
    assert_eq!(echo.join().unwrap(), 10);
    // 80 000 tuples arrive on ens5, one datagram each (two source ports × 40 000
    // destination ports), none answered: more than the 65 536 flows the flow table
    // holds, and than the 16 384 the unanswered table holds.
    const PORTS: u16 = 40_000;
    let node_addr = bed.uplink("ens5").addr4;
    bed.router
        .run_in(move || -> anyhow::Result<()> {
            let sockets = [
                std::net::UdpSocket::bind("10.0.1.1:0")?,
                std::net::UdpSocket::bind("10.0.1.1:0")?,
            ];
            for socket in &sockets {
                for port in 1..=PORTS {
                    socket.send_to(b"flow", (node_addr, port))?;
                }
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    kernel::wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let arrived = kernel::link_stats(&bed.node, "ens5")
        .unwrap()
        .since(before)
        .rx_packets;
    let report = running.report();

    let unanswered = &report["snapshot"]["tables"]["unanswered"];
    let field = |name: &str| unanswered[name].as_u64().unwrap();
    assert_eq!(field("capacity"), 16_384, "{unanswered}");
    assert!(field("entries") <= 16_384, "{unanswered}");
    // Every datagram of the flood is a new tuple (the 10 echoes are not). The
    // router's own chatter (IPv6 multicast, ARP) may add a packet or two.
    assert!(
        field("inserted").abs_diff(arrived - 10) <= 4,
        "tuples inserted vs {arrived} packets that arrived: {unanswered}"
    );
    assert!(
        arrived >= 2 * u64::from(PORTS) * 9 / 10,
        "the flood reached the node"
    );
    assert_eq!(field("evicted"), field("inserted") - field("entries"));
    assert!(
        field("evicted") >= field("inserted") - 16_384,
        "at least the overflow was evicted: {unanswered}"
    );
    // The flow table took in the established flow (and the node's ICMP errors),
    // and evicted nothing.
    let flows = &report["snapshot"]["tables"]["flows"];
    assert_eq!(flows["capacity"], 65_536, "{flows}");
    assert_eq!(flows["evicted"], 0, "{flows}");
    assert!(flows["inserted"].as_u64() <= Some(4), "{flows}");
    // The established flow kept its counts through the flood.
    let established: Vec<&Value> = interface(&report, "ens5")["top_flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["dst"] == gw.to_string() && f["dst_port"] == 9)
        .collect();
    assert_eq!(established.len(), 1, "{report:#}");
    assert_eq!(established[0]["egress_packets"], 10);
    assert_eq!(established[0]["ingress_packets"], 10);
    // Nothing else is lost: the interface still counts every packet.
    let ingress = interface(&report, "ens5")["ingress_packets"]
        .as_u64()
        .unwrap();
    assert!(ingress.abs_diff(arrived) <= 4, "{ingress} vs {arrived}");
    let left = kernel::routemon_programs_after(Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
