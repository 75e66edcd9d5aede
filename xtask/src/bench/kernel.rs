//! Kernel cost per packet of routemon's programs: `run_time_ns / run_cnt` from
//! the kernel's BPF statistics, enabled only for the measurement.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use routemon_testbed::{Testbed, UplinkSpec, routemon::Running};
use serde_json::Value;

use super::{
    Figure, Plan, Stats,
    traffic::{Iperf, fill_flow_table, fill_routes},
};

/// `kernel.bpf_stats_enabled=1` while alive, restored on drop.
pub struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    /// Enables the statistics.
    pub fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(Self::PATH).context("reading bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling BPF statistics")?;
        Ok(Self(before.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// (run time in ns, runs) of every loaded program, summed by name.
pub fn program_stats() -> Result<HashMap<String, (u64, u64)>> {
    let out = routemon_testbed::cmd::run("bpftool", &["prog", "show", "-j"])?;
    let programs: Vec<Value> = serde_json::from_str(&out)?;
    let mut stats: HashMap<String, (u64, u64)> = HashMap::new();
    for p in programs {
        let (Some(name), Some(time), Some(runs)) = (
            p["name"].as_str(),
            p["run_time_ns"].as_u64(),
            p["run_cnt"].as_u64(),
        ) else {
            continue;
        };
        let entry = stats.entry(name.to_owned()).or_default();
        entry.0 += time;
        entry.1 += runs;
    }
    Ok(stats)
}

/// Mean ns per run of `program` between two readings; `None` without runs.
fn mean_ns(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    program: &str,
) -> Option<f64> {
    let (t0, n0) = before.get(program).copied().unwrap_or_default();
    let (t1, n1) = after.get(program)?;
    let runs = n1.checked_sub(n0).filter(|r| *r > 0)?;
    Some((t1 - t0) as f64 / runs as f64)
}

/// Measures the egress and ingress programs with 10, 1 000 and 100 000 routes in
/// the tries (quick: 10 and 1 000), for 64-byte UDP and MTU-size TCP, and at the
/// largest size also with the flow table full.
pub fn cost_per_packet(plan: Plan) -> Result<Vec<Figure>> {
    let counts: &[usize] = if plan.quick {
        &[10, 1_000]
    } else {
        &[10, 1_000, 100_000]
    };
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1024)], false)?;
    let iperf = Iperf::serve(&bed)?;
    let mut figures = Vec::new();
    let mut installed = 0;
    for &routes in counts {
        fill_routes(&bed.node, "ens5", installed, routes)?;
        installed = routes;
        let snapshot = Running::start(&bed.node, &["snapshot", "-d", "1h", "-i", "ens5"])?;
        let mut cases = vec![
            ("64 B UDP", Iperf::small_udp_args(plan)),
            ("MTU TCP", Iperf::tcp_args(plan)),
        ];
        let largest = routes == *counts.last().expect("counts");
        if largest && !plan.quick {
            fill_flow_table(&bed)?;
            cases.push(("64 B UDP, flow table full", Iperf::small_udp_args(plan)));
        }
        for (traffic, args) in cases {
            let (mut egress, mut ingress) = (Vec::new(), Vec::new());
            for _ in 0..plan.rounds() {
                let stats = BpfStats::enable()?;
                let before = program_stats()?;
                iperf.client(&bed, &args)?;
                let after = program_stats()?;
                drop(stats);
                egress.extend(mean_ns(&before, &after, "routemon_tx"));
                ingress.extend(mean_ns(&before, &after, "routemon_rx"));
            }
            for (program, values) in [("egress", &egress), ("ingress", &ingress)] {
                // One-way UDP brings only iperf3's few control packets in: their
                // mean is cold-cache cost, not a per-packet figure.
                if values.is_empty() || (program == "ingress" && traffic.contains("UDP")) {
                    continue;
                }
                let figure = Figure::new(
                    "kernel cost",
                    format!("{program}, {traffic}, {routes} routes"),
                    Stats::of(values),
                    "ns/packet",
                );
                figures.push(if routes == 100_000 {
                    figure.at_most(60.0)
                } else {
                    figure
                });
            }
        }
        snapshot.signal(Signal::SIGINT)?;
        snapshot.wait(std::time::Duration::from_secs(30))?;
    }
    Ok(figures)
}
