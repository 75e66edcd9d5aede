//! `cargo xtask fuzz`: runs routemon's cargo-fuzz targets (`fuzz/`) for a bounded
//! time each and fails on the first crash, leak of the memory limit or timeout.
//!
//! The seeds committed under `fuzz/corpus/<target>` are read, never written: what
//! libFuzzer discovers goes to `target/fuzz-corpus/<target>`, kept between runs on
//! one machine. A crash leaves its input in `fuzz/artifacts/<target>/` and the
//! command prints how to reproduce it.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Every target in `fuzz/Cargo.toml`, with what it feeds.
pub const TARGETS: [(&str, &str); 6] = [
    (
        "user_data",
        "doctor --user-data: raw, MIME, base64, garbage",
    ),
    ("nodeconfig_yaml", "the YAML tree and the NodeConfig checks"),
    ("networkd_config", ".network parsing, [Match], prediction"),
    ("cli_args", "every command-line value"),
    ("netlink_messages", "rtnetlink decoding into the model"),
    ("btf", "the kernel BTF reader behind drop reasons"),
];

/// libFuzzer's limits: memory per process (MiB), input size, time per input (s).
const RSS_LIMIT_MB: u32 = 1024;
const MAX_LEN: u32 = 65_536;
const TIMEOUT_S: u32 = 10;

/// Runs each target (or only `only`) for `seconds`; returns executions per target.
pub fn run(seconds: u32, only: Option<&str>) -> Result<Vec<(&'static str, u64)>> {
    let root = util::workspace_root();
    let targets: Vec<&str> = TARGETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| only.is_none_or(|o| o == *name))
        .collect();
    if targets.is_empty() {
        bail!(
            "no fuzz target {}; targets: {}",
            only.unwrap_or_default(),
            TARGETS.map(|(n, _)| n).join(", ")
        );
    }
    let mut executions = Vec::new();
    for target in targets {
        let work = root.join("target/fuzz-corpus").join(target);
        let seeds = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&seeds)?;
        println!("fuzz: {target} for {seconds}s");
        let output = Command::new("rustup")
            .args(["run", "nightly", "cargo", "fuzz", "run", "--fuzz-dir"])
            .arg(root.join("fuzz"))
            // Safe Rust: panics, aborts and limits are what a run looks for; the
            // longer documented run adds `--sanitizer address`.
            .args(["--sanitizer", "none", target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg(format!("-max_len={MAX_LEN}"))
            .arg(format!("-timeout={TIMEOUT_S}"))
            .arg("-print_final_stats=1")
            .current_dir(&root)
            .output()
            .context("running cargo fuzz; `cargo xtask setup` installs cargo-fuzz")?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "fuzz target {target} failed (crash, timeout or memory limit):\n{}\n\
                 reproduce: cargo +nightly fuzz run --fuzz-dir fuzz {target} fuzz/artifacts/{target}/<file>",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        println!("fuzz: {target}: {runs} executions, no crash");
        executions.push((target, runs));
    }
    Ok(executions)
}
