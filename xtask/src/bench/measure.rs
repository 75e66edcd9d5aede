//! Figures and their statistics.

use serde::Serialize;

/// Median, minimum and maximum of repeated measurements.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many runs.
    pub runs: usize,
}

impl Stats {
    /// Statistics of `values` (not empty).
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: n,
        }
    }

    /// The `p`-th percentile (0–100) by the nearest-rank method.
    pub fn percentile(values: &[f64], p: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1]
    }
}

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No target.
    None,
    /// Target held.
    Met,
    /// Target missed.
    Missed,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Section (`kernel cost`, `throughput`, …).
    pub section: &'static str,
    /// What was measured.
    pub case: String,
    /// The statistics.
    pub stats: Stats,
    /// Unit of the statistics.
    pub unit: &'static str,
    /// The target, as text (`≤ 60`), if any.
    pub target: Option<String>,
    /// Whether the median meets the target.
    pub verdict: Verdict,
}

impl Figure {
    /// A figure without a target.
    pub fn new(
        section: &'static str,
        case: impl Into<String>,
        stats: Stats,
        unit: &'static str,
    ) -> Self {
        Self {
            section,
            case: case.into(),
            stats,
            unit,
            target: None,
            verdict: Verdict::None,
        }
    }

    /// Sets a target the median must not exceed.
    pub fn at_most(mut self, limit: f64) -> Self {
        self.target = Some(format!("≤ {limit}"));
        self.verdict = if self.stats.median <= limit {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        self
    }

    /// Sets a target the median must reach.
    pub fn at_least(mut self, limit: f64) -> Self {
        self.target = Some(format!("≥ {limit}"));
        self.verdict = if self.stats.median >= limit {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_percentile_and_targets() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 10.0, 4));
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Stats::percentile(&values, 99.0), 99.0);
        assert_eq!(Stats::percentile(&values, 50.0), 50.0);
        let f = Figure::new("x", "y", s, "ns").at_most(2.0);
        assert_eq!(f.verdict, Verdict::Missed);
        assert_eq!(
            Figure::new("x", "y", s, "ns").at_least(2.0).verdict,
            Verdict::Met
        );
    }
}
