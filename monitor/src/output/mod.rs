//! Printing reports: JSON for machines, aligned tables for people.

mod human;
mod table;

pub use human::{HumanOptions, render};
pub use table::TextTable;

use crate::report::Report;

/// Serializes the report as pretty JSON followed by a newline.
pub fn to_json(report: &Report) -> String {
    let mut out = serde_json::to_string_pretty(report).expect("the report serializes");
    out.push('\n');
    out
}
