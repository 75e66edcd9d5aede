//! One scrape's reading, taken on the daemon's loop: the kernel's counters and a
//! copy of the state the exposition shows.

use std::collections::BTreeMap;

use monitor_common::{IfaceCounters, PacketCounters};

use super::super::{
    evaluation::RoutingState, events::RouteLabels, http::stats::HttpStats, process::ProcessStats,
    reconcile::Reconciler, traffic::TrafficFindings,
};
use crate::{
    ebpf::{EbpfError, Monitor, pinning::PERSISTENT_ROUTE_IDS, usage::TableUsage},
    findings::Finding,
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
        process: ProcessStats::read(),
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
    pub process: Option<ProcessStats>,
    /// The metrics endpoint's counters, when it is served.
    pub http: Option<HttpCounts>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
