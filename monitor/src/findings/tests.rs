//! Tests of the whole evaluation, on model fixtures.

use std::collections::BTreeMap;

use monitor_common::{AsymmetricKey, CrossEniKey, FlowKey, PacketCounters};

use super::*;
use crate::{model::table, samples::SampleCollector};
use crate::{
    preference::preferred_routes,
    selection::PrimarySource,
    testutil::{default_route, model_with_links, push_routes, route},
};

fn primary(ifindex: u32, name: &str) -> Primary {
    Primary {
        ifindex,
        name: name.to_owned(),
        source: PrimarySource::LowestIfindex,
    }
}

fn with_cilium(
    model: &NetworkModel,
    primary: Option<&Primary>,
    families: crate::cilium::CiliumFamilies,
) -> Vec<Finding> {
    evaluate(
        model,
        &preferred_routes(model),
        primary,
        &Verdict::of(model, families),
    )
}

/// The findings other than Cilium's verdict (tested in `cilium_*` below).
fn run(model: &NetworkModel, primary: Option<&Primary>) -> Vec<Finding> {
    with_cilium(model, primary, crate::cilium::CiliumFamilies::Ipv4)
        .into_iter()
        .filter(|f| !f.kind_name().starts_with("cilium_"))
        .collect()
}

fn eks(metric5: u32, metric6: u32) -> NetworkModel {
    let mut model = model_with_links(&["lo", "ens5", "ens6"]);
    push_routes(
        &mut model,
        [
            default_route(2, Some("10.0.1.1"), metric5, table::MAIN),
            default_route(3, Some("10.0.2.1"), metric6, table::MAIN),
        ],
    );
    model
}

#[test]
fn equal_metric_defaults_are_critical() {
    let model = eks(1024, 1024);
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.kind_name(), "equal_metric_default_routes");
    let FindingKind::EqualMetricDefaultRoutes {
        family,
        table,
        metric,
        interfaces,
        gateways,
        best,
        multipath,
    } = &f.kind
    else {
        panic!("wrong kind");
    };
    assert_eq!(
        (*family, table.as_str(), *metric, *best, *multipath),
        (Family::Ipv4, "main", 1024, true, false)
    );
    assert_eq!(interfaces, &["ens5", "ens6"]);
    assert_eq!(
        gateways,
        &[Some("10.0.1.1".to_owned()), Some("10.0.2.1".to_owned())]
    );
    assert!(f.message.contains("fib_select_default"), "{}", f.message);
    assert!(f.message.contains("see the cilium_default_route finding"));
    assert!(f.remediation.contains("05-ens5.network"));
    assert!(f.remediation.contains("[DHCPv4] RouteMetric=1000"));
}

#[test]
fn pinned_primary_clears_every_finding() {
    let model = eks(1000, 1024);
    assert!(run(&model, Some(&primary(2, "ens5"))).is_empty());
}

#[test]
fn single_default_and_no_default_are_healthy() {
    let mut one = model_with_links(&["lo", "ens5"]);
    push_routes(
        &mut one,
        [default_route(2, Some("10.0.1.1"), 1024, table::MAIN)],
    );
    assert!(run(&one, Some(&primary(2, "ens5"))).is_empty());
    let none = model_with_links(&["lo", "ens5"]);
    assert!(run(&none, Some(&primary(2, "ens5"))).is_empty());
}

#[test]
fn tie_among_backups_is_a_warning() {
    let mut model = eks(1000, 1024);
    model.links.insert(4, model.links[&3].clone());
    model.links.get_mut(&4).unwrap().index = 4;
    model.links.get_mut(&4).unwrap().name = "ens7".into();
    push_routes(
        &mut model,
        [default_route(4, Some("10.0.3.1"), 1024, table::MAIN)],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(matches!(
        findings[0].kind,
        FindingKind::EqualMetricDefaultRoutes {
            best: false,
            metric: 1024,
            ..
        }
    ));
}

#[test]
fn ipv6_ties_are_found_per_family() {
    let mut model = eks(1000, 1024);
    push_routes(
        &mut model,
        [
            route("::/0", 2, Some("fe80::1"), 1024, table::MAIN),
            route("::/0", 3, Some("fe80::2"), 1024, table::MAIN),
        ],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(matches!(
        findings[0].kind,
        FindingKind::EqualMetricDefaultRoutes {
            family: Family::Ipv6,
            ..
        }
    ));
    assert!(
        findings[0]
            .remediation
            .contains("[IPv6AcceptRA] RouteMetric=1000")
    );
}

#[test]
fn multipath_default_over_two_uplinks_is_a_tie() {
    let mut model = model_with_links(&["lo", "ens5", "ens6"]);
    let mut ecmp = route("::/0", 2, Some("fd00:1::1"), 1024, table::MAIN);
    ecmp.nexthops.push(crate::model::NextHop {
        gateway: Some("fd00:2::1".parse().unwrap()),
        ifindex: Some(3),
        hops: 0,
        flags: 0,
    });
    ecmp.multipath = true;
    push_routes(&mut model, [ecmp]);
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let FindingKind::EqualMetricDefaultRoutes {
        interfaces,
        multipath,
        ..
    } = &findings[0].kind
    else {
        panic!()
    };
    assert_eq!(interfaces, &["ens5", "ens6"]);
    assert!(*multipath);
    assert_eq!(findings[0].severity, Severity::Critical);
    assert!(findings[0].message.contains("multipath"));
    assert!(
        !findings[0].message.contains("Cilium"),
        "one multipath route is no tie for Cilium"
    );
    let cilium = with_cilium(
        &model,
        Some(&primary(2, "ens5")),
        crate::cilium::CiliumFamilies::Ipv6,
    );
    let cilium = cilium
        .iter()
        .find(|f| f.kind_name() == "cilium_default_route")
        .unwrap();
    assert_eq!(cilium.severity, Severity::Warning);
    assert!(matches!(
        cilium.kind,
        FindingKind::CiliumDefaultRoute {
            outcome: Outcome::MultipathDefault,
            ..
        }
    ));
}

#[test]
fn cilium_findings_only_for_enabled_families() {
    use crate::cilium::CiliumFamilies;
    let mut model = eks(1024, 1024);
    push_routes(
        &mut model,
        [
            route("::/0", 2, Some("fe80::1"), 1024, table::MAIN),
            route("::/0", 3, Some("fe80::2"), 1024, table::MAIN),
        ],
    );
    let cilium_kinds = |families| -> Vec<(String, Severity)> {
        with_cilium(&model, None, families)
            .into_iter()
            .filter_map(|f| match &f.kind {
                FindingKind::CiliumDefaultRoute {
                    family, outcome, ..
                } => Some((format!("{family}/{outcome}"), f.severity)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        cilium_kinds(CiliumFamilies::Ipv4),
        [("ipv4/tie".to_owned(), Severity::Critical)]
    );
    assert_eq!(
        cilium_kinds(CiliumFamilies::Ipv6),
        [("ipv6/tie".to_owned(), Severity::Critical)]
    );
    assert_eq!(cilium_kinds(CiliumFamilies::Dual).len(), 2);
    let tie = with_cilium(&model, None, CiliumFamilies::Ipv4);
    let tie = tie
        .iter()
        .find(|f| f.kind_name() == "cilium_default_route")
        .unwrap();
    assert!(tie.message.contains(
        "Found multiple default routes with the same priority: {Ifindex: 2 Dst: 0.0.0.0/0"
    ));
}

#[test]
fn ties_in_unused_tables_are_info_and_in_rule_tables_critical() {
    let mut model = model_with_links(&["lo", "ens5", "ens6"]);
    push_routes(
        &mut model,
        [
            default_route(2, Some("10.0.1.1"), 1000, table::MAIN),
            default_route(2, Some("10.0.1.1"), 0, 100),
            default_route(3, Some("10.0.2.1"), 0, 100),
        ],
    );
    let rule = |priority, table| crate::model::Rule {
        family: Family::Ipv4,
        priority,
        table,
        src: None,
        dst: None,
        iif: None,
        oif: None,
        fwmark: None,
        action: "lookup".to_owned(),
    };
    model.rules = vec![rule(32766, table::MAIN)];
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].severity, Severity::Info);
    assert!(
        findings[0]
            .message
            .contains("No policy rule looks up table 100")
    );
    model.rules.push(rule(100, 100));
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings[0].severity, Severity::Critical);
    assert!(
        findings[0].message.contains("priority 100"),
        "{}",
        findings[0].message
    );
}

#[test]
fn blackhole_tied_with_a_real_default_is_reported() {
    let mut model = model_with_links(&["lo", "ens5"]);
    let mut blackhole = default_route(2, None, 100, table::MAIN);
    blackhole.kind = crate::model::RouteKind::Blackhole;
    blackhole.nexthops.clear();
    // The kernel lists the blackhole first: it is what lookups return.
    push_routes(
        &mut model,
        [
            blackhole.clone(),
            default_route(2, Some("10.0.1.1"), 100, table::MAIN),
        ],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].severity, Severity::Critical);
    assert!(
        findings[0]
            .message
            .contains("the blackhole route, so the traffic")
    );
    // Behind the real route it drops nothing yet.
    let mut model = model_with_links(&["lo", "ens5"]);
    push_routes(
        &mut model,
        [
            default_route(2, Some("10.0.1.1"), 100, table::MAIN),
            blackhole,
        ],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings[0].severity, Severity::Warning);
}

#[test]
fn ties_in_other_tables_are_reported_without_cilium() {
    let mut model = model_with_links(&["lo", "ens5", "ens6"]);
    push_routes(
        &mut model,
        [
            default_route(2, Some("10.0.1.1"), 0, 10_001),
            default_route(3, Some("10.0.2.1"), 0, 10_001),
        ],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1);
    assert!(!findings[0].message.contains("Cilium"));
    assert!(
        matches!(&findings[0].kind, FindingKind::EqualMetricDefaultRoutes { table, .. } if table == "10001")
    );
}

#[test]
fn secondary_with_better_metric_means_primary_not_preferred() {
    let model = eks(1024, 100);
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind_name(), "primary_not_preferred");
    let FindingKind::PrimaryNotPreferred {
        primary,
        primary_metric,
        preferred,
        ..
    } = &findings[0].kind
    else {
        panic!()
    };
    assert_eq!((primary.as_str(), *primary_metric), ("ens5", Some(1024)));
    assert_eq!((preferred.dev.as_str(), preferred.metric), ("ens6", 100));
}

#[test]
fn a_tie_that_includes_the_primary_is_only_the_tie() {
    // Whatever the order, a tie is one finding.
    let mut model = model_with_links(&["lo", "ens5", "ens6"]);
    push_routes(
        &mut model,
        [
            default_route(3, Some("10.0.2.1"), 1024, table::MAIN),
            default_route(2, Some("10.0.1.1"), 1024, table::MAIN),
        ],
    );
    let findings = run(&model, Some(&primary(2, "ens5")));
    let kinds: Vec<_> = findings.iter().map(Finding::kind_name).collect();
    assert_eq!(kinds, ["equal_metric_default_routes"]);
}

#[test]
fn cross_eni_counters_become_critical_findings() {
    let mut model = eks(1024, 1024);
    model.addresses.push(crate::model::Address {
        ifindex: 3,
        addr: "10.0.2.10/24".parse().unwrap(),
    });
    let counters = BTreeMap::from([
        (
            CrossEniKey {
                egress_ifindex: 2,
                source_ifindex: 3,
            },
            PacketCounters {
                packets: 7,
                bytes: 700,
            },
        ),
        // A pair with nothing counted, and one that is not cross-ENI at all.
        (
            CrossEniKey {
                egress_ifindex: 3,
                source_ifindex: 2,
            },
            PacketCounters::default(),
        ),
        (
            CrossEniKey {
                egress_ifindex: 3,
                source_ifindex: 3,
            },
            PacketCounters {
                packets: 9,
                bytes: 900,
            },
        ),
    ]);
    let mut samples = SampleCollector::default();
    let mut flow = FlowKey {
        ip_version: 4,
        protocol: 17,
        src_port: 5000,
        dst_port: 9,
        ..FlowKey::default()
    };
    flow.src[..4].copy_from_slice(&[10, 0, 2, 10]);
    flow.dst[..4].copy_from_slice(&[198, 51, 100, 10]);
    let event = monitor_common::SampleEvent {
        kind: monitor_common::SAMPLE_CROSS_ENI,
        egress_ifindex: 2,
        source_ifindex: 3,
        pad: 0,
        flow,
    };
    samples.add([event, event]);
    let findings = cross_eni_egress(&model, &counters, &samples, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let json = serde_json::to_value(&findings[0]).unwrap();
    assert_eq!(json["kind"], "cross_eni_egress");
    assert_eq!(json["severity"], "critical");
    assert_eq!(json["egress_interface"], "ens5");
    assert_eq!(json["source_interface"], "ens6");
    assert_eq!(json["source_addresses"][0], "10.0.2.10");
    assert_eq!(
        (json["packets"].as_u64(), json["bytes"].as_u64()),
        (Some(7), Some(700))
    );
    assert!(findings[0].remediation.contains("ip rule add from"));
    assert_eq!(json["samples"][0]["flow"]["src_port"], 5000);
    assert_eq!(json["samples"][0]["sampled_packets"], 2);
    assert_eq!(json["unsampled_packets"], 5);
    assert!(
        findings[0]
            .message
            .contains("udp 10.0.2.10:5000 -> 198.51.100.10:9")
    );
}

#[test]
fn asymmetric_flows_are_listed_busiest_first_with_their_tuple() {
    let model = eks(1000, 1024);
    let key = |sport: u16, ingress, egress| {
        let mut flow = FlowKey {
            ip_version: 4,
            protocol: 6,
            src_port: 8080,
            dst_port: sport,
            ..FlowKey::default()
        };
        flow.src[..4].copy_from_slice(&[10, 0, 2, 10]);
        flow.dst[..4].copy_from_slice(&[10, 0, 100, 2]);
        AsymmetricKey {
            flow,
            ingress_ifindex: ingress,
            egress_ifindex: egress,
        }
    };
    let flows = BTreeMap::from([
        (
            key(40000, 3, 2),
            PacketCounters {
                packets: 3,
                bytes: 222,
            },
        ),
        (
            key(40001, 3, 2),
            PacketCounters {
                packets: 5,
                bytes: 370,
            },
        ),
    ]);
    let findings = asymmetric_flows(&model, &flows);
    assert_eq!(findings.len(), 2);
    let json = serde_json::to_value(&findings[0]).unwrap();
    assert_eq!(json["kind"], "asymmetric_flow");
    assert_eq!(json["flow"]["protocol"], "tcp");
    assert_eq!(json["flow"]["src"], "10.0.2.10");
    assert_eq!(json["flow"]["dst_port"], 40001, "busiest first");
    assert_eq!(json["ingress_interface"], "ens6");
    assert_eq!(json["egress_interface"], "ens5");
    assert_eq!(json["packets"], 5);
    assert!(
        findings[0]
            .message
            .contains("tcp 10.0.2.10:8080 -> 10.0.100.2:40001")
    );
}

#[test]
fn strict_rp_filter_on_a_secondary_uplink_is_a_warning() {
    let mut model = eks(1000, 1024);
    model.rp_filter = BTreeMap::from([(2, 1), (3, 1)]);
    let findings = run(&model, Some(&primary(2, "ens5")));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let json = serde_json::to_value(&findings[0]).unwrap();
    assert_eq!(json["kind"], "strict_rp_filter");
    assert_eq!(json["interface"], "ens6");
    assert_eq!(json["default_route_interface"], "ens5");
    // Loose mode, or a single uplink, is fine.
    model.rp_filter = BTreeMap::from([(2, 2), (3, 2)]);
    assert!(run(&model, Some(&primary(2, "ens5"))).is_empty());
    let mut single = model_with_links(&["lo", "ens5"]);
    push_routes(
        &mut single,
        [default_route(2, Some("10.0.1.1"), 1024, table::MAIN)],
    );
    single.rp_filter = BTreeMap::from([(2, 1)]);
    assert!(run(&single, Some(&primary(2, "ens5"))).is_empty());
}

#[test]
fn json_shape_is_flat() {
    let model = eks(1024, 1024);
    let findings = run(&model, Some(&primary(2, "ens5")));
    let json = serde_json::to_value(&findings[0]).unwrap();
    assert_eq!(json["kind"], "equal_metric_default_routes");
    assert_eq!(json["severity"], "critical");
    assert_eq!(json["family"], "ipv4");
    assert_eq!(json["table"], "main");
    assert_eq!(json["metric"], 1024);
    assert_eq!(json["interfaces"][1], "ens6");
    assert!(json["message"].is_string() && json["remediation"].is_string());
}
