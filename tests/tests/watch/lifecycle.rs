//! The daemon's life: attach and detach, SIGTERM, restart and kill -9 with adoption
//! of what is pinned, pinned maps that are not routemon's, and cleanup.

use std::time::Duration;

use nix::sys::signal::Signal;
use routemon_testbed::{
    Testbed,
    cmd::require_root,
    eks::{EksNode, Eni, wait_until},
    kernel::{link_stats, routemon_programs_after, routemon_tcx_links, tc_filters, wait_quiet},
    routemon::run,
    traffic::send_udp,
    watch::{PinDir, Watch, net_launcher, sample, scrape},
};
use serde_json::Value;

use crate::{EVENT_TIMEOUT, egress_packets, udp, udp_stream};

/// Test 1: on the real-networkd node, a hot-attached ENI is attached to and
/// reported (JSON events for the attach and the critical tie), and its counters grow
/// with traffic; SIGTERM detaches everything and exits 0 within 2 s.
#[test]
fn hot_attached_eni_is_attached_reported_and_counted() {
    require_root();
    let mut eks = EksNode::boot("ens*", "ens5").unwrap();
    let pins = PinDir::new();
    let mut watch = Watch::start(
        &eks.launcher(),
        &["--bpffs-dir", &pins.arg(), "--interval", "1s"],
    )
    .unwrap();
    watch
        .wait_for("ens5 attached", EVENT_TIMEOUT, |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens5"
        })
        .unwrap();

    let ens6 = eks.attach_eni("ens6").unwrap();
    check_ens6_attached_and_the_tie_raised(&mut watch);
    check_the_cilium_verdict_turns_into_a_tie(&mut watch);
    assert_eq!(pins.links().len(), 4, "two links per interface, pinned");
    check_ens6_counted_and_the_tie_exported(&eks, &ens6);

    let took = watch.stop_cleanly().unwrap();
    println!("SIGTERM → exit in {took:?}");
    assert!(!pins.path().exists(), "nothing pinned after a plain exit");
}

/// The hot-attached ens6 is attached by TCX (not adopted), and its default route,
/// of ens5's metric, raises the critical equal-metric finding.
fn check_ens6_attached_and_the_tie_raised(watch: &mut Watch) {
    let attached = watch
        .wait_for("ens6 attached", EVENT_TIMEOUT, |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens6"
        })
        .unwrap();
    assert_eq!(attached["via"], "tcx");
    assert_eq!(attached["adopted"], false);
    let finding = watch
        .wait_for("the tie", EVENT_TIMEOUT, |e| {
            e["event"] == "finding_raised" && e["finding"]["kind"] == "equal_metric_default_routes"
        })
        .unwrap();
    assert_eq!(finding["finding"]["severity"], "critical");
    assert_eq!(
        finding["finding"]["interfaces"],
        serde_json::json!(["ens5", "ens6"])
    );
}

/// Cilium's verdict: ok with ens5 alone at start, a tie once ens6's default
/// arrives.
fn check_the_cilium_verdict_turns_into_a_tie(watch: &mut Watch) {
    let start = watch
        .wait_for("the first IPv4 verdict", EVENT_TIMEOUT, |e| {
            e["event"] == "cilium_verdict_changed"
                && e["family"] == "ipv4"
                && e["previous"].is_null()
        })
        .unwrap();
    assert_eq!(start["verdict"]["outcome"], "ok", "{start}");
    assert_eq!(start["verdict"]["device"], "ens5", "{start}");
    let tie = watch
        .wait_for("the IPv4 verdict turning into a tie", EVENT_TIMEOUT, |e| {
            e["event"] == "cilium_verdict_changed"
                && e["family"] == "ipv4"
                && e["verdict"]["outcome"] == "tie"
        })
        .unwrap();
    assert_eq!(tie["previous"], "ok", "{tie}");
    assert!(
        tie["verdict"]["error"]
            .as_str()
            .unwrap()
            .starts_with("Found multiple default routes with the same priority: {Ifindex: "),
        "{tie}"
    );
}

/// 500 datagrams out of ens6 are counted, and the metrics export the tie: the
/// finding gauge and Cilium's outcome per family.
fn check_ens6_counted_and_the_tie_exported(eks: &EksNode, ens6: &Eni) {
    let before = scrape(&eks.node).unwrap();
    send_udp(&eks.node, &udp(ens6.gateway.into(), "ens6", 500)).unwrap();
    wait_until(EVENT_TIMEOUT, "ens6's counter to grow", || {
        egress_packets(&scrape(&eks.node).unwrap(), "ens6")
            >= egress_packets(&before, "ens6") + 500.0
    })
    .unwrap();
    let after = scrape(&eks.node).unwrap();
    assert!(
        sample(
            &after,
            "routemon_finding",
            &[
                ("kind", "equal_metric_default_routes"),
                ("interfaces", "ens5,ens6"),
                ("severity", "critical")
            ]
        ) == Some(1.0),
        "{after}"
    );
    for (family, outcome, value) in [
        ("ipv4", "tie", 1.0),
        ("ipv4", "ok", 0.0),
        ("ipv6", "tie", 0.0),
    ] {
        assert_eq!(
            sample(
                &after,
                "routemon_cilium_default_route_outcome",
                &[("family", family), ("outcome", outcome)]
            ),
            Some(value),
            "{family} {outcome}: {after}"
        );
    }
}

/// Test 4: restarting the daemon under traffic (with --keep-attached) continues the
/// counters, nothing is attached twice, and no packet goes uncounted: the counted
/// egress equals the kernel's transmitted packets across the restart.
#[test]
fn restart_under_traffic_continues_the_counters_without_a_gap() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let args = ["--bpffs-dir", &pins.arg(), "--keep-attached"];
    let launcher = net_launcher(&bed.node);
    let watch = Watch::start(&launcher, &args).unwrap();
    wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let kernel_before = link_stats(&bed.node, "ens5").unwrap();
    let counted_before = egress_packets(&scrape(&bed.node).unwrap(), "ens5");

    let sender = udp_stream(&bed, "ens5", Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(800));
    let (status, took) = watch.stop(Signal::SIGTERM, Duration::from_secs(5)).unwrap();
    assert!(status.success());
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        pins.links().len(),
        4,
        "--keep-attached leaves the links: {:?}",
        pins.links()
    );
    assert_eq!(
        routemon_tcx_links().unwrap(),
        4,
        "still attached, still counting"
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut watch = Watch::start(&launcher, &args).unwrap();
    let adopted = watch
        .wait_for("ens5 adopted", EVENT_TIMEOUT, |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens5"
        })
        .unwrap();
    assert_eq!(adopted["adopted"], true, "{adopted}");
    assert_eq!(routemon_tcx_links().unwrap(), 4, "nothing attached twice");
    let sent = sender.join().unwrap();
    wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let kernel = link_stats(&bed.node, "ens5").unwrap().since(kernel_before);
    let counted = egress_packets(&scrape(&bed.node).unwrap(), "ens5") - counted_before;
    println!(
        "restart under traffic: {sent} datagrams sent, kernel tx {} packets, routemon {counted}",
        kernel.tx_packets
    );
    assert!(kernel.tx_packets >= sent);
    assert_eq!(
        counted as u64, kernel.tx_packets,
        "every packet counted exactly once"
    );

    let (status, _) = watch.stop(Signal::SIGTERM, Duration::from_secs(5)).unwrap();
    assert!(status.success());
    assert_eq!(routemon_tcx_links().unwrap(), 4, "--keep-attached again");
    // `routemon cleanup` removes everything routemon left.
    let out = run(None, &["cleanup", "--bpffs-dir", &pins.arg()])
        .unwrap()
        .success();
    assert!(out.stdout.contains("removed"), "{}", out.stdout);
    assert!(
        routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}

/// Test 5: after `kill -9`, what stays is pinned and known; the next start adopts
/// it (no duplicate or stale attachment), and its orderly exit removes everything.
#[test]
fn kill_9_then_restart_adopts_without_duplicates() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let launcher = net_launcher(&bed.node);
    let args = ["--bpffs-dir", &pins.arg()];
    let watch = Watch::start(&launcher, &args).unwrap();
    let (status, _) = watch.stop(Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    assert!(!status.success());
    assert_eq!(pins.links().len(), 4, "{:?}", pins.links());
    assert_eq!(routemon_tcx_links().unwrap(), 4);

    let mut watch = Watch::start(&launcher, &args).unwrap();
    for interface in ["ens5", "ens6"] {
        let event = watch
            .wait_for("attach", EVENT_TIMEOUT, |e| {
                e["event"] == "interface_attached" && e["interface"] == interface
            })
            .unwrap();
        assert_eq!(event["adopted"], true, "{event}");
    }
    assert_eq!(routemon_tcx_links().unwrap(), 4, "no duplicate attachment");
    for dev in ["ens5", "ens6"] {
        let filters = tc_filters(&bed.node, dev).unwrap();
        assert!(
            !filters.contains("routemon"),
            "stale clsact filter: {filters}"
        );
    }
    watch.stop_cleanly().unwrap();
    assert!(!pins.path().exists());
}

/// A pinned map whose layout is not routemon's (another version, another tool) is
/// replaced, not reused; logs are JSON lines with --log-format json; with
/// kernel.bpf_stats_enabled the programs' run time is exported.
#[test]
fn foreign_pinned_map_is_replaced_and_run_time_is_exported() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let maps = pins.path().join(format!(
        "maps-v{}",
        routemon::ebpf::pinning::MAP_LAYOUT_VERSION
    ));
    std::fs::create_dir_all(&maps).unwrap();
    routemon_testbed::cmd::run(
        "bpftool",
        &[
            "map",
            "create",
            maps.join("IFACE_COUNTERS").to_str().unwrap(),
            "type",
            "hash",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "16",
            "name",
            "IFACE_COUNTERS",
        ],
    )
    .unwrap();
    let stats = StatsEnabled::new();
    let mut watch = Watch::start(
        &net_launcher(&bed.node),
        &["--bpffs-dir", &pins.arg(), "--log-format", "json"],
    )
    .unwrap();
    let started = watch
        .wait_for("started", EVENT_TIMEOUT, |e| e["event"] == "started")
        .unwrap();
    assert_eq!(started["reused_maps"], 0, "{started}");
    let log = watch.stderr();
    let replaced = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("replacing it"))
        })
        .unwrap_or_else(|| panic!("no replacement logged:\n{log}"));
    assert_eq!(replaced["map"], "IFACE_COUNTERS");
    assert_eq!(replaced["level"], "WARN");

    let gw = bed.uplink("ens5").gw4;
    send_udp(&bed.node, &udp(gw.into(), "ens5", 300)).unwrap();
    let mut metrics = String::new();
    wait_until(EVENT_TIMEOUT, "ens5's 300 datagrams", || {
        metrics = scrape(&bed.node).unwrap();
        egress_packets(&metrics, "ens5") >= 300.0
    })
    .unwrap();
    let runs = sample(
        &metrics,
        "routemon_bpf_program_runs_total",
        &[("program", "routemon_tx")],
    )
    .expect("run counts exported while stats are enabled");
    assert!(runs >= 300.0, "{runs}");
    drop(stats);
    watch.stop_cleanly().unwrap();
}

/// `kernel.bpf_stats_enabled=1` while alive, restored on drop.
struct StatsEnabled(String);

impl StatsEnabled {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn new() -> Self {
        let before = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, "1").unwrap();
        Self(before.trim().to_owned())
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// `routemon cleanup` (and a plain exit) remove routemon's pins only: another
/// tool's pin in the same directory stays, and so does the directory.
#[test]
fn cleanup_removes_only_routemons_pins() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    std::fs::create_dir_all(pins.path()).unwrap();
    let foreign = pins.path().join("someone_elses_map");
    routemon_testbed::cmd::run(
        "bpftool",
        &[
            "map",
            "create",
            foreign.to_str().unwrap(),
            "type",
            "array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "1",
            "name",
            "foreign",
        ],
    )
    .unwrap();
    let args = ["--bpffs-dir", &pins.arg(), "--keep-attached"];
    let watch = Watch::start(&net_launcher(&bed.node), &args).unwrap();
    let (status, _) = watch.stop(Signal::SIGTERM, Duration::from_secs(5)).unwrap();
    assert!(status.success());
    assert_eq!(pins.links().len(), 4);
    let out = run(None, &["cleanup", "--bpffs-dir", &pins.arg()])
        .unwrap()
        .success();
    println!("{}", out.stdout);
    let pinned = 4 + routemon::ebpf::pinning::pinned_maps().len();
    assert!(
        out.stdout.contains(&format!("{pinned} pinned object(s)")),
        "{}",
        out.stdout
    );
    assert!(foreign.exists(), "another tool's pin was removed");
    let left: Vec<_> = std::fs::read_dir(pins.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["someone_elses_map"]);
    assert!(
        routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
    std::fs::remove_file(&foreign).unwrap();
}
