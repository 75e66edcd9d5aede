//! `routemon routes` against real routes in network namespaces.

use routemon_testbed::{Testbed, UplinkSpec, cmd::require_root, routemon::routes_json};
use serde_json::Value;

routemon_testbed::new_machine_view!();

fn findings_of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn default_routes<'a>(report: &'a Value, family: &str) -> Vec<&'a Value> {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["family"] == family && (r["dst"] == "0.0.0.0/0" || r["dst"] == "::/0"))
        .collect()
}

fn interface_names(report: &Value) -> Vec<&str> {
    report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect()
}

#[test]
fn equal_metric_defaults_are_critical_until_one_metric_is_raised() {
    require_root();
    let bed = Testbed::ens5_ens6(1024, 1024).unwrap();

    let report = routes_json(&bed.node, &[]);
    let names = interface_names(&report);
    assert_eq!(names, ["ens5", "ens6"], "lo is never monitored");
    assert_eq!(report["primary"]["name"], "ens5");
    let defaults = default_routes(&report, "ipv4");
    assert_eq!(defaults.len(), 2, "{defaults:#?}");
    for route in &defaults {
        assert_eq!(route["metric"], 1024);
        assert_eq!(route["protocol"], "dhcp");
        assert_eq!(route["table"], "main");
    }
    let ties = findings_of_kind(&report, "equal_metric_default_routes");
    assert_eq!(ties.len(), 1, "{report:#}");
    let tie = ties[0];
    assert_eq!(tie["severity"], "critical");
    assert_eq!(tie["family"], "ipv4");
    assert_eq!(tie["metric"], 1024);
    assert_eq!(tie["interfaces"], serde_json::json!(["ens5", "ens6"]));
    assert_eq!(tie["gateways"], serde_json::json!(["10.0.1.1", "10.0.2.1"]));
    assert!(
        tie["remediation"]
            .as_str()
            .unwrap()
            .contains("05-ens5.network")
    );

    // The documented fix, done by hand: ens6's default route moves to metric 1100.
    let gw6 = bed.uplink("ens6").gw4.to_string();
    bed.delete_default("ens6", &gw6, 1024).unwrap();
    bed.set_default("ens6", &gw6, 1100).unwrap();
    let report = routes_json(&bed.node, &[]);
    assert!(
        report["findings"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let preferred: Vec<&str> = default_routes(&report, "ipv4")
        .iter()
        .filter(|r| r["preferred"] == true)
        .map(|r| r["dev"].as_str().unwrap())
        .collect();
    assert_eq!(preferred, ["ens5"]);
}

#[test]
fn secondary_with_the_best_metric_is_primary_not_preferred() {
    require_root();
    let bed = Testbed::ens5_ens6(1024, 512).unwrap();
    let report = routes_json(&bed.node, &[]);
    let findings = findings_of_kind(&report, "primary_not_preferred");
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["primary"], "ens5");
    assert_eq!(findings[0]["preferred"]["dev"], "ens6");
    assert_eq!(findings[0]["primary_metric"], 1024);
    assert!(findings_of_kind(&report, "equal_metric_default_routes").is_empty());

    // Naming ens6 as the primary makes the state healthy.
    let report = routes_json(&bed.node, &["--primary", "ens6"]);
    assert!(
        report["findings"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(report["primary"]["chosen_by"], "flag");
}

#[test]
fn ipv6_equal_metric_defaults_become_one_multipath_route_and_are_reported() {
    require_root();
    let mut ens5 = UplinkSpec::new("ens5", 1000);
    ens5.metric6 = Some(1024);
    let mut ens6 = UplinkSpec::new("ens6", 1024);
    ens6.metric6 = Some(1024);
    let bed = Testbed::new(&[ens5, ens6], true).unwrap();
    let report = routes_json(&bed.node, &[]);
    let ties = findings_of_kind(&report, "equal_metric_default_routes");
    assert_eq!(ties.len(), 1, "{report:#}");
    assert_eq!(ties[0]["family"], "ipv6");
    assert_eq!(
        ties[0]["multipath"], true,
        "the kernel merges same-metric IPv6 routes"
    );
    assert_eq!(ties[0]["interfaces"], serde_json::json!(["ens5", "ens6"]));
    assert!(
        ties[0]["remediation"]
            .as_str()
            .unwrap()
            .contains("[IPv6AcceptRA] RouteMetric=")
    );
    let v6 = default_routes(&report, "ipv6");
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0]["nexthops"].as_array().unwrap().len(), 2);
}

#[test]
fn other_naming_schemes_and_explicit_patterns() {
    require_root();
    let bed = Testbed::new(
        &[
            UplinkSpec::new("enp39s0", 1024),
            UplinkSpec::new("enp40s0", 1024),
            UplinkSpec::new("eth1", 2048),
        ],
        false,
    )
    .unwrap();
    let report = routes_json(&bed.node, &[]);
    assert_eq!(report["primary"]["name"], "enp39s0");
    assert_eq!(report["interfaces"].as_array().unwrap().len(), 3);
    let ties = findings_of_kind(&report, "equal_metric_default_routes");
    assert_eq!(
        ties[0]["interfaces"],
        serde_json::json!(["enp39s0", "enp40s0"])
    );

    let report = routes_json(&bed.node, &["--interface", "enp*s0"]);
    let names = interface_names(&report);
    assert_eq!(names, ["enp39s0", "enp40s0"]);
    // Every route of a monitored interface is listed, and the default route of the
    // unmonitored eth1 too (defaults are always shown).
    let routes = report["routes"].as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "10.0.1.0/24" && r["dev"] == "enp39s0")
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["dev"] == "eth1")
    );
    assert!(
        !routes.iter().any(|r| r["dst"] == "10.0.3.0/24"),
        "eth1's subnet is not monitored"
    );
}

#[test]
fn human_output_has_aligned_sections() {
    require_root();
    let bed = Testbed::ens5_ens6(1024, 1024).unwrap();
    let out = routemon_testbed::routemon::run(Some(&bed.node), &["routes"])
        .unwrap()
        .success();
    for section in [
        "INTERFACES (primary: ens5",
        "DEFAULT ROUTES",
        "CILIUM (default-route lookup, Cilium's rules)",
        "FINDINGS (2)",
        "[CRITICAL] cilium_default_route",
        "[CRITICAL] equal_metric_default_routes",
    ] {
        assert!(
            out.stdout.contains(section),
            "missing {section:?} in:\n{}",
            out.stdout
        );
    }
    let header = out
        .stdout
        .lines()
        .find(|l| l.contains("DESTINATION"))
        .unwrap();
    let row = out.stdout.lines().find(|l| l.contains("10.0.2.1")).unwrap();
    assert_eq!(
        header.find("GATEWAY"),
        row.find("10.0.2.1"),
        "columns align:\n{}",
        out.stdout
    );
}

#[test]
fn policy_rules_are_reported() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    bed.node
        .ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.10",
            "lookup",
            "10002",
            "prio",
            "100",
        ])
        .unwrap();
    let report = routes_json(&bed.node, &[]);
    let rules = report["rules"].as_array().unwrap();
    let rule = rules
        .iter()
        .find(|r| r["priority"] == 100)
        .unwrap_or_else(|| panic!("{rules:#?}"));
    assert_eq!(rule["family"], "ipv4");
    assert_eq!(rule["src"], "10.0.2.10/32");
    assert_eq!(rule["table"], "10002");
    assert_eq!(rule["action"], "lookup");
    assert!(
        rules
            .iter()
            .any(|r| r["priority"] == 32766 && r["table"] == "main")
    );
    let out = routemon_testbed::routemon::run(Some(&bed.node), &["routes"])
        .unwrap()
        .success();
    assert!(out.stdout.contains("from 10.0.2.10/32"), "{}", out.stdout);
}

/// The node's `IPReversePathFilter` drop counter (TcpExt in /proc/net/netstat).
fn rp_filter_drops(bed: &Testbed) -> u64 {
    let netstat = bed.node.exec("cat", &["/proc/net/netstat"]).unwrap();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|n| n == "IPReversePathFilter")
        .unwrap();
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn strict_rp_filter_on_the_secondary_is_reported_and_really_drops() {
    use routemon_testbed::{
        INTERNET_V4,
        traffic::{UdpBurst, send_udp},
    };

    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    bed.node.sysctl(&["net.ipv4.conf.all.rp_filter=1"]).unwrap();
    let report = routes_json(&bed.node, &[]);
    let findings = findings_of_kind(&report, "strict_rp_filter");
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["interface"], "ens6");
    assert_eq!(findings[0]["default_route_interface"], "ens5");

    // Ground truth: an internet client's packets to ens6's address are dropped by
    // the node's reverse-path check.
    let before = rp_filter_drops(&bed);
    let probe = UdpBurst {
        dst: bed.uplink("ens6").addr4.into(),
        device: Some("gw2".to_owned()),
        src: Some(INTERNET_V4.into()),
        count: 5,
        payload: 32,
    };
    send_udp(&bed.router, &probe).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(rp_filter_drops(&bed) - before, 5);

    // Loose mode: no finding.
    bed.node
        .sysctl(&[
            "net.ipv4.conf.all.rp_filter=2",
            "net.ipv4.conf.ens6.rp_filter=2",
        ])
        .unwrap();
    let report = routes_json(&bed.node, &[]);
    assert!(
        findings_of_kind(&report, "strict_rp_filter").is_empty(),
        "{report:#}"
    );
}
