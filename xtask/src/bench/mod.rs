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
mod scrapes;
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

    /// Rounds of the throughput comparison: at least 7 in the full run, so that
    /// the median ratio has a chance to tell 3 % from noise.
    pub fn throughput_rounds(self) -> usize {
        if self.quick { 2 } else { 7 }
    }
}

/// One part of the bench: its `--section` name, what it prints, what it runs.
type Section = (&'static str, &'static str, fn(Plan) -> Result<Vec<Figure>>);

/// Every section, in the order they run.
const SECTIONS: [Section; 7] = [
    (
        "program",
        "program cost alone (BPF_PROG_TEST_RUN, next to an empty program)",
        program::cost_alone,
    ),
    (
        "kernel",
        "kernel cost per packet (BPF program stats)",
        kernel::cost_per_packet,
    ),
    (
        "throughput",
        "throughput, interleaved: no program / routemon / nftables counters",
        traffic::throughput,
    ),
    (
        "footprint",
        "daemon footprint at 100k packets/s",
        traffic::footprint,
    ),
    ("scale", "netlink scale", scale::netlink_scale),
    ("latency", "detection latency", scale::detection_latency),
    (
        "scrapes",
        "the metrics endpoint under 1, 50 and 200 scrapers; detection under a scrape storm",
        scrapes::under_load,
    ),
];

/// Builds the testbed's example `name` (release) and returns its path.
fn testbed_example(name: &str) -> Result<std::path::PathBuf> {
    crate::util::cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "routemon-testbed",
        "--example",
        name,
    ])?;
    Ok(crate::util::workspace_root()
        .join("target/release/examples")
        .join(name))
}

/// Runs the bench (every section, or those named) and writes the results.
pub fn run(quick: bool, only: &[String]) -> Result<()> {
    crate::util::require_root("the bench creates network namespaces and loads eBPF programs")?;
    if let Some(unknown) = only
        .iter()
        .find(|name| !SECTIONS.iter().any(|(known, _, _)| known == name))
    {
        anyhow::bail!(
            "no bench section '{unknown}'; the sections are {}",
            SECTIONS.map(|(name, _, _)| name).join(", ")
        );
    }
    routemon_testbed::netns::cleanup_stale();
    let plan = Plan { quick };
    let started = std::time::Instant::now();
    let mut figures = Vec::new();
    for (name, what, measure) in SECTIONS {
        if only.is_empty() || only.iter().any(|o| o == name) {
            println!("bench: {what}");
            figures.extend(measure(plan)?);
        }
    }
    report::write(&figures, plan, started.elapsed())
}
