//! The human-readable report.

use std::fmt::Write as _;

use super::TextTable;
use crate::{
    findings::Finding,
    report::{InterfaceReport, Report, RouteReport, RuleReport},
};

/// What to show beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct HumanOptions {
    /// Also list routes of the `local` table (local and broadcast addresses).
    pub all_tables: bool,
}

fn opt(value: Option<&String>) -> String {
    value.cloned().unwrap_or_else(|| "-".to_owned())
}

fn num(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Renders the report as sections of aligned tables.
pub fn render(report: &Report, options: HumanOptions) -> String {
    let mut out = String::new();
    let measured = report.snapshot.is_some();
    if let Some(snapshot) = &report.snapshot {
        let _ = writeln!(
            out,
            "Counted for {:.1}s{} via {}.",
            snapshot.duration_seconds,
            if snapshot.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            snapshot.attached_via
        );
        if snapshot.routes_added_during + snapshot.routes_removed_during > 0 {
            let _ = writeln!(
                out,
                "Routes changed during the count ({} added, {} removed): egress is attributed \
                 with the routes present at the start.",
                snapshot.routes_added_during, snapshot.routes_removed_during
            );
        }
        if !snapshot.interfaces_added_during.is_empty() {
            let _ = writeln!(
                out,
                "Interfaces that appeared during the count were not monitored: {}.",
                snapshot.interfaces_added_during.join(", ")
            );
        }
        let tables = &snapshot.tables;
        for (evicted, what, capacity) in [
            (
                tables.flows.evicted,
                "flows evicted from the ingress flow table: replies of evicted flows are not \
                 checked for asymmetry",
                tables.flows.capacity,
            ),
            (
                tables.asymmetric_flows.evicted,
                "asymmetric flows evicted: their counts are lost, the interface totals are not",
                tables.asymmetric_flows.capacity,
            ),
        ] {
            if evicted > 0 {
                let _ = writeln!(out, "{evicted} {what} (table of {capacity}).");
            }
        }
        for (table, what) in [
            (&tables.cross_eni_pairs, "cross-ENI packets"),
            (&tables.drop_reasons, "kernel drops"),
        ] {
            if table.uncounted_packets > 0 {
                let _ = writeln!(
                    out,
                    "{} {what} not counted: the table of {} pairs is full.",
                    table.uncounted_packets, table.capacity
                );
            }
        }
        out.push('\n');
    }

    let primary = report.primary.as_ref().map_or_else(
        || "none found".to_owned(),
        |p| format!("{}, chosen by {}", p.name, p.chosen_by.replace('_', " ")),
    );
    let _ = writeln!(out, "INTERFACES (primary: {primary})");
    let mut header = vec!["NAME", ">IFINDEX", "STATE", "PRIMARY", "ADDRESSES"];
    if measured {
        header.extend([
            ">TX PKTS",
            ">TX BYTES",
            ">RX PKTS",
            ">RX BYTES",
            ">TX UNROUTED",
        ]);
    }
    let mut table = TextTable::new(&header);
    for iface in &report.interfaces {
        let mut row = vec![
            iface.name.clone(),
            iface.ifindex.to_string(),
            iface.state.clone(),
            if iface.primary {
                "yes".into()
            } else {
                String::new()
            },
            if iface.addresses.is_empty() {
                "-".into()
            } else {
                iface.addresses.join(",")
            },
        ];
        if measured {
            row.extend([
                num(iface.egress_packets),
                num(iface.egress_bytes),
                num(iface.ingress_packets),
                num(iface.ingress_bytes),
                num(iface.egress_unattributed_packets),
            ]);
        }
        table.row(row);
    }
    out.push_str(&table.render(2));

    let (defaults, others): (Vec<&RouteReport>, Vec<&RouteReport>) = report
        .routes
        .iter()
        .partition(|r| r.dst == "0.0.0.0/0" || r.dst == "::/0");
    out.push_str("\nDEFAULT ROUTES (* = used by the kernel)\n");
    out.push_str(&route_table(&defaults, measured).render(2));

    let hidden = others.iter().filter(|r| r.table == "local").count();
    let shown: Vec<&RouteReport> = others
        .into_iter()
        .filter(|r| options.all_tables || r.table != "local")
        .collect();
    out.push_str("\nOTHER ROUTES OF MONITORED INTERFACES\n");
    out.push_str(&route_table(&shown, measured).render(2));
    if hidden > 0 && !options.all_tables {
        let _ = writeln!(
            out,
            "  ({hidden} routes of the local table hidden; --all-tables shows them)"
        );
    }

    render_rules(&mut out, &report.rules);
    if measured {
        render_traffic(&mut out, &report.interfaces);
    }

    out.push('\n');
    render_cilium(&mut out, &report.cilium);
    out.push('\n');
    render_findings(&mut out, &report.findings);
    out
}

/// One line per family: what Cilium's default-route lookup concludes.
fn render_cilium(out: &mut String, verdicts: &[crate::cilium::FamilyVerdict]) {
    out.push_str("CILIUM (default-route lookup, Cilium's rules)\n");
    for v in verdicts {
        let used = if v.enabled {
            ""
        } else {
            "  (not used by the agent)"
        };
        let device = v.device.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {:<5} {:<18} device {device}{used}",
            v.family.to_string(),
            v.outcome.as_str()
        );
        if let Some(error) = &v.error {
            let _ = writeln!(out, "{}", wrap(&format!("error: {error}"), 8, 92));
        }
    }
}

/// Flows listed per interface in the text output (JSON has up to ten).
const TEXT_TOP_FLOWS: usize = 5;

/// Each interface's busiest flows and the kernel's drops on it (snapshots).
fn render_traffic(out: &mut String, interfaces: &[InterfaceReport]) {
    let mut flows = TextTable::new(&[
        "IF",
        "PROTO",
        "LOCAL",
        "REMOTE",
        "IN",
        "OUT",
        ">TX BYTES",
        ">RX BYTES",
        "FLAGS",
    ]);
    let mut drops = TextTable::new(&["IF", "REASON", ">PACKETS"]);
    for iface in interfaces {
        for flow in iface.top_flows.iter().flatten().take(TEXT_TOP_FLOWS) {
            let flags: Vec<&str> = [
                (flow.asymmetric, "asymmetric"),
                (flow.cross_eni, "cross-ENI"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            flows.row(vec![
                iface.name.clone(),
                flow.flow.protocol.clone(),
                format!("{}:{}", flow.flow.src, flow.flow.src_port),
                format!("{}:{}", flow.flow.dst, flow.flow.dst_port),
                opt(flow.arrived_on.as_ref()),
                opt(flow.left_by.as_ref()),
                flow.egress_bytes.to_string(),
                flow.ingress_bytes.to_string(),
                flags.join(","),
            ]);
        }
        for (reason, packets) in iface.drops.iter().flatten() {
            drops.row(vec![
                iface.name.clone(),
                reason.clone(),
                packets.to_string(),
            ]);
        }
    }
    if !flows.is_empty() {
        let _ = writeln!(
            out,
            "\nTOP FLOWS (by bytes both ways, {TEXT_TOP_FLOWS} per interface)"
        );
        out.push_str(&flows.render(2));
    }
    if !drops.is_empty() {
        out.push_str("\nKERNEL DROPS (by the kernel's drop reason)\n");
        out.push_str(&drops.render(2));
    }
}

/// Whether a rule is one the kernel installs in every namespace (`0: lookup local`,
/// `32766: lookup main`, `32767: lookup default`).
fn is_stock_rule(rule: &RuleReport) -> bool {
    let selectors = rule.src.is_some()
        || rule.dst.is_some()
        || rule.iif.is_some()
        || rule.oif.is_some()
        || rule.fwmark.is_some();
    !selectors
        && rule.action == "lookup"
        && matches!(
            (rule.priority, rule.table.as_str()),
            (0, "local") | (32766, "main") | (32767, "default")
        )
}

/// Lists policy rules other than the stock ones; they change which table, and so
/// which default route, traffic uses.
fn render_rules(out: &mut String, rules: &[RuleReport]) {
    let custom: Vec<&RuleReport> = rules.iter().filter(|r| !is_stock_rule(r)).collect();
    if custom.is_empty() {
        return;
    }
    out.push_str("\nPOLICY RULES (besides the stock local/main/default lookups)\n");
    let mut table = TextTable::new(&["FAMILY", ">PRIORITY", "SELECTOR", "ACTION", "TABLE"]);
    for rule in custom {
        let mut selector = Vec::new();
        let parts = [
            ("from", &rule.src),
            ("to", &rule.dst),
            ("iif", &rule.iif),
            ("oif", &rule.oif),
        ];
        for (word, value) in parts {
            if let Some(value) = value {
                selector.push(format!("{word} {value}"));
            }
        }
        if let Some(mark) = rule.fwmark {
            selector.push(format!("fwmark {mark:#x}"));
        }
        table.row(vec![
            rule.family.to_string(),
            rule.priority.to_string(),
            if selector.is_empty() {
                "all".to_owned()
            } else {
                selector.join(" ")
            },
            rule.action.clone(),
            rule.table.clone(),
        ]);
    }
    out.push_str(&table.render(2));
}

fn route_table(routes: &[&RouteReport], measured: bool) -> TextTable {
    let mut header = vec![
        " ",
        "FAMILY",
        "TABLE",
        "DESTINATION",
        "GATEWAY",
        "DEV",
        ">METRIC",
        "PROTO",
        "TYPE",
    ];
    if measured {
        header.extend([">TX PKTS", ">TX BYTES"]);
    }
    let mut table = TextTable::new(&header);
    for route in routes {
        let dev = if route.nexthops.is_empty() {
            opt(route.dev.as_ref())
        } else {
            route
                .nexthops
                .iter()
                .map(|nh| opt(nh.dev.as_ref()))
                .collect::<Vec<_>>()
                .join("+")
        };
        let mut row = vec![
            if route.preferred {
                "*".into()
            } else {
                String::new()
            },
            route.family.to_string(),
            route.table.clone(),
            route.dst.clone(),
            opt(route.gateway.as_ref()),
            dev,
            route.metric.to_string(),
            route.protocol.clone(),
            route.kind.clone(),
        ];
        if measured {
            row.extend([num(route.egress_packets), num(route.egress_bytes)]);
        }
        table.row(row);
    }
    table
}

fn render_findings(out: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        out.push_str("FINDINGS: none. One default route wins per table and family, on the primary interface.\n");
        return;
    }
    let _ = writeln!(out, "FINDINGS ({})", findings.len());
    for finding in findings {
        let _ = writeln!(
            out,
            "  [{}] {}",
            finding.severity.to_string().to_uppercase(),
            finding.kind_name()
        );
        let _ = writeln!(out, "{}", wrap(&finding.message, 4, 92));
        let _ = writeln!(
            out,
            "{}",
            wrap(&format!("Fix: {}", finding.remediation), 4, 92)
        );
    }
}

/// Word-wraps `text` at `width` columns with every line indented by `indent`.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = Vec::new();
    let mut line = pad.clone();
    for word in text.split_whitespace() {
        if line.len() > indent && line.len() + 1 + word.len() > width {
            lines.push(std::mem::replace(&mut line, pad.clone()));
        }
        if line.len() > indent {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_indent_and_width() {
        let text = "one two three four five six seven eight nine ten";
        let wrapped = wrap(text, 2, 16);
        assert!(
            wrapped
                .lines()
                .all(|l| l.starts_with("  ") && l.len() <= 16),
            "{wrapped}"
        );
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>().join(" "),
            text
        );
    }
}
