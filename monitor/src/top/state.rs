//! What `top` shows, computed from two readings of the kernel's counters: rates
//! per interface and route over the last interval, a minute of history, the
//! interval's top flows, drops by reason, and the active findings.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use monitor_common::{IfaceCounters, PacketCounters};

use crate::{
    findings::{self, Finding},
    flows::{FlowDeltas, FlowTraffic, top_per_interface},
    report::{Measured, Report},
    samples::SampleCollector,
    session::{Counting, Readings},
};

/// Refreshes of history kept per interface (a minute at the default 1 s).
pub const HISTORY: usize = 60;
/// Flows kept per interface and interval.
pub const TOP_FLOWS: usize = 20;

/// One drop reason on one interface.
#[derive(Clone, Debug, PartialEq)]
pub struct DropRow {
    /// Interface name.
    pub interface: String,
    /// Kernel drop reason (`IP_RPFILTER`).
    pub reason: String,
    /// Drops per second over the interval.
    pub per_second: f64,
    /// Drops since `top` started.
    pub total: u64,
}

/// Everything on screen, recomputed on each refresh.
#[derive(Debug, Default)]
pub struct TopState {
    previous: Option<(BTreeMap<u32, IfaceCounters>, Vec<PacketCounters>)>,
    previous_drops: BTreeMap<(u32, String), u64>,
    flow_deltas: FlowDeltas,
    /// The interval's counts per interface and route (rates = counts / seconds).
    pub report: Option<Report>,
    /// Seconds the last interval lasted.
    pub seconds: f64,
    /// Bits per second (both directions) per interface, oldest first.
    pub history: BTreeMap<u32, VecDeque<u64>>,
    /// The interval's busiest flows per interface.
    pub flows: BTreeMap<u32, Vec<FlowTraffic>>,
    /// Drops by interface and reason.
    pub drops: Vec<DropRow>,
    /// Routing findings and traffic findings since `top` started, worst first.
    pub findings: Vec<Finding>,
    /// Refreshes so far.
    pub refreshes: u64,
}

impl TopState {
    /// Takes in a new reading, `elapsed` after the previous one.
    pub fn update(&mut self, counting: &Counting, readings: Readings, elapsed: Duration) {
        let found = &counting.found;
        self.seconds = elapsed.as_secs_f64().max(1e-3);
        let (interfaces, routes) = match &self.previous {
            Some((interfaces, routes)) => (
                readings
                    .interfaces
                    .iter()
                    .map(|(i, now)| {
                        (
                            *i,
                            now.since(&interfaces.get(i).copied().unwrap_or_default()),
                        )
                    })
                    .collect(),
                readings
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(id, now)| now.since(&routes.get(id).copied().unwrap_or_default()))
                    .collect(),
            ),
            None => (readings.interfaces.clone(), readings.routes.clone()),
        };

        let findings = findings::merge(
            found.findings.clone(),
            findings::traffic(
                &found.model,
                &readings.cross_eni,
                &readings.asymmetric,
                &SampleCollector::default(),
                found.primary.as_ref(),
            ),
        );
        self.findings = findings;

        let report = found.report(
            Vec::new(),
            Some(Measured {
                interfaces: &interfaces,
                routes: &routes,
                plan: &counting.plan,
            }),
        );
        for (ifindex, counters) in &interfaces {
            let bits = (counters.egress_bytes + counters.ingress_bytes) as f64 * 8.0 / self.seconds;
            let history = self.history.entry(*ifindex).or_default();
            history.push_back(bits as u64);
            if history.len() > HISTORY {
                history.pop_front();
            }
        }
        self.report = Some(report);

        let active = self.flow_deltas.advance(readings.flows);
        self.flows = top_per_interface(&found.model, &active, TOP_FLOWS);

        self.drops = readings
            .drops
            .iter()
            .map(|((ifindex, reason), total)| {
                let before = self
                    .previous_drops
                    .get(&(*ifindex, reason.clone()))
                    .copied()
                    .unwrap_or(0);
                DropRow {
                    interface: found.model.link_name(*ifindex),
                    reason: reason.clone(),
                    per_second: monitor_common::counted_since(*total, before) as f64 / self.seconds,
                    total: *total,
                }
            })
            .collect();
        self.drops.sort_by(|a, b| {
            b.per_second
                .total_cmp(&a.per_second)
                .then(b.total.cmp(&a.total))
        });
        self.previous_drops = readings.drops;
        self.previous = Some((readings.interfaces, readings.routes));
        self.refreshes += 1;
    }
}

/// `n` per second with an SI prefix: `0`, `950`, `12.3k`, `4.56M`, `1.20G`.
pub fn si(value: f64) -> String {
    let (scaled, prefix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        return format!("{value:.0}");
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{prefix}")
}

/// A one-line sparkline of `values` scaled to their maximum.
pub fn sparkline(values: &VecDeque<u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown: Vec<u64> = values.iter().rev().take(width).rev().copied().collect();
    let max = shown.iter().copied().max().unwrap_or(0);
    let mut line: String = std::iter::repeat_n(' ', width.saturating_sub(shown.len())).collect();
    line.extend(shown.iter().map(|v| {
        if max == 0 || *v == 0 {
            ' '
        } else {
            BARS[((*v * 7).div_ceil(max)).min(7) as usize]
        }
    }));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_si_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(950.4), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(4_560_000.0), "4.56M");
        assert_eq!(si(120_000_000_000.0), "120G");
    }

    #[test]
    fn sparklines_scale_to_the_window_and_pad_on_the_left() {
        let values: VecDeque<u64> = [0, 1, 2, 4, 8].into_iter().collect();
        let line = sparkline(&values, 7);
        assert_eq!(line.chars().count(), 7);
        assert!(line.starts_with("   "), "{line:?}");
        assert!(line.ends_with('█'));
        assert_eq!(sparkline(&VecDeque::new(), 3), "   ");
    }
}
