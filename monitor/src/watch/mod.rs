//! `routemon watch`: the long-running monitor.
//!
//! One task owns all state. It follows the kernel's rtnetlink notifications
//! (links, addresses, IPv4/IPv6 routes and rules), keeps the model current
//! ([`crate::model::live`]), and after every batch of changes reconciles: attaches
//! to interfaces that appeared, releases those that went away, rewrites the
//! kernel's route tries with stable route ids, re-evaluates the findings and emits
//! events for what changed. Counter-based findings are evaluated every interval.
//! Scrapes of `/metrics` are answered by the same task, from the same state.
//!
//! This module holds the loop and the state; [`reconcile`] brings the kernel side
//! in line with the model through the narrow [`kernel::DataPath`] interface,
//! [`evaluation`] turns the routing state into events, [`traffic`] the counters,
//! and [`metrics`] assembles and renders the exposition.

pub mod evaluation;
pub mod events;
pub mod flapping;
pub mod guard;
pub mod http;
pub mod kernel;
pub mod metric_families;
pub mod metrics;
pub mod process;
pub mod reconcile;
pub mod route_ids;
pub mod traffic;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

use self::{
    evaluation::RoutingState,
    events::{Event, EventSink},
    guard::Guard,
    http::{Query, stats::HttpStats},
    kernel::Kernel,
    reconcile::Reconciler,
    route_ids::RouteIds,
    traffic::TrafficFindings,
};
use crate::{
    ebpf::{
        AttachMode, Monitor, orphans,
        pinning::{PERSISTENT_ROUTE_IDS, PinStore},
        usage::TableUsage,
    },
    findings,
    model::{
        NetworkModel,
        audit::ModelDiff,
        dump::Netlink,
        events::{Groups, Notification, Subscription},
        live::{self, Stale},
    },
    preflight,
    samples::SampleCollector,
    selection::{self, InterfacePattern, Primary},
    signals::{SelfCheckRequests, Shutdown},
};

/// Most notifications applied in one batch before re-evaluating.
const MAX_BATCH: usize = 100_000;
/// Least time between two full re-reads after lost notifications.
pub const RESYNC_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often sampled packets are read from the kernel's ring buffer.
const SAMPLE_DRAIN_INTERVAL: Duration = Duration::from_millis(250);
/// Least time between two renders of the exposition: a scrape storm costs the
/// loop at most one render (a few milliseconds) per interval.
const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(50);
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
    /// TLS and basic authentication of the metrics endpoint.
    pub web: Option<Arc<crate::web_config::WebConfig>>,
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
                 --ephemeral would count every packet twice. Run `routemon cleanup` first, \
                 or drop --ephemeral to take them over",
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
    let mut self_checks = SelfCheckRequests::install().context("installing signal handlers")?;
    preflight::require_ebpf_privileges("watch")?;
    let netlink = Netlink::connect()?;
    let mut subscription =
        Subscription::with_receive_buffer(Groups::Everything, options.netlink_buffer)?;
    // The kernel doubles SO_RCVBUF for its own bookkeeping and reports the doubled
    // value: both are logged so the figure matches --netlink-buffer.
    tracing::info!(
        requested = options.netlink_buffer,
        granted = subscription.receive_buffer(),
        "netlink receive buffer (granted: as SO_RCVBUF reports it, twice the request)"
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
    let http_stats = listener.as_ref().map(|_| Arc::new(HttpStats::default()));
    watcher.http = http_stats.clone();
    let started = Instant::now();
    watcher.reconcile(&netlink, started).await;
    watcher.events.emit(Event::Started {
        version: env!("CARGO_PKG_VERSION"),
        listen: options.listen.map(|a| a.to_string()),
        pin_dir: options.pin_dir.as_ref().map(|d| d.display().to_string()),
        reused_maps,
    });

    let (query_tx, mut queries) = mpsc::channel::<Query>(16);
    if let (Some(listener), Some(stats)) = (listener, http_stats) {
        http::spawn(listener, query_tx, stats, options.web.clone())
            .context("starting the metrics server's thread")?;
    }
    let mut traffic_tick = tokio::time::interval(options.interval);
    traffic_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample_tick = tokio::time::interval(SAMPLE_DRAIN_INTERVAL);
    let signal = loop {
        let wake = watcher.wake_at();
        let render_at = watcher.render_due();
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
            () = sleep_until(render_at) => watcher.answer_scrapes(),
            () = self_checks.recv() => {
                // What the kernel announced before the request is applied first, and
                // lost notifications are re-read now: the check compares a settled
                // model.
                if let Err(err) = subscription.barrier().await {
                    tracing::warn!("self-check: {err}");
                }
                while let Some(next) = subscription.try_next() {
                    watcher.apply(next);
                }
                watcher.last_resync = None;
                watcher.refresh_rp_filter();
                watcher.reconcile(&netlink, Instant::now()).await;
                watcher.self_check(&netlink).await;
            }
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
    /// What is attached and written in the kernel.
    reconciler: Reconciler,
    cilium_family: crate::cilium::CiliumFamilies,
    /// The last routing evaluation.
    routing: RoutingState,
    /// Failed reads and counter totals, kept from scrape to scrape.
    scrapes: metrics::ScrapeMemory,
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
    /// The metrics endpoint's counters, when it is served.
    http: Option<Arc<HttpStats>>,
    /// Scrapes waiting for the next render, with the format each asked for.
    scrapes_waiting: Vec<oneshot::Sender<http::Exposition>>,
    /// When the exposition was last rendered.
    last_render: Option<Instant>,
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
            reconciler: Reconciler::new(RouteIds::new(PERSISTENT_ROUTE_IDS, inherited), owners),
            cilium_family: options.cilium_family,
            routing: RoutingState::default(),
            scrapes: metrics::ScrapeMemory::default(),
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
            http: None,
            scrapes_waiting: Vec::new(),
            last_render: None,
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
        let mut kernel = Kernel {
            monitor: &mut self.monitor,
            netlink,
        };
        let attached = self
            .reconciler
            .sync_interfaces(&self.model, &self.patterns, self.attach_mode, &mut kernel)
            .await;
        self.reconciler.sync_owners(&self.model, &mut kernel);
        self.reconciler.sync_routes(&self.model, &mut kernel);
        let primary = self.primary();
        let routing = self
            .routing
            .evaluate(&self.model, primary.as_ref(), self.cilium_family);
        for event in attached.into_iter().chain(routing) {
            self.events.emit(event);
        }
        if let Some(guard) = &mut self.guard
            && let Some(event) = guard.check(netlink, &self.model, since).await
        {
            self.events.emit(event);
        }
    }

    /// Compares the model and the routing findings with a fresh dump and the
    /// findings computed from it, reports the result as a `self_check` event (and a
    /// log line), and replaces a model that differs with the dump.
    async fn self_check(&mut self, netlink: &Netlink) {
        let started = Instant::now();
        let dump = match netlink.dump().await {
            Ok(dump) => dump,
            Err(err) => {
                tracing::warn!("self-check: dumping the routing state failed: {err}");
                return;
            }
        };
        let diff = ModelDiff::between(&self.model, &dump);
        let primary =
            selection::primary_interface(&dump, self.primary_name.as_deref()).unwrap_or_default();
        let mut fresh = RoutingState::default();
        fresh.evaluate(&dump, primary.as_ref(), self.cilium_family);
        let only_in = |a: &RoutingState, b: &RoutingState| -> Vec<String> {
            a.findings
                .iter()
                .filter(|(key, finding)| b.findings.get(*key) != Some(*finding))
                .map(|(key, _)| key.clone())
                .collect()
        };
        let findings_missing = only_in(&fresh, &self.routing);
        let findings_stale = only_in(&self.routing, &fresh);
        let consistent =
            diff.is_empty() && findings_missing.is_empty() && findings_stale.is_empty();
        if consistent {
            tracing::info!(
                routes = dump.routes.len(),
                "self-check: the model and findings match a fresh dump"
            );
        } else {
            tracing::warn!(
                differences = diff.len(),
                findings_missing = ?findings_missing,
                findings_stale = ?findings_stale,
                "self-check: the model differs from a fresh dump; adopting the dump"
            );
        }
        self.events.emit(Event::SelfCheck {
            consistent,
            links: dump.links.len(),
            addresses: dump.addresses.len(),
            routes: dump.routes.len(),
            rules: dump.rules.len(),
            differences: diff.len(),
            missing: diff.missing.into_iter().take(20).collect(),
            stale: diff.extra.into_iter().take(20).collect(),
            findings_missing,
            findings_stale,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        if !consistent {
            self.model = dump;
            self.reconcile(netlink, started).await;
        }
    }

    fn primary(&self) -> Option<Primary> {
        // A named primary that is not there (yet): no primary for now.
        selection::primary_interface(&self.model, self.primary_name.as_deref()).unwrap_or_default()
    }

    fn drain_samples(&mut self) {
        if let Some(reader) = &mut self.sample_reader {
            self.samples.add(reader.drain());
        }
    }

    /// Re-reads the `rp_filter` sysctls, which no notification this daemon decodes
    /// announces (the kernel sends `RTM_NEWNETCONF`, which netlink-packet-route 0.34
    /// cannot parse); returns whether one changed.
    fn refresh_rp_filter(&mut self) -> bool {
        let fresh = crate::model::sysctl::rp_filter(self.model.links.values());
        let changed = fresh != self.model.rp_filter;
        self.model.rp_filter = fresh;
        changed
    }

    fn evaluate_traffic(&mut self) {
        if self.refresh_rp_filter() {
            let primary = self.primary();
            for event in self
                .routing
                .evaluate(&self.model, primary.as_ref(), self.cilium_family)
            {
                self.events.emit(event);
            }
        }
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
                self.scrapes_waiting.push(reply);
                if self.render_due().is_some_and(|at| at <= Instant::now()) {
                    self.answer_scrapes();
                }
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

    /// When the waiting scrapes are answered: at once, or [`MIN_RENDER_INTERVAL`]
    /// after the last render. `None` when none waits.
    fn render_due(&self) -> Option<Instant> {
        if self.scrapes_waiting.is_empty() {
            return None;
        }
        Some(
            self.last_render
                .map_or_else(Instant::now, |at| at + MIN_RENDER_INTERVAL),
        )
    }

    /// Answers every waiting scrape with one reading of the counters: every answer
    /// is read after its request arrived, a storm of scrapes costs the loop at most
    /// one reading per [`MIN_RENDER_INTERVAL`], and the text is rendered on the
    /// server's thread ([`metrics::Reading`]), once per format.
    fn answer_scrapes(&mut self) {
        let waiting = std::mem::take(&mut self.scrapes_waiting);
        if waiting.is_empty() {
            return;
        }
        self.last_render = Some(Instant::now());
        let reading = Arc::new(metrics::Reading::new(self.read_metrics()));
        let exposition: http::Exposition = Arc::new(move |format| reading.text(format));
        for reply in waiting {
            let _ = reply.send(Arc::clone(&exposition));
        }
    }

    /// Reads the counters and copies the state one scrape shows.
    fn read_metrics(&mut self) -> metrics::MetricsInput {
        let tables = self.table_usage();
        let state = metrics::DaemonState {
            model: &self.model,
            reconciler: &self.reconciler,
            routing: &self.routing,
            traffic: &self.traffic,
            resyncs: self.resyncs,
            notifications: self.notifications,
            guard_repins: self.guard.as_ref().map_or(0, Guard::repins),
            events: self.events.written(),
            tables,
            http: self.http.as_deref(),
        };
        metrics::collect(&state, &self.monitor, &mut self.scrapes)
    }
}
