//! Checks made before touching the kernel, so that a missing privilege or kernel
//! feature is reported plainly instead of as an errno from deep inside a load.

use std::{fs, path::Path};

use thiserror::Error;

/// `CAP_NET_ADMIN`: attach TC programs, change routes.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: the catch-all that also allows BPF on every kernel.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF` (Linux 5.8+): load programs and create maps.
const CAP_BPF: u32 = 39;

/// What is missing for eBPF work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreflightError {
    /// The process lacks capabilities.
    #[error(
        "routemon {command} {purpose} and needs {missing} (effective capabilities \
         {have:#x}); run it as root, e.g. `sudo routemon {command} …`, or grant {missing}"
    )]
    MissingCapabilities {
        /// The subcommand.
        command: &'static str,
        /// What the subcommand does that needs them.
        purpose: &'static str,
        /// Names of the missing capabilities.
        missing: String,
        /// The effective capability mask.
        have: u64,
    },
    /// The capability set could not be read.
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    Unreadable(String),
}

/// Parses the `CapEff:` line of `/proc/<pid>/status`.
pub fn parse_effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Which required capabilities `caps` lacks, as names (empty when all are present).
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Fails unless this process may load and attach TC programs.
pub fn require_ebpf_privileges(command: &'static str) -> Result<(), PreflightError> {
    let have = effective_caps()?;
    check(
        command,
        "loads eBPF programs",
        have,
        missing_capabilities(have),
    )
}

/// Fails unless this process may change routes (`CAP_NET_ADMIN`).
pub fn require_route_privileges(command: &'static str) -> Result<(), PreflightError> {
    let have = effective_caps()?;
    let missing = if have & (1u64 << CAP_NET_ADMIN) == 0 {
        vec!["CAP_NET_ADMIN"]
    } else {
        Vec::new()
    };
    check(command, "changes routes", have, missing)
}

fn effective_caps() -> Result<u64, PreflightError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|err| PreflightError::Unreadable(err.to_string()))?;
    parse_effective_caps(&status)
        .ok_or_else(|| PreflightError::Unreadable("no CapEff line".to_owned()))
}

fn check(
    command: &'static str,
    purpose: &'static str,
    have: u64,
    missing: Vec<&'static str>,
) -> Result<(), PreflightError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities {
            command,
            purpose,
            missing: missing.join(" and "),
            have,
        })
    }
}

/// Whether the kernel exposes its BTF. routemon's programs use no CO-RE
/// relocations, so they load without it; this is reported, not required.
pub fn kernel_has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\troutemon\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_effective_caps("Name: x\n"), None);
    }

    #[test]
    fn root_has_everything_and_nobody_has_nothing() {
        assert!(missing_capabilities(0x1ff_ffff_ffff).is_empty());
        assert_eq!(missing_capabilities(0), ["CAP_BPF", "CAP_NET_ADMIN"]);
        // CAP_SYS_ADMIN stands in for CAP_BPF on every kernel.
        assert!(missing_capabilities((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_empty());
        assert_eq!(missing_capabilities(1 << CAP_BPF), ["CAP_NET_ADMIN"]);
    }
}
