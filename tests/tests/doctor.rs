//! `routemon doctor`: the user-data and networkd corpora in `tests/corpus`, each
//! with its expected findings, and every networkd prediction compared with what the
//! real systemd-networkd does with the same files on the EKS testbed.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use routemon_testbed::{
    cmd::require_root,
    eks::EksNode,
    routemon::{Finished, binary, run, run_with},
};
use serde_json::Value;

routemon_testbed::new_machine_view!();

fn corpus(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(part)
}

/// Non-comment lines of a corpus manifest, split on whitespace.
fn manifest(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Runs `doctor --json <args>`; returns the worst check status as a number (0 ok,
/// 1 warning, 2 error: the corpora's manifests use it), the report, and the run,
/// after checking the exit status: 1 when a check warns or fails (the default
/// `--fail-on warning`), else 0.
fn doctor(args: &[&str]) -> (i32, Value, Finished) {
    let mut full = vec!["doctor", "--json"];
    full.extend_from_slice(args);
    let finished = run(None, &full).unwrap();
    let code = finished.status.code().expect("exited");
    let json: Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|err| panic!("doctor {args:?}: {err}\n{}", finished.stderr));
    let worst = if json["errors"].as_u64() > Some(0) {
        2
    } else if json["warnings"].as_u64() > Some(0) {
        1
    } else {
        0
    };
    assert_eq!(
        code,
        i32::from(worst > 0),
        "doctor {args:?}: the exit status follows --fail-on warning\n{}",
        finished.stderr
    );
    assert_eq!(json["exit_code"], code, "the report states the exit status");
    (worst, json, finished)
}

/// The ids of the checks with `status`.
fn ids(report: &Value, status: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn worst_status(code: i32) -> &'static str {
    match code {
        2 => "error",
        1 => "warning",
        _ => "ok",
    }
}

#[test]
fn user_data_corpus_gives_the_expected_findings() {
    let dir = corpus("user-data");
    let cases = manifest(&dir.join("expected.txt"));
    assert!(cases.len() >= 12, "the corpus lists its files");
    for case in cases {
        let (file, expected_code, expected_id) =
            (&case[0], case[1].parse::<i32>().unwrap(), &case[2]);
        let path = dir.join(file);
        let (code, report, finished) =
            doctor(&["--no-networkd", "--user-data", path.to_str().unwrap()]);
        assert_eq!(
            code, expected_code,
            "{file}: {report:#}\n{}",
            finished.stderr
        );
        if expected_id != "-" {
            let found = ids(&report, worst_status(code));
            assert!(
                found.contains(expected_id),
                "{file}: {expected_id} not in {found:?}"
            );
        }
        // Every problem says where it is and how to fix it.
        for check in report["checks"].as_array().unwrap() {
            if check["status"] == "error" || check["status"] == "warning" {
                assert!(check["remediation"].is_string(), "{file}: {check}");
                assert!(check["location"]["source"].is_string(), "{file}: {check}");
            }
        }
    }
}

#[test]
fn user_data_problems_point_at_their_yaml_line() {
    let path = corpus("user-data/missing-cidr.yaml");
    let (_, report, _) = doctor(&["--no-networkd", "--user-data", path.to_str().unwrap()]);
    let cidr = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "nodeconfig.cidr")
        .unwrap()
        .clone();
    assert_eq!(cidr["location"]["path"], "spec.cluster.cidr");
    // The first line of spec.cluster, the mapping cidr belongs in.
    assert_eq!(cidr["location"]["line"], 6, "{cidr}");

    let path = corpus("user-data/placeholders.yaml");
    let (_, report, _) = doctor(&["--no-networkd", "--user-data", path.to_str().unwrap()]);
    let lines: Vec<(String, u64)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "nodeconfig.placeholder")
        .map(|c| {
            (
                c["location"]["path"].as_str().unwrap().to_owned(),
                c["location"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("spec.cluster.name".to_owned(), 6),
            ("spec.cluster.cidr".to_owned(), 9)
        ]
    );
}

#[test]
fn user_data_from_stdin_and_unreadable_input() {
    let valid = std::fs::read(corpus("user-data/mime-with-shell.txt")).unwrap();
    let mut child = Command::new(binary())
        .args(["doctor", "--no-networkd", "--user-data", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&valid).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("text/x-shellscript part skipped"), "{text}");

    let (code, report, _) = doctor(&["--no-networkd", "--user-data", "/nonexistent/user-data"]);
    assert_eq!(
        (code, ids(&report, "error")),
        (2, vec!["userdata.read".to_owned()])
    );

    // Larger than any user data: refused without being loaded.
    let huge = std::env::temp_dir().join("routemon-doctor-huge");
    std::fs::write(&huge, vec![b'a'; 8 * 1024 * 1024]).unwrap();
    let (code, report, _) = doctor(&["--no-networkd", "--user-data", huge.to_str().unwrap()]);
    std::fs::remove_file(&huge).unwrap();
    assert_eq!(
        (code, ids(&report, "error")),
        (2, vec!["userdata.size".to_owned()])
    );
}

/// One line of `corpus/networkd/expected.txt`.
struct NetworkdCase {
    name: String,
    code: i32,
    /// Expected DHCPv4 default-route metric per interface (`None`: no default route).
    metrics: BTreeMap<String, Option<u64>>,
    ids: Vec<String>,
}

fn networkd_cases() -> Vec<NetworkdCase> {
    manifest(&corpus("networkd/expected.txt"))
        .into_iter()
        .map(|f| NetworkdCase {
            name: f[0].clone(),
            code: f[1].parse().unwrap(),
            metrics: ["ens5", "ens6", "ens7"]
                .iter()
                .zip(&f[2..5])
                .map(|(i, m)| ((*i).to_owned(), m.parse().ok()))
                .collect(),
            ids: f[5]
                .split(',')
                .filter(|i| *i != "-")
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

/// The predicted metric per interface from doctor's JSON.
fn predicted(report: &Value) -> BTreeMap<String, Option<u64>> {
    report["networkd_predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["interface"].as_str().unwrap().to_owned(),
                p["dhcp_metric"].as_u64(),
            )
        })
        .collect()
}

/// The `.network` files of a corpus directory.
fn corpus_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The EKS node running the real networkd with `files`, ens5 configured and ens6
/// hot-attached: waited for when `ens6_configured`, else given the time networkd
/// takes to configure an ENI.
fn boot_with_ens6(files: &[(String, String)], ens6_configured: bool) -> EksNode {
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let mut eks = EksNode::boot_config("ens5", &files).unwrap();
    let ens6 = eks.plug_eni("ens6").unwrap();
    if ens6_configured {
        eks.wait_for_default(&ens6, Duration::from_secs(20))
            .unwrap();
    } else {
        std::thread::sleep(Duration::from_secs(3));
    }
    eks
}

/// IPv4 default-route metric per interface on the node.
fn live_metrics(eks: &EksNode) -> BTreeMap<String, u64> {
    let routes: Value = serde_json::from_str(
        &eks.node
            .ip(&["-j", "-4", "route", "show", "default"])
            .unwrap(),
    )
    .unwrap();
    routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dev"].as_str().unwrap().to_owned(),
                r["metric"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn networkd_predictions_match_the_real_networkd() {
    require_root();
    let cases = networkd_cases();
    assert_eq!(cases.len(), 5);
    let mut mismatches = Vec::new();
    for case in cases {
        let dir = corpus("networkd").join(&case.name);
        let (code, report, _) = doctor(&["--networkd-dir", dir.to_str().unwrap()]);
        assert_eq!(code, case.code, "{}: {report:#}", case.name);
        let worst = ids(&report, worst_status(code));
        for id in &case.ids {
            assert!(worst.contains(id), "{}: {id} not in {worst:?}", case.name);
        }
        let prediction = predicted(&report);
        for (interface, metric) in &case.metrics {
            assert_eq!(
                prediction.get(interface),
                Some(metric),
                "{}: {interface}",
                case.name
            );
        }

        // The real networkd with the same files, ens5 at boot and ens6 hot-attached.
        let eks = boot_with_ens6(&corpus_files(&dir), case.metrics["ens6"].is_some());
        let live = live_metrics(&eks);
        for interface in ["ens5", "ens6"] {
            let actual = live.get(interface).copied();
            let expected = case.metrics[interface];
            println!(
                "{}: {interface} predicted {expected:?}, networkd {actual:?}",
                case.name
            );
            if actual != expected {
                mismatches.push(format!(
                    "{} {interface}: predicted {expected:?}, networkd {actual:?}",
                    case.name
                ));
            }
        }

        // On the node, --live agrees: every present ENI's route is as configured.
        let finished = run_with(&eks.launcher(), &["doctor", "--live", "--json"]).unwrap();
        let report: Value = serde_json::from_str(&finished.stdout).unwrap();
        let live_metric_status: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == "live.metric")
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        let expected_live = case
            .metrics
            .iter()
            .filter(|(i, m)| *i != "ens7" && m.is_some())
            .count();
        assert_eq!(
            live_metric_status,
            vec!["ok"; expected_live],
            "{}: {report:#}",
            case.name
        );
        let live_errors = ids(&report, "error");
        assert_eq!(
            live_errors.contains(&"live.finding".to_owned()),
            case.ids.contains(&"networkd.equal_metric".to_owned()),
            "{}: the live tie finding follows the predicted one: {live_errors:?}",
            case.name
        );
    }
    assert!(
        mismatches.is_empty(),
        "prediction ≠ networkd: {mismatches:#?}"
    );
}

#[test]
fn fix_writes_files_that_real_networkd_turns_into_one_best_default() {
    require_root();
    let corpus_dir = corpus("networkd/al2023-default");
    let fix_dir = std::env::temp_dir().join(format!("routemon-doctor-fix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fix_dir);
    let (code, report, _) = doctor(&[
        "--networkd-dir",
        corpus_dir.to_str().unwrap(),
        "--fix",
        fix_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "the problems are still reported: {report:#}");
    let written = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "fix.written")
        .unwrap_or_else(|| panic!("{report:#}"))
        .clone();
    assert!(
        written["message"]
            .as_str()
            .unwrap()
            .contains("0 networkd problems remain"),
        "{written}"
    );

    // With the fix first, doctor is satisfied…
    let (code, report, _) = doctor(&[
        "--networkd-dir",
        fix_dir.to_str().unwrap(),
        "--networkd-dir",
        corpus_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{report:#}");

    // …and so is the real networkd: ens5 alone at 1000, ens6 left to Cilium.
    let mut files = corpus_files(&corpus_dir);
    files.extend(corpus_files(&fix_dir));
    std::fs::remove_dir_all(&fix_dir).unwrap();
    let eks = boot_with_ens6(&files, false);
    assert_eq!(
        live_metrics(&eks),
        BTreeMap::from([("ens5".to_owned(), 1000)]),
        "{}",
        eks.networkd_log()
    );

    // Never into the live configuration.
    let finished = run(
        None,
        &[
            "doctor",
            "--networkd-dir",
            corpus_dir.to_str().unwrap(),
            "--fix",
            "/etc/systemd/network",
        ],
    )
    .unwrap();
    assert_eq!(finished.status.code(), Some(2), "a usage error");
    assert!(
        finished.stderr.contains("live networkd directory"),
        "{}",
        finished.stderr
    );
}

#[test]
fn unreadable_networkd_files_are_an_error_not_a_crash() {
    let dir = std::env::temp_dir().join(format!("routemon-doctor-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10-bad.network"), [0xff, 0xfe, 0x00, b'[', 0x80]).unwrap();
    let (code, report, _) = doctor(&["--networkd-dir", dir.to_str().unwrap()]);
    let read_error = |report: &Value| {
        assert_eq!(ids(report, "error"), vec!["networkd.read".to_owned()]);
        report["checks"][0]["message"].as_str().unwrap().to_owned()
    };
    assert_eq!(code, 2);
    let message = read_error(&report);
    assert!(
        message.contains("10-bad.network"),
        "names the file: {message}"
    );

    // A huge file is refused, not loaded.
    std::fs::remove_file(dir.join("10-bad.network")).unwrap();
    std::fs::write(dir.join("20-huge.network"), "#".repeat(4 * 1024 * 1024)).unwrap();
    let (code, report, _) = doctor(&["--networkd-dir", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2);
    let message = read_error(&report);
    assert!(message.contains("larger than"), "{message}");
}
