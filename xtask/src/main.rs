//! `cargo xtask`: everything needed to go from a fresh clone to a running routemon.

mod bench;
mod demo;
mod dist;
mod fuzz;
mod host_state;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer tasks for routemon.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Make this machine ready (idempotent): nightly rust-src, bpf-linker built
    /// against rustc's own LLVM, and the Debian packages and Python tools the
    /// tests use.
    Setup {
        /// Only what building needs (nightly with rust-src, bpf-linker): for
        /// container builds.
        #[arg(long)]
        build_only: bool,
    },
    /// Build everything in release mode (the eBPF object is embedded in routemon).
    Build,
    /// Build routemon and run it as root: `cargo xtask run -- routes`.
    Run {
        /// Build routemon with these features (comma-separated or repeated), e.g.
        /// `debug-log`: the eBPF programs' debug records in routemon's log.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Arguments for routemon.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up if needed, build, then run the unit tests and the integration tests
    /// (real eBPF in the kernel, real namespaces; needs root).
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Check formatting and clippy (warnings are errors).
    Lint,
    /// Measure routemon's cost next to the alternatives (kernel ns/packet,
    /// throughput vs nftables and tc counters, daemon footprint, netlink scale,
    /// detection latency); writes target/bench/results.json and summary.md (root).
    Bench {
        /// A short run that checks the bench works (CI); the full run takes minutes.
        #[arg(long)]
        quick: bool,
        /// Only this section (repeatable): program, kernel, throughput, footprint,
        /// scale, latency, scrapes.
        #[arg(long = "section", value_name = "NAME")]
        sections: Vec<String>,
    },
    /// Run the cargo-fuzz targets (fuzz/) for a bounded time each: user data,
    /// NodeConfig YAML, networkd files, command-line values, netlink messages.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Run the churn soak of `watch` for longer than the suite does (needs root):
    /// route batches in two tables, a default route flipping into and out of a
    /// tie, an uplink re-created, links down and addresses removed, with the model,
    /// findings, counters, memory, fds and log rate checked at every quiet point.
    /// Prints its figures at the end.
    Soak {
        /// Length of the run in minutes (the suite runs 1.5).
        #[arg(long, default_value_t = 30.0, value_parser = soak_minutes)]
        minutes: f64,
    },
    /// Lay routemon out as a package installs it: bin/routemon, man pages
    /// (share/man/man1) and bash, zsh and fish completions, generated from its
    /// command-line definitions. Install with `cp -r <out>/. /usr/local/`.
    Dist {
        /// The prefix to fill.
        #[arg(long, value_name = "DIR", default_value = "target/dist")]
        out_dir: std::path::PathBuf,
    },
    /// Show routemon on a simulated EKS node with two ENIs, in network namespaces
    /// that are removed afterwards (needs root; under a minute).
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::Setup { build_only: true } => setup::run_build_only(),
        Task::Setup { build_only: false } => setup::run(),
        Task::Build => build(),
        Task::Run { features, args } => run(&features, &args),
        Task::Test { filter } => test(filter.as_deref()),
        Task::Lint => lint(),
        Task::Bench { quick, sections } => setup::run()
            .and_then(|()| build())
            .and_then(|()| bench::run(quick, &sections)),
        Task::Fuzz { seconds, target } => setup::run()
            .and_then(|()| fuzz::run(seconds, target.as_deref()))
            .map(drop),
        Task::Soak { minutes } => soak(minutes),
        Task::Dist { out_dir } => setup::run_build_only()
            .and_then(|()| build())
            .and_then(|()| {
                let binary = util::workspace_root().join("target/release/routemon");
                let out_dir = util::workspace_root().join(out_dir);
                for path in dist::write(&out_dir, &binary)? {
                    println!("{}", path.display());
                }
                Ok(())
            }),
        Task::Demo => setup::run()
            .and_then(|()| build())
            .and_then(|()| demo::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo build --release` of the default members (routemon with its eBPF object,
/// the testbed, xtask).
fn build() -> Result<()> {
    // --quiet: aya-build relays every line of the nested eBPF build as a warning.
    println!("xtask: building routemon and its eBPF programs (release)");
    util::cargo(&["build", "--release", "--quiet"])
}

fn run(features: &[String], args: &[String]) -> Result<()> {
    if features.is_empty() {
        build()?;
    } else {
        let features = features.join(",");
        println!("xtask: building routemon with {features} (release)");
        util::cargo(&[
            "build",
            "--release",
            "--quiet",
            "-p",
            "routemon",
            "--features",
            &features,
        ])?;
    }
    let bin = util::workspace_root().join("target/release/routemon");
    util::exec_as_root(&bin, args)
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u32 = 12;

/// `cargo xtask test`: every test binary runs even when an earlier one failed
/// (`--no-fail-fast`), the last line counts them all, and the command fails if any
/// test failed, a fuzz target crashed, or the run changed what routemon writes on
/// the host by default.
fn test(filter: Option<&str>) -> Result<()> {
    setup::run()?;
    util::require_root("the integration tests create network namespaces and load eBPF programs")?;
    build()?;
    let host_before = host_state::read();
    let filter: Vec<&str> = filter.into_iter().collect();
    let mut unit = vec![
        "test",
        "--release",
        "--no-fail-fast",
        "-p",
        "routemon",
        "-p",
        "monitor-common",
        "-p",
        "xtask",
        "--",
    ];
    unit.extend(&filter);
    let unit = util::cargo_test(&unit, &[])?;
    let bin = util::workspace_root().join("target/release/routemon");
    let bin = bin.to_string_lossy().into_owned();
    // One test at a time: each checks that no routemon program is left system-wide.
    let mut integration = vec![
        "test",
        "--release",
        "--no-fail-fast",
        "-p",
        "routemon-testbed",
        "--",
        "--test-threads=1",
    ];
    integration.extend(&filter);
    let integration = util::cargo_test(&integration, &[("ROUTEMON_BIN", bin.as_str())])?;

    let mut problems = Vec::new();
    for (name, run) in [("unit", unit), ("integration", integration)] {
        if !run.succeeded && run.failed == 0 {
            problems.push(format!("the {name} tests did not build or run"));
        }
    }
    let fuzz_failed = if filter.is_empty() {
        // A short run of every fuzz target: none may crash on its seeds and what
        // it finds in this time (`cargo xtask fuzz` runs longer).
        match fuzz::run(FUZZ_SECONDS_IN_TEST, None) {
            Ok(runs) => {
                let total: u64 = runs.iter().map(|(_, n)| n).sum();
                println!("fuzz: {} targets, {total} executions, no crash", runs.len());
                0
            }
            Err(err) => {
                problems.push(format!("{err:#}"));
                1
            }
        }
    } else {
        0
    };
    problems.extend(host_state::changes(&host_before, &host_state::read()));

    let passed = unit.passed + integration.passed;
    let failed = unit.failed + integration.failed + fuzz_failed;
    for problem in &problems {
        println!("xtask: {problem}");
    }
    println!("\ntests: {passed} passed, {failed} failed");
    if failed > 0 || !problems.is_empty() {
        anyhow::bail!(
            "the suite failed: {failed} failed, {} problem(s) listed above",
            problems.len()
        );
    }
    Ok(())
}

/// Accepts 1 to 1440 minutes: the soak's warm-up needs a minute, and a day is
/// longer than anyone waits for a test.
fn soak_minutes(value: &str) -> Result<f64, String> {
    let minutes: f64 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number of minutes"))?;
    if (1.0..=1440.0).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(format!("{minutes} minutes: give 1 to 1440"))
    }
}

/// `cargo xtask soak`: the suite's soak test, `minutes` long, its figures printed.
fn soak(minutes: f64) -> Result<()> {
    setup::run()?;
    util::require_root("the soak creates network namespaces and loads eBPF programs")?;
    build()?;
    let bin = util::workspace_root().join("target/release/routemon");
    let bin = bin.to_string_lossy().into_owned();
    let minutes = minutes.to_string();
    let run = util::cargo_test(
        &[
            "test",
            "--release",
            "-p",
            "routemon-testbed",
            "--test",
            "watch",
            "--",
            "--exact",
            "soak::watch_stays_true_under_churn",
            "--nocapture",
        ],
        &[
            ("ROUTEMON_BIN", bin.as_str()),
            ("ROUTEMON_SOAK_MINUTES", minutes.as_str()),
        ],
    )?;
    anyhow::ensure!(
        run.succeeded && run.passed == 1,
        "the soak failed (its figures and the broken invariant are printed above)"
    );
    Ok(())
}

fn lint() -> Result<()> {
    util::cargo(&["fmt", "--all", "--check"])?;
    util::cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The eBPF crate is not a default member; lint it for its own target.
    util::run(
        std::process::Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--release",
                "-p",
                "monitor-ebpf",
            ])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .current_dir(util::workspace_root()),
    )
}
