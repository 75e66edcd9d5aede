//! The EKS failure reproduced with real systemd-networkd and dnsmasq: hot-attached
//! ENIs get DHCP default routes with the same metric, and routemon reports it.

use routemon_testbed::{cmd::require_root, eks::EksNode, routemon::routes_json};
use serde_json::Value;

routemon_testbed::new_machine_view!();

/// (interface, metric) of the main table's IPv4 default routes, sorted by name (the
/// kernel's listing order is not part of what is tested).
fn dhcp_defaults(report: &Value) -> Vec<(String, u64)> {
    let mut defaults: Vec<(String, u64)> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == "0.0.0.0/0" && r["table"] == "main")
        .map(|r| {
            assert_eq!(r["protocol"], "dhcp", "{r:#}");
            (
                r["dev"].as_str().unwrap().to_owned(),
                r["metric"].as_u64().unwrap(),
            )
        })
        .collect();
    defaults.sort();
    defaults
}

fn ties(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "equal_metric_default_routes")
        .collect()
}

/// Boots with the primary only (healthy), hot-attaches the others, and checks the
/// critical finding names every ENI.
fn hot_attach(pattern: &str, names: &[&str]) {
    require_root();
    let mut eks = EksNode::boot(pattern, names[0]).unwrap();
    let report = routes_json(&eks.node, &[]);
    assert_eq!(dhcp_defaults(&report), [(names[0].to_owned(), 1024)]);
    assert!(
        report["findings"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    for name in &names[1..] {
        eks.attach_eni(name).unwrap();
    }
    let report = routes_json(&eks.node, &[]);
    let defaults = dhcp_defaults(&report);
    let mut expected: Vec<(String, u64)> = names.iter().map(|n| ((*n).to_owned(), 1024)).collect();
    expected.sort();
    assert_eq!(defaults, expected, "networkd gave every ENI metric 1024");
    let ties = ties(&report);
    assert_eq!(ties.len(), 1, "{report:#}");
    assert_eq!(ties[0]["severity"], "critical");
    let mut tied: Vec<&str> = ties[0]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    tied.sort_unstable();
    let mut all = names.to_vec();
    all.sort_unstable();
    assert_eq!(tied, all);
    assert_eq!(report["primary"]["name"], names[0]);
    let remediation = ties[0]["remediation"].as_str().unwrap();
    assert!(
        remediation.contains(&format!("05-{}.network", names[0])),
        "{remediation}"
    );
}

#[test]
fn hot_attached_ens6_ties_with_ens5() {
    hot_attach("ens*", &["ens5", "ens6"]);
}

#[test]
fn hot_attached_enp_naming() {
    hot_attach("enp*", &["enp39s0", "enp40s0"]);
}

#[test]
fn hot_attached_eth_naming() {
    hot_attach("eth*", &["eth0", "eth1"]);
}

#[test]
fn three_enis_all_tie() {
    hot_attach("ens*", &["ens5", "ens6", "ens7"]);
}

#[test]
fn the_documented_networkd_fix_clears_the_finding() {
    require_root();
    let mut eks = EksNode::boot("ens*", "ens5").unwrap();
    eks.attach_eni("ens6").unwrap();
    assert_eq!(ties(&routes_json(&eks.node, &[])).len(), 1);

    eks.write_network_file(
        "05-ens5.network",
        "[Match]\nName=ens5\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nRouteMetric=1000\n",
    )
    .unwrap();
    eks.restart_networkd().unwrap();
    // networkd re-acquires the lease and replaces the primary's route.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = loop {
        let report = routes_json(&eks.node, &[]);
        let defaults = dhcp_defaults(&report);
        if defaults.contains(&("ens5".to_owned(), 1000)) && defaults.len() == 2 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metric 1000 route: {defaults:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        dhcp_defaults(&report),
        [("ens5".to_owned(), 1000), ("ens6".to_owned(), 1024)]
    );
    assert!(
        report["findings"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

fn finding<'a>(report: &'a Value, kind: &str, egress: &str, source: &str) -> Option<&'a Value> {
    report["findings"].as_array().unwrap().iter().find(|f| {
        f["kind"] == kind && f["egress_interface"] == egress && f["source_interface"] == source
    })
}

#[test]
fn cross_eni_egress_matches_the_vpc_source_check_drops() {
    use routemon_testbed::{
        INTERNET_V4,
        routemon::Running,
        traffic::{UdpBurst, send_udp},
    };

    require_root();
    let mut eks = EksNode::boot("ens*", "ens5").unwrap();
    eks.attach_eni("ens6").unwrap();
    let (ens5, ens6) = (eks.eni("ens5").clone(), eks.eni("ens6").clone());
    let dropped_before = (eks.spoofed(&ens5).unwrap(), eks.spoofed(&ens6).unwrap());

    let running = Running::start(&eks.node, &["snapshot", "--duration", "3s", "--json"]).unwrap();
    let burst = |device: Option<&str>, src: std::net::Ipv4Addr, count| UdpBurst {
        dst: INTERNET_V4.into(),
        device: device.map(str::to_owned),
        src: Some(src.into()),
        count,
        payload: 200,
    };
    // Forced: ens6's address out of ens5 (a flood, beyond the sampling rate limit),
    // and ens5's out of ens6.
    send_udp(&eks.node, &burst(Some("ens5"), ens6.addr, 2000)).unwrap();
    send_udp(&eks.node, &burst(Some("ens6"), ens5.addr, 15)).unwrap();
    // Natural: sourced from ens6 but routed by the tied default routes, which the
    // kernel alternates between: some leave by ens5.
    send_udp(&eks.node, &burst(None, ens6.addr, 30)).unwrap();
    // Legitimate: each address out of its own ENI is never cross-ENI.
    send_udp(&eks.node, &burst(Some("ens5"), ens5.addr, 25)).unwrap();
    send_udp(&eks.node, &burst(Some("ens6"), ens6.addr, 25)).unwrap();
    let report = running.report();

    let dropped_on = |eni, before: (u64, u64)| {
        let (packets, bytes) = eks.spoofed(eni).unwrap();
        (packets - before.0, bytes - before.1)
    };
    let vpc_ens5 = dropped_on(&ens5, dropped_before.0);
    let vpc_ens6 = dropped_on(&ens6, dropped_before.1);
    let cross = |egress, source| {
        finding(&report, "cross_eni_egress", egress, source).map_or((0, 0), |f| {
            (f["packets"].as_u64().unwrap(), f["bytes"].as_u64().unwrap())
        })
    };
    let (packets, bytes) = cross("ens5", "ens6");
    eprintln!(
        "cross-ENI ens5<-ens6: routemon {packets} packets / {bytes} bytes; VPC nft drops on gw1 {} packets / {} bytes",
        vpc_ens5.0, vpc_ens5.1
    );
    assert!(packets >= 2000, "the forced burst at least: {report:#}");
    assert_eq!(
        packets, vpc_ens5.0,
        "routemon's (ens5, ens6) count = the VPC's drops on ens5"
    );
    // nft counts IP bytes; routemon counts the 14-byte Ethernet header as well.
    assert_eq!(bytes - 14 * packets, vpc_ens5.1);
    let (packets, bytes) = cross("ens6", "ens5");
    assert_eq!(packets, 15);
    assert_eq!(
        packets, vpc_ens6.0,
        "routemon's (ens6, ens5) count = the VPC's drops on ens6"
    );
    assert_eq!(bytes - 14 * packets, vpc_ens6.1);
    let f = finding(&report, "cross_eni_egress", "ens5", "ens6").unwrap();
    assert_eq!(f["severity"], "critical");
    // Samples carry the 5-tuple; the flood was rate-limited, and every packet is
    // either in a listed sample or counted as unsampled (two flows: all listed).
    let samples = f["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 2, "{f:#}");
    for sample in samples {
        assert_eq!(sample["flow"]["protocol"], "udp");
        assert_eq!(sample["flow"]["src"], ens6.addr.to_string());
        assert_eq!(sample["flow"]["dst"], INTERNET_V4.to_string());
        assert_eq!(sample["flow"]["dst_port"], 9);
    }
    let sampled: u64 = samples
        .iter()
        .map(|s| s["sampled_packets"].as_u64().unwrap())
        .sum();
    let unsampled = f["unsampled_packets"].as_u64().unwrap();
    assert!(
        unsampled > 0,
        "a 2000-packet flood exceeds the sampling limit: {f:#}"
    );
    assert_eq!(sampled + unsampled, f["packets"].as_u64().unwrap());
    assert_eq!(f["source_addresses"][0], ens6.addr.to_string());
    // No finding ever pairs an interface with itself.
    assert!(finding(&report, "cross_eni_egress", "ens5", "ens5").is_none());
    assert!(finding(&report, "cross_eni_egress", "ens6", "ens6").is_none());
}

/// `05-ens5.network`: the documented fix, in place from boot.
const PINNED_ENS5: &str =
    "[Match]\nName=ens5\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nRouteMetric=1000\n";

#[test]
fn connections_to_the_secondary_eni_are_asymmetric_until_a_source_rule_exists() {
    use std::{net::SocketAddr, time::Duration};

    use routemon_testbed::{eks::CLIENT_ADDR, routemon::Running, traffic::http_get};

    require_root();
    let mut eks = EksNode::boot_with("ens*", "ens5", &[("05-ens5.network", PINNED_ENS5)]).unwrap();
    eks.attach_eni("ens6").unwrap();
    eks.serve_http_on_node(8080).unwrap();
    eks.add_client().unwrap();
    let ens6 = eks.eni("ens6").clone();
    let target = SocketAddr::new(ens6.addr.into(), 8080);
    let client = eks.client.as_ref().unwrap();

    // The primary is pinned, so the node looks healthy...
    assert!(ties(&routes_json(&eks.node, &[])).is_empty());
    // ...but a client of the secondary ENI's address gets no answer: the SYN-ACK
    // leaves by ens5 and the VPC drops it.
    let running = Running::start(&eks.node, &["snapshot", "--duration", "4s", "--json"]).unwrap();
    let attempt = http_get(client, target, Duration::from_secs(2));
    assert!(attempt.is_err(), "the connection must fail: {attempt:?}");
    let report = running.report();
    let asymmetric: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "asymmetric_flow")
        .collect();
    assert!(!asymmetric.is_empty(), "{report:#}");
    let flow = asymmetric[0];
    assert_eq!(flow["ingress_interface"], "ens6");
    assert_eq!(flow["egress_interface"], "ens5");
    assert_eq!(flow["flow"]["protocol"], "tcp");
    assert_eq!(flow["flow"]["src"], ens6.addr.to_string());
    assert_eq!(flow["flow"]["src_port"], 8080);
    assert_eq!(flow["flow"]["dst"], CLIENT_ADDR.to_string());
    assert!(flow["packets"].as_u64().unwrap() >= 1);
    // The same packets are cross-ENI: ens6's address leaving by ens5.
    assert!(finding(&report, "cross_eni_egress", "ens5", "ens6").is_some());

    // The fix for inbound traffic: a source rule sends ens6's replies out of ens6.
    eks.node
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            &ens6.gateway.to_string(),
            "dev",
            "ens6",
            "table",
            "10002",
        ])
        .unwrap();
    eks.node
        .ip(&[
            "rule",
            "add",
            "from",
            &ens6.addr.to_string(),
            "lookup",
            "10002",
            "prio",
            "1000",
        ])
        .unwrap();
    let running = Running::start(&eks.node, &["snapshot", "--duration", "3s", "--json"]).unwrap();
    let status = http_get(client, target, Duration::from_secs(5)).unwrap();
    assert!(status.contains("200"), "{status}");
    let report = running.report();
    let kinds = routemon_testbed::routemon::finding_kinds(&report);
    assert!(!kinds.contains(&"asymmetric_flow"), "{report:#}");
    assert!(!kinds.contains(&"cross_eni_egress"), "{report:#}");
}
