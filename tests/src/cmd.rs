//! Running external commands (iproute2, bpftool, tc) with useful errors.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `program args…`, returns its stdout; fails with its stderr on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| {
        format!("running {program} (is it installed? `cargo xtask setup` installs it)")
    })?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fails unless the process runs as root (the testbed creates namespaces) and in
/// its [new-machine view](crate::host) of the host.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests create network namespaces and load eBPF programs: run them as \
         root, e.g. `sudo -E cargo xtask test`"
    );
    crate::host::require_new_machine_view();
}
