//! Netlink scale (routes in the table → time and memory of `routes --json` and of
//! the daemon's initial model) and detection latency (route change → event).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use routemon_testbed::{
    Testbed,
    kernel::proc_status_kib,
    netns::NetNs,
    routemon::binary,
    watch::{Watch, net_launcher},
};

use super::{Figure, Plan, Stats, traffic::fill_routes};

/// Wall time and peak RSS (KiB) of one `routemon <args>` run inside `ns`.
fn timed_run(ns: &NetNs, args: &[&str]) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning routemon")?;
    let pid = libc::pid_t::try_from(child.id()).context("pid")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `ip netns exec` execs routemon in place, so
    // the usage is routemon's.
    let ret = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    anyhow::ensure!(ret == pid, "wait4: {}", std::io::Error::last_os_error());
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "routemon {args:?} failed (status {status})"
    );
    Ok((
        started.elapsed(),
        u64::try_from(usage.ru_maxrss).unwrap_or(0),
    ))
}

/// `routes --json` and the daemon's start with 1 000, 100 000 and 1 000 000 routes
/// (quick: 1 000 and 10 000).
pub fn netlink_scale(plan: Plan) -> Result<Vec<Figure>> {
    let sizes: &[usize] = if plan.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let runs = if plan.quick { 1 } else { 3 };
    let ns = NetNs::new("s")?;
    ns.ip(&[
        "link", "add", "ens5", "type", "veth", "peer", "name", "peer5",
    ])?;
    ns.ip(&["addr", "add", "10.0.1.10/24", "dev", "ens5"])?;
    ns.ip(&["link", "set", "ens5", "up"])?;
    ns.ip(&["link", "set", "peer5", "up"])?;
    ns.ip(&["route", "add", "default", "via", "10.0.1.1", "dev", "ens5"])?;
    let mut figures = Vec::new();
    let mut installed = 0;
    for &size in sizes {
        let filled = Instant::now();
        fill_routes(&ns, "ens5", installed, size)?;
        installed = size;
        println!(
            "  {size} routes installed in {:.1}s",
            filled.elapsed().as_secs_f64()
        );
        let (mut cli_ms, mut cli_rss, mut daemon_ms, mut daemon_rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (took, rss) = timed_run(&ns, &["routes", "--json", "-i", "ens5"])?;
            cli_ms.push(took.as_secs_f64() * 1e3);
            cli_rss.push(rss as f64 / 1024.0);
            let started = Instant::now();
            let watch = Watch::start(
                &net_launcher(&ns),
                &["--ephemeral", "--no-listen", "-i", "ens5"],
            )?;
            daemon_ms.push(started.elapsed().as_secs_f64() * 1e3);
            daemon_rss.push(proc_status_kib(watch.pid(), "VmHWM:")? as f64 / 1024.0);
            watch.stop_cleanly()?;
        }
        let label = |what: &str| format!("{what}, {size} routes");
        let per_route = |ms: &[f64]| {
            let per: Vec<f64> = ms.iter().map(|m| m * 1e3 / size as f64).collect();
            Stats::of(&per)
        };
        let daemon = Figure::new(
            "netlink scale",
            label("daemon initial model"),
            Stats::of(&daemon_ms),
            "ms",
        );
        let daemon_mem = Figure::new(
            "netlink scale",
            label("daemon peak RSS"),
            Stats::of(&daemon_rss),
            "MiB",
        );
        figures.extend([
            Figure::new(
                "netlink scale",
                label("routes --json"),
                Stats::of(&cli_ms),
                "ms",
            ),
            Figure::new(
                "netlink scale",
                label("routes --json per route"),
                per_route(&cli_ms),
                "µs",
            ),
            Figure::new(
                "netlink scale",
                label("routes --json peak RSS"),
                Stats::of(&cli_rss),
                "MiB",
            ),
            match size {
                100_000 => daemon.at_most(300.0),
                1_000_000 => daemon.at_most(3000.0),
                _ => daemon,
            },
            Figure::new(
                "netlink scale",
                label("daemon initial model per route"),
                per_route(&daemon_ms),
                "µs",
            ),
            if size == 1_000_000 {
                daemon_mem.at_most(300.0)
            } else {
                daemon_mem
            },
        ]);
    }
    Ok(figures)
}

/// From the netlink route change that creates equal-metric defaults to the
/// `finding_raised` event's timestamp (see [`super::scrapes::detection`]).
pub fn detection_latency(plan: Plan) -> Result<Vec<Figure>> {
    let trials = if plan.quick { 20 } else { 100 };
    let bed = Testbed::ens5_ens6(1024, 1000)?;
    let mut watch = Watch::start(&net_launcher(&bed.node), &["--ephemeral", "--no-listen"])?;
    let latencies = super::scrapes::detection(&bed, &mut watch, trials)?;
    watch.stop_cleanly()?;
    Ok(vec![
        Figure::new(
            "detection latency",
            format!("median of {trials} trials"),
            Stats::of(&latencies),
            "ms",
        ),
        Figure::new(
            "detection latency",
            format!("p99 of {trials} trials"),
            Stats::of(&[Stats::percentile(&latencies, 99.0)]),
            "ms",
        )
        .at_most(100.0),
    ])
}
