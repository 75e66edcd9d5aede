//! The churn soak: `watch` under the churn mix of a busy multi-ENI node, with its
//! invariants checked at every quiet point.
//!
//! The mix, paced at about one step every [`STEP_PERIOD`]:
//! - batches of 1 000–10 000 routes via ens6, added and then deleted, alternately
//!   in the main table and table 100;
//! - every [`TIE_PERIOD`], ens6's default route flips between metric 1024 and 1000,
//!   into and out of an equal-metric tie with ens5;
//! - every [`RECREATE_PERIOD`], ens7 is deleted and created again (new ifindex, its
//!   routes re-added), with traffic and kernel drops counted on it each time;
//! - every [`BOUNCE_PERIOD`], ens6 loses what carries its IPv4 routes, by turns its
//!   link (down, then up) and its only address (removed, then added): the kernel
//!   flushes its IPv4 routes, a batch included, without RTM_DELROUTE;
//! - every [`RP_FILTER_PERIOD`], ens6's `rp_filter` switches between loose and
//!   strict, which no notification announces: the strict-mode finding must follow
//!   within an interval;
//! - all along, a UDP stream leaves by ens5.
//!
//! After each step, [`QUIET`] without changes, then SIGUSR1: the daemon compares its
//! model and findings with a fresh dump and the findings computed from it, and the
//! test checks that answer against `ip` and against what it changed; every counter
//! series of a scrape is at least what it was at the previous one. At the end: the
//! ens5 counter against the packets sent, memory and fds from the end of the warm-up
//! on, log lines per minute, and nothing left in the kernel after SIGTERM.
//!
//! `ROUTEMON_SOAK_MINUTES` sets the length (default [`DEFAULT_MINUTES`], the CI
//! run); `cargo xtask soak --minutes N` runs it longer.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use routemon_testbed::{
    Testbed, UplinkSpec,
    cmd::require_root,
    kernel::{routemon_programs_after, routemon_tcx_links},
    netns::NetNs,
    traffic::{UdpBurst, send_udp},
    watch::{PinDir, Watch, net_launcher, sample, scrape},
};

use crate::{egress_packets, udp, udp_stream};

/// Length of the soak when `ROUTEMON_SOAK_MINUTES` is not set.
const DEFAULT_MINUTES: f64 = 1.5;
/// Least time from the start of one churn step to the start of the next.
const STEP_PERIOD: Duration = Duration::from_secs(3);
/// How often ens6's default route flips into or out of the tie.
const TIE_PERIOD: Duration = Duration::from_secs(10);
/// How often ens7 is deleted and created again.
const RECREATE_PERIOD: Duration = Duration::from_secs(30);
/// How often ens6 loses its link or its address.
const BOUNCE_PERIOD: Duration = Duration::from_secs(20);
/// How often ens6's `rp_filter` switches between loose and strict.
const RP_FILTER_PERIOD: Duration = Duration::from_secs(15);
/// `watch --interval`: how often it re-reads the `rp_filter` sysctls, among
/// other things.
const INTERVAL: &str = "2s";
/// Time without changes before a check.
const QUIET: Duration = Duration::from_millis(500);
/// Routing table of every other batch.
const BATCH_TABLE: &str = "100";
/// Metrics of the default routes: ens5 is preferred, ens6 flips between
/// [`ENS6_METRICS`], ens7's never ties.
const ENS5_METRIC: u32 = 1000;
const ENS6_METRICS: [u32; 2] = [1024, 1000];
const ENS7_METRIC: u32 = 1100;

#[test]
fn watch_stays_true_under_churn() {
    require_root();
    let minutes: f64 = std::env::var("ROUTEMON_SOAK_MINUTES")
        .ok()
        .map(|m| m.parse().expect("ROUTEMON_SOAK_MINUTES: minutes, e.g. 30"))
        .unwrap_or(DEFAULT_MINUTES);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    // Memory and fds are compared from here on: the first scrapes, batches and
    // re-creations have grown every buffer to its working size by then.
    let warm_up = (duration / 3).min(Duration::from_secs(120));

    let mut bed = Testbed::new(
        &[
            UplinkSpec::new("ens5", ENS5_METRIC),
            UplinkSpec::new("ens6", ENS6_METRICS[0]),
            ens7(),
        ],
        false,
    )
    .unwrap();
    let pins = PinDir::new();
    let mut watch = Watch::start(
        &net_launcher(&bed.node),
        &[
            "--bpffs-dir",
            &pins.arg(),
            "--interface",
            "ens*",
            "--interval",
            INTERVAL,
        ],
    )
    .unwrap();
    let mut churn = Churn::default();
    let mut ledger = Ledger::default();
    checkpoint(&mut watch, &bed, &churn, &mut ledger, "start");
    // What it logs while starting (the buffer, each interface attached) is said
    // once; the rate is of what it logs while running.
    let start_lines = watch.stderr().lines().count();

    let baseline = egress_packets(&scrape(&bed.node).unwrap(), "ens5");
    let stream = udp_stream(&bed, "ens5", duration);
    let started = Instant::now();
    let mut warm: Option<(u64, usize)> = None;
    while started.elapsed() < duration {
        let step_started = Instant::now();
        let step = churn.next_step(started.elapsed());
        churn.apply(step, &mut bed);
        ledger.count(step);
        if step == Step::FlipRpFilter {
            // No notification announces a sysctl: the daemon sees it within an
            // interval, before any self-check asks.
            let kind = if churn.ens6_strict {
                "finding_raised"
            } else {
                "finding_cleared"
            };
            watch
                .wait_for(
                    "the strict rp_filter finding",
                    Duration::from_secs(10),
                    |e| {
                        e["event"] == kind
                            && e["finding"]["kind"] == "strict_rp_filter"
                            && e["finding"]["interface"] == "ens6"
                    },
                )
                .unwrap();
        }
        checkpoint(&mut watch, &bed, &churn, &mut ledger, step.name());
        if warm.is_none() && started.elapsed() >= warm_up {
            warm = Some(footprint(&watch));
        }
        std::thread::sleep(STEP_PERIOD.saturating_sub(step_started.elapsed()));
    }
    let sent = stream.join().unwrap();
    std::thread::sleep(QUIET);
    checkpoint(&mut watch, &bed, &churn, &mut ledger, "end");
    let counted = egress_packets(&scrape(&bed.node).unwrap(), "ens5") - baseline;
    let (rss_warm, fds_warm) = warm.expect("the soak outlasts its warm-up");
    let (rss_end, fds_end) = footprint(&watch);
    // The self-check lines answer the test's own SIGUSR1s.
    let log: Vec<String> = watch
        .stderr()
        .lines()
        .skip(start_lines)
        .filter(|line| !line.contains("self-check"))
        .map(str::to_owned)
        .collect();
    let log_lines = log.len();
    let log_rate = log_lines as f64 / (started.elapsed().as_secs_f64() / 60.0);

    // SIGTERM while 10 000 routes arrive: the exit does not wait for the churn.
    let storm_file = batch_file(&bed.node, "add", 10_000, "dev ens5 table 200");
    let mut storm = std::process::Command::new("ip")
        .args(["-n", bed.node.name(), "-batch"])
        .arg(&storm_file)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (status, exit) = watch.stop(Signal::SIGTERM, Duration::from_secs(5)).unwrap();
    assert!(storm.wait().unwrap().success(), "the route storm at exit");
    let _ = std::fs::remove_file(&storm_file);
    let programs_left = routemon_programs_after(Duration::from_secs(5)).unwrap();
    let links_left = routemon_tcx_links().unwrap();
    let pins_left = pins.links();

    println!(
        "soak: {:.1} min; steps {}; checks {}, slowest self-check {} ms; largest model {} \
         routes; counter series checked {} times, {} went backwards; ens5: {sent} sent, \
         {counted} counted; RSS {rss_warm} -> {rss_end} KiB, fds {fds_warm} -> {fds_end} \
         (from {:.1} min); {log_lines} log lines ({log_rate:.1}/min); SIGTERM exit in {exit:?} \
         ({status}); left: {} programs, {links_left} TCX links, {} pins",
        started.elapsed().as_secs_f64() / 60.0,
        ledger.steps_summary(),
        ledger.checks,
        ledger.slowest_check_ms,
        ledger.largest_model,
        ledger.series_compared,
        ledger.backwards.len(),
        warm_up.as_secs_f64() / 60.0,
        programs_left.len(),
        pins_left.len(),
    );
    assert!(
        ledger.backwards.is_empty(),
        "counters went backwards: {:?}",
        ledger.backwards
    );
    let sent = sent as f64;
    assert!(
        counted >= sent && counted <= sent * 1.01 + 50.0,
        "ens5 counted {counted} packets, {sent} were sent"
    );
    assert!(
        rss_end <= rss_warm + 5 * 1024,
        "RSS grew from {rss_warm} to {rss_end} KiB"
    );
    assert_eq!(fds_end, fds_warm, "open fds changed after the warm-up");
    assert!(
        log_rate <= 10.0,
        "{log_rate:.1} log lines a minute:\n{}",
        log.join("\n")
    );
    assert!(status.success(), "watch exited with {status}");
    assert!(exit < Duration::from_secs(2), "SIGTERM exit took {exit:?}");
    assert!(programs_left.is_empty(), "programs left: {programs_left:?}");
    assert_eq!(links_left, 0, "TCX links left");
    assert!(pins_left.is_empty(), "pins left: {pins_left:?}");
}

fn ens7() -> UplinkSpec {
    UplinkSpec {
        name: "ens7".to_owned(),
        metric: Some(ENS7_METRIC),
        metric6: None,
    }
}

/// One churn step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Add `count` routes via ens6 to the main table (`false`) or [`BATCH_TABLE`].
    AddBatch { count: u32, other_table: bool },
    /// Delete the batch.
    DeleteBatch,
    /// Move ens6's default route to the other of [`ENS6_METRICS`].
    FlipTie,
    /// Delete ens7 and create it again.
    RecreateEns7,
    /// `ip link set ens6 down`.
    Ens6Down,
    /// `ip link set ens6 up`, default route re-added.
    Ens6Up,
    /// Remove ens6's only IPv4 address.
    Ens6AddressRemoved,
    /// Add it again, default route re-added.
    Ens6AddressAdded,
    /// Switch ens6's `rp_filter` between loose (2) and strict (1).
    FlipRpFilter,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::AddBatch { .. } => "add batch",
            Self::DeleteBatch => "delete batch",
            Self::FlipTie => "flip tie",
            Self::RecreateEns7 => "recreate ens7",
            Self::Ens6Down => "ens6 down",
            Self::Ens6Up => "ens6 up",
            Self::Ens6AddressRemoved => "ens6 address removed",
            Self::Ens6AddressAdded => "ens6 address added",
            Self::FlipRpFilter => "flip rp_filter",
        }
    }
}

/// What the churn has changed, so that the next step and the checks know the
/// state the kernel should be in.
#[derive(Debug, Default)]
struct Churn {
    /// The batch in the kernel: its size and whether it is in [`BATCH_TABLE`].
    batch: Option<(u32, bool)>,
    /// Batches added so far (sizes and tables vary with it).
    batches: u32,
    /// Index into [`ENS6_METRICS`] of ens6's default route.
    ens6_metric: usize,
    /// Whether ens6 is down or without its address (the step after restores it).
    ens6_cut: Option<Step>,
    bounces: u32,
    /// Whether ens6 is in strict `rp_filter` mode.
    ens6_strict: bool,
    last_flip: Duration,
    last_rp_filter_flip: Duration,
    last_recreate: Duration,
    last_bounce: Duration,
}

impl Churn {
    /// The step to take at `elapsed` into the soak.
    fn next_step(&mut self, elapsed: Duration) -> Step {
        if let Some(cut) = self.ens6_cut {
            return if cut == Step::Ens6Down {
                Step::Ens6Up
            } else {
                Step::Ens6AddressAdded
            };
        }
        if elapsed >= self.last_recreate + RECREATE_PERIOD {
            self.last_recreate = elapsed;
            return Step::RecreateEns7;
        }
        if elapsed >= self.last_bounce + BOUNCE_PERIOD {
            self.last_bounce = elapsed;
            self.bounces += 1;
            return if self.bounces % 2 == 1 {
                Step::Ens6Down
            } else {
                Step::Ens6AddressRemoved
            };
        }
        if elapsed >= self.last_flip + TIE_PERIOD {
            self.last_flip = elapsed;
            return Step::FlipTie;
        }
        // Only while ens6 has its own, non-tied default route: then strict mode on
        // it is the strict_rp_filter finding and loose mode is none.
        if elapsed >= self.last_rp_filter_flip + RP_FILTER_PERIOD && !self.tie() {
            self.last_rp_filter_flip = elapsed;
            return Step::FlipRpFilter;
        }
        if self.batch.is_some() {
            return Step::DeleteBatch;
        }
        // 1 000 to 10 000 routes, a different size every time (a Weyl sequence);
        // the first is the largest, so that the warm-up reaches the working size.
        let count = match self.batches {
            0 => 10_000,
            n => 1000 + (n * 3677) % 9001,
        };
        Step::AddBatch {
            count,
            other_table: self.batches % 2 == 1,
        }
    }

    fn ens6_metric(&self) -> u32 {
        ENS6_METRICS[self.ens6_metric]
    }

    /// Whether ens6's default route is in the kernel and ties with ens5's.
    fn tie(&self) -> bool {
        self.ens6_cut.is_none() && self.ens6_metric() == ENS5_METRIC
    }

    fn apply(&mut self, step: Step, bed: &mut Testbed) {
        let ens6_gateway = bed.uplink("ens6").gw4.to_string();
        let ens6_address = format!("{}/24", bed.uplink("ens6").addr4);
        match step {
            Step::AddBatch { count, other_table } => {
                batch(bed, "add", count, other_table);
                self.batch = Some((count, other_table));
                self.batches += 1;
            }
            Step::DeleteBatch => {
                let (count, other_table) = self.batch.take().expect("a batch to delete");
                batch(bed, "del", count, other_table);
            }
            Step::FlipTie => {
                bed.delete_default("ens6", &ens6_gateway, self.ens6_metric())
                    .unwrap();
                self.ens6_metric = 1 - self.ens6_metric;
                bed.set_default("ens6", &ens6_gateway, self.ens6_metric())
                    .unwrap();
            }
            Step::RecreateEns7 => {
                bed.recreate_uplink(&ens7()).unwrap();
                ens7_traffic(bed);
            }
            Step::Ens6Down => {
                bed.node.ip(&["link", "set", "ens6", "down"]).unwrap();
                self.batch = None; // flushed with every other IPv4 route via ens6
                self.ens6_cut = Some(step);
            }
            Step::Ens6AddressRemoved => {
                bed.node
                    .ip(&["addr", "del", &ens6_address, "dev", "ens6"])
                    .unwrap();
                self.batch = None;
                self.ens6_cut = Some(step);
            }
            Step::FlipRpFilter => {
                self.ens6_strict = !self.ens6_strict;
                let mode = if self.ens6_strict { 1 } else { 2 };
                bed.node
                    .sysctl(&[&format!("net.ipv4.conf.ens6.rp_filter={mode}")])
                    .unwrap();
            }
            Step::Ens6Up | Step::Ens6AddressAdded => {
                if step == Step::Ens6Up {
                    bed.node.ip(&["link", "set", "ens6", "up"]).unwrap();
                } else {
                    bed.node
                        .ip(&["addr", "add", &ens6_address, "dev", "ens6"])
                        .unwrap();
                }
                bed.set_default("ens6", &ens6_gateway, self.ens6_metric())
                    .unwrap();
                self.ens6_cut = None;
                ens7_traffic(bed);
            }
        }
    }
}

/// Adds or deletes a batch of `count` /24 routes via ens6 in one `ip -batch`: in
/// the main table without a gateway, in [`BATCH_TABLE`] via ens6's gateway.
fn batch(bed: &Testbed, verb: &str, count: u32, other_table: bool) {
    let via = if other_table {
        format!(
            "via {} dev ens6 table {BATCH_TABLE}",
            bed.uplink("ens6").gw4
        )
    } else {
        "dev ens6".to_owned()
    };
    ip_batch(&bed.node, verb, count, &via);
}

/// `ip -batch` of `count` route changes `route <verb> 10.x.y.0/24 <via>`.
fn ip_batch(node: &NetNs, verb: &str, count: u32, via: &str) {
    let file = batch_file(node, verb, count, via);
    node.ip(&["-batch", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
}

/// Writes the commands of [`ip_batch`] to a file and returns its path.
fn batch_file(node: &NetNs, verb: &str, count: u32, via: &str) -> PathBuf {
    let mut commands = String::new();
    for i in 0..count {
        commands.push_str(&format!(
            "route {verb} 10.{}.{}.0/24 {via}\n",
            100 + i / 256,
            i % 256
        ));
    }
    let file = std::env::temp_dir().join(format!("{}-soak-{verb}-{count}", node.name()));
    std::fs::write(&file, commands).unwrap();
    file
}

/// Traffic on ens7 so that its series exist: datagrams out to its gateway (its
/// interface and connected-route counters) and in to a closed port of the node (a
/// kernel drop counted on ens7).
fn ens7_traffic(bed: &Testbed) {
    let ens7 = bed.uplink("ens7");
    send_udp(&bed.node, &udp(ens7.gw4.into(), "ens7", 20)).unwrap();
    send_udp(
        &bed.router,
        &UdpBurst {
            dst: IpAddr::V4(ens7.addr4),
            device: Some(ens7.router_side.clone()),
            src: None,
            count: 5,
            payload: 16,
        },
    )
    .unwrap();
}

/// What the checks found along the way.
#[derive(Debug, Default)]
struct Ledger {
    steps: BTreeMap<&'static str, u32>,
    checks: u32,
    slowest_check_ms: u64,
    largest_model: u64,
    /// Counter series by name and labels, as last scraped.
    counters: BTreeMap<String, f64>,
    series_compared: u64,
    /// Series that went backwards: (series, before, after, step).
    backwards: Vec<(String, f64, f64, String)>,
}

impl Ledger {
    fn count(&mut self, step: Step) {
        *self.steps.entry(step.name()).or_insert(0) += 1;
    }

    fn steps_summary(&self) -> String {
        let total: u32 = self.steps.values().sum();
        let each: Vec<String> = self.steps.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{total} ({})", each.join(", "))
    }
}

/// A quiet point: waits [`QUIET`], asks the daemon for a self-check, and checks the
/// answer and a scrape against the kernel and the previous scrape.
fn checkpoint(watch: &mut Watch, bed: &Testbed, churn: &Churn, ledger: &mut Ledger, after: &str) {
    std::thread::sleep(QUIET);
    watch.forget();
    watch.signal(Signal::SIGUSR1).unwrap();
    let check = watch
        .wait_for("self_check", Duration::from_secs(60), |e| {
            e["event"] == "self_check"
        })
        .unwrap();
    ledger.checks += 1;
    ledger.slowest_check_ms = ledger
        .slowest_check_ms
        .max(check["elapsed_ms"].as_u64().unwrap());
    assert_eq!(
        check["consistent"], true,
        "after '{after}' the daemon's model or findings differ from a fresh dump: {check:#}"
    );
    // The dump the daemon compared with is the kernel's, as `ip` lists it.
    let routes = check["routes"].as_u64().unwrap();
    ledger.largest_model = ledger.largest_model.max(routes);
    assert_eq!(
        routes,
        kernel_route_count(bed),
        "after '{after}': routes in the daemon's dump vs `ip route show table all`"
    );

    let metrics = scrape(&bed.node).unwrap();
    let tie = sample(
        &metrics,
        "routemon_cilium_default_route_outcome",
        &[("family", "ipv4"), ("outcome", "tie")],
    );
    assert_eq!(
        tie,
        Some(if churn.tie() { 1.0 } else { 0.0 }),
        "after '{after}': Cilium's tie (ens6 at {}, cut: {:?})",
        churn.ens6_metric(),
        churn.ens6_cut
    );
    for (series, value) in counter_series(&metrics) {
        if let Some(&before) = ledger.counters.get(&series) {
            ledger.series_compared += 1;
            if value < before {
                ledger
                    .backwards
                    .push((series.clone(), before, value, after.to_owned()));
            }
        }
        ledger.counters.insert(series, value);
    }
}

/// Routes of every table and both families, as `ip` lists them.
fn kernel_route_count(bed: &Testbed) -> u64 {
    ["-4", "-6"]
        .iter()
        .map(|family| {
            bed.node
                .ip(&[family, "route", "show", "table", "all"])
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
                .count() as u64
        })
        .sum()
}

/// Every sample of a counter family, by its series text (name and labels).
fn counter_series(metrics: &str) -> Vec<(String, f64)> {
    let counters: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let is_counter = counters
                .iter()
                .any(|c| name == *c || name.strip_suffix("_total") == Some(c));
            let value: f64 = value.parse().ok()?;
            is_counter.then(|| (series.to_owned(), value))
        })
        .collect()
}

/// The daemon's resident memory in KiB and its open fds.
fn footprint(watch: &Watch) -> (u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", watch.pid()))
        .unwrap()
        .count();
    (watch.rss_kib().unwrap(), fds)
}
