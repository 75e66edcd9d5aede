//! The exposition of `routemon watch`, with names in node_exporter style:
//! `routemon_<subsystem>_<what>_<unit>[_total]`, in the Prometheus text format
//! 0.0.4 or, when the scraper asks for it, OpenMetrics 1.0.0 ([`Format`]).

use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
};

use monitor_common::{IfaceCounters, PacketCounters};

use super::{
    evaluation::RoutingState, events::RouteLabels, http::stats::HttpStats, metric_families,
    reconcile::Reconciler, traffic::TrafficFindings,
};
use crate::{
    ebpf::{EbpfError, Monitor, pinning::PERSISTENT_ROUTE_IDS, usage::TableUsage},
    findings::{Finding, FindingKind, Severity},
    model::{Family, NetworkModel},
    preference,
};

/// The daemon's state a scrape shows, borrowed from the watcher.
pub struct DaemonState<'a> {
    /// The routing state.
    pub model: &'a NetworkModel,
    /// Attached interfaces, retired counters, route ids.
    pub reconciler: &'a Reconciler,
    /// Routing findings and Cilium's verdict.
    pub routing: &'a RoutingState,
    /// Traffic findings and asymmetric totals.
    pub traffic: &'a TrafficFindings,
    /// Netlink resyncs since start.
    pub resyncs: u64,
    /// Netlink notifications since start.
    pub notifications: u64,
    /// Guard re-pins since start.
    pub guard_repins: u64,
    /// Events emitted since start.
    pub events: u64,
    /// The kernel tables' usage, when readable.
    pub tables: Option<TableUsage>,
    /// The metrics endpoint's own counters (`None`: no endpoint).
    pub http: Option<&'a HttpStats>,
}

/// An exposition format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    #[default]
    Prometheus,
    /// OpenMetrics 1.0.0 text: counter families are named without `_total`,
    /// `*_info` gauges (always 1) are info families, and `# EOF` ends it.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an exposition in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What scrapes remember from one to the next.
#[derive(Debug, Default)]
pub struct ScrapeMemory {
    /// Failed reads of the kernel's counter maps since start, by map.
    read_failures: BTreeMap<&'static str, u64>,
    /// Running totals of the route counter series.
    routes: SeriesTotals<RouteLabels>,
    /// Running totals of the drop series, by (interface, reason).
    drops: SeriesTotals<(String, String)>,
}

/// Keeps counter series monotonic per label set while the daemon runs. A label set
/// can be fed by a new kernel entry that starts from zero — a route deleted and
/// added again gets a fresh route id, a re-created interface a new ifindex — so each
/// scrape adds what the raw value counted since the previous one
/// ([`PacketCounters::since`]: a raw value below the last one restarted). What a
/// freed entry counted after the last scrape is not seen.
#[derive(Debug)]
struct SeriesTotals<K> {
    series: BTreeMap<K, SeriesTotal>,
    scrapes: u64,
}

impl<K> Default for SeriesTotals<K> {
    fn default() -> Self {
        Self {
            series: BTreeMap::new(),
            scrapes: 0,
        }
    }
}

#[derive(Debug, Default)]
struct SeriesTotal {
    last_raw: PacketCounters,
    total: PacketCounters,
    seen_at: u64,
}

/// A label set not seen for this many scrapes is forgotten (bounded memory under
/// route churn).
const FORGET_AFTER_SCRAPES: u64 = 100;

impl<K: Ord + Clone> SeriesTotals<K> {
    /// Starts a scrape.
    fn begin(&mut self) {
        self.scrapes += 1;
        let now = self.scrapes;
        self.series
            .retain(|_, s| now - s.seen_at <= FORGET_AFTER_SCRAPES);
    }

    /// The series' running total given its raw kernel value now.
    fn total(&mut self, key: &K, raw: PacketCounters) -> PacketCounters {
        let now = self.scrapes;
        let series = self.series.entry(key.clone()).or_default();
        let grown = raw.since(&series.last_raw);
        series.total.accumulate(&grown);
        series.last_raw = raw;
        series.seen_at = now;
        series.total
    }
}

/// Reads one kernel map for a scrape: on failure the series it feeds are left out
/// (zeros would read as a counter reset) and the failure is counted.
fn read<T>(
    failures: &mut BTreeMap<&'static str, u64>,
    map: &'static str,
    result: Result<T, EbpfError>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(
                map,
                "reading the kernel's counters failed: {err}; its series are left out of this scrape"
            );
            *failures.entry(map).or_default() += 1;
            None
        }
    }
}

/// Assembles one scrape from the daemon's state and the kernel's counters.
pub fn collect(
    state: &DaemonState<'_>,
    monitor: &Monitor,
    memory: &mut ScrapeMemory,
) -> MetricsInput {
    memory.routes.begin();
    memory.drops.begin();
    let failures = &mut memory.read_failures;
    let model = state.model;
    let name = |i: u32| model.link_name(i);
    let live = read(failures, "interfaces", monitor.interface_counters());
    let mut interfaces: BTreeMap<String, (IfaceCounters, bool)> = state
        .reconciler
        .retired
        .iter()
        .map(|(name, c)| (name.clone(), (*c, false)))
        .collect();
    for (ifindex, name) in &state.reconciler.attached {
        match live.as_ref() {
            Some(live) => {
                let entry = interfaces.entry(name.clone()).or_default();
                if let Some(c) = live.get(ifindex) {
                    entry.0.accumulate(c);
                }
                entry.1 = true;
            }
            // Without the live part an attached interface's counters would go down.
            None => {
                interfaces.remove(name);
            }
        }
    }
    let routes = read(
        failures,
        "routes",
        monitor.route_counters(PERSISTENT_ROUTE_IDS as usize),
    )
    .map(|counters| {
        state
            .reconciler
            .route_ids
            .routes()
            .iter()
            .map(|(id, route)| {
                let labels = RouteLabels::of(model, route);
                let raw = counters.get(*id as usize).copied().unwrap_or_default();
                let total = memory.routes.total(&labels, raw);
                (labels, total)
            })
            .collect()
    })
    .unwrap_or_default();
    // Recomputed from the model as it is now (a scrape may fall inside a
    // rate-limited resync, when the last evaluation's indexes are stale).
    let preferred = preference::preferred_default_routes(model);
    let default_routes = model
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_default() && r.forwards())
        .map(|(i, r)| (RouteLabels::of(model, r), preferred.contains(&i)))
        .collect();
    let cross_eni = read(failures, "cross_eni", monitor.cross_eni_counters())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.egress_ifindex != k.source_ifindex)
        .map(|(k, c)| (name(k.egress_ifindex), name(k.source_ifindex), c))
        .collect();
    let asymmetric = state
        .traffic
        .asymmetric_totals
        .iter()
        .map(|((i, e), c)| (name(*i), name(*e), *c))
        .collect();
    let drops = if monitor.counts_drops() {
        read(&mut memory.read_failures, "drops", monitor.drop_counters())
            .unwrap_or_default()
            .into_iter()
            .map(|((ifindex, reason), n)| {
                let key = (name(ifindex), reason);
                let raw = PacketCounters {
                    packets: n,
                    bytes: 0,
                };
                let total = memory.drops.total(&key, raw).packets;
                (key.0, key.1, total)
            })
            .collect()
    } else {
        Vec::new()
    };
    let findings: Vec<Finding> = state
        .routing
        .findings
        .values()
        .chain(state.traffic.active())
        .cloned()
        .collect();
    let v4 = model
        .routes
        .iter()
        .filter(|r| r.family == Family::Ipv4)
        .count();
    MetricsInput {
        interfaces: interfaces
            .into_iter()
            .map(|(n, (c, attached))| (n, c, attached))
            .collect(),
        routes,
        default_routes,
        findings,
        cross_eni,
        asymmetric,
        resyncs: state.resyncs,
        notifications: state.notifications,
        uncounted_routes: state.reconciler.uncounted_routes,
        unattached_interfaces: state.reconciler.unattached.len(),
        model_routes: (v4, model.routes.len() - v4),
        program_stats: monitor.program_stats(),
        guard_repins: state.guard_repins,
        events: state.events,
        tables: state.tables,
        drops,
        counts_drops: monitor.counts_drops(),
        cilium: state
            .routing
            .cilium
            .as_ref()
            .map(|v| v.per_family.iter().map(|f| (f.family, f.outcome)).collect())
            .unwrap_or_default(),
        read_failures: memory
            .read_failures
            .iter()
            .map(|(map, n)| (*map, *n))
            .collect(),
        process: super::process::ProcessStats::read(),
        http: state.http.map(|stats| HttpCounts {
            shed: stats.shed_counts(),
            responses: stats.response_counts(),
        }),
    }
}

/// The metrics endpoint's counters at one scrape.
#[derive(Debug, Default)]
pub struct HttpCounts {
    /// Connections shed, by reason.
    pub shed: Vec<(&'static str, u64)>,
    /// Responses, by status code.
    pub responses: Vec<(u16, u64)>,
}

/// Everything one scrape shows: owned, so that it can be rendered away from the
/// daemon's loop (see [`Reading`]).
#[derive(Debug, Default)]
pub struct MetricsInput {
    /// Per interface (by name): counters, and whether it is attached now.
    pub interfaces: Vec<(String, IfaceCounters, bool)>,
    /// Counted routes and their egress counters.
    pub routes: Vec<(RouteLabels, PacketCounters)>,
    /// Default routes and whether the kernel prefers each.
    pub default_routes: Vec<(RouteLabels, bool)>,
    /// Active findings.
    pub findings: Vec<Finding>,
    /// Cross-ENI egress: (egress interface, source interface, counters).
    pub cross_eni: Vec<(String, String, PacketCounters)>,
    /// Asymmetric egress: (ingress interface, egress interface, counters).
    pub asymmetric: Vec<(String, String, PacketCounters)>,
    /// Netlink resyncs since start.
    pub resyncs: u64,
    /// Netlink notifications received since start.
    pub notifications: u64,
    /// Routes that could not get a counter (capacity reached).
    pub uncounted_routes: usize,
    /// Matching interfaces that could not be attached.
    pub unattached_interfaces: usize,
    /// Routes in the daemon's model, every table: (IPv4, IPv6).
    pub model_routes: (usize, usize),
    /// Per program: (name, nanoseconds, runs), when the kernel collects stats.
    pub program_stats: Vec<(&'static str, u64, u64)>,
    /// Guard re-pins since start.
    pub guard_repins: u64,
    /// Events emitted since start.
    pub events: u64,
    /// Fill and losses of the bounded kernel tables (`None` when unreadable).
    pub tables: Option<TableUsage>,
    /// Kernel drops on monitored interfaces: (interface, reason, packets).
    pub drops: Vec<(String, String, u64)>,
    /// Whether drops are counted (the family is exported only then).
    pub counts_drops: bool,
    /// Cilium's default-route outcome per family (empty before the first evaluation).
    pub cilium: Vec<(crate::model::Family, crate::cilium::Outcome)>,
    /// Failed reads of kernel counter maps since start, by map.
    pub read_failures: Vec<(&'static str, u64)>,
    /// The daemon's own footprint (`None` when `/proc` is unreadable).
    pub process: Option<super::process::ProcessStats>,
    /// The metrics endpoint's counters, when it is served.
    pub http: Option<HttpCounts>,
}

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

/// Builds an exposition: `# HELP`/`# TYPE` once per family, then samples.
#[derive(Default)]
struct Exposition {
    out: String,
    format: Format,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family listed in [`FAMILIES`](super::metric_families::FAMILIES).
    /// OpenMetrics names a counter family without its samples' `_total` and an
    /// `_info` gauge as an info family without `_info`, and escapes `"` in help.
    fn family(&mut self, name: &str) {
        let family = metric_families::family(name);
        match self.format {
            Format::Prometheus => {
                let _ = writeln!(self.out, "# HELP {name} {}", family.help);
                let _ = writeln!(self.out, "# TYPE {name} {}", family.kind);
            }
            Format::OpenMetrics => {
                let (name, kind) = openmetrics_family(name, family.kind);
                let help = family
                    .help
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(self.out, "# HELP {name} {help}");
                let _ = writeln!(self.out, "# TYPE {name} {kind}");
            }
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family whose samples all come from one list.
    fn each<T>(
        &mut self,
        name: &str,
        items: &[T],
        sample: impl Fn(&T) -> (Vec<(&str, String)>, String),
    ) {
        self.family(name);
        for item in items {
            let (labels, value) = sample(item);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &labels, value);
        }
    }
}

/// A family's OpenMetrics name and type: counters' samples end in `_total`, info
/// families' in `_info`, which the family name leaves out.
fn openmetrics_family<'n>(name: &'n str, kind: &'static str) -> (&'n str, &'static str) {
    match (
        kind,
        name.strip_suffix("_total"),
        name.strip_suffix("_info"),
    ) {
        ("counter", Some(family), _) => (family, "counter"),
        ("gauge", _, Some(family)) => (family, "info"),
        _ => (name, kind),
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    use super::*;

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
            process: super::super::process::ProcessStats::read(),
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

    /// A series fed by an entry that restarts from zero (a route deleted and added
    /// again) keeps growing; one unseen for long is forgotten.
    #[test]
    fn series_totals_never_go_backwards() {
        let c = |packets| PacketCounters {
            packets,
            bytes: packets * 100,
        };
        let mut totals = SeriesTotals::<&str>::default();
        let mut scrape = |raw| {
            totals.begin();
            totals.total(&"route", raw).packets
        };
        assert_eq!(scrape(c(10)), 10);
        assert_eq!(scrape(c(15)), 15);
        assert_eq!(scrape(c(2)), 17, "re-created: 2 more, never 2");
        assert_eq!(scrape(c(4)), 19);
        for _ in 0..=FORGET_AFTER_SCRAPES {
            totals.begin();
        }
        assert!(totals.series.is_empty());
    }

    /// The family table is what the renderer writes: every family it lists is
    /// rendered with its type and help, and every series carries only its labels.
    #[test]
    fn every_rendered_series_is_in_the_family_table() {
        use super::metric_families::FAMILIES;
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
            let family = super::metric_families::family(name);
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
