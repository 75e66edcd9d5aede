//! Installing routemon on a fleet: the alerting rules (checked and unit-tested by
//! promtool), the Grafana dashboard (every query parses and uses exported metrics),
//! the kustomize overlays (rendered by kubectl, validated against the API schemas
//! and, for the Prometheus Operator's objects, structurally), the cleanup overlay's
//! command on the testbed, and `routemon check` with its node-problem-detector
//! configuration against real routing states.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use routemon_testbed::{
    Testbed,
    cmd::require_root,
    kernel,
    netns::NetNs,
    routemon::{Finished, binary, run, run_with},
    watch::{PinDir, Watch, limited_to, net_launcher},
};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

routemon_testbed::new_machine_view!();

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// A directory of this test process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("routemon-fleet-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a tool: (success, stdout and stderr).
fn tool(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("the tool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .map_or_else(|_| Value::String(text.clone()), Value::from),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unsupported YAML key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Every document of a YAML stream, as JSON values.
fn yaml_docs(text: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .expect("valid YAML")
        .iter()
        .map(yaml_to_json)
        .collect()
}

fn rules_file() -> Value {
    yaml_docs(&read("deploy/prometheus/routemon.rules.yaml")).remove(0)
}

/// Every alerting rule of the rule file.
fn alerts() -> Vec<Value> {
    rules_file()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Metric names

/// The metric families routemon exports: the generated table of
/// docs/metrics-and-events.md (a unit test keeps it equal to the registry), the
/// process_* families, and Prometheus's own `up`.
fn exported_metrics() -> BTreeSet<String> {
    let doc = read("docs/metrics-and-events.md");
    let table = doc
        .split("<!-- metric-families:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- metric-families:end -->").next())
        .expect("the generated table");
    let mut names: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 30, "{names:?}");
    names.extend(
        [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
            "up",
        ]
        .map(str::to_owned),
    );
    names
}

/// The index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index just past the bracketed group that starts at `start` (strings in it
/// skipped, so a `}` inside a label value does not end it).
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

/// The metric names a PromQL expression selects: identifiers outside strings,
/// label matchers and ranges that are neither functions, aggregations, keywords
/// nor grouping labels.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 11] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let next_word = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | ':')) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut after = i;
            while after < chars.len() && chars[after].is_whitespace() {
                after += 1;
            }
            let before_paren = chars.get(after) == Some(&'(');
            if KEYWORDS.contains(&ident.as_str()) {
                // by (…), on (…), group_left (…): label lists, not metrics.
                if before_paren {
                    i = skip_group(&chars, after, ')');
                }
            } else if before_paren || matches!(next_word(i).0.as_str(), "by" | "without") {
                // A function or an aggregation.
            } else {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum by (instance, interface) (rate(routemon_a_total{x="}a{b",y=~"$node"}[$__rate_interval])) / on (instance) group_left (job) routemon_b > 0.9 and time() - process_start_time_seconds offset 5m"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "process_start_time_seconds",
            "routemon_a_total",
            "routemon_b"
        ]
    );
    assert!(metric_names("absent(up{job=~\".*routemon.*\"})").contains("up"));
}

// ---------------------------------------------------------------------------
// Alerting rules

/// promtool's `test rules` on the rule file and its unit tests, in `dir`.
fn promtool_test(dir: &Path) -> (bool, String) {
    tool(Command::new("promtool").current_dir(dir).args([
        "test",
        "rules",
        "routemon.rules.test.yaml",
    ]))
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let (ok, report) = tool(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.join("routemon.rules.yaml")),
    );
    assert!(ok, "{report}");
    assert!(report.contains("SUCCESS: 17 rules found"), "{report}");
    let (ok, report) = promtool_test(&dir);
    assert!(ok, "{report}");

    // The unit tests are not a rubber stamp: an equal-metric alert that also fires
    // for backup ties (severity warning) fails them.
    let temp = TempDir::new("rules");
    let rules = read("deploy/prometheus/routemon.rules.yaml");
    let broken = rules.replace(
        r#"routemon_finding{kind="equal_metric_default_routes", severity="critical"}"#,
        r#"routemon_finding{kind="equal_metric_default_routes"}"#,
    );
    assert_ne!(broken, rules);
    temp.write("routemon.rules.yaml", &broken);
    temp.write(
        "routemon.rules.test.yaml",
        &read("deploy/prometheus/routemon.rules.test.yaml"),
    );
    let (ok, report) = promtool_test(&temp.0);
    assert!(!ok, "the mutated rule passed:\n{report}");
    assert!(
        report.contains("RoutemonEqualMetricDefaultRoutes"),
        "{report}"
    );
}

/// Each alert has a unit test where it fires and one where it must not.
#[test]
fn every_alert_is_tested_firing_and_silent() {
    let tests = yaml_docs(&read("deploy/prometheus/routemon.rules.test.yaml")).remove(0);
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(fires.contains(name), "no case where {name} fires");
        assert!(silent.contains(name), "no case where {name} must not fire");
    }
}

/// Every alert has a severity, a summary and a description that name the node,
/// and a runbook_url into docs/runbooks.md whose anchor exists.
#[test]
fn every_alert_has_severity_annotations_and_a_runbook() {
    let cargo = read("Cargo.toml");
    let repository = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("Cargo.toml has a repository");
    let base = format!("{repository}/blob/main/docs/runbooks.md#");
    let anchors = routemon_testbed::markdown::anchors(&read("docs/runbooks.md"));
    let all = alerts();
    assert!(all.len() >= 15, "{}", all.len());
    for alert in all {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info", "{{ $labels.severity }}"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let annotations = &alert["annotations"];
        for field in ["summary", "description"] {
            let text = annotations[field].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{name}: no {field}");
            if name != "RoutemonAbsent" {
                assert!(
                    text.contains("{{ $labels.instance }}"),
                    "{name}: the {field} does not name the node"
                );
            }
        }
        let url = annotations["runbook_url"].as_str().unwrap_or_default();
        let anchor = url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} does not start with {base}"));
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{name}: the anchor is the alert's name"
        );
        assert!(
            anchors.contains(anchor),
            "{name}: docs/runbooks.md has no heading #{anchor}"
        );
    }
}

#[test]
fn the_prometheus_rule_holds_the_same_groups_as_the_rule_file() {
    let rule = yaml_docs(&read("deploy/prometheus/routemon-prometheusrule.yaml")).remove(0);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "kube-system");
    assert_eq!(
        rule["spec"]["groups"],
        rules_file()["groups"],
        "deploy/prometheus/routemon-prometheusrule.yaml differs from routemon.rules.yaml"
    );
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let exported = exported_metrics();
    for alert in alerts() {
        let expr = alert["expr"].as_str().unwrap();
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{}: {name} is not exported",
                alert["alert"]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Grafana dashboard

/// Every PromQL expression of the dashboard's panels, with the panel title.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr.to_owned()));
        }
    }
    queries
}

/// The expression with Grafana's variables replaced by what they can hold.
fn without_variables(expr: &str) -> String {
    let plain = expr
        .replace("$__rate_interval", "5m")
        .replace("$node", ".*")
        .replace("$interface", ".*");
    assert!(!plain.contains('$'), "an unknown variable in {expr}");
    plain
}

/// `promtool check rules` on the expressions, written as recording rules.
fn promtool_parses(exprs: &[String]) -> (bool, String) {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let temp = TempDir::new("dashboard");
    let path = temp.write("dashboard.rules.yaml", &rules);
    tool(Command::new("promtool").args(["check", "rules"]).arg(path))
}

#[test]
fn dashboard_queries_parse_and_use_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/routemon.json")).unwrap();
    assert_eq!(dashboard["uid"], "routemon");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{}", queries.len());
    let exprs: Vec<String> = queries.iter().map(|(_, e)| without_variables(e)).collect();
    let (ok, report) = promtool_parses(&exprs);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{report}"
    );
    // promtool is not a rubber stamp: an unbalanced parenthesis fails.
    let mut broken = exprs.clone();
    broken[0] = format!("({}", broken[0]);
    assert!(!promtool_parses(&broken).0, "{}", broken[0]);

    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        for name in metric_names(expr) {
            assert!(exported.contains(&name), "{title}: {name} is not exported");
            used.insert(name);
        }
    }
    // The variables' label_values() queries name exported metrics too.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _)| selector)
                .expect("a label_values query");
            for name in metric_names(selector) {
                assert!(exported.contains(&name), "variable: {name} is not exported");
            }
        }
    }
    // What the dashboard is for.
    for family in [
        "routemon_interface_egress_bytes_total",
        "routemon_interface_ingress_packets_total",
        "routemon_route_egress_packets_total",
        "routemon_cross_eni_egress_packets_total",
        "routemon_asymmetric_egress_packets_total",
        "routemon_drops_total",
        "routemon_finding",
        "routemon_cilium_default_route_outcome",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

// ---------------------------------------------------------------------------
// Kustomize

/// `kubectl kustomize deploy/kustomize/<dir>`: the documents' text and values.
fn render(dir: &str) -> Vec<(String, Value)> {
    let (ok, out) = tool(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join("deploy/kustomize").join(dir)),
    );
    assert!(ok, "kubectl kustomize {dir}:\n{out}");
    out.split("\n---\n")
        .map(|doc| (doc.to_owned(), yaml_docs(doc).remove(0)))
        .collect()
}

fn object<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// Validates the core objects with kubernetes-validate --strict (the Kubernetes API
/// schemas); objects of monitoring.coreos.com are left to the structural checks.
fn validate_core(objects: &[(String, Value)]) {
    let validator = repo().join("target/tools/venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} missing: run `cargo xtask setup`",
        validator.display()
    );
    let core: Vec<&(String, Value)> = objects
        .iter()
        .filter(|(_, v)| {
            !v["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("monitoring.coreos.com/")
        })
        .collect();
    let temp = TempDir::new("k8s");
    let text: Vec<&str> = core.iter().map(|(t, _)| t.as_str()).collect();
    let path = temp.write("rendered.yaml", &text.join("\n---\n"));
    let (ok, report) = tool(Command::new(&validator).arg("--strict").arg(&path));
    assert!(ok, "{report}");
    for (_, value) in core {
        let expected = format!(
            "passed for resource {}/{}",
            value["kind"].as_str().unwrap().to_lowercase(),
            value["metadata"]["name"].as_str().unwrap()
        );
        assert!(report.contains(&expected), "{expected}:\n{report}");
    }
}

fn crate_version() -> String {
    read("monitor/Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("monitor/Cargo.toml has a version")
}

/// Every container of every workload runs the image of the crate's version.
fn assert_images(objects: &[(String, Value)]) -> usize {
    let expected = format!("registry.example/routemon:{}", crate_version());
    let mut seen = 0;
    for (_, value) in objects.iter().filter(|(_, v)| v["kind"] == "DaemonSet") {
        let spec = &value["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_array().into_iter().flatten() {
                assert_eq!(
                    container["image"],
                    expected.as_str(),
                    "{}",
                    container["name"]
                );
                seen += 1;
            }
        }
    }
    seen
}

/// `selector` (matchLabels) selects objects labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v)
}

/// The routemon DaemonSet's pod labels and container port names.
fn routemon_pods(objects: &[(String, Value)]) -> (Value, Vec<String>) {
    let ds = object(objects, "DaemonSet", "routemon");
    let template = &ds["spec"]["template"];
    let ports = template["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    (template["metadata"]["labels"].clone(), ports)
}

/// The structural checks of the Prometheus Operator's objects this overlay holds.
fn check_monitoring_objects(objects: &[(String, Value)]) {
    let (pod_labels, pod_ports) = routemon_pods(objects);
    let ds = object(objects, "DaemonSet", "routemon");
    let namespace = &ds["metadata"]["namespace"];
    let mut scrapers = 0;
    for (_, value) in objects {
        if !value["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            continue;
        }
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        let spec = &value["spec"];
        match value["kind"].as_str().unwrap() {
            "PodMonitor" => {
                scrapers += 1;
                assert!(selects(&spec["selector"], &pod_labels), "{spec}");
                assert!(
                    spec["namespaceSelector"]["matchNames"]
                        .as_array()
                        .unwrap()
                        .contains(namespace)
                );
                for endpoint in spec["podMetricsEndpoints"].as_array().unwrap() {
                    assert!(pod_ports.contains(&endpoint["port"].as_str().unwrap().to_owned()));
                    assert_eq!(endpoint["path"], "/metrics");
                }
            }
            "ServiceMonitor" => {
                scrapers += 1;
                let service = object(objects, "Service", "routemon");
                assert!(selects(&spec["selector"], &service["metadata"]["labels"]));
                assert!(selects(
                    &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
                    &pod_labels
                ));
                assert_eq!(service["spec"]["clusterIP"], "None", "one endpoint per pod");
                assert!(
                    spec["namespaceSelector"]["matchNames"]
                        .as_array()
                        .unwrap()
                        .contains(namespace)
                );
                let service_ports: Vec<&Value> = service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .collect();
                for endpoint in spec["endpoints"].as_array().unwrap() {
                    let port = service_ports
                        .iter()
                        .find(|p| p["name"] == endpoint["port"])
                        .expect("the endpoint names a port of the Service");
                    assert!(pod_ports.contains(&port["targetPort"].as_str().unwrap().to_owned()));
                    assert_eq!(endpoint["path"], "/metrics");
                }
            }
            "PrometheusRule" => {
                assert_eq!(spec["groups"], rules_file()["groups"]);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        scrapers, 1,
        "exactly one scrape object, or targets are scraped twice"
    );
    // The dashboard, for Grafana's sidecar.
    let dashboard = object(objects, "ConfigMap", "routemon-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["data"]["routemon.json"],
        read("deploy/grafana/routemon.json").as_str()
    );
}

#[test]
fn the_base_renders_validates_and_keeps_the_prometheus_annotations() {
    let objects = render("base");
    validate_core(&objects);
    assert_eq!(assert_images(&objects), 1);
    let ds = object(&objects, "DaemonSet", "routemon");
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let (_, ports) = routemon_pods(&objects);
    assert_eq!(ports, ["metrics"]);
}

#[test]
fn the_monitoring_overlays_render_validate_and_scrape_the_daemonset() {
    for overlay in ["overlays/monitoring", "overlays/monitoring-servicemonitor"] {
        let objects = render(overlay);
        validate_core(&objects);
        assert_eq!(assert_images(&objects), 1, "{overlay}");
        check_monitoring_objects(&objects);
        let kinds: BTreeSet<&str> = objects
            .iter()
            .map(|(_, v)| v["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains("PrometheusRule"), "{overlay}: {kinds:?}");
    }
    // The structural check is not a rubber stamp: a PodMonitor on a port the pods
    // do not have fails.
    let mut objects = render("overlays/monitoring");
    for (_, value) in &mut objects {
        if value["kind"] == "PodMonitor" {
            value["spec"]["podMetricsEndpoints"][0]["port"] = "http".into();
        }
    }
    let caught = std::panic::catch_unwind(|| check_monitoring_objects(&objects));
    assert!(caught.is_err());
}

// ---------------------------------------------------------------------------
// Cleanup overlay

/// The cleanup overlay's `routemon cleanup` arguments and its capabilities.
fn cleanup_command() -> (Vec<String>, Vec<String>) {
    let objects = render("overlays/cleanup");
    validate_core(&objects);
    assert_eq!(assert_images(&objects), 2);
    let ds = object(&objects, "DaemonSet", "routemon-cleanup");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostNetwork"], true,
        "clsact filters are in the host's namespace"
    );
    let init = &spec["initContainers"][0];
    let args: Vec<String> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let caps = init["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_lowercase())
        .collect();
    // It mounts the host's BPF filesystem where routemon pins by default.
    let mounts = init["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/sys/fs/bpf"));
    (args, caps)
}

/// What the cleanup overlay runs on a node, run on the testbed after
/// `watch --keep-attached` (the DaemonSet's mode), with the overlay's capabilities
/// only: nothing of routemon is left.
#[test]
fn the_cleanup_overlays_command_removes_what_keep_pinned_left() {
    require_root();
    let (args, caps) = cleanup_command();
    assert_eq!(args[0], "cleanup");
    let pin_arg = format!("--bpffs-dir={}", routemon::ebpf::pinning::DEFAULT_PIN_DIR);
    assert!(
        args.contains(&pin_arg),
        "the overlay cleans the pin directory the DaemonSet's watch uses: {args:?}"
    );
    let base = render("base");
    let watch_args = &object(&base, "DaemonSet", "routemon")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        !watch_args.to_string().contains("--bpffs-dir"),
        "the DaemonSet pins in the default directory"
    );
    assert!(watch_args.to_string().contains("--keep-attached"));

    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let pins = PinDir::new();
    let watch = Watch::start(
        &net_launcher(&bed.node),
        &["--bpffs-dir", &pins.arg(), "--keep-attached"],
    )
    .unwrap();
    let (status, _) = watch
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5))
        .unwrap();
    assert!(status.success());
    assert_eq!(pins.links().len(), 4, "--keep-attached leaves the links");
    assert_eq!(kernel::routemon_tcx_links().unwrap(), 4);

    // The overlay's command line, on this test's pin directory.
    let here = format!("--bpffs-dir={}", pins.arg());
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == pin_arg {
                here.as_str()
            } else {
                a.as_str()
            }
        })
        .collect();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let out = run_with(&limited_to(net_launcher(&bed.node), &caps), &args)
        .unwrap()
        .success();
    assert!(out.stdout.contains("removed pin"), "{}", out.stdout);
    assert!(
        kernel::routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
    assert_eq!(kernel::routemon_tcx_links().unwrap(), 0);
    assert!(pins.links().is_empty());
    let left: Vec<_> = std::fs::read_dir(pins.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the pin directory: {left:?}");
    assert_eq!(kernel::bpftool_net_routemon(&bed.node).unwrap(), 0);
}

// ---------------------------------------------------------------------------
// routemon check and node-problem-detector

/// NPD's default `max_output_length`.
const NPD_MAX_OUTPUT: usize = 80;

/// `routemon check <args>` behind `launcher`: exit code and its one line.
fn check_with(launcher: &[String], args: &[&str]) -> (i32, String, Finished) {
    let out = run_with(launcher, args).unwrap();
    let code = out.status.code().expect("an exit code");
    assert!(
        out.stdout.ends_with('\n') && out.stdout.lines().count() == 1,
        "not exactly one line: {:?} (stderr {})",
        out.stdout,
        out.stderr
    );
    let line = out.stdout.trim_end().to_owned();
    assert!(line.len() <= NPD_MAX_OUTPUT, "{} bytes: {line}", line.len());
    (code, line, out)
}

fn in_ns(ns: &NetNs) -> Vec<String> {
    ["ip", "netns", "exec", ns.name()]
        .map(str::to_owned)
        .to_vec()
}

fn check(ns: &NetNs, args: &[&str]) -> (i32, String) {
    let mut full = vec!["check"];
    full.extend_from_slice(args);
    let (code, line, _) = check_with(&in_ns(ns), &full);
    (code, line)
}

#[test]
fn check_reports_a_tie_as_a_problem_and_distinct_metrics_as_ok() {
    require_root();
    {
        let bed = Testbed::ens5_ens6(1024, 1024).unwrap();
        let (code, line) = check(&bed.node, &["--condition", "equal-metric"]);
        assert_eq!(code, 1, "{line}");
        assert_eq!(
            line,
            "equal-metric default routes: ens5,ens6 (ipv4 main metric 1024)"
        );
        let (code, line) = check(&bed.node, &["--condition", "cilium"]);
        assert_eq!(code, 1, "{line}");
        assert_eq!(line, "Cilium default-route lookup: ipv4 tie (ens5,ens6)");
        // Without IPv6 on the testbed, Cilium with IPv6 finds no ipv6 default route.
        let (code, line) = check(
            &bed.node,
            &["--condition", "cilium", "--cilium-family", "ipv6"],
        );
        assert_eq!(code, 1, "{line}");
        assert!(line.contains("ipv6 no_default_route"), "{line}");
        // No privileges needed: as nobody, the same answer (NPD may run it so).
        let mut nobody = in_ns(&bed.node);
        nobody.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]
            .map(str::to_owned),
        );
        let (code, line, _) = check_with(&nobody, &["check", "--condition", "equal-metric"]);
        assert_eq!(code, 1, "{line}");
        assert!(line.contains("ens5,ens6"), "{line}");
    }
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    for condition in ["equal-metric", "cilium"] {
        let (code, line) = check(&bed.node, &["--condition", condition]);
        assert_eq!(code, 0, "{condition}: {line}");
    }
}

/// Unknown (exit 2) when routemon cannot tell: a --primary that does not exist, and
/// a NETLINK_ROUTE socket that cannot be opened (the open-files limit reached just
/// there; the limit that hits the socket depends on how many descriptors the
/// runtime opens first, so the test looks for it).
#[test]
fn check_answers_unknown_when_it_cannot_tell() {
    require_root();
    let bed = Testbed::ens5_ens6(1024, 1024).unwrap();
    let (code, line) = check(
        &bed.node,
        &["--condition", "equal-metric", "--primary", "ens9"],
    );
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("unknown: unknown primary interface 'ens9'"),
        "{line}"
    );

    let mut socket_failed = false;
    for limit in 4..=24 {
        let mut launcher = in_ns(&bed.node);
        launcher.extend(["prlimit".to_owned(), format!("--nofile={limit}")]);
        let out = run_with(&launcher, &["check", "--condition", "equal-metric"]).unwrap();
        if out.stderr.contains("NETLINK_ROUTE socket") {
            let (code, line, _) = check_with(&launcher, &["check", "--condition", "equal-metric"]);
            assert_eq!(code, 2, "{line}");
            assert!(
                line.starts_with("unknown: cannot open a NETLINK_ROUTE socket"),
                "{line}"
            );
            socket_failed = true;
        }
        if out.status.code() == Some(1) {
            // From here on the descriptors suffice and the tie is seen.
            assert!(
                out.stdout.starts_with("equal-metric default routes"),
                "{}",
                out.stdout
            );
            break;
        }
    }
    assert!(
        socket_failed,
        "no open-files limit made the netlink socket fail"
    );
}

fn npd_config() -> Value {
    serde_json::from_str(&read("deploy/node-problem-detector/routemon-plugin.json"))
        .expect("the NPD configuration is JSON")
}

/// Go's time.ParseDuration for the values the configuration uses (`10s`, `1m`).
fn go_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.len() - 1);
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("duration {text}"));
    match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => panic!("unit of {text}"),
    }
}

#[test]
fn npd_configuration_is_a_custom_plugin_monitor_of_routemon_check() {
    let config = npd_config();
    assert_eq!(config["plugin"], "custom");
    let plugin = &config["pluginConfig"];
    assert_eq!(plugin["max_output_length"], NPD_MAX_OUTPUT);
    assert!(plugin["concurrency"].as_u64().unwrap() >= 1);
    let timeout = go_duration(plugin["timeout"].as_str().unwrap());
    assert!(go_duration(plugin["invoke_interval"].as_str().unwrap()) > timeout);
    assert!(config["source"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(config["metricsReporting"].is_boolean());
    let conditions: Vec<&str> = config["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["reason"].is_string() && c["message"].is_string(), "{c}");
            c["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        conditions,
        ["MultipleDefaultRoutes", "CiliumDefaultRouteConflict"]
    );
    let rules = config["rules"].as_array().unwrap();
    let types: BTreeSet<&str> = rules.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, BTreeSet::from(["permanent", "temporary"]));
    for rule in rules {
        assert_eq!(rule["path"], "/usr/local/bin/routemon");
        assert_eq!(rule["args"][0], "check");
        assert!(rule["reason"].is_string());
        // NPD refuses a rule timeout above the global one.
        assert!(go_duration(rule["timeout"].as_str().unwrap()) <= timeout);
        if rule["type"] == "permanent" {
            assert!(conditions.contains(&rule["condition"].as_str().unwrap()));
        }
    }
}

/// Each rule's command line, run on a tie and on distinct metrics: the exit code
/// NPD reads, and, when ok, the condition's default message.
#[test]
fn npd_rules_run_routemon_check_with_existing_options() {
    require_root();
    let config = npd_config();
    let defaults: BTreeMap<&str, &str> = config["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect();
    let rules = config["rules"].as_array().unwrap();
    for (metrics, expected) in [((1024, 1024), 1), ((1000, 1024), 0)] {
        let bed = Testbed::ens5_ens6(metrics.0, metrics.1).unwrap();
        for rule in rules {
            let args: Vec<&str> = rule["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let (code, line, _) = check_with(&in_ns(&bed.node), &args);
            assert_eq!(code, expected, "{args:?} on {metrics:?}: {line}");
            if let (0, Some(condition)) = (expected, rule["condition"].as_str()) {
                assert_eq!(line, defaults[condition], "{args:?}");
            }
        }
    }
    assert!(binary().exists());
    // An option check does not know is refused, so a typo cannot pass silently.
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let out = run(Some(&bed.node), &["check", "--condition", "equal-metrics"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Runbooks

/// The `routemon …` command lines of a Markdown file: lines of fenced code blocks
/// and inline code spans that start with `routemon `.
fn routemon_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let spans: Vec<&str> = if in_code {
            vec![line.split('#').next().unwrap_or_default()]
        } else {
            line.split('`').skip(1).step_by(2).collect()
        };
        commands.extend(
            spans
                .into_iter()
                .map(str::trim)
                .filter(|s| s.starts_with("routemon "))
                .map(str::to_owned),
        );
    }
    commands
}

/// Every command a runbook tells the operator to run exists with those options.
#[test]
fn runbook_commands_exist_with_their_options() {
    let commands = routemon_commands(&read("docs/runbooks.md"));
    assert!(commands.len() >= 10, "{commands:?}");
    let mut subcommands = BTreeSet::new();
    for command in &commands {
        let mut words = command.split_whitespace().skip(1);
        let sub = words.next().expect("a subcommand");
        let out = Command::new(binary())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "`{command}`: no subcommand {sub}");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in words.filter(|w| w.starts_with('-')) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag},"))
                    || help.contains(&format!("{flag}\n")),
                "`{command}`: routemon {sub} has no {flag}"
            );
        }
        subcommands.insert(sub.to_owned());
    }
    for sub in ["pin", "routes", "doctor", "check", "snapshot"] {
        assert!(
            subcommands.contains(sub),
            "{sub} is never cited: {subcommands:?}"
        );
    }
    // The check is not a rubber stamp: an option that does not exist is caught.
    let out = Command::new(binary())
        .args(["pin", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("--fix-everything "));
}
