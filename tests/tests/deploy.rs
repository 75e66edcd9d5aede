//! The deployment files in `deploy/`: checked by the real validators, and the
//! capabilities they grant shown to be enough (and needed) for `routemon watch`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use routemon_testbed::{
    Testbed,
    cmd::require_root,
    routemon::binary,
    watch::{PinDir, Watch, limited_to, net_launcher},
};

routemon_testbed::new_machine_view!();

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit() -> String {
    std::fs::read_to_string(repo().join("deploy/systemd/routemon.service")).unwrap()
}

/// The unit's `CapabilityBoundingSet`, e.g. `["bpf", "net_admin", …]`.
fn unit_capabilities() -> Vec<String> {
    unit()
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits its capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// Runs a validator: (success, stdout and stderr).
fn tool(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("the validator runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("routemon-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // verify checks that ExecStart's binary exists: point it at the one built.
    let path = dir.join("routemon.service");
    std::fs::write(
        &path,
        unit().replace("/usr/local/bin/routemon", &binary().display().to_string()),
    )
    .unwrap();
    let (ok, report) = tool(Command::new("systemd-analyze").arg("verify").arg(&path));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "{report}");
    // verify exits 0 on unknown keys and bad values, but reports them.
    assert!(
        !report.contains("routemon.service"),
        "systemd-analyze verify complains:\n{report}"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
    ] {
        assert!(unit().contains(hardening), "{hardening} missing");
    }
}

/// routemon runs with exactly the unit's capabilities (as root, like the unit),
/// and refuses early, naming what is missing, without CAP_BPF.
#[test]
fn the_units_capabilities_are_enough_and_needed() {
    require_root();
    let caps = unit_capabilities();
    assert_eq!(caps, ["bpf", "net_admin", "perfmon", "sys_resource"]);
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let with = |caps: &[&str]| limited_to(net_launcher(&bed.node), caps);
    let caps_ref: Vec<&str> = caps.iter().map(String::as_str).collect();
    let mut watch = Watch::start(&with(&caps_ref), &["--bpffs-dir", &pins.arg()]).unwrap();
    watch
        .wait_for("attach", Duration::from_secs(10), |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens5"
        })
        .unwrap();
    watch.stop_cleanly().unwrap();

    let launcher = with(&["net_admin", "perfmon", "sys_resource"]);
    let out =
        routemon_testbed::routemon::run_with(&launcher, &["watch", "--bpffs-dir", &pins.arg()])
            .unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", out.stderr);
    assert!(out.stderr.contains("CAP_BPF"), "{}", out.stderr);
}

/// A launcher that runs what follows it in a mount namespace of its own where no
/// BPF filesystem is mounted (a host where systemd did not mount one).
fn without_bpffs() -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 99; done; exec \"$@\"",
        "sh",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// On a host without a BPF filesystem, `watch` as root mounts it and runs; with
/// only the unit's capabilities (no CAP_SYS_ADMIN, as systemd mounts it at boot on
/// every real host) it cannot, and says how to fix it instead of waiting.
#[test]
fn without_a_bpf_filesystem_root_mounts_it_and_the_unit_says_what_to_do() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let mut launcher = without_bpffs();
    launcher.extend(net_launcher(&bed.node));
    let mut watch = Watch::start(&launcher, &["--bpffs-dir", &pins.arg()]).unwrap();
    watch
        .wait_for("attach", Duration::from_secs(10), |e| {
            e["event"] == "interface_attached" && e["interface"] == "ens5"
        })
        .unwrap();
    watch.stop_cleanly().unwrap();

    let caps = unit_capabilities();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let launcher = limited_to(launcher, &caps);
    let out =
        routemon_testbed::routemon::run_with(&launcher, &["watch", "--bpffs-dir", &pins.arg()])
            .unwrap();
    assert!(!out.status.success(), "{}", out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "the test could not unmount bpffs"
    );
    assert!(
        out.stderr.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{}",
        out.stderr
    );
    assert!(
        routemon_testbed::kernel::routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let validator = repo().join("target/tools/venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} missing: run `cargo xtask setup`",
        validator.display()
    );
    let manifest = repo().join("deploy/kustomize/base/routemon.yaml");
    let (ok, report) = tool(Command::new(&validator).arg("--strict").arg(&manifest));
    assert!(ok, "{report}");
    assert!(
        report.contains("passed for resource daemonset/routemon"),
        "{report}"
    );

    // The DaemonSet grants the same capabilities as the unit, not privileged mode.
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("privileged: false"));
    for cap in unit_capabilities() {
        assert!(
            yaml.contains(&format!("- {}", cap.to_uppercase())),
            "{cap} missing from the DaemonSet"
        );
    }
    // The validator is not a rubber stamp: a wrong type fails.
    let broken = std::env::temp_dir().join(format!("routemon-k8s-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        yaml.replace("hostNetwork: true", "hostNetwork: maybe"),
    )
    .unwrap();
    let out = Command::new(&validator).arg(&broken).output().unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success());
}
