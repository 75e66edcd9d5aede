//! The pin guard (`--guard`): it re-pins what undoes the pin, and does not fight
//! what keeps undoing it.

use std::time::Duration;

use routemon_testbed::{
    cmd::require_root,
    eks::{EksNode, PIN_ENS5},
    watch::{PinDir, Watch, sample, scrape},
};

use crate::{EVENT_TIMEOUT, two_uplinks_watched};

fn run_with_node(eks: &EksNode, args: &[&str]) {
    let out = routemon_testbed::routemon::run_with(&eks.launcher(), args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        out.stdout,
        out.stderr
    );
}

/// Test 3: with the guard on, a networkd restart without the persisted drop-in
/// (DHCP re-adds the 1024 route) is undone within a second, with an event, while
/// requests keep flowing.
#[test]
fn guard_repins_after_networkd_restart_without_the_drop_in() {
    require_root();
    let mut eks = EksNode::boot("ens*", "ens5").unwrap();
    eks.attach_eni("ens6").unwrap();
    run_with_node(&eks, &[&PIN_ENS5[..], &["--reload"]].concat());
    let pins = PinDir::new();
    let mut watch = Watch::start(
        &eks.launcher(),
        &[
            "--bpffs-dir",
            &pins.arg(),
            "--guard",
            "--primary",
            "ens5",
            "--metric",
            "1000",
        ],
    )
    .unwrap();
    let traffic = routemon_testbed::traffic::HttpLoop::start(
        &eks.launcher(),
        std::net::SocketAddr::new(routemon_testbed::INTERNET_V4.into(), 80),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    std::fs::remove_file(eks.network_dir().join("05-ens5.network")).unwrap();
    eks.restart_networkd().unwrap();
    let repinned = watch
        .wait_for("the guard to re-pin", Duration::from_secs(30), |e| {
            e["event"] == "pin_reapplied"
        })
        .unwrap();
    let elapsed = repinned["elapsed_ms"].as_u64().unwrap();
    println!("guard re-pinned {elapsed} ms after the change: {repinned}");
    assert!(elapsed < 1000, "{repinned}");
    std::thread::sleep(Duration::from_secs(2));
    let result = traffic.finish().unwrap();
    println!("requests during the restart: {result:?}");
    assert!(result.ok > 0, "{result:?}");
    assert!(
        result.failed * 100 <= result.ok,
        "more than 1% of requests failed: {result:?}"
    );
    let defaults = eks.node.ip(&["-4", "route", "show", "default"]).unwrap();
    assert!(
        defaults.contains("dev ens5") && defaults.contains("metric 1000"),
        "{defaults}"
    );
    assert!(
        !defaults
            .lines()
            .any(|l| l.contains("dev ens5") && l.contains("metric 1024")),
        "{defaults}"
    );
    let metrics = scrape(&eks.node).unwrap();
    assert!(sample(&metrics, "routemon_guard_repins_total", &[]).unwrap() >= 1.0);
    watch.stop_cleanly().unwrap();
}

/// The guard does not fight: when something keeps undoing the pin, it re-pins
/// three times, then backs off and says so, leaving the routes alone.
#[test]
fn guard_backs_off_when_something_keeps_undoing_the_pin() {
    let (bed, _pins, mut watch) = two_uplinks_watched(
        (1000, 1024),
        &["--guard", "--primary", "ens5", "--metric", "1000"],
    );
    let gw5 = bed.uplink("ens5").gw4.to_string();
    let undo = || {
        // An operator (or another agent) puts ens5 back on networkd's metric.
        bed.delete_default("ens5", &gw5, 1000).unwrap();
        bed.set_default("ens5", &gw5, 1024).unwrap();
    };
    for round in 1..=3 {
        undo();
        watch
            .wait_for("a re-pin", EVENT_TIMEOUT, |e| e["event"] == "pin_reapplied")
            .unwrap();
        watch.forget();
        println!("re-pin {round}");
    }
    undo();
    let blocked = watch
        .wait_for("the back-off", EVENT_TIMEOUT, |e| {
            e["event"] == "pin_guard_blocked"
        })
        .unwrap();
    assert_eq!(blocked["retry_in_seconds"], 30, "{blocked}");
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("Not fighting it"),
        "{blocked}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let defaults = bed.node.ip(&["-4", "route", "show", "default"]).unwrap();
    assert!(
        defaults.contains("dev ens5 proto dhcp metric 1024"),
        "the operator's change stays: {defaults}"
    );
    assert!(
        !watch.events().iter().any(|e| e["event"] == "pin_reapplied"),
        "no re-pin during the back-off"
    );
    let metrics = scrape(&bed.node).unwrap();
    assert_eq!(
        sample(&metrics, "routemon_guard_repins_total", &[]),
        Some(3.0)
    );
    watch.stop_cleanly().unwrap();
}
