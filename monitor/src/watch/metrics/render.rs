//! Renders one reading in a format: every family of the table, in its order.

use std::{collections::BTreeMap, fmt::Display};

use monitor_common::IfaceCounters;

use super::{Format, MetricsInput, exposition::Exposition};
use crate::{
    ebpf::usage::TableUsage,
    findings::{Finding, FindingKind, Severity},
    watch::events::RouteLabels,
};

/// One reading of the counters, rendered at most once per format, by whoever asks
/// first: the metrics server's thread, so the daemon's loop only reads the kernel's
/// counters and copies its state.
#[derive(Debug)]
pub struct Reading {
    input: MetricsInput,
    prometheus: std::sync::OnceLock<hyper::body::Bytes>,
    openmetrics: std::sync::OnceLock<hyper::body::Bytes>,
}

impl Reading {
    /// A reading not rendered yet.
    pub fn new(input: MetricsInput) -> Self {
        Self {
            input,
            prometheus: std::sync::OnceLock::new(),
            openmetrics: std::sync::OnceLock::new(),
        }
    }

    /// The exposition in `format`, rendered on the first call for that format.
    pub fn text(&self, format: Format) -> hyper::body::Bytes {
        let cell = match format {
            Format::Prometheus => &self.prometheus,
            Format::OpenMetrics => &self.openmetrics,
        };
        cell.get_or_init(|| hyper::body::Bytes::from(render(&self.input, format)))
            .clone()
    }
}

fn route_labels(route: &RouteLabels) -> Vec<(&'static str, String)> {
    vec![
        ("family", route.family.clone()),
        ("table", route.table.clone()),
        ("destination", route.destination.clone()),
        ("gateway", route.gateway.clone()),
        ("interface", route.interface.clone()),
        ("metric", route.metric.to_string()),
    ]
}

/// The labels of a finding's series: its `kind`, the labels that identify a
/// finding of that kind (bounded cardinality: no counts, no per-flow labels), and
/// its `severity`.
fn finding_labels(finding: &Finding) -> Vec<(&'static str, String)> {
    let mut labels = vec![("kind", finding.kind_name().to_owned())];
    labels.extend(match &finding.kind {
        FindingKind::EqualMetricDefaultRoutes {
            family,
            table,
            metric,
            interfaces,
            ..
        } => vec![
            ("family", family.to_string()),
            ("table", table.clone()),
            ("metric", metric.to_string()),
            ("interfaces", interfaces.join(",")),
        ],
        FindingKind::PrimaryNotPreferred {
            family,
            table,
            primary,
            preferred,
            ..
        } => vec![
            ("family", family.to_string()),
            ("table", table.clone()),
            ("primary", primary.clone()),
            ("preferred_interface", preferred.dev.clone()),
        ],
        FindingKind::StrictRpFilter { interface, .. } => vec![("interface", interface.clone())],
        FindingKind::CiliumDefaultRoute {
            family, outcome, ..
        } => vec![
            ("family", family.to_string()),
            ("outcome", outcome.to_string()),
        ],
        FindingKind::CiliumDualStackLinks {
            ipv4_device,
            ipv6_device,
        } => vec![
            ("ipv4_device", ipv4_device.clone()),
            ("ipv6_device", ipv6_device.clone()),
        ],
        FindingKind::CrossEniEgress {
            egress_interface,
            source_interface,
            ..
        } => vec![
            ("egress_interface", egress_interface.clone()),
            ("source_interface", source_interface.clone()),
        ],
        FindingKind::AsymmetricFlow {
            ingress_interface,
            egress_interface,
            ..
        } => vec![
            ("ingress_interface", ingress_interface.clone()),
            ("egress_interface", egress_interface.clone()),
        ],
    });
    labels.push(("severity", finding.severity.to_string()));
    labels
}

/// Renders the exposition in `format`.
pub fn render(input: &MetricsInput, format: Format) -> String {
    let mut x = Exposition {
        out: String::new(),
        format,
    };
    x.family("routemon_build_info");
    x.sample(
        "routemon_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    if let Some(process) = &input.process {
        let figures: [(&str, &dyn Display); 6] = [
            ("process_cpu_seconds_total", &process.cpu_seconds),
            (
                "process_resident_memory_bytes",
                &process.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                &process.virtual_memory_bytes,
            ),
            ("process_open_fds", &process.open_fds),
            ("process_max_fds", &process.max_fds),
            ("process_start_time_seconds", &process.start_time_seconds),
        ];
        for (name, value) in figures {
            x.family(name);
            x.sample(name, &[], value);
        }
    }

    type Field = fn(&IfaceCounters) -> u64;
    let interface_counters: [(&str, Field); 8] = [
        ("routemon_interface_egress_packets_total", |c| {
            c.egress_packets
        }),
        ("routemon_interface_egress_bytes_total", |c| c.egress_bytes),
        ("routemon_interface_ingress_packets_total", |c| {
            c.ingress_packets
        }),
        ("routemon_interface_ingress_bytes_total", |c| {
            c.ingress_bytes
        }),
        (
            "routemon_interface_egress_unattributed_packets_total",
            |c| c.egress_unattributed_packets,
        ),
        ("routemon_interface_egress_unattributed_bytes_total", |c| {
            c.egress_unattributed_bytes
        }),
        ("routemon_interface_unparsed_packets_total", |c| {
            c.unparsed_packets
        }),
        ("routemon_interface_unparsed_bytes_total", |c| {
            c.unparsed_bytes
        }),
    ];
    for (name, field) in interface_counters {
        x.each(name, &input.interfaces, |(iface, c, _)| {
            (vec![("interface", iface.clone())], field(c).to_string())
        });
    }
    x.each(
        "routemon_interface_attached",
        &input.interfaces,
        |(iface, _, attached)| {
            (
                vec![("interface", iface.clone())],
                u8::from(*attached).to_string(),
            )
        },
    );

    x.each(
        "routemon_route_egress_packets_total",
        &input.routes,
        |(route, c)| (route_labels(route), c.packets.to_string()),
    );
    x.each(
        "routemon_route_egress_bytes_total",
        &input.routes,
        |(route, c)| (route_labels(route), c.bytes.to_string()),
    );
    x.each(
        "routemon_default_route_info",
        &input.default_routes,
        |(route, preferred)| {
            let mut labels = route_labels(route);
            labels.retain(|(k, _)| *k != "destination");
            labels.push(("preferred", preferred.to_string()));
            (labels, "1".to_owned())
        },
    );

    // One family for every kind, so that one alert rule covers every kind; one
    // series per distinct label set. Asymmetric flows of one interface pair share
    // theirs, so the value counts them.
    let mut by_labels: BTreeMap<Vec<(&str, String)>, u64> = BTreeMap::new();
    for finding in &input.findings {
        *by_labels.entry(finding_labels(finding)).or_default() += 1;
    }
    let rows: Vec<_> = by_labels.into_iter().collect();
    x.each("routemon_finding", &rows, |(labels, n)| {
        (labels.clone(), n.to_string())
    });
    let outcomes: Vec<(Vec<(&str, String)>, u8)> = input
        .cilium
        .iter()
        .flat_map(|(family, now)| {
            crate::cilium::Outcome::ALL.into_iter().map(move |outcome| {
                (
                    vec![
                        ("family", family.to_string()),
                        ("outcome", outcome.to_string()),
                    ],
                    u8::from(outcome == *now),
                )
            })
        })
        .collect();
    x.each(
        "routemon_cilium_default_route_outcome",
        &outcomes,
        |(labels, value)| (labels.clone(), value.to_string()),
    );
    let failures: Vec<_> = ["interfaces", "routes", "cross_eni", "drops"]
        .into_iter()
        .map(|map| {
            let n = input
                .read_failures
                .iter()
                .find(|(m, _)| *m == map)
                .map_or(0, |(_, n)| *n);
            (map, n)
        })
        .collect();
    x.each(
        "routemon_kernel_read_failures_total",
        &failures,
        |(map, n)| (vec![("map", (*map).to_owned())], n.to_string()),
    );
    let mut by_severity: BTreeMap<String, u64> =
        [Severity::Critical, Severity::Warning, Severity::Info]
            .map(|s| (s.to_string(), 0))
            .into();
    for finding in &input.findings {
        *by_severity.entry(finding.severity.to_string()).or_default() += 1;
    }
    let rows: Vec<_> = by_severity.into_iter().collect();
    x.each("routemon_findings", &rows, |(severity, n)| {
        (vec![("severity", severity.clone())], n.to_string())
    });

    for (name, rows, first) in [
        (
            "routemon_cross_eni_egress",
            &input.cross_eni,
            "egress_interface",
        ),
        (
            "routemon_asymmetric_egress",
            &input.asymmetric,
            "ingress_interface",
        ),
    ] {
        let second = if first == "egress_interface" {
            "source_interface"
        } else {
            "egress_interface"
        };
        x.each(&format!("{name}_packets_total"), rows, |(a, b, c)| {
            (
                vec![(first, a.clone()), (second, b.clone())],
                c.packets.to_string(),
            )
        });
        x.each(&format!("{name}_bytes_total"), rows, |(a, b, c)| {
            (
                vec![(first, a.clone()), (second, b.clone())],
                c.bytes.to_string(),
            )
        });
    }

    x.family("routemon_model_routes");
    for (family, count) in [
        ("ipv4", input.model_routes.0),
        ("ipv6", input.model_routes.1),
    ] {
        x.sample("routemon_model_routes", &[("family", family)], count);
    }

    for (name, value) in [
        ("routemon_netlink_resyncs_total", input.resyncs),
        ("routemon_netlink_notifications_total", input.notifications),
        ("routemon_routes_uncounted", input.uncounted_routes as u64),
        (
            "routemon_interfaces_unattached",
            input.unattached_interfaces as u64,
        ),
        ("routemon_guard_repins_total", input.guard_repins),
        ("routemon_events_total", input.events),
    ] {
        x.family(name);
        x.sample(name, &[], value);
    }

    if let Some(tables) = &input.tables {
        render_tables(&mut x, tables);
    }
    if input.counts_drops {
        x.each(
            "routemon_drops_total",
            &input.drops,
            |(interface, reason, n)| {
                (
                    vec![("interface", interface.clone()), ("reason", reason.clone())],
                    n.to_string(),
                )
            },
        );
    }

    if input.program_stats.iter().any(|(_, _, runs)| *runs > 0) {
        x.each(
            "routemon_bpf_program_run_seconds_total",
            &input.program_stats,
            |(program, nanos, _)| {
                (
                    vec![("program", (*program).to_owned())],
                    format!("{:.9}", *nanos as f64 / 1e9),
                )
            },
        );
        x.each(
            "routemon_bpf_program_runs_total",
            &input.program_stats,
            |(program, _, runs)| (vec![("program", (*program).to_owned())], runs.to_string()),
        );
    }
    if let Some(http) = &input.http {
        x.each(
            "routemon_http_connections_shed_total",
            &http.shed,
            |(reason, n)| (vec![("reason", (*reason).to_owned())], n.to_string()),
        );
        x.each(
            "routemon_http_requests_total",
            &http.responses,
            |(code, n)| (vec![("code", code.to_string())], n.to_string()),
        );
    }
    if format == Format::OpenMetrics {
        x.out.push_str("# EOF\n");
    }
    x.out
}

/// The bounded kernel tables: how full, and what they dropped.
fn render_tables(x: &mut Exposition, tables: &TableUsage) {
    let lru = [
        ("flows", &tables.flows),
        ("flows_v6", &tables.flows_v6),
        ("unanswered", &tables.unanswered),
        ("unanswered_v6", &tables.unanswered_v6),
        ("asymmetric_flows", &tables.asymmetric_flows),
    ];
    let pairs = &tables.cross_eni_pairs;
    let sizes = lru
        .iter()
        .map(|(name, t)| (*name, t.entries, t.capacity))
        .chain([
            ("cross_eni_pairs", pairs.entries, pairs.capacity),
            (
                "drop_reasons",
                tables.drop_reasons.entries,
                tables.drop_reasons.capacity,
            ),
        ]);
    x.family("routemon_table_entries");
    for (table, entries, _) in sizes.clone() {
        x.sample("routemon_table_entries", &[("table", table)], entries);
    }
    x.family("routemon_table_capacity");
    for (table, _, capacity) in sizes {
        x.sample("routemon_table_capacity", &[("table", table)], capacity);
    }
    x.family("routemon_table_evictions_total");
    for (table, usage) in lru {
        x.sample(
            "routemon_table_evictions_total",
            &[("table", table)],
            usage.evicted,
        );
    }
    x.family("routemon_cross_eni_uncounted_packets_total");
    x.sample(
        "routemon_cross_eni_uncounted_packets_total",
        &[],
        pairs.uncounted_packets,
    );
    x.family("routemon_drops_uncounted_total");
    x.sample(
        "routemon_drops_uncounted_total",
        &[],
        tables.drop_reasons.uncounted_packets,
    );
    x.family("routemon_samples_total");
    for (outcome, n) in [
        ("sent", tables.samples.sent),
        ("suppressed", tables.samples.suppressed),
    ] {
        x.sample("routemon_samples_total", &[("outcome", outcome)], n);
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::PacketCounters;

    use super::{super::HttpCounts, *};
    use crate::{
        model::Family,
        preference,
        watch::{metric_families, process::ProcessStats},
    };

    /// An input with every section filled, so every family renders.
    fn everything() -> MetricsInput {
        let route = RouteLabels {
            family: "ipv4".into(),
            table: "main".into(),
            destination: "0.0.0.0/0".into(),
            gateway: "10.0.1.1".into(),
            interface: "ens5".into(),
            metric: 1024,
        };
        MetricsInput {
            interfaces: vec![("ens5".into(), IfaceCounters::default(), true)],
            routes: vec![(route.clone(), PacketCounters::default())],
            default_routes: vec![(route, true)],
            findings: everything_findings(),
            cross_eni: vec![("ens5".into(), "ens6".into(), PacketCounters::default())],
            asymmetric: vec![("ens6".into(), "ens5".into(), PacketCounters::default())],
            program_stats: vec![("routemon_tx", 10, 1)],
            tables: Some(TableUsage::default()),
            drops: vec![("ens5".into(), "IP_RPFILTER".into(), 1)],
            counts_drops: true,
            cilium: vec![(Family::Ipv4, crate::cilium::Outcome::Ok)],
            read_failures: vec![("routes", 1)],
            process: ProcessStats::read(),
            http: Some(HttpCounts {
                shed: vec![("overload", 2)],
                responses: vec![(200, 5)],
            }),
            ..MetricsInput::default()
        }
    }

    fn everything_findings() -> Vec<Finding> {
        use crate::{
            cilium::{CiliumFamilies, Verdict},
            testutil::{default_route, model_with_links, push_routes},
        };
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [
                default_route(2, Some("10.0.1.1"), 1024, 254),
                default_route(3, Some("10.0.2.1"), 1024, 254),
            ],
        );
        crate::findings::evaluate(
            &model,
            &preference::preferred_default_routes(&model),
            None,
            &Verdict::of(&model, CiliumFamilies::Ipv4),
        )
    }

    /// The family table is what the renderer writes: every family it lists is
    /// rendered with its type and help, and every series carries only its labels.
    #[test]
    fn every_rendered_series_is_in_the_family_table() {
        use metric_families::FAMILIES;
        let text = render(&everything(), Format::Prometheus);
        for family in FAMILIES {
            assert!(
                text.contains(&format!("# HELP {} {}\n", family.name, family.help)),
                "{} not rendered",
                family.name
            );
            assert!(text.contains(&format!("# TYPE {} {}\n", family.name, family.kind)));
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = metric_families::family(name);
            if let Some((_, labels)) = line.split_once('{') {
                for pair in labels.split("\",") {
                    let key = pair.split('=').next().unwrap();
                    assert!(
                        family.labels.contains(&key),
                        "{name} has label {key}, not in its table entry"
                    );
                }
            }
        }
    }

    #[test]
    fn labels_are_escaped_and_families_typed() {
        let input = MetricsInput {
            interfaces: vec![(
                "we\"ird\\".to_owned(),
                IfaceCounters {
                    egress_packets: 3,
                    ..IfaceCounters::default()
                },
                true,
            )],
            ..MetricsInput::default()
        };
        let text = render(&input, Format::Prometheus);
        assert!(
            text.contains(
                "routemon_interface_egress_packets_total{interface=\"we\\\"ird\\\\\"} 3\n"
            )
        );
        assert!(text.contains("# TYPE routemon_interface_egress_packets_total counter\n"));
        assert!(text.contains("routemon_findings{severity=\"critical\"} 0\n"));
        assert!(
            !text.contains("routemon_bpf_program"),
            "no run-time metrics without stats"
        );
        // Every sample's family is declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} undeclared");
            }
        }
    }

    /// The OpenMetrics exposition: every sample belongs to a declared family (a
    /// counter's samples end in `_total`, an info family's in `_info`), help has
    /// no unescaped quote, and `# EOF` ends it.
    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = render(&everything(), Format::OpenMetrics);
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.contains("# TYPE routemon_events counter\n"));
        assert!(text.contains("routemon_events_total 0\n"));
        assert!(text.contains("# TYPE routemon_build info\n"));
        assert!(text.contains("# TYPE routemon_findings gauge\n"));
        let mut families = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(!name.ends_with("_total"), "{line}");
                assert!(
                    families.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} declared twice"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let help = rest.split_once(' ').unwrap().1;
                let unescaped = help.replace("\\\\", "").replace("\\\"", "").contains('"');
                assert!(!unescaped, "{line}");
            } else if line != "# EOF" {
                let name = line.split(['{', ' ']).next().unwrap();
                let declared = [("_total", "counter"), ("_info", "info"), ("", "gauge")]
                    .iter()
                    .any(|(suffix, kind)| {
                        name.strip_suffix(suffix)
                            .and_then(|family| families.get(family))
                            .is_some_and(|k| k == kind)
                    });
                assert!(declared, "{name} has no family of its type before it");
            }
        }
    }
}
