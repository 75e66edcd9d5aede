//! `routemon watch`: the daemon on real namespaces, real networkd, real netlink.
//!
//! One test binary, its tests grouped by concern:
//!
//! - [`lifecycle`]: attach and detach, SIGTERM, restart and adoption of what is
//!   pinned, pinned maps that are not routemon's, cleanup;
//! - [`findings`]: how promptly an equal-metric tie is reported;
//! - [`metrics`]: a real Prometheus server and promtool, and the metrics endpoint
//!   under slow and malformed clients;
//! - [`http`]: the metrics endpoint's HTTP (keep-alive, HEAD, gzip, OpenMetrics,
//!   431, 405) and its connection policy under slowloris, non-reading and
//!   numerous clients on the scraper's own address;
//! - [`guard`]: the pin guard re-pinning, and backing off;
//! - [`churn`]: route churn, netlink storms, interface churn, more interfaces than
//!   routemon has counters for;
//! - [`soak`]: the churn soak, every invariant checked at each quiet point.

mod churn;
mod findings;
mod guard;
mod http;
mod lifecycle;
mod metrics;
mod soak;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use routemon_testbed::{
    Testbed,
    cmd::require_root,
    traffic::UdpBurst,
    watch::{PinDir, Watch, net_launcher, sample},
};

// Once for the whole binary (it registers a constructor that runs before `main`):
// every module's tests run in the new machine's view of the host.
routemon_testbed::new_machine_view!();

/// Generous bound for anything the daemon does in reaction to a change.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn udp(dst: IpAddr, device: &str, count: usize) -> UdpBurst {
    UdpBurst {
        dst,
        device: Some(device.to_owned()),
        src: None,
        count,
        payload: 64,
    }
}

fn egress_packets(metrics: &str, interface: &str) -> f64 {
    sample(
        metrics,
        "routemon_interface_egress_packets_total",
        &[("interface", interface)],
    )
    .unwrap_or(0.0)
}

/// Sends 64-byte datagrams to `uplink`'s gateway from the node, one every 200 µs,
/// for `duration`, on a thread; it returns how many the socket accepted.
fn udp_stream(bed: &Testbed, uplink: &str, duration: Duration) -> std::thread::JoinHandle<u64> {
    let gateway: IpAddr = bed.uplink(uplink).gw4.into();
    let node_path = bed.node.path();
    std::thread::spawn(move || {
        let ns_file = std::fs::File::open(node_path).unwrap();
        nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        while Instant::now() < deadline {
            if socket.send_to(&[0x5a; 64], (gateway, 9)).is_ok() {
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sent
    })
}

/// Two uplinks with default routes of `metrics` (ens5, ens6) and `watch` running
/// on them with its own pin directory and `args`.
fn two_uplinks_watched(metrics: (u32, u32), args: &[&str]) -> (Testbed, PinDir, Watch) {
    require_root();
    let bed = Testbed::ens5_ens6(metrics.0, metrics.1).unwrap();
    let pins = PinDir::new();
    let mut all = vec!["--bpffs-dir".to_owned(), pins.arg()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let watch = Watch::start(&net_launcher(&bed.node), &all).unwrap();
    (bed, pins, watch)
}
