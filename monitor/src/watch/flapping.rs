//! Logging a condition that comes and goes without flooding the log.
//!
//! A condition such as "routes without a counter" can start and end with every
//! batch of route changes. Its metric follows every change; the log says when it
//! starts and when it ends, and when it keeps coming back, once per
//! [`FlappingCondition::period`] with how often it came back in between.

use std::time::{Duration, Instant};

/// What to log for one change of the condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It started: log it, with how many starts went unlogged since the last line.
    Started {
        /// Starts not logged since the last logged one.
        unlogged_starts: u32,
    },
    /// It ended after a logged start: log it.
    Ended,
    /// Nothing to log.
    Quiet,
}

/// The state of a condition that comes and goes.
#[derive(Clone, Debug)]
pub struct FlappingCondition {
    period: Duration,
    active: bool,
    last_logged_start: Option<Instant>,
    start_logged: bool,
    unlogged_starts: u32,
}

impl FlappingCondition {
    /// A condition whose starts are logged at most once per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            active: false,
            last_logged_start: None,
            start_logged: false,
            unlogged_starts: 0,
        }
    }

    /// The least time between two logged starts.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Records whether the condition holds at `now`; says what to log.
    pub fn update(&mut self, active: bool, now: Instant) -> Transition {
        let was = std::mem::replace(&mut self.active, active);
        match (was, active) {
            (false, true) => {
                let due = self
                    .last_logged_start
                    .is_none_or(|at| now.duration_since(at) >= self.period);
                if due {
                    self.last_logged_start = Some(now);
                    self.start_logged = true;
                    Transition::Started {
                        unlogged_starts: std::mem::take(&mut self.unlogged_starts),
                    }
                } else {
                    self.unlogged_starts += 1;
                    Transition::Quiet
                }
            }
            (true, false) if std::mem::take(&mut self.start_logged) => Transition::Ended,
            _ => Transition::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_flapping_every_few_seconds_is_logged_once_per_period() {
        let mut condition = FlappingCondition::new(Duration::from_secs(600));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut logged = Vec::new();
        // On for 3 s, off for 3 s, for 20 minutes.
        for t in (0..1200).step_by(3) {
            let transition = condition.update(t % 6 == 0, at(t));
            if transition != Transition::Quiet {
                logged.push((t, transition));
            }
        }
        assert_eq!(
            logged,
            [
                (0, Transition::Started { unlogged_starts: 0 }),
                (3, Transition::Ended),
                (
                    600,
                    Transition::Started {
                        unlogged_starts: 99
                    }
                ),
                (603, Transition::Ended),
            ]
        );
    }

    #[test]
    fn staying_on_or_off_logs_nothing_more() {
        let mut condition = FlappingCondition::new(Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(condition.update(false, now), Transition::Quiet);
        assert_eq!(
            condition.update(true, now),
            Transition::Started { unlogged_starts: 0 }
        );
        assert_eq!(condition.update(true, now), Transition::Quiet);
        assert_eq!(condition.update(false, now), Transition::Ended);
        assert_eq!(condition.update(false, now), Transition::Quiet);
    }
}
