//! `cargo xtask demo`: the EKS two-default-routes story, told by routemon on a node
//! simulated with network namespaces, the real systemd-networkd and real DHCP
//! (dnsmasq), behind a VPC router that enforces the source/destination check with
//! nftables. Everything is removed at the end, also when a step fails.

use std::{
    io::IsTerminal as _,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use routemon_testbed::{
    INTERNET_V4,
    eks::{EksNode, Eni},
    netns::NetNs,
    routemon::{self, Running},
    traffic::{UdpBurst, http_get, send_udp},
};

use crate::util::require_root;

/// The documented fix: the primary's DHCP routes below networkd's default 1024.
const PINNED_ENS5: &str =
    "[Match]\nName=ens5\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nRouteMetric=1000\n";
/// The node service a load balancer targets on the secondary ENI's address.
const NODE_PORT: u16 = 8080;
const STEPS: u32 = 6;

/// Wraps `text` in an SGR style when stdout is a terminal.
fn styled(code: &str, text: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn step(n: u32, text: &str) {
    println!("\n{}", styled("1", &format!("[{n}/{STEPS}] {text}")));
}

fn echo_command(args: &[&str]) {
    println!("{}", styled("2", &format!("$ routemon {}", args.join(" "))));
}

fn show(eks: &EksNode, args: &[&str]) -> Result<()> {
    echo_command(args);
    let out = routemon::run(Some(&eks.node), args)?;
    print!("{}", out.stdout);
    anyhow::ensure!(out.status.success(), "routemon failed: {}", out.stderr);
    Ok(())
}

/// The node's traffic during a snapshot: pods talking to the internet without
/// choosing an interface, and an application bound to the secondary ENI's address.
fn node_traffic(node: &NetNs, secondary: IpAddr) -> Result<()> {
    let pods = UdpBurst {
        dst: INTERNET_V4.into(),
        device: None,
        src: None,
        count: 10,
        payload: 512,
    };
    let bound = UdpBurst {
        src: Some(secondary),
        count: 2,
        ..pods.clone()
    };
    send_udp(node, &pods)?;
    send_udp(node, &bound)
}

/// Runs a snapshot while the node sends traffic and a client connects to the
/// secondary ENI's address; prints routemon's report and what the client saw.
fn snapshot_under_traffic(eks: &EksNode, secondary: &Eni, seconds: u32) -> Result<()> {
    let duration = format!("{seconds}s");
    let args = ["snapshot", "--duration", duration.as_str()];
    echo_command(&args);
    let running = Running::start(&eks.node, &args)?;
    let stop = AtomicBool::new(false);
    let client = eks.client.as_ref().context("no client")?;
    let target = SocketAddr::new(secondary.addr.into(), NODE_PORT);
    let (finished, client_saw) = thread::scope(|scope| {
        // Stop sending a second before the count ends, so that what routemon counted
        // and what the VPC dropped cover the same packets.
        let until =
            std::time::Instant::now() + Duration::from_secs(u64::from(seconds.saturating_sub(1)));
        let stopped = &stop;
        let sender = scope.spawn(move || -> Result<()> {
            while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                node_traffic(&eks.node, secondary.addr.into())?;
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        let client_saw = match http_get(client, target, Duration::from_secs(2)) {
            Ok(status) => format!("answered: {status}"),
            Err(err) => format!("failed: {err:#}"),
        };
        let finished = running.wait(Duration::from_secs(u64::from(seconds) + 30));
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().expect("sender thread");
        (finished.and_then(|f| sent.map(|()| f)), client_saw)
    });
    let finished = finished?;
    print!("{}", finished.stdout);
    anyhow::ensure!(
        finished.status.success(),
        "routemon failed: {}",
        finished.stderr
    );
    let (dropped, _) = eks.spoofed(&eks.enis[0])?;
    println!(
        "Meanwhile: a client's HTTP request to {target} {client_saw}. The VPC's source check \
         has dropped {dropped} packets arriving from {} since boot.",
        eks.enis[0].name
    );
    Ok(())
}

/// Runs the demo.
pub fn run() -> Result<()> {
    require_root("the demo creates network namespaces and loads eBPF programs")?;
    println!("routemon demo: an EKS node on Amazon Linux 2023 with Cilium in ENI mode, simulated");
    println!(
        "with network namespaces: the real systemd-networkd and DHCP on the node, a VPC router"
    );
    println!("that drops packets whose source is not the sending ENI's (EC2 source/dest check).");

    step(
        1,
        "The node boots with its primary ENI, ens5; networkd's DHCP default route has metric 1024.",
    );
    let mut eks = EksNode::boot("ens*", "ens5").context("booting the node")?;
    eks.serve_http_on_node(NODE_PORT)?;
    eks.add_client()?;
    show(&eks, &["routes"])?;

    step(
        2,
        "Cilium attaches a secondary ENI, ens6. networkd (80-ec2.network, Name=ens*) gives its DHCP \
         default route the same metric, 1024:",
    );
    let secondary = eks.attach_eni("ens6")?;
    show(&eks, &["routes"])?;

    step(
        3,
        "Pods send to the internet, an app sends from ens6's address, and a load balancer connects \
         to ens6's address. 4 s of eBPF counts:",
    );
    snapshot_under_traffic(&eks, &secondary, 4)?;

    step(
        4,
        "Fix 1, the documented one: /etc/systemd/network/05-ens5.network with [DHCPv4] \
         RouteMetric=1000, then restart systemd-networkd:",
    );
    eks.write_network_file("05-ens5.network", PINNED_ENS5)?;
    eks.restart_networkd()?;
    let primary = eks.enis[0].clone();
    wait_for_metric(&eks, &primary, 1000)?;
    show(&eks, &["routes"])?;

    step(
        5,
        "Fix 2, for traffic of the secondary ENI: a source rule sends ens6's address out of ens6 \
         (what amazon-ec2-net-utils installs). Same traffic again:",
    );
    let gateway = secondary.gateway.to_string();
    eks.node.ip(&[
        "route", "add", "default", "via", &gateway, "dev", "ens6", "table", "10002",
    ])?;
    eks.node.ip(&[
        "rule",
        "add",
        "from",
        &secondary.addr.to_string(),
        "lookup",
        "10002",
        "prio",
        "1000",
    ])?;
    snapshot_under_traffic(&eks, &secondary, 3)?;

    step(
        STEPS,
        "Cleaning up: networkd, dnsmasq, the servers and the namespaces are removed.",
    );
    drop(eks);
    println!(
        "Done. `routemon --help` explains every option; `cargo xtask run -- routes` looks at this machine."
    );
    Ok(())
}

/// Waits until `eni`'s DHCP default route has `metric` (networkd re-applies the
/// lease after its restart).
fn wait_for_metric(eks: &EksNode, eni: &Eni, metric: u32) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let wanted = format!("metric {metric}");
    loop {
        let routes = eks
            .node
            .ip(&["-4", "route", "show", "default", "dev", &eni.name])?;
        if routes.contains(&wanted) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "networkd did not apply RouteMetric={metric} on {}: {routes}",
            eni.name
        );
        thread::sleep(Duration::from_millis(200));
    }
}
