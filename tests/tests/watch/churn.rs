//! Change at scale: route churn and netlink storms that overflow the netlink
//! buffer, interfaces coming and going under traffic, and more interfaces than
//! routemon has counters for.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use routemon_testbed::{
    Testbed, UplinkSpec,
    cmd::require_root,
    eks::wait_until,
    kernel::{link_stats, routemon_programs_after, routemon_tcx_links, wait_quiet},
    watch::{PinDir, Watch, net_launcher, sample, samples, scrape},
};
use serde_json::Value;

use crate::{EVENT_TIMEOUT, egress_packets, two_uplinks_watched, udp_stream};

/// Test 6: thousands of route changes in quick bursts, with a small netlink buffer
/// so that notifications are lost: the daemon resyncs (counted) and ends with the
/// kernel's final routes.
#[test]
fn route_churn_ends_in_the_kernels_final_state() {
    require_root();
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1000)], false).unwrap();
    let pins = PinDir::new();
    let mut watch = Watch::start(
        &net_launcher(&bed.node),
        &["--bpffs-dir", &pins.arg(), "--netlink-buffer", "16384"],
    )
    .unwrap();
    watch
        .wait_for("the start", EVENT_TIMEOUT, |e| e["event"] == "started")
        .unwrap();
    // The daemon is stopped while the batch runs, so its 16 KiB socket buffer
    // overflows whatever the machine's speed; it catches up when continued.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(watch.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    churn_routes_on_ens5(&bed);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();

    let kernel = kernel_ens5_destinations(&bed);
    let mut model = BTreeSet::new();
    let converged = wait_until(Duration::from_secs(30), "the daemon to converge", || {
        model = model_ens5_destinations(&scrape(&bed.node).unwrap());
        model == kernel
    });
    let metrics = scrape(&bed.node).unwrap();
    let resyncs = sample(&metrics, "routemon_netlink_resyncs_total", &[]).unwrap();
    let notifications = sample(&metrics, "routemon_netlink_notifications_total", &[]).unwrap();
    println!(
        "churn: kernel {} IPv4 routes on ens5, daemon {}; {notifications} notifications, {resyncs} resyncs",
        kernel.len(),
        model.len()
    );
    converged.unwrap();
    assert_eq!(
        kernel.len(),
        3002,
        "6000 added, 3000 deleted, plus the subnet and default routes"
    );
    assert!(resyncs >= 1.0, "a 16 KiB buffer overflows under this churn");
    let resync_events = watch
        .events()
        .iter()
        .filter(|e| e["event"] == "netlink_resync")
        .count();
    assert_eq!(resync_events as f64, resyncs);
    watch.stop_cleanly().unwrap();
}

/// 12 000 route changes on ens5 in one `ip -batch`: 6 000 /24s added, then every
/// other one deleted.
fn churn_routes_on_ens5(bed: &Testbed) {
    let batch = std::env::temp_dir().join(format!("{}-churn", bed.node.name()));
    let mut commands = String::new();
    for i in 0..6000u32 {
        commands.push_str(&format!(
            "route add 10.{}.{}.0/24 dev ens5 metric 5\n",
            100 + i / 256,
            i % 256
        ));
    }
    for i in (0..6000u32).step_by(2) {
        commands.push_str(&format!(
            "route del 10.{}.{}.0/24 dev ens5 metric 5\n",
            100 + i / 256,
            i % 256
        ));
    }
    std::fs::write(&batch, commands).unwrap();
    let started = Instant::now();
    bed.node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    println!("12000 route changes applied in {:?}", started.elapsed());
    let _ = std::fs::remove_file(&batch);
}

/// The destinations of the kernel's IPv4 routes on ens5 in the main table, the
/// default written as `0.0.0.0/0`.
fn kernel_ens5_destinations(bed: &Testbed) -> BTreeSet<String> {
    bed.node
        .ip(&["-4", "route", "show", "table", "main", "dev", "ens5"])
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .map(|dst| {
            if dst == "default" {
                "0.0.0.0/0".to_owned()
            } else {
                dst
            }
        })
        .collect()
}

/// The destinations of the IPv4 routes on ens5 in the daemon's model, as its
/// per-route egress counters in `metrics` list them.
fn model_ens5_destinations(metrics: &str) -> BTreeSet<String> {
    samples(metrics, "routemon_route_egress_packets_total")
        .into_iter()
        .filter(|(labels, _)| {
            labels.contains("family=\"ipv4\"") && labels.contains("interface=\"ens5\"")
        })
        .filter_map(|(labels, _)| {
            labels
                .split("destination=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// IPv4 routes in the kernel, every table, as `ip` lists them (a multipath route's
/// indented next-hop lines are part of its route).
fn kernel_v4_routes(bed: &Testbed) -> usize {
    bed.node
        .ip(&["-4", "route", "show", "table", "all"])
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
        .count()
}

/// A storm of 100 000 route changes in ten bursts (6 000 adds and 4 000 deletes
/// each) with a 64 KiB netlink buffer: notifications are lost, the daemon re-reads
/// (each resync counted and reported), and it ends with exactly the kernel's routes
/// — 20 000 more than before — in bounded memory.
#[test]
fn netlink_storm_ends_equal_to_a_fresh_dump() {
    require_root();
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1000)], false).unwrap();
    let pins = PinDir::new();
    let watch = Watch::start(
        &net_launcher(&bed.node),
        &["--bpffs-dir", &pins.arg(), "--netlink-buffer", "65536"],
    )
    .unwrap();
    let model_v4 = |metrics: &str| {
        sample(metrics, "routemon_model_routes", &[("family", "ipv4")]).unwrap() as usize
    };
    let (kernel_before, model_before) = (
        kernel_v4_routes(&bed),
        model_v4(&scrape(&bed.node).unwrap()),
    );
    assert_eq!(
        model_before, kernel_before,
        "the initial model is the kernel's"
    );

    storm_routes_on_ens5(&bed);

    let kernel_after = kernel_v4_routes(&bed);
    assert_eq!(
        kernel_after - kernel_before,
        20_000,
        "60 000 added, 40 000 deleted"
    );
    let mut model_after = 0;
    let converged = wait_until(
        Duration::from_secs(60),
        "the model to match the kernel",
        || {
            model_after = model_v4(&scrape(&bed.node).unwrap());
            model_after == kernel_after
        },
    );
    let metrics = scrape(&bed.node).unwrap();
    let resyncs = sample(&metrics, "routemon_netlink_resyncs_total", &[]).unwrap();
    let notifications = sample(&metrics, "routemon_netlink_notifications_total", &[]).unwrap();
    let rss = watch.rss_kib().unwrap();
    println!(
        "storm: kernel {kernel_after} IPv4 routes, model {model_after}; {notifications} \
         notifications, {resyncs} resyncs; RSS {rss} KiB"
    );
    converged.unwrap();
    assert!(resyncs >= 1.0, "a 64 KiB buffer overflows under this storm");
    assert!(rss < 96 * 1024, "memory bounded: {rss} KiB");
    watch.stop_cleanly().unwrap();
}

/// 100 000 route changes on ens5 in ten `ip -batch` bursts: each adds 6 000 /32s
/// and deletes 4 000 routes added in it or earlier ones.
fn storm_routes_on_ens5(bed: &Testbed) {
    let batch = std::env::temp_dir().join(format!("{}-storm", bed.node.name()));
    let route = |i: u32| format!("10.{}.{}.{}/32", 64 + i / 65536, (i / 256) % 256, i % 256);
    let started = Instant::now();
    for burst in 0..10u32 {
        let mut commands = String::new();
        for i in burst * 6000..(burst + 1) * 6000 {
            commands.push_str(&format!("route add {} dev ens5\n", route(i)));
        }
        // Deletes of routes added in this or earlier bursts.
        for i in (burst * 4000..(burst + 1) * 4000).map(|i| i * 3 / 2) {
            commands.push_str(&format!("route del {} dev ens5\n", route(i)));
        }
        std::fs::write(&batch, commands).unwrap();
        bed.node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    }
    let _ = std::fs::remove_file(&batch);
    println!("100000 route changes in 10 bursts: {:?}", started.elapsed());
}

/// Number of BPF maps in the kernel, system-wide.
fn bpf_map_count() -> usize {
    let out = routemon_testbed::cmd::run("bpftool", &["-j", "map", "show"]).unwrap();
    serde_json::from_str::<Vec<Value>>(&out).unwrap().len()
}

/// ENIs attached and removed 20 times while traffic leaves by ens5 and `watch`
/// runs: every attach and detach is reported, no TCX link or map is left behind,
/// and ens5's count stays exactly the kernel's.
#[test]
fn interface_churn_under_traffic_leaks_nothing_and_keeps_exact_counts() {
    let (bed, _pins, mut watch) = two_uplinks_watched((1000, 1024), &[]);
    wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let (links_before, maps_before) = (routemon_tcx_links().unwrap(), bpf_map_count());
    let kernel_before = link_stats(&bed.node, "ens5").unwrap();
    let counted_before = egress_packets(&scrape(&bed.node).unwrap(), "ens5");

    let cycles = 20;
    let churn = Instant::now();
    let sender = udp_stream(&bed, "ens5", Duration::from_secs(3));
    for cycle in 0..cycles {
        attach_and_remove_ens7(&bed, &mut watch, cycle, links_before);
    }
    let sent = sender.join().unwrap();
    println!(
        "{cycles} attach/detach cycles in {:?} with {sent} datagrams on ens5",
        churn.elapsed()
    );

    wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let kernel = link_stats(&bed.node, "ens5").unwrap().since(kernel_before);
    let counted = egress_packets(&scrape(&bed.node).unwrap(), "ens5") - counted_before;
    assert!(kernel.tx_packets >= sent);
    assert_eq!(counted as u64, kernel.tx_packets, "ens5 counted exactly");
    assert_eq!(
        routemon_tcx_links().unwrap(),
        links_before,
        "no TCX link left"
    );
    assert_eq!(bpf_map_count(), maps_before, "no map left");
    watch.stop_cleanly().unwrap();
}

/// One churn cycle: ens7 appears and is attached (two TCX links more than
/// `links_before`), then goes and is reported detached.
fn attach_and_remove_ens7(bed: &Testbed, watch: &mut Watch, cycle: u32, links_before: usize) {
    bed.node
        .ip(&[
            "link", "add", "ens7", "type", "veth", "peer", "name", "peer7",
        ])
        .unwrap();
    bed.node.ip(&["link", "set", "ens7", "up"]).unwrap();
    watch
        .wait_for("ens7 attached", EVENT_TIMEOUT, |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens7"
        })
        .unwrap_or_else(|err| panic!("cycle {cycle}: {err}"));
    // Two links more: egress and ingress of ens7. Read through two bpftool
    // listings (programs, then links) while the previous cycle's links are
    // being freed, one reading can be off for a moment; the count must settle
    // at exactly two more.
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(5), "ens7's two TCX links", || {
        seen.push(routemon_tcx_links().unwrap());
        seen.last() == Some(&(links_before + 2))
    })
    .unwrap_or_else(|err| {
        panic!(
            "cycle {cycle}: {err}; readings {seen:?}, expected {}",
            links_before + 2
        )
    });
    bed.node.ip(&["link", "del", "ens7"]).unwrap();
    watch
        .wait_for("ens7 detached", EVENT_TIMEOUT, |e| {
            e["event"] == "interface_detached" && e["interface"] == "ens7"
        })
        .unwrap_or_else(|err| panic!("cycle {cycle}: {err}"));
}

/// More uplink-named interfaces than routemon's 256 interface counters: the daemon
/// attaches what fits, counts the rest in `routemon_interfaces_unattached` (warned
/// once each) and keeps running; when interfaces go away, the waiting ones get the
/// freed counters.
#[test]
fn beyond_256_interfaces_it_degrades_and_counts_what_it_could_not_attach() {
    require_root();
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1000)], false).unwrap();
    let extra = 300u32;
    let batch = std::env::temp_dir().join(format!("{}-links", bed.node.name()));
    let mut commands = String::new();
    for i in 0..extra {
        commands.push_str(&format!(
            "link add ens{} type veth peer name p{i}\n",
            1000 + i
        ));
        commands.push_str(&format!("link set ens{} up\n", 1000 + i));
    }
    std::fs::write(&batch, commands).unwrap();
    bed.node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();

    let pins = PinDir::new();
    let watch = Watch::start(&net_launcher(&bed.node), &["--bpffs-dir", &pins.arg()]).unwrap();
    let gauge = |name: &str| sample(&scrape(&bed.node).unwrap(), name, &[]).unwrap_or(-1.0);
    let attached = || {
        samples(&scrape(&bed.node).unwrap(), "routemon_interface_attached")
            .into_iter()
            .filter(|(_, value)| *value == 1.0)
            .count()
    };
    let unattached = gauge("routemon_interfaces_unattached");
    println!(
        "{} uplink-named interfaces: {} attached, {unattached} waiting",
        extra + 1,
        attached()
    );
    assert_eq!(attached() + unattached as usize, extra as usize + 1);
    assert!(unattached >= 45.0, "at most 256 counters: {unattached}");
    assert!(routemon_tcx_links().unwrap() <= 2 * 256);

    // 100 interfaces go: the waiting ones take their counters.
    let mut commands = String::new();
    for i in 0..100 {
        commands.push_str(&format!("link del ens{}\n", 1000 + i));
    }
    std::fs::write(&batch, commands).unwrap();
    bed.node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&batch);
    wait_until(Duration::from_secs(30), "every interface attached", || {
        gauge("routemon_interfaces_unattached") == 0.0
    })
    .unwrap();
    assert_eq!(attached(), extra as usize + 1 - 100);
    assert_eq!(
        routemon_tcx_links().unwrap(),
        2 * (extra as usize + 1 - 100)
    );
    // Detaching 402 TCX links takes longer than stop_cleanly's 2 s.
    let (status, took) = watch
        .stop(Signal::SIGTERM, Duration::from_secs(60))
        .unwrap();
    println!(
        "SIGTERM with {} links attached: exit in {took:?}",
        2 * (extra + 1 - 100)
    );
    assert!(status.success());
    assert!(
        routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}

/// The kernel removes every IPv4 route through a device that goes down without an
/// `RTM_DELROUTE` for each (IPv6 routes are announced): with a tie between ens5
/// and ens6 and two thousand routes on ens6, `ip link set ens6 down` must leave
/// the daemon's model equal to a fresh dump and clear the tie.
#[test]
fn link_down_flushes_the_models_ipv4_routes_like_the_kernel() {
    let (bed, _pins, mut watch) = two_uplinks_watched((1024, 1024), &[]);
    watch
        .wait_for("the tie", EVENT_TIMEOUT, |e| {
            e["event"] == "finding_raised" && e["finding"]["kind"] == "equal_metric_default_routes"
        })
        .unwrap();
    let batch = std::env::temp_dir().join(format!("{}-ens6-routes", bed.node.name()));
    let commands: String = (0..2000u32)
        .map(|i| format!("route add 10.{}.{}.0/24 dev ens6\n", 120 + i / 256, i % 256))
        .collect();
    std::fs::write(&batch, commands).unwrap();
    bed.node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&batch);
    wait_until(EVENT_TIMEOUT, "the model to hold the new routes", || {
        model_v4_routes(&bed) == Some(kernel_v4_routes(&bed) as f64)
    })
    .unwrap();

    bed.node.ip(&["link", "set", "ens6", "down"]).unwrap();
    expect_silent_flush_followed(&bed, watch);
}

/// Deleting a nexthop object removes the IPv4 routes that use it with no
/// `RTM_DELROUTE` (only an `RTM_DELNEXTHOP`, on a group of its own): the model must
/// follow, and the tie those routes made must clear.
#[test]
fn deleted_nexthop_object_flushes_the_models_ipv4_routes_like_the_kernel() {
    let (bed, _pins, mut watch) = two_uplinks_watched((1024, 1024), &[]);
    let gateway = bed.uplinks[1].gw4.to_string();
    let node = &bed.node;
    node.ip(&["nexthop", "add", "id", "61", "via", &gateway, "dev", "ens6"])
        .unwrap();
    // ens6's default through the nexthop object, still tied with ens5's.
    node.ip(&["route", "del", "default", "dev", "ens6"])
        .unwrap();
    node.ip(&["route", "append", "default", "nhid", "61", "metric", "1024"])
        .unwrap();
    let batch = std::env::temp_dir().join(format!("{}-nhid-routes", node.name()));
    let commands: String = (0..500u32)
        .map(|i| format!("route add 10.{}.{}.0/24 nhid 61\n", 140 + i / 256, i % 256))
        .collect();
    std::fs::write(&batch, commands).unwrap();
    node.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&batch);
    watch
        .wait_for("the tie", EVENT_TIMEOUT, |e| {
            e["event"] == "finding_raised" && e["finding"]["kind"] == "equal_metric_default_routes"
        })
        .unwrap();
    wait_until(EVENT_TIMEOUT, "the model to hold the new routes", || {
        model_v4_routes(&bed) == Some(kernel_v4_routes(&bed) as f64)
    })
    .unwrap();

    node.ip(&["nexthop", "del", "id", "61"]).unwrap();
    expect_silent_flush_followed(&bed, watch);
}

/// After the kernel flushed ens6's IPv4 routes without notifications: the model
/// ends equal to the kernel, the tie clears, and no finding series is left.
fn expect_silent_flush_followed(bed: &Testbed, mut watch: Watch) {
    let kernel = kernel_v4_routes(bed);
    assert!(kernel < 100, "the kernel flushed ens6's routes: {kernel}");
    let flushed = wait_until(EVENT_TIMEOUT, "the model to equal the kernel", || {
        model_v4_routes(bed) == Some(kernel_v4_routes(bed) as f64)
    });
    assert!(
        flushed.is_ok(),
        "model {:?} IPv4 routes, kernel {}; events: {:?}",
        model_v4_routes(bed),
        kernel_v4_routes(bed),
        watch.events().iter().rev().take(5).collect::<Vec<_>>()
    );
    watch
        .wait_for("the tie cleared", EVENT_TIMEOUT, |e| {
            e["event"] == "finding_cleared" && e["finding"]["kind"] == "equal_metric_default_routes"
        })
        .unwrap();
    let metrics = scrape(&bed.node).unwrap();
    assert_eq!(
        sample(
            &metrics,
            "routemon_finding",
            &[("kind", "equal_metric_default_routes")]
        ),
        None,
        "{metrics}"
    );
    watch.stop_cleanly().unwrap();
}

/// The IPv4 routes in the daemon's model (`routemon_model_routes`).
fn model_v4_routes(bed: &Testbed) -> Option<f64> {
    sample(
        &scrape(&bed.node).unwrap(),
        "routemon_model_routes",
        &[("family", "ipv4")],
    )
}
