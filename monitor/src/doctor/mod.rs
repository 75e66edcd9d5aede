//! `routemon doctor`: checks of a node's bootstrap user data (`NodeConfig`) and
//! of its systemd-networkd configuration, before they fail on a live node.
//!
//! Every check yields a [`Check`] with a status, where the problem is, what is
//! wrong and how to fix it. The exit code follows the worst status: 0 healthy,
//! 1 warnings, 2 errors.

pub mod live;
pub mod networkd;
pub mod nodeconfig;
pub mod userdata;
pub mod yaml;

use serde::Serialize;

use crate::cli::{DoctorFailOn, EXIT_FINDINGS, EXIT_OK};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Worth knowing, not a problem (a skipped MIME part, a decoded encoding).
    Info,
    /// Will cause trouble in some situations.
    Warning,
    /// Will fail.
    Error,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// Where a problem is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file (or `user data`, `user data part 2`).
    pub source: String,
    /// The YAML path (`spec.cluster.cidr`) or `[Section] Key`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(path) = &self.path {
            write!(f, " ({path})")?;
        }
        Ok(())
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`nodeconfig.cidr`, `networkd.equal_metric`, …).
    pub id: &'static str,
    /// Outcome.
    pub status: Status,
    /// Where.
    pub location: Location,
    /// What was found.
    pub message: String,
    /// How to fix it (not for passed checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

impl Check {
    /// A check with an outcome and a message, without remediation.
    pub fn new(
        id: &'static str,
        status: Status,
        location: Location,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id,
            status,
            location,
            message: message.into(),
            remediation: None,
        }
    }

    /// Adds how to fix it.
    pub fn fix(mut self, remediation: impl Into<String>) -> Self {
        self.remediation = Some(remediation.into());
        self
    }
}

/// Exit status for a set of checks: 1 when one has `fail_on`'s status or a worse
/// one, else 0.
pub fn exit_code(checks: &[Check], fail_on: DoctorFailOn) -> u8 {
    let threshold = match fail_on {
        DoctorFailOn::Never => return EXIT_OK,
        DoctorFailOn::Warning => Status::Warning,
        DoctorFailOn::Error => Status::Error,
    };
    if checks.iter().any(|c| c.status >= threshold) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// The checks as people read them: problems first, one block each.
pub fn render(checks: &[Check]) -> String {
    let mut sorted: Vec<&Check> = checks.iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.status));
    let mut out = String::new();
    for check in sorted {
        out.push_str(&format!(
            "{:<7} {}  {}\n        {}\n",
            check.status.to_string().to_uppercase(),
            check.id,
            check.location,
            check.message
        ));
        if let Some(fix) = &check.remediation {
            out.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "\n{} errors, {} warnings, {} passed\n",
        count(Status::Error),
        count(Status::Warning),
        count(Status::Ok)
    ));
    out
}
