//! The exposition of `routemon watch`, with names in node_exporter style:
//! `routemon_<subsystem>_<what>_<unit>[_total]`, in the Prometheus text format
//! 0.0.4 or, when the scraper asks for it, OpenMetrics 1.0.0 ([`Format`]).
//!
//! A scrape is two steps on two threads: the daemon's loop [`collect`]s a
//! [`MetricsInput`] (the kernel's counters and a copy of its state, nothing
//! rendered), and the metrics server's thread renders that [`Reading`] once per
//! format. The family table (`super::metric_families`) gives every family's type
//! and help.
//!
//! - `collect`: reads the kernel's counter maps and keeps counter series monotonic.
//! - `render`: writes the families of one reading.
//! - `exposition`: the text format's writer (`# HELP`/`# TYPE`, samples, escaping).

mod collect;
mod exposition;
mod render;

pub use collect::{DaemonState, HttpCounts, MetricsInput, ScrapeMemory, collect};
pub use render::{Reading, render};

/// An exposition format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    #[default]
    Prometheus,
    /// OpenMetrics 1.0.0 text: counter families are named without `_total`,
    /// `*_info` gauges (always 1) are info families, and `# EOF` ends it.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an exposition in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}
