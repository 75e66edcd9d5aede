//! Nothing of routemon stays attached after it exits, however it exits.

use std::time::Duration;

use nix::sys::signal::Signal;
use routemon_testbed::{
    Testbed,
    cmd::require_root,
    kernel,
    routemon::{Running, run},
};

routemon_testbed::new_machine_view!();

fn testbed() -> Testbed {
    Testbed::ens5_ens6(1024, 1024).unwrap()
}

fn assert_nothing_attached(bed: &Testbed) {
    let left = kernel::routemon_programs_after(Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "routemon programs still loaded: {left:?}");
    assert_eq!(kernel::routemon_tcx_links().unwrap(), 0, "TCX links left");
    assert_eq!(
        kernel::bpftool_net_routemon(&bed.node).unwrap(),
        0,
        "bpftool net show lists routemon"
    );
    for dev in ["ens5", "ens6"] {
        let filters = kernel::tc_filters(&bed.node, dev).unwrap();
        assert!(
            filters.trim().is_empty(),
            "tc filters left on {dev}: {filters}"
        );
        assert!(
            !kernel::has_clsact(&bed.node, dev).unwrap(),
            "clsact qdisc left on {dev}"
        );
    }
}

#[test]
fn snapshot_that_runs_to_the_end_detaches() {
    require_root();
    let bed = testbed();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "1s", "--json"]).unwrap();
    assert_eq!(kernel::routemon_tcx_links().unwrap(), 4);
    let report = running
        .wait(Duration::from_secs(20))
        .unwrap()
        .success()
        .json();
    assert_eq!(report["snapshot"]["interrupted"], false);
    assert_nothing_attached(&bed);
}

#[test]
fn sigterm_and_sigint_end_the_count_early_detach_and_still_report() {
    require_root();
    let bed = testbed();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let running =
            Running::start(&bed.node, &["snapshot", "--duration", "10m", "--json"]).unwrap();
        assert_eq!(kernel::routemon_tcx_links().unwrap(), 4);
        let started = std::time::Instant::now();
        running.signal(signal).unwrap();
        let finished = running.wait(Duration::from_secs(10)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{signal} must end it promptly"
        );
        let finished = finished.success();
        assert!(
            finished.stderr.contains(&format!("{signal} received")),
            "{}",
            finished.stderr
        );
        let report = finished.json();
        assert_eq!(report["snapshot"]["interrupted"], true);
        assert!(report["snapshot"]["duration_seconds"].as_f64().unwrap() < 60.0);
        assert!(
            report["interfaces"][0]["egress_packets"].is_u64(),
            "partial counts are reported"
        );
        assert_nothing_attached(&bed);
    }
}

#[test]
fn sigkill_leaves_nothing_because_tcx_links_die_with_the_process() {
    require_root();
    let bed = testbed();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "10m"]).unwrap();
    assert_eq!(kernel::routemon_tcx_links().unwrap(), 4);
    running.signal(Signal::SIGKILL).unwrap();
    let finished = running.wait(Duration::from_secs(10)).unwrap();
    assert!(!finished.status.success());
    // The kernel releases links and programs once the last file descriptor closes.
    assert_nothing_attached(&bed);
}

#[test]
fn clsact_mode_removes_its_filters_and_the_qdisc_it_created() {
    require_root();
    let bed = testbed();
    let running = Running::start(
        &bed.node,
        &[
            "snapshot",
            "--duration",
            "10m",
            "--attach",
            "clsact",
            "--json",
        ],
    )
    .unwrap();
    for dev in ["ens5", "ens6"] {
        let filters = kernel::tc_filters(&bed.node, dev).unwrap();
        assert!(
            filters.contains("routemon_tx") && filters.contains("routemon_rx"),
            "{filters}"
        );
        assert!(kernel::has_clsact(&bed.node, dev).unwrap());
    }
    assert_eq!(
        kernel::routemon_tcx_links().unwrap(),
        0,
        "clsact mode makes no TCX links"
    );
    running.signal(Signal::SIGTERM).unwrap();
    let report = running
        .wait(Duration::from_secs(10))
        .unwrap()
        .success()
        .json();
    assert_eq!(report["snapshot"]["attached_via"], "clsact");
    assert_nothing_attached(&bed);
}

#[test]
fn clsact_mode_keeps_a_qdisc_that_was_there_before() {
    require_root();
    let bed = testbed();
    bed.node
        .exec("tc", &["qdisc", "add", "dev", "ens5", "clsact"])
        .unwrap();
    let out = run(
        Some(&bed.node),
        &["snapshot", "--duration", "300ms", "--attach", "clsact"],
    )
    .unwrap()
    .success();
    assert!(out.stdout.contains("via clsact"), "{}", out.stdout);
    assert!(
        kernel::has_clsact(&bed.node, "ens5").unwrap(),
        "the operator's qdisc stays"
    );
    assert!(
        !kernel::has_clsact(&bed.node, "ens6").unwrap(),
        "routemon's own qdisc goes"
    );
    for dev in ["ens5", "ens6"] {
        assert!(
            kernel::tc_filters(&bed.node, dev)
                .unwrap()
                .trim()
                .is_empty()
        );
    }
    assert!(
        kernel::routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}

fn routemon_filters(bed: &Testbed, dev: &str) -> usize {
    kernel::tc_filters(&bed.node, dev)
        .unwrap()
        .lines()
        .filter(|l| l.contains("routemon_"))
        .count()
}

/// clsact filters outlive their process: a clsact snapshot killed with SIGKILL
/// leaves its programs running on every packet. The next routemon says so, and
/// `cleanup` removes exactly those (never the filters of a routemon still running),
/// then the clsact qdisc routemon added once nothing uses it — never a qdisc that
/// was there before.
#[test]
fn orphaned_clsact_programs_are_reported_and_cleanup_removes_only_them() {
    require_root();
    let bed = testbed();
    // The operator's own qdisc on ens5; routemon adds ens6's.
    bed.node
        .exec("tc", &["qdisc", "add", "dev", "ens5", "clsact"])
        .unwrap();
    let clsact = ["snapshot", "--duration", "10m", "--attach", "clsact"];
    let killed = Running::start(&bed.node, &clsact).unwrap();
    killed.signal(Signal::SIGKILL).unwrap();
    assert!(
        !killed
            .wait(Duration::from_secs(10))
            .unwrap()
            .status
            .success()
    );
    for dev in ["ens5", "ens6"] {
        assert_eq!(
            routemon_filters(&bed, dev),
            2,
            "the killed run's filters stay"
        );
    }

    // A live clsact snapshot of ens6 warns about the orphans, and stacks its own
    // filters beside them.
    let mut args = clsact.to_vec();
    args.extend(["-i", "ens6"]);
    let live = Running::start(&bed.node, &args).unwrap();
    assert_eq!(routemon_filters(&bed, "ens6"), 4);
    let out = run(Some(&bed.node), &["cleanup", "--json"])
        .unwrap()
        .success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let filters = report["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 4, "the four orphans only: {report:#}");
    for dev in ["ens5", "ens6"] {
        let directions: Vec<&str> = filters
            .iter()
            .filter(|f| f["interface"] == dev)
            .map(|f| f["direction"].as_str().unwrap())
            .collect();
        assert_eq!(directions.len(), 2, "{dev}: {report:#}");
    }
    assert!(filters.iter().all(|f| f["program_id"].as_u64() > Some(0)));
    assert_eq!(report["qdiscs"], serde_json::json!([]), "both still in use");
    assert_eq!(report["failures"], serde_json::json!([]));
    assert_eq!(routemon_filters(&bed, "ens5"), 0);
    assert_eq!(
        routemon_filters(&bed, "ens6"),
        2,
        "the live snapshot's filters stay"
    );
    assert!(
        kernel::has_clsact(&bed.node, "ens5").unwrap(),
        "the operator's qdisc stays"
    );
    assert!(
        kernel::has_clsact(&bed.node, "ens6").unwrap(),
        "still used by the live snapshot"
    );
    live.signal(Signal::SIGTERM).unwrap();
    let finished = live.wait(Duration::from_secs(10)).unwrap().success();
    for dev in ["ens5", "ens6"] {
        assert!(
            finished.stderr.contains(&format!("interface={dev}"))
                && finished.stderr.contains("routemon cleanup"),
            "the orphans on {dev} were reported: {}",
            finished.stderr
        );
    }
    assert_eq!(
        routemon_filters(&bed, "ens6"),
        0,
        "the live snapshot detached"
    );

    // Nothing is orphaned any more; the qdisc the killed run added goes now.
    let out = run(Some(&bed.node), &["cleanup"]).unwrap().success();
    assert!(out.stdout.contains("0 clsact filter(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("1 clsact qdisc(s)"), "{}", out.stdout);
    assert!(!kernel::has_clsact(&bed.node, "ens6").unwrap());
    assert!(kernel::has_clsact(&bed.node, "ens5").unwrap());
    let left = kernel::routemon_programs_after(Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
