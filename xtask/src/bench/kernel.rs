//! Kernel cost per packet of routemon's programs: `run_time_ns / run_cnt` from
//! the kernel's BPF statistics, enabled only for the measurement.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use routemon_testbed::{Testbed, UplinkSpec, routemon::Running};
use serde_json::Value;

use super::{
    Figure, Plan, Stats,
    traffic::{Iperf, Pod, fill_flow_table, fill_routes},
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
/// The floor programs of `tests/examples/reference_attach.rs` (the empty program
/// and the one-flow-lookup reference), attached next to routemon on one interface
/// of a namespace while this lives.
struct Floor(std::process::Child);

impl Floor {
    fn attach(ns: &routemon_testbed::netns::NetNs, interface: &str) -> Result<Self> {
        use std::io::BufRead as _;
        let bin = super::testbed_example("reference_attach")?;
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(&bin)
            .arg(interface)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "attached",
            "reference_attach did not attach the floor programs"
        );
        Ok(Self(child))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Closing its standard input detaches and ends it.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

pub fn cost_per_packet(plan: Plan) -> Result<Vec<Figure>> {
    let counts: &[usize] = if plan.quick {
        &[10, 1_000]
    } else {
        &[10, 1_000, 100_000]
    };
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1024)], false)?;
    let pod = Pod::attach(&bed)?;
    let iperf = Iperf::serve(&bed)?;
    let mut figures = Vec::new();
    let mut installed = 0;
    for &routes in counts {
        fill_routes(&bed.node, "ens5", installed, routes)?;
        installed = routes;
        let snapshot = Running::start(&bed.node, &["snapshot", "-d", "1h", "-i", "ens5"])?;
        // The floor, under the same traffic in the same rounds.
        let floor = Floor::attach(&bed.node, "ens5")?;
        let mut cases = vec![
            ("64 B UDP", Iperf::small_udp_args(plan), &bed.node),
            ("MTU TCP", Iperf::tcp_args(plan), &bed.node),
        ];
        let largest = routes == *counts.last().expect("counts");
        if largest && !plan.quick {
            // Forwarded traffic (Cilium's ENI mode): no socket on the node.
            cases.push((
                "MTU TCP forwarded from a pod",
                Iperf::tcp_args(plan),
                &pod.ns,
            ));
            cases.push((
                "64 B UDP forwarded from a pod",
                Iperf::small_udp_args(plan),
                &pod.ns,
            ));
        }
        if largest && !plan.quick {
            fill_flow_table(&bed)?;
            cases.push((
                "64 B UDP, flow table full",
                Iperf::small_udp_args(plan),
                &bed.node,
            ));
        }
        for (traffic, args, client) in cases {
            // Per hook: routemon's program, the empty one and the reference, each
            // one run (ns/run) per round.
            let hooks = [
                ("egress", "routemon_tx", "ref_empty_tx", "ref_flow_tx"),
                ("ingress", "routemon_rx", "ref_empty_rx", "ref_flow_rx"),
            ];
            let mut rounds: Vec<[Vec<f64>; 3]> = vec![Default::default(); hooks.len()];
            for _ in 0..plan.rounds() {
                let stats = BpfStats::enable()?;
                let before = program_stats()?;
                iperf.client_in(client, &args)?;
                let after = program_stats()?;
                drop(stats);
                for ((_, own, empty, reference), values) in hooks.iter().zip(&mut rounds) {
                    for (name, into) in [own, empty, reference].into_iter().zip(values.iter_mut()) {
                        into.extend(mean_ns(&before, &after, name));
                    }
                }
            }
            for ((hook, ..), [own, empty, reference]) in hooks.iter().zip(&rounds) {
                // One-way UDP brings only iperf3's few control packets in: their
                // mean is cold-cache cost, not a per-packet figure.
                if own.is_empty() || (*hook == "ingress" && traffic.contains("UDP")) {
                    continue;
                }
                let case = format!("{hook}, {traffic}, {routes} routes");
                for (what, values) in [
                    ("", own),
                    (", empty program", empty),
                    (", reference: one flow lookup", reference),
                ] {
                    figures.push(Figure::new(
                        "kernel cost",
                        format!("{case}{what}"),
                        Stats::of(values),
                        "ns/packet",
                    ));
                }
                if own.len() == empty.len() && own.len() == reference.len() {
                    // Round by round, both over the empty program of the same round.
                    let ratios: Vec<f64> = own
                        .iter()
                        .zip(empty)
                        .zip(reference)
                        .map(|((own, floor), reference)| {
                            (own - floor) / (reference - floor).max(1.0)
                        })
                        .collect();
                    figures.push(
                        Figure::new(
                            "kernel cost",
                            format!("{case}, ÷ one-flow-lookup reference (both minus empty)"),
                            Stats::of(&ratios),
                            "ratio",
                        )
                        .at_most(1.0),
                    );
                }
            }
        }
        drop(floor);
        snapshot.signal(Signal::SIGINT)?;
        snapshot.wait(std::time::Duration::from_secs(30))?;
    }
    Ok(figures)
}
