//! `cargo xtask demo`: the EKS two-default-routes story, told by routemon on a
//! node simulated with network namespaces. Everything is removed at the end, also
//! when a step fails.

use std::{
    io::IsTerminal as _,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use routemon_testbed::{
    INTERNET_V4, Testbed, UplinkSpec,
    routemon::{self, Running},
    traffic::{UdpBurst, send_udp},
};

use crate::util::require_root;

/// DHCP route metric systemd-networkd gives every interface.
const NETWORKD_METRIC: u32 = 1024;
/// The documented fix's metric for the primary interface.
const PINNED_METRIC: u32 = 1000;

/// Wraps `text` in an SGR style when stdout is a terminal.
fn styled(code: &str, text: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn step(n: u32, text: &str) {
    println!("\n{}", styled("1", &format!("[{n}/5] {text}")));
}

fn echo_command(args: &[&str]) {
    println!("{}", styled("2", &format!("$ routemon {}", args.join(" "))));
}

fn show(bed: &Testbed, args: &[&str]) -> Result<()> {
    echo_command(args);
    let out = routemon::run(Some(&bed.node), args)?;
    print!("{}", out.stdout);
    anyhow::ensure!(out.status.success(), "routemon failed: {}", out.stderr);
    Ok(())
}

/// Runs a snapshot while the node sends datagrams to the "internet" host without
/// choosing an interface, as a pod's traffic would.
fn snapshot_under_traffic(bed: &Testbed, seconds: u32) -> Result<()> {
    let duration = format!("{seconds}s");
    let args = ["snapshot", "--duration", duration.as_str()];
    echo_command(&args);
    let running = Running::start(&bed.node, &args)?;
    let stop = AtomicBool::new(false);
    let burst = UdpBurst {
        dst: INTERNET_V4.into(),
        device: None,
        src: None,
        count: 10,
        payload: 512,
    };
    let finished = thread::scope(|scope| {
        let sender = scope.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                send_udp(&bed.node, &burst)?;
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        let finished = running.wait(Duration::from_secs(u64::from(seconds) + 30));
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender thread")?;
        finished
    })?;
    print!("{}", finished.stdout);
    anyhow::ensure!(
        finished.status.success(),
        "routemon failed: {}",
        finished.stderr
    );
    Ok(())
}

/// Runs the demo.
pub fn run() -> Result<()> {
    require_root("the demo creates network namespaces and loads eBPF programs")?;
    println!("routemon demo: an EKS node (Amazon Linux 2023, Cilium in ENI mode) simulated with");
    println!("network namespaces: a `node` with ENI-like uplinks and a `router` playing the VPC.");

    step(
        1,
        "The node boots with its primary ENI, ens5 (DHCP default route, metric 1024).",
    );
    let mut bed = Testbed::new(&[UplinkSpec::new("ens5", NETWORKD_METRIC)], false)
        .context("building the testbed")?;
    show(&bed, &["routes"])?;

    step(
        2,
        "Cilium attaches a secondary ENI, ens6; systemd-networkd gives its DHCP default route \
         the same metric, 1024.",
    );
    bed.add_uplink(&UplinkSpec::new("ens6", NETWORKD_METRIC))?;
    show(&bed, &["routes"])?;

    step(
        3,
        "Pods send to the internet (198.51.100.10). Where does egress go? 4 s of eBPF counts:",
    );
    snapshot_under_traffic(&bed, 4)?;
    println!("Both default routes carry traffic: the kernel alternates between the tied routes.");

    step(
        4,
        "The fix: the primary's metric below networkd's 1024, as /etc/systemd/network/05-ens5.network \
         with [DHCPv4] RouteMetric=1000 does. Applied live, new route first, then the old one removed:",
    );
    let gw = bed.uplink("ens5").gw4.to_string();
    bed.set_default("ens5", &gw, PINNED_METRIC)?;
    bed.delete_default("ens5", &gw, NETWORKD_METRIC)?;
    show(&bed, &["routes"])?;
    snapshot_under_traffic(&bed, 3)?;

    step(
        5,
        "Cleaning up: the namespaces and everything in them are removed.",
    );
    drop(bed);
    println!("Done. Run `routemon --help` for more; `cargo xtask run -- routes` on this machine.");
    Ok(())
}
