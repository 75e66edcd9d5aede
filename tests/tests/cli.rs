//! Bad input gets a clear message and a non-zero exit, and changes nothing.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use routemon_testbed::{
    Testbed,
    cmd::require_root,
    kernel,
    routemon::{Finished, binary, run},
};

routemon_testbed::new_machine_view!();

fn testbed() -> Testbed {
    Testbed::ens5_ens6(1024, 1024).unwrap()
}

fn assert_fails(out: &Finished, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on error: {}",
        out.stdout
    );
}

#[test]
fn bad_values_are_usage_errors() {
    require_root();
    let bed = testbed();
    let ns = Some(&bed.node);
    let cases: &[(&[&str], &str)] = &[
        (&["snapshot", "--duration", "abc"], "invalid duration 'abc'"),
        (&["snapshot", "--duration", "10"], "invalid duration '10'"),
        (&["snapshot", "--duration", "0s"], "greater than zero"),
        (&["snapshot", "--duration", "2d"], "at most 24h"),
        (&["snapshot", "--attach", "xdp"], "invalid value 'xdp'"),
        (
            &["routes", "--interface", "ens[5"],
            "invalid interface pattern 'ens[5'",
        ),
        (
            &["routes", "--interface", "nosuch0"],
            "unknown interface: no interface matches 'nosuch0'",
        ),
        (
            &["snapshot", "-d", "1s", "-i", "ens9"],
            "unknown interface: no interface matches 'ens9'",
        ),
        (
            &["routes", "--primary", "ens9"],
            "unknown primary interface 'ens9'",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let out = run(ns, args).unwrap();
        assert_fails(&out, 2, needle);
    }
    // The unknown-interface message lists what exists.
    let out = run(ns, &["routes", "-i", "nosuch0"]).unwrap();
    assert!(
        out.stderr.contains("interfaces here: lo, ens5, ens6"),
        "{}",
        out.stderr
    );
    assert!(kernel::routemon_programs().unwrap().is_empty());
}

/// The exit-status table of docs/commands.md: 0 ok, 1 findings at or above
/// `--fail-on`, 2 usage, 70 runtime failure, 77 no permission (tested with the
/// unprivileged runs below).
#[test]
fn exit_statuses_follow_the_table() {
    require_root();
    let tie = testbed();
    let ns = Some(&tie.node);
    fn status(ns: Option<&routemon_testbed::netns::NetNs>, args: &[&str]) -> Option<i32> {
        run(ns, args).unwrap().status.code()
    }
    // The tie is a critical finding: the report is printed and --fail-on decides.
    assert_eq!(status(ns, &["routes"]), Some(0), "findings alone: 0");
    for (fail_on, expected) in [("never", 0), ("info", 1), ("warning", 1), ("critical", 1)] {
        let out = run(ns, &["routes", "--json", "--fail-on", fail_on]).unwrap();
        assert_eq!(out.status.code(), Some(expected), "--fail-on {fail_on}");
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(report["findings"][0]["severity"], "critical");
    }
    assert_eq!(
        status(ns, &["routes", "--fail-on", "sometimes"]),
        Some(2),
        "an unknown severity is a usage error"
    );
    drop(tie);
    // Distinct metrics: nothing at or above warning.
    let healthy = Testbed::ens5_ens6(1000, 1024).unwrap();
    assert_eq!(
        status(Some(&healthy.node), &["routes", "--fail-on", "warning"]),
        Some(0)
    );
    // A runtime failure: the metrics port is taken.
    let busy = healthy
        .node
        .run_in(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let out = run(
        Some(&healthy.node),
        &["watch", "--ephemeral", "--listen", &port],
    )
    .unwrap();
    assert_fails(&out, 70, "cannot listen on");
    drop(busy);
}

#[test]
fn help_explains_every_subcommand() {
    for args in [
        &["--help"][..],
        &["routes", "--help"],
        &["snapshot", "--help"],
    ] {
        let out = run(None, args).unwrap().success();
        assert!(out.stdout.contains("Usage: routemon"), "{}", out.stdout);
    }
    let out = run(None, &["snapshot", "--help"]).unwrap();
    for flag in [
        "--duration",
        "--interface",
        "--primary",
        "--json",
        "--attach",
    ] {
        assert!(out.stdout.contains(flag), "snapshot --help lacks {flag}");
    }
    let out = run(None, &[]).unwrap();
    assert_eq!(out.status.code(), Some(2), "no subcommand is a usage error");
}

/// A copy of the binary that an unprivileged user can execute (the build tree may
/// live under a directory only root can enter).
fn world_executable_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("routemon-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("routemon");
    std::fs::copy(binary(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn run_as_nobody(bed: &Testbed, bin: &std::path::Path, args: &[&str]) -> Finished {
    let mut full = vec![
        "netns",
        "exec",
        bed.node.name(),
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let bin = bin.to_str().unwrap();
    full.push(bin);
    full.extend_from_slice(args);
    let output = std::process::Command::new("ip")
        .args(&full)
        .output()
        .unwrap();
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn without_privileges_snapshot_refuses_and_routes_still_works() {
    require_root();
    let bed = testbed();
    let bin = world_executable_copy();
    let out = run_as_nobody(&bed, &bin, &["snapshot", "--duration", "1s"]);
    assert_fails(&out, 77, "needs CAP_BPF and CAP_NET_ADMIN");
    assert!(
        out.stderr.contains("sudo routemon snapshot"),
        "{}",
        out.stderr
    );
    assert!(
        kernel::routemon_programs().unwrap().is_empty(),
        "nothing was loaded"
    );

    // Every other command that changes the kernel refuses early, naming what is
    // missing, and leaves nothing behind — whatever state it would have read
    // (`unpin` with no state directory, and with an empty one).
    let empty_state = bin.parent().unwrap().join("empty-state");
    std::fs::create_dir_all(&empty_state).unwrap();
    let empty_state = empty_state.to_str().unwrap();
    for (args, capability) in [
        (&["watch", "--ephemeral"][..], "CAP_BPF"),
        (&["top"][..], "CAP_BPF"),
        (&["cleanup"][..], "CAP_BPF"),
        (
            &["pin", "--primary", "ens5", "--apply"][..],
            "CAP_NET_ADMIN",
        ),
        (&["unpin", "--apply"][..], "CAP_NET_ADMIN"),
        (
            &["unpin", "--apply", "--state-dir", empty_state][..],
            "CAP_NET_ADMIN",
        ),
    ] {
        let out = run_as_nobody(&bed, &bin, args);
        assert_fails(&out, 77, capability);
    }
    assert!(kernel::routemon_programs().unwrap().is_empty());

    // Reading routes over netlink needs no privilege.
    let out = run_as_nobody(&bed, &bin, &["routes", "--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds = routemon_testbed::routemon::finding_kinds(&report);
    assert_eq!(
        kinds,
        ["cilium_default_route", "equal_metric_default_routes"]
    );
    assert_eq!(report["cilium"][0]["outcome"], "tie");

    // Nor does doctor on files (copied where nobody can read them).
    let corpus = bin.parent().unwrap().join("networkd");
    std::fs::create_dir_all(&corpus).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/networkd/healthy");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), corpus.join(entry.file_name())).unwrap();
    }
    std::fs::set_permissions(&corpus, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_as_nobody(
        &bed,
        &bin,
        &["doctor", "--networkd-dir", corpus.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}
