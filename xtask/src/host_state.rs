//! What routemon and its tests could leave on the host, read before and after
//! `cargo xtask test`: a test must neither depend on such state nor leave any.
//!
//! The integration tests run in a private new-machine view of the host
//! (`routemon_testbed::host`); this check catches a test or a unit test that
//! escapes it.

use std::{collections::BTreeMap, fs, path::Path};

/// One reading: a name for each thing read, with what was found.
pub type HostState = BTreeMap<&'static str, String>;

/// Paths routemon writes by default, whose contents are listed.
const DIRECTORIES: [&str; 4] = [
    "/var/lib/routemon",
    "/run/routemon",
    "/etc/systemd/network",
    "/sys/fs/bpf",
];

/// Reads the host's state (as this process sees it).
pub fn read() -> HostState {
    let mut state = HostState::new();
    for dir in DIRECTORIES {
        state.insert(dir, listing(Path::new(dir)));
    }
    state.insert("BPF filesystem on /sys/fs/bpf", bpffs_mounts());
    state.insert(
        "kernel.bpf_stats_enabled",
        fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|e| format!("unreadable: {e}")),
    );
    state.insert(TEST_NAMESPACES, test_namespaces());
    state
}

/// The reading of the testbed's namespaces: one left by an earlier, killed run may
/// be removed by this one, so only new names count as a change.
const TEST_NAMESPACES: &str = "test namespaces in /run/netns";

/// What differs between two readings, one sentence each.
pub fn changes(before: &HostState, after: &HostState) -> Vec<String> {
    before
        .iter()
        .filter(|(name, value)| match after.get(*name) {
            Some(now) if **name == TEST_NAMESPACES => now
                .split(' ')
                .any(|ns| !ns.is_empty() && !value.split(' ').any(|b| b == ns)),
            now => now != Some(*value),
        })
        .map(|(name, value)| {
            format!(
                "the tests changed the host's {name}: before [{value}], after [{}]",
                after.get(name).map(String::as_str).unwrap_or("unread")
            )
        })
        .collect()
}

/// `absent`, or the sorted names in `dir`.
fn listing(dir: &Path) -> String {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            format!("present: {}", names.join(" "))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "absent".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// How many BPF filesystems are mounted on `/sys/fs/bpf`.
fn bpffs_mounts() -> String {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let count = mounts
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let fstype = fields
                .iter()
                .position(|f| *f == "-")
                .and_then(|dash| fields.get(dash + 1));
            fields.get(4) == Some(&"/sys/fs/bpf") && fstype == Some(&"bpf")
        })
        .count();
    format!("{count} mounted")
}

/// The testbed's namespaces (`rmt…`) in `/run/netns`.
fn test_namespaces() -> String {
    let names = listing(Path::new("/run/netns"));
    let Some(names) = names.strip_prefix("present: ") else {
        return String::new();
    };
    names
        .split(' ')
        .filter(|n| n.starts_with("rmt"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_named_and_an_unchanged_state_is_not() {
        let before = read();
        assert!(changes(&before, &before).is_empty());
        let mut after = before.clone();
        after.insert("/var/lib/routemon", "present: pin.json".to_owned());
        let found = changes(&before, &after);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("/var/lib/routemon"), "{found:?}");
        assert!(found[0].contains("pin.json"), "{found:?}");
    }

    #[test]
    fn only_new_test_namespaces_count() {
        let mut before = read();
        before.insert(TEST_NAMESPACES, "rmt1x0n".to_owned());
        let mut after = before.clone();
        after.insert(TEST_NAMESPACES, String::new());
        assert!(
            changes(&before, &after).is_empty(),
            "a stale one was removed"
        );
        after.insert(TEST_NAMESPACES, "rmt2x0v".to_owned());
        assert_eq!(changes(&before, &after).len(), 1);
    }
}
