//! `routemon watch`: the long-running monitor.
//!
//! One task owns all state. It follows the kernel's rtnetlink notifications
//! (links, addresses, IPv4/IPv6 routes and rules), keeps the model current
//! ([`crate::model::live`]), and after every batch of changes reconciles: attaches
//! to interfaces that appeared, releases those that went away, rewrites the
//! kernel's route tries with stable route ids, re-evaluates the findings and emits
//! events for what changed. Counter-based findings are evaluated every interval.
//! Scrapes of `/metrics` are answered by the same task, from the same state.

pub mod events;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod route_ids;
pub mod traffic;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_common::IfaceCounters;
use tokio::sync::mpsc;

use self::{
    events::{Event, EventSink, RouteLabels},
    guard::Guard,
    http::Query,
    metrics::MetricsInput,
    route_ids::RouteIds,
    traffic::TrafficFindings,
};
use crate::{
    attribution::{AttributionPlan, SourceRule},
    ebpf::{
        AttachMode, Monitor, orphans,
        pinning::{PERSISTENT_ROUTE_IDS, PinStore},
        usage::TableUsage,
    },
    findings::{self, Finding},
    model::{
        Link, NetworkModel,
        dump::Netlink,
        events::{Groups, Notification, Subscription},
        live::{self, Stale},
    },
    preference, preflight,
    samples::SampleCollector,
    selection::{self, InterfacePattern, Primary},
    signals::Shutdown,
};

/// Most notifications applied in one batch before re-evaluating.
const MAX_BATCH: usize = 100_000;
/// Least time between two full re-reads after lost notifications.
pub const RESYNC_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often sampled packets are read from the kernel's ring buffer.
const SAMPLE_DRAIN_INTERVAL: Duration = Duration::from_millis(250);
/// Time allowed for detaching at shutdown.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1500);

/// How `watch` runs.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Interface patterns; empty: uplinks (default route holders, ENI-like names).
    pub patterns: Vec<InterfacePattern>,
    /// The primary interface.
    pub primary: Option<String>,
    /// Where to serve metrics.
    pub listen: Option<SocketAddr>,
    /// Whether to print JSON events on stdout.
    pub events: bool,
    /// `--guard`: the primary and its metric.
    pub guard: Option<(String, u32)>,
    /// Where to pin; `None`: nothing pinned.
    pub pin_dir: Option<PathBuf>,
    /// Leave pinned links and maps in place at exit.
    pub keep_pinned: bool,
    /// How to attach.
    pub attach: AttachMode,
    /// Interval of the traffic evaluation.
    pub interval: Duration,
    /// Netlink receive buffer to ask for.
    pub netlink_buffer: usize,
    /// The address families the Cilium agent uses.
    pub cilium_family: crate::cilium::CiliumFamilies,
}

/// Loads the programs, with their maps pinned under `pin_dir` (taking over what a
/// previous routemon left there) or unpinned; returns how many maps were reused.
fn load_monitor(pin_dir: Option<&std::path::Path>) -> anyhow::Result<(Monitor, usize)> {
    match pin_dir {
        Some(dir) => {
            let (store, state) = PinStore::open(dir)?;
            store.remove_orphan_links();
            Ok((
                Monitor::load_long_running(Some(store))?,
                state.reused_maps.len(),
            ))
        }
        None => {
            let default_dir = std::path::Path::new(crate::ebpf::pinning::DEFAULT_PIN_DIR);
            let leftover = PinStore::pinned_links(default_dir);
            anyhow::ensure!(
                leftover.is_empty(),
                "routemon's programs are still attached and pinned under {} ({}); \
                 --no-pin would count every packet twice. Run `routemon cleanup` first, \
                 or drop --no-pin to take them over",
                default_dir.display(),
                leftover.join(", ")
            );
            Ok((Monitor::load_long_running(None)?, 0))
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM/SIGHUP.
pub async fn run(options: WatchOptions) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install().context("installing signal handlers")?;
    preflight::require_ebpf_privileges("watch")?;
    let netlink = Netlink::connect()?;
    let mut subscription =
        Subscription::with_receive_buffer(Groups::Everything, options.netlink_buffer)?;
    tracing::info!(
        bytes = subscription.receive_buffer(),
        "netlink receive buffer"
    );
    // Bound before anything is attached, so a busy port fails cleanly.
    let listener = match options.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for metrics; choose another --listen address")
        })?),
        None => None,
    };
    // The eBPF object loads (BTF, verifier) on a blocking thread while the routing
    // tables are dumped: with many routes both take about as long.
    let loading = tokio::task::spawn_blocking({
        let pin_dir = options.pin_dir.clone();
        move || load_monitor(pin_dir.as_deref())
    });
    let model = netlink.dump().await?;
    orphans::warn(
        &orphans::find(
            &netlink,
            model.links.values().map(|l| (l.index, l.name.clone())),
        )
        .await,
    );
    for pattern in &options.patterns {
        if !model.links.values().any(|l| pattern.matches(&l.name)) {
            tracing::warn!(
                pattern = pattern.as_str(),
                "no interface matches yet; routemon attaches when one appears"
            );
        }
    }
    let (mut monitor, reused_maps) = loading.await.context("loading the eBPF object")??;
    if let Err(err) = monitor.attach_drop_counter() {
        tracing::info!("{err}; routemon_drops_total is not exported");
    }
    let mut watcher = Watcher::new(monitor, model, &options)?;
    let started = Instant::now();
    watcher.reconcile(&netlink, started).await;
    watcher.events.emit(Event::Started {
        version: env!("CARGO_PKG_VERSION"),
        listen: options.listen.map(|a| a.to_string()),
        pin_dir: options.pin_dir.as_ref().map(|d| d.display().to_string()),
        reused_maps,
    });

    let (query_tx, mut queries) = mpsc::channel::<Query>(16);
    if let Some(listener) = listener {
        tokio::spawn(http::serve(listener, query_tx));
    }
    let mut traffic_tick = tokio::time::interval(options.interval);
    traffic_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample_tick = tokio::time::interval(SAMPLE_DRAIN_INTERVAL);
    let signal = loop {
        let wake = watcher.wake_at();
        tokio::select! {
            signal = shutdown.recv() => break signal,
            notification = subscription.next() => {
                let Some(first) = notification else {
                    anyhow::bail!("the netlink subscription ended unexpectedly");
                };
                let arrived = Instant::now();
                watcher.apply(first);
                let mut batch = 1;
                while batch < MAX_BATCH && let Some(next) = subscription.try_next() {
                    watcher.apply(next);
                    batch += 1;
                }
                watcher.reconcile(&netlink, arrived).await;
            }
            Some(query) = queries.recv() => watcher.answer(query),
            _ = traffic_tick.tick() => watcher.evaluate_traffic(),
            _ = sample_tick.tick() => watcher.drain_samples(),
            () = sleep_until(wake) => watcher.reconcile(&netlink, Instant::now()).await,
        }
    };
    watcher.events.emit(Event::Stopping {
        signal: signal.to_owned(),
        kept_pinned: options.keep_pinned && options.pin_dir.is_some(),
    });
    let monitor = watcher.monitor;
    let finish = async {
        if options.keep_pinned {
            monitor.keep_pinned(&netlink).await
        } else {
            monitor.detach(&netlink).await?;
            // Nothing left behind: the maps' pins go too.
            match &options.pin_dir {
                Some(dir) => PinStore::remove_all(dir).map(drop).map_err(|err| {
                    crate::ebpf::EbpfError::Other(format!(
                        "removing {} failed: {err}",
                        dir.display()
                    ))
                }),
                None => Ok(()),
            }
        }
    };
    match tokio::time::timeout(SHUTDOWN_BUDGET, finish).await {
        Ok(result) => result.context("detaching routemon's programs")?,
        Err(_) => anyhow::bail!(
            "detaching did not finish within {SHUTDOWN_BUDGET:?}; run `routemon cleanup`"
        ),
    }
    tracing::info!(
        "stopped after {:.1}s ({signal})",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The daemon's state.
struct Watcher {
    monitor: Monitor,
    model: NetworkModel,
    patterns: Vec<InterfacePattern>,
    primary_name: Option<String>,
    attach_mode: AttachMode,
    events: EventSink,
    /// Attached interfaces: ifindex → name.
    attached: BTreeMap<u32, String>,
    /// Matching interfaces that could not be attached (e.g. beyond the counter
    /// map's capacity); retried on every change.
    unattached: BTreeSet<u32>,
    /// Counters of interfaces that went away, by name.
    retired: BTreeMap<String, IfaceCounters>,
    owners: HashMap<IpAddr, u32>,
    route_ids: RouteIds,
    uncounted_routes: usize,
    source_rules: Vec<SourceRule>,
    routing_findings: BTreeMap<String, Finding>,
    cilium_family: crate::cilium::CiliumFamilies,
    /// Cilium's verdict as last evaluated (`None` before the first evaluation).
    cilium: Option<crate::cilium::Verdict>,
    default_routes: BTreeSet<RouteLabels>,
    traffic: TrafficFindings,
    traffic_quiet: Duration,
    samples: SampleCollector,
    sample_reader: Option<crate::ebpf::SampleReader>,
    guard: Option<Guard>,
    stale: Stale,
    overrun: bool,
    last_resync: Option<Instant>,
    resyncs: u64,
    notifications: u64,
    /// The kernel tables' usage as last read, and when (see [`TABLE_USAGE_MAX_AGE`]).
    table_usage: Option<(Instant, TableUsage)>,
}

/// How long a reading of the kernel tables' usage serves scrapes: counting the
/// entries of a full flow table walks 65 536 keys, one syscall each.
const TABLE_USAGE_MAX_AGE: Duration = Duration::from_secs(10);

impl Watcher {
    fn new(
        mut monitor: Monitor,
        model: NetworkModel,
        options: &WatchOptions,
    ) -> anyhow::Result<Self> {
        // What a previous routemon left in pinned maps is the starting point.
        let inherited = monitor.route_entries()?;
        let owners = monitor.source_owners()?.into_iter().collect();
        let sample_reader = match monitor.take_samples() {
            Ok(reader) => Some(reader),
            Err(err) => {
                tracing::warn!("no packet samples: {err}");
                None
            }
        };
        Ok(Self {
            monitor,
            model,
            patterns: options.patterns.clone(),
            primary_name: options.primary.clone(),
            attach_mode: options.attach,
            events: EventSink::new(options.events),
            attached: BTreeMap::new(),
            unattached: BTreeSet::new(),
            retired: BTreeMap::new(),
            owners,
            route_ids: RouteIds::new(PERSISTENT_ROUTE_IDS, inherited),
            uncounted_routes: 0,
            source_rules: Vec::new(),
            routing_findings: BTreeMap::new(),
            cilium_family: options.cilium_family,
            cilium: None,
            default_routes: BTreeSet::new(),
            traffic: TrafficFindings::default(),
            traffic_quiet: (options.interval * 6).max(Duration::from_secs(30)),
            samples: SampleCollector::default(),
            sample_reader,
            guard: options
                .guard
                .as_ref()
                .map(|(primary, metric)| Guard::new(primary.clone(), *metric)),
            // The first reconcile re-reads nothing: the model was just dumped.
            stale: Stale::default(),
            overrun: false,
            last_resync: None,
            resyncs: 0,
            notifications: 0,
            table_usage: None,
        })
    }

    /// Applies one notification to the model.
    fn apply(&mut self, notification: Notification) {
        self.notifications += 1;
        if notification == Notification::Overrun {
            self.overrun = true;
        }
        self.stale.merge(live::apply(&mut self.model, notification));
    }

    /// When the loop must call [`Self::reconcile`] although nothing arrived: a
    /// rate-limited resync or the end of the guard's back-off.
    fn wake_at(&self) -> Option<Instant> {
        let resync = self.overrun.then(|| {
            self.last_resync
                .map_or_else(Instant::now, |t| t + RESYNC_MIN_INTERVAL)
        });
        let guard = self.guard.as_ref().and_then(Guard::wake_at);
        resync.into_iter().chain(guard).min()
    }

    /// Brings everything in line with the model after changes that arrived at
    /// `since`.
    async fn reconcile(&mut self, netlink: &Netlink, since: Instant) {
        if self.overrun {
            if self
                .last_resync
                .is_some_and(|t| t.elapsed() < RESYNC_MIN_INTERVAL)
            {
                return; // wake_at brings us back when the interval has passed
            }
            self.overrun = false;
            self.stale = Stale::ALL;
            self.last_resync = Some(Instant::now());
            self.resyncs += 1;
            tracing::warn!(
                total = self.resyncs,
                "netlink notifications were lost (ENOBUFS); re-reading the routing state"
            );
            self.events.emit(Event::NetlinkResync {
                total: self.resyncs,
            });
        }
        if self.stale.any() {
            if let Err(err) = live::reread(netlink, &mut self.model, self.stale).await {
                tracing::warn!("re-reading the routing state failed: {err}; retrying");
                self.overrun = true;
                return;
            }
            self.stale = Stale::default();
        }
        self.sync_interfaces(netlink).await;
        self.sync_owners();
        self.sync_routes();
        self.evaluate_routing();
        if let Some(guard) = &mut self.guard
            && let Some(event) = guard.check(netlink, &self.model, since).await
        {
            self.events.emit(event);
        }
    }

    fn primary(&self) -> Option<Primary> {
        // A named primary that is not there (yet): no primary for now.
        selection::primary_interface(&self.model, self.primary_name.as_deref()).unwrap_or_default()
    }

    async fn sync_interfaces(&mut self, netlink: &Netlink) {
        let wanted = selection::matching_interfaces(&self.model, &self.patterns);
        let current: Vec<(u32, String)> =
            self.attached.iter().map(|(i, n)| (*i, n.clone())).collect();
        for (ifindex, name) in current {
            let still_there = self
                .model
                .links
                .get(&ifindex)
                .is_some_and(|l| l.name == name);
            if still_there && wanted.contains(&ifindex) {
                continue;
            }
            // Renamed or no longer matching (the device stays) versus deleted.
            let reason = if self.model.links.contains_key(&ifindex) {
                if let Err(err) = self.monitor.detach_interface(netlink, ifindex).await {
                    tracing::warn!(interface = %name, "detaching failed: {err}");
                }
                "deselected"
            } else {
                "deleted"
            };
            match self.monitor.release_interface(ifindex) {
                Ok(last) => self
                    .retired
                    .entry(name.clone())
                    .or_default()
                    .accumulate(&last),
                Err(err) => {
                    tracing::warn!(interface = %name, "reading final counters failed: {err}")
                }
            }
            self.attached.remove(&ifindex);
            self.events.emit(Event::InterfaceDetached {
                interface: name,
                ifindex,
                reason,
            });
        }
        // Interfaces gone or no longer matching are no longer owed an attachment.
        self.unattached.retain(|i| wanted.contains(i));
        for ifindex in wanted {
            if self.attached.contains_key(&ifindex) {
                continue;
            }
            let Some(link) = self.model.links.get(&ifindex).cloned() else {
                continue;
            };
            let attached = self
                .monitor
                .register_interface(ifindex)
                .and_then(|()| self.monitor.attach(&link, self.attach_mode));
            match attached {
                Ok(()) => {
                    let mine: Vec<_> = self
                        .monitor
                        .attachments()
                        .iter()
                        .filter(|a| a.ifindex == ifindex)
                        .collect();
                    let via = mine.first().map_or_else(String::new, |a| a.via.to_string());
                    let adopted = mine.iter().all(|a| a.adopted) && !mine.is_empty();
                    tracing::info!(interface = %link.name, %via, adopted, "attached");
                    self.unattached.remove(&ifindex);
                    self.attached.insert(ifindex, link.name.clone());
                    self.events.emit(Event::InterfaceAttached {
                        interface: link.name,
                        ifindex,
                        via,
                        adopted,
                    });
                }
                Err(err) => {
                    if self.unattached.insert(ifindex) {
                        tracing::warn!(interface = %link.name, "cannot attach: {err}");
                    } else {
                        tracing::debug!(interface = %link.name, "still cannot attach: {err}");
                    }
                    // Undo a half attachment; the next change retries.
                    let _ = self.monitor.detach_interface(netlink, ifindex).await;
                }
            }
        }
        // Stacks change with the links (a port enslaved, a macvlan added).
        let monitored: Vec<&Link> = self
            .attached
            .keys()
            .filter_map(|i| self.model.links.get(i))
            .collect();
        if let Err(err) = self.monitor.set_stacking(&monitored) {
            tracing::warn!("recording which monitored devices are stacked failed: {err}");
        }
    }

    fn sync_owners(&mut self) {
        let wanted: HashMap<IpAddr, u32> = self
            .model
            .owned_addresses(|i| self.attached.contains_key(&i))
            .collect();
        let removed: Vec<IpAddr> = self
            .owners
            .keys()
            .filter(|addr| !wanted.contains_key(*addr))
            .copied()
            .collect();
        for addr in removed {
            if let Err(err) = self.monitor.set_source_owner(addr, None) {
                tracing::warn!("cannot forget the owner of {addr}: {err}");
            }
            self.owners.remove(&addr);
        }
        for (addr, owner) in wanted {
            if self.owners.get(&addr) == Some(&owner) {
                continue;
            }
            match self.monitor.set_source_owner(addr, Some(owner)) {
                Ok(()) => {
                    self.owners.insert(addr, owner);
                }
                Err(err) => tracing::warn!("cannot record the owner of {addr}: {err}"),
            }
        }
    }

    fn sync_routes(&mut self) {
        let monitored: BTreeSet<u32> = self.attached.keys().copied().collect();
        let plan = AttributionPlan::build(&self.model, &monitored);
        let assignment = self.route_ids.assign(&self.model, &plan);
        if assignment.uncounted > 0 && assignment.uncounted != self.uncounted_routes {
            tracing::warn!(
                routes = assignment.uncounted,
                "routes without a counter: all {PERSISTENT_ROUTE_IDS} route ids are in use"
            );
        }
        self.uncounted_routes = assignment.uncounted;
        // Flows cache their route id until the routing state's generation moves on
        // (each update moves it). So a freed id is out of the tries and out of every
        // cache before it is zeroed and given to its new route.
        let (to_fresh, others): (Vec<_>, Vec<_>) = assignment
            .trie_changes
            .iter()
            .copied()
            .partition(|(_, id)| id.is_some_and(|id| assignment.fresh_ids.contains(&id)));
        let mut result = self.monitor.update_route_entries(&others);
        for id in &assignment.fresh_ids {
            result = result.and_then(|()| self.monitor.reset_route_counter(*id));
        }
        if !to_fresh.is_empty() {
            result = result.and_then(|()| self.monitor.update_route_entries(&to_fresh));
        }
        if plan.source_rules != self.source_rules {
            result = result.and_then(|()| self.monitor.replace_source_rules(&plan.source_rules));
            self.source_rules = plan.source_rules;
        }
        if let Err(err) = result {
            tracing::warn!("updating the kernel's route tries failed: {err}");
        }
    }

    fn evaluate_routing(&mut self) {
        let preferred = preference::preferred_default_routes(&self.model);
        let primary = self.primary();
        let cilium = crate::cilium::Verdict::of(&self.model, self.cilium_family);
        let changed: Vec<_> = cilium
            .per_family
            .iter()
            .filter(|now| {
                self.cilium
                    .as_ref()
                    .is_none_or(|before| before.family(now.family).outcome != now.outcome)
            })
            .collect();
        for verdict in changed {
            self.events.emit(Event::CiliumVerdictChanged {
                family: verdict.family,
                previous: self
                    .cilium
                    .as_ref()
                    .map(|before| before.family(verdict.family).outcome),
                verdict: verdict.clone(),
            });
        }
        let now: BTreeMap<String, Finding> =
            findings::evaluate(&self.model, &preferred, primary.as_ref(), &cilium)
                .into_iter()
                .map(|f| (f.key(), f))
                .collect();
        let previous = std::mem::take(&mut self.routing_findings);
        for (key, finding) in &previous {
            if !now.contains_key(key) {
                self.events.emit(Event::FindingCleared {
                    finding: finding.clone(),
                });
            }
        }
        for (key, finding) in &now {
            if !previous.contains_key(key) {
                self.events.emit(Event::FindingRaised {
                    finding: finding.clone(),
                });
            }
        }
        self.routing_findings = now;
        self.cilium = Some(cilium);

        let now: BTreeSet<RouteLabels> = self
            .model
            .default_routes()
            .map(|r| RouteLabels::of(&self.model, r))
            .collect();
        for route in self.default_routes.difference(&now) {
            self.events.emit(Event::DefaultRouteRemoved {
                route: route.clone(),
            });
        }
        for route in now.difference(&self.default_routes) {
            self.events.emit(Event::DefaultRouteAdded {
                route: route.clone(),
            });
        }
        self.default_routes = now;
    }

    fn drain_samples(&mut self) {
        if let Some(reader) = &mut self.sample_reader {
            self.samples.add(reader.drain());
        }
    }

    fn evaluate_traffic(&mut self) {
        self.drain_samples();
        let (cross_eni, asymmetric) = match (
            self.monitor.cross_eni_counters(),
            self.monitor.asymmetric_flows(),
        ) {
            (Ok(c), Ok(a)) => (c, a),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!("reading traffic counters failed: {err}");
                return;
            }
        };
        let (cross_growth, asym_growth) = self.traffic.advance(cross_eni, asymmetric);
        let primary = self.primary();
        let seen = findings::traffic(
            &self.model,
            &cross_growth,
            &asym_growth,
            &self.samples,
            primary.as_ref(),
        );
        self.samples = SampleCollector::default();
        let changes = self.traffic.update(seen, self.traffic_quiet);
        for finding in changes.cleared {
            self.events.emit(Event::FindingCleared { finding });
        }
        for finding in changes.raised {
            self.events.emit(Event::FindingRaised { finding });
        }
    }

    fn answer(&mut self, query: Query) {
        match query {
            Query::Health(reply) => {
                let _ = reply.send(());
            }
            Query::Metrics(reply) => {
                let text = self.render_metrics();
                let _ = reply.send(text);
            }
        }
    }

    /// The kernel tables' usage, re-read when the last reading is older than
    /// [`TABLE_USAGE_MAX_AGE`].
    fn table_usage(&mut self) -> Option<TableUsage> {
        let fresh = self
            .table_usage
            .filter(|(read_at, _)| read_at.elapsed() < TABLE_USAGE_MAX_AGE);
        if fresh.is_none() {
            match self.monitor.table_usage(None) {
                Ok(usage) => self.table_usage = Some((Instant::now(), usage)),
                Err(err) => tracing::debug!("reading the kernel tables' usage: {err}"),
            }
        }
        self.table_usage.map(|(_, usage)| usage)
    }

    fn render_metrics(&mut self) -> String {
        let tables = self.table_usage();
        let live = self.monitor.interface_counters().unwrap_or_else(|err| {
            tracing::warn!("reading interface counters failed: {err}");
            BTreeMap::new()
        });
        let mut interfaces: BTreeMap<String, (IfaceCounters, bool)> = self
            .retired
            .iter()
            .map(|(name, c)| (name.clone(), (*c, false)))
            .collect();
        for (ifindex, name) in &self.attached {
            let entry = interfaces.entry(name.clone()).or_default();
            if let Some(c) = live.get(ifindex) {
                entry.0.accumulate(c);
            }
            entry.1 = true;
        }
        let counters = self
            .monitor
            .route_counters(PERSISTENT_ROUTE_IDS as usize)
            .unwrap_or_default();
        let routes = self
            .route_ids
            .routes()
            .iter()
            .map(|(id, route)| {
                (
                    RouteLabels::of(&self.model, route),
                    counters.get(*id as usize).copied().unwrap_or_default(),
                )
            })
            .collect();
        // Recomputed from the model as it is now (a scrape may fall inside a
        // rate-limited resync, when the last evaluation's indexes are stale).
        let preferred = preference::preferred_default_routes(&self.model);
        let default_routes = self
            .model
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_default() && r.forwards())
            .map(|(i, r)| (RouteLabels::of(&self.model, r), preferred.contains(&i)))
            .collect();
        let name = |i: u32| self.model.link_name(i);
        let cross_eni = self
            .monitor
            .cross_eni_counters()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.egress_ifindex != k.source_ifindex)
            .map(|(k, c)| (name(k.egress_ifindex), name(k.source_ifindex), c))
            .collect();
        let asymmetric = self
            .traffic
            .asymmetric_totals
            .iter()
            .map(|((i, e), c)| (name(*i), name(*e), *c))
            .collect();
        let drops = self
            .monitor
            .drop_counters()
            .unwrap_or_default()
            .into_iter()
            .map(|((ifindex, reason), n)| (name(ifindex), reason, n))
            .collect();
        let findings: Vec<&Finding> = self
            .routing_findings
            .values()
            .chain(self.traffic.active())
            .collect();
        metrics::render(&MetricsInput {
            interfaces: interfaces
                .into_iter()
                .map(|(n, (c, attached))| (n, c, attached))
                .collect(),
            routes,
            default_routes,
            findings,
            cross_eni,
            asymmetric,
            resyncs: self.resyncs,
            notifications: self.notifications,
            uncounted_routes: self.uncounted_routes,
            unattached_interfaces: self.unattached.len(),
            model_routes: {
                let v4 = self
                    .model
                    .routes
                    .iter()
                    .filter(|r| r.family == crate::model::Family::Ipv4)
                    .count();
                (v4, self.model.routes.len() - v4)
            },
            program_stats: self.monitor.program_stats(),
            guard_repins: self.guard.as_ref().map_or(0, Guard::repins),
            events: self.events.written(),
            tables,
            drops,
            counts_drops: self.monitor.counts_drops(),
            cilium: self
                .cilium
                .as_ref()
                .map(|v| v.per_family.iter().map(|f| (f.family, f.outcome)).collect())
                .unwrap_or_default(),
        })
    }
}
