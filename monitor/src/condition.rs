//! Node conditions for node-problem-detector: one finding kind turned into the
//! answer of NPD's custom-plugin contract (`routemon check`).
//!
//! NPD's custom plugin monitor (`pkg/custompluginmonitor`) runs a plugin every
//! `invoke_interval` and reads its exit status — 0 OK, 1 NonOK, anything else
//! Unknown — and its standard output, cut to `max_output_length` (80 by default),
//! as the condition's message. So the answer is a status and exactly one short
//! line, whatever happened.

use crate::findings::{Finding, FindingKind, Severity};

/// The longest line `routemon check` prints: NPD's default `max_output_length`.
pub const MAX_LINE: usize = 80;

/// Which node condition to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Condition {
    /// `MultipleDefaultRoutes`: the best default routes of a table that traffic
    /// uses share a metric (an `equal_metric_default_routes` finding of severity
    /// critical).
    EqualMetric,
    /// `CiliumDefaultRouteConflict`: Cilium's default-route lookup fails or has no
    /// usable device for a family the agent uses (a `cilium_default_route`
    /// finding), or, with `--cilium-family dual`, the families' routes leave by
    /// different links (`cilium_dual_stack_links`).
    Cilium,
}

/// NPD's plugin status, which is `routemon check`'s exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No problem: exit 0.
    Ok = 0,
    /// The problem is present: exit 1.
    Problem = 1,
    /// routemon could not tell: exit 2.
    Unknown = 2,
}

/// What `routemon check` answers: a status and one line of at most [`MAX_LINE`]
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: Status,
    /// The message, one line.
    pub line: String,
}

impl Answer {
    fn new(status: Status, line: &str) -> Self {
        Self {
            status,
            line: fit(line),
        }
    }

    /// The answer when routemon could not read the node's state.
    pub fn unknown(error: &str) -> Self {
        Self::new(Status::Unknown, &format!("unknown: {error}"))
    }

    /// Judges `condition` on the node's findings.
    pub fn judge(condition: Condition, findings: &[Finding]) -> Self {
        match condition {
            Condition::EqualMetric => equal_metric(findings),
            Condition::Cilium => cilium(findings),
        }
    }
}

fn equal_metric(findings: &[Finding]) -> Answer {
    let ties: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .filter_map(|f| match &f.kind {
            FindingKind::EqualMetricDefaultRoutes {
                family,
                table,
                metric,
                interfaces,
                ..
            } => Some(format!(
                "{} ({family} {table} metric {metric})",
                interfaces.join(",")
            )),
            _ => None,
        })
        .collect();
    if ties.is_empty() {
        Answer::new(Status::Ok, "one best default route per family and table")
    } else {
        Answer::new(
            Status::Problem,
            &format!("equal-metric default routes: {}", ties.join("; ")),
        )
    }
}

fn cilium(findings: &[Finding]) -> Answer {
    let problems: Vec<String> = findings
        .iter()
        .filter_map(|f| match &f.kind {
            FindingKind::CiliumDefaultRoute {
                family, outcome, ..
            } => {
                // Name the tied interfaces, which the tie's own finding lists.
                let tied = findings.iter().find_map(|g| match &g.kind {
                    FindingKind::EqualMetricDefaultRoutes {
                        family: tie_family,
                        table,
                        interfaces,
                        ..
                    } if tie_family == family
                        && table == "main"
                        && g.severity == Severity::Critical =>
                    {
                        Some(interfaces.join(","))
                    }
                    _ => None,
                });
                Some(match tied {
                    Some(interfaces) if *outcome == crate::cilium::Outcome::Tie => {
                        format!("{family} {} ({interfaces})", outcome.as_str())
                    }
                    _ => format!("{family} {}", outcome.as_str()),
                })
            }
            FindingKind::CiliumDualStackLinks {
                ipv4_device,
                ipv6_device,
            } => Some(format!("ipv4 via {ipv4_device}, ipv6 via {ipv6_device}")),
            _ => None,
        })
        .collect();
    if problems.is_empty() {
        Answer::new(Status::Ok, "Cilium's default-route lookup succeeds")
    } else {
        Answer::new(
            Status::Problem,
            &format!("Cilium default-route lookup: {}", problems.join("; ")),
        )
    }
}

/// `text` as one line of at most [`MAX_LINE`] bytes (`...` marks a cut).
fn fit(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE - 3;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cilium::Outcome, model::Family};

    fn tie(interfaces: &[&str], severity: Severity) -> Finding {
        Finding {
            kind: FindingKind::EqualMetricDefaultRoutes {
                family: Family::Ipv4,
                table: "main".to_owned(),
                metric: 1024,
                interfaces: interfaces.iter().map(|i| (*i).to_owned()).collect(),
                gateways: Vec::new(),
                best: true,
                multipath: false,
            },
            severity,
            message: String::new(),
            remediation: String::new(),
        }
    }

    fn cilium_tie() -> Finding {
        Finding {
            kind: FindingKind::CiliumDefaultRoute {
                family: Family::Ipv4,
                outcome: Outcome::Tie,
                device: None,
                error: Some("Found multiple default routes".to_owned()),
            },
            severity: Severity::Critical,
            message: String::new(),
            remediation: String::new(),
        }
    }

    #[test]
    fn a_critical_tie_is_a_problem_that_names_the_interfaces() {
        let answer = Answer::judge(
            Condition::EqualMetric,
            &[tie(&["ens5", "ens6"], Severity::Critical)],
        );
        assert_eq!(answer.status, Status::Problem);
        assert_eq!(
            answer.line,
            "equal-metric default routes: ens5,ens6 (ipv4 main metric 1024)"
        );
    }

    #[test]
    fn backup_ties_and_other_kinds_are_not_the_condition() {
        let answer = Answer::judge(
            Condition::EqualMetric,
            &[tie(&["ens5", "ens6"], Severity::Warning), cilium_tie()],
        );
        assert_eq!(answer.status, Status::Ok, "{answer:?}");
    }

    #[test]
    fn cilium_names_the_outcome_and_the_tied_interfaces() {
        let findings = [cilium_tie(), tie(&["ens5", "ens6"], Severity::Critical)];
        let answer = Answer::judge(Condition::Cilium, &findings);
        assert_eq!(answer.status, Status::Problem);
        assert_eq!(
            answer.line,
            "Cilium default-route lookup: ipv4 tie (ens5,ens6)"
        );
        assert_eq!(Answer::judge(Condition::Cilium, &[]).status, Status::Ok);
    }

    #[test]
    fn every_line_is_one_line_of_at_most_80_bytes() {
        let many: Vec<String> = (0..40).map(|i| format!("ens{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let answer = Answer::judge(Condition::EqualMetric, &[tie(&many, Severity::Critical)]);
        assert_eq!(answer.line.len(), MAX_LINE, "{}", answer.line);
        assert!(answer.line.ends_with("..."));
        let unknown = Answer::unknown("netlink:\nno socket \u{e9}\u{e9}\u{e9}".repeat(9).as_str());
        assert_eq!(unknown.status, Status::Unknown);
        assert!(unknown.line.len() <= MAX_LINE);
        assert!(!unknown.line.contains('\n'));
    }
}
