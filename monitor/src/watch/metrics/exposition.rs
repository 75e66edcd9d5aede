//! The text formats' writer: `# HELP`/`# TYPE` once per family, then samples.

use std::fmt::{Display, Write as _};

use super::{super::metric_families, Format};

/// Builds an exposition: `# HELP`/`# TYPE` once per family, then samples.
#[derive(Default)]
pub(super) struct Exposition {
    pub(super) out: String,
    pub(super) format: Format,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family listed in [`FAMILIES`](super::super::metric_families::FAMILIES).
    /// OpenMetrics names a counter family without its samples' `_total` and an
    /// `_info` gauge as an info family without `_info`, and escapes `"` in help.
    pub(super) fn family(&mut self, name: &str) {
        let family = metric_families::family(name);
        match self.format {
            Format::Prometheus => {
                let _ = writeln!(self.out, "# HELP {name} {}", family.help);
                let _ = writeln!(self.out, "# TYPE {name} {}", family.kind);
            }
            Format::OpenMetrics => {
                let (name, kind) = openmetrics_family(name, family.kind);
                let help = family
                    .help
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(self.out, "# HELP {name} {help}");
                let _ = writeln!(self.out, "# TYPE {name} {kind}");
            }
        }
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family whose samples all come from one list.
    pub(super) fn each<T>(
        &mut self,
        name: &str,
        items: &[T],
        sample: impl Fn(&T) -> (Vec<(&str, String)>, String),
    ) {
        self.family(name);
        for item in items {
            let (labels, value) = sample(item);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &labels, value);
        }
    }
}

/// A family's OpenMetrics name and type: counters' samples end in `_total`, info
/// families' in `_info`, which the family name leaves out.
fn openmetrics_family<'n>(name: &'n str, kind: &'static str) -> (&'n str, &'static str) {
    match (
        kind,
        name.strip_suffix("_total"),
        name.strip_suffix("_info"),
    ) {
        ("counter", Some(family), _) => (family, "counter"),
        ("gauge", _, Some(family)) => (family, "info"),
        _ => (name, kind),
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
