//! `cargo xtask bench`: what routemon costs, measured side by side with what an SRE
//! would use instead, in network namespaces created (and removed) here.
//!
//! Every figure is the median of several runs with min and max; the throughput
//! variants are interleaved round by round, so machine noise hits them alike and
//! their ratios are comparable. `--quick` runs every section briefly (CI checks
//! that the bench still works); the full mode is for humans and takes minutes.
//! Results: a table on stdout, `target/bench/results.json` and
//! `target/bench/summary.md`.

mod kernel;
mod measure;
mod program;
mod report;
mod scale;
mod traffic;

use anyhow::Result;

pub use measure::{Figure, Stats};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The short CI mode.
    pub quick: bool,
}

impl Plan {
    /// Seconds of each traffic run.
    pub fn seconds(self) -> u32 {
        if self.quick { 1 } else { 5 }
    }

    /// Rounds of interleaved runs.
    pub fn rounds(self) -> usize {
        if self.quick { 2 } else { 5 }
    }
}

/// Runs the bench and writes the results.
pub fn run(quick: bool) -> Result<()> {
    crate::util::require_root("the bench creates network namespaces and loads eBPF programs")?;
    routemon_testbed::netns::cleanup_stale();
    let plan = Plan { quick };
    let started = std::time::Instant::now();
    let mut figures = Vec::new();
    println!("bench: program cost alone (BPF_PROG_TEST_RUN, next to an empty program)");
    figures.extend(program::cost_alone(plan)?);
    println!("bench: kernel cost per packet (BPF program stats)");
    figures.extend(kernel::cost_per_packet(plan)?);
    println!("bench: throughput, interleaved: no program / routemon / nftables counters");
    figures.extend(traffic::throughput(plan)?);
    println!("bench: daemon footprint at 100k packets/s");
    figures.extend(traffic::footprint(plan)?);
    println!("bench: netlink scale");
    figures.extend(scale::netlink_scale(plan)?);
    println!("bench: detection latency");
    figures.extend(scale::detection_latency(plan)?);
    report::write(&figures, plan, started.elapsed())
}
