//! Printing reports: JSON for machines, aligned tables for people.

mod human;
mod table;

pub use human::{HumanOptions, render};
pub use table::TextTable;

use crate::report::Report;

/// Writes the report as pretty JSON followed by a newline, streamed: a report of a
/// million routes is never held as one string.
pub fn write_json(report: &Report, out: impl std::io::Write) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    serde_json::to_writer_pretty(&mut out, report)?;
    out.write_all(b"\n")?;
    out.flush()
}
