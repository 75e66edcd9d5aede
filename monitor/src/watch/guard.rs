//! `watch --guard`: keeps the primary's default route pinned to its metric.
//!
//! When a DHCP renewal, a networkd restart or a new ENI leaves the primary without
//! the only best default route at the pinned metric, the guard re-applies the pin
//! live with the same add-before-delete transition as `routemon pin`. It never
//! fights in a loop: after [`MAX_REPINS`] re-pins within [`REPIN_WINDOW`] it stops
//! for a back-off that doubles each time (up to [`MAX_BACKOFF`]) and says so.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use super::events::Event;
use crate::{
    model::{NetworkModel, dump::Netlink},
    pin::{
        PinError,
        kernel_route::DefaultRoutes,
        plan::{PinRequest, Scheme, plan_routes},
        transition,
    },
    selection::{Primary, PrimarySource},
};

/// Re-pins tolerated within [`REPIN_WINDOW`] before backing off.
pub const MAX_REPINS: usize = 3;
/// The window of [`MAX_REPINS`].
pub const REPIN_WINDOW: Duration = Duration::from_secs(60);
/// First back-off.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The guard's state.
#[derive(Debug)]
pub struct Guard {
    primary: String,
    metric: u32,
    recent: VecDeque<Instant>,
    backoff: Duration,
    blocked_until: Option<Instant>,
    last_block_reason: Option<String>,
    repins: u64,
}

impl Guard {
    /// A guard pinning `primary` to `metric`.
    pub fn new(primary: String, metric: u32) -> Self {
        Self {
            primary,
            metric,
            recent: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            blocked_until: None,
            last_block_reason: None,
            repins: 0,
        }
    }

    /// Re-pins performed.
    pub fn repins(&self) -> u64 {
        self.repins
    }

    /// When the guard wants to be asked again although nothing changed (the end
    /// of a back-off).
    pub fn wake_at(&self) -> Option<Instant> {
        self.blocked_until
    }

    /// Checks the pin against the kernel's routes and re-applies it if needed.
    /// `since` is when the routing change that prompted the check arrived.
    pub async fn check(
        &mut self,
        netlink: &Netlink,
        model: &NetworkModel,
        since: Instant,
    ) -> Option<Event> {
        let now = Instant::now();
        if self.blocked_until.is_some_and(|until| now < until) {
            return None;
        }
        self.blocked_until = None;
        let link = model.link_by_name(&self.primary)?;
        let primary = Primary {
            ifindex: link.index,
            name: link.name.clone(),
            source: PrimarySource::Explicit,
        };
        let defaults = match DefaultRoutes::dump(netlink).await {
            Ok(defaults) => defaults,
            Err(err) => {
                return self.blocked(format!("reading the default routes failed: {err}"), None);
            }
        };
        let no_enis = BTreeSet::new();
        let request = PinRequest {
            scheme: Scheme::Seed,
            metric: self.metric,
            devices: &[],
            enis: &no_enis,
        };
        let plan = match plan_routes(model, &defaults, &primary, &request) {
            // No default route on the primary yet (DHCP in progress): nothing to pin.
            Err(PinError::NoDefaultRoute { .. }) => return None,
            Err(err) => return self.blocked(err.to_string(), None),
            Ok(plan) if plan.replacements.is_empty() => {
                self.last_block_reason = None;
                return None;
            }
            Ok(plan) => plan,
        };
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > REPIN_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= MAX_REPINS {
            let backoff = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.recent.clear();
            return self.blocked(
                format!(
                    "the pin was undone {MAX_REPINS} times within {}s; something keeps \
                     changing {}'s default route (networkd without the persisted drop-in, \
                     another agent?). Not fighting it: fix the configuration (`routemon pin \
                     --persist networkd --apply`)",
                    REPIN_WINDOW.as_secs(),
                    self.primary
                ),
                Some(backoff),
            );
        }
        let replacements: Vec<_> = plan.replacements.into_iter().map(|(_, r)| r).collect();
        match transition::replace(netlink, &replacements).await {
            Ok(actions) => {
                self.repins += 1;
                self.recent.push_back(Instant::now());
                self.last_block_reason = None;
                Some(Event::PinReapplied {
                    interface: self.primary.clone(),
                    metric: self.metric,
                    actions: actions.iter().map(|a| a.describe(model)).collect(),
                    elapsed_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            }
            Err(err) => self.blocked(format!("re-applying the pin failed: {err}"), None),
        }
    }

    /// Reports a block once per distinct reason; `backoff` pauses the guard.
    fn blocked(&mut self, reason: String, backoff: Option<Duration>) -> Option<Event> {
        if let Some(backoff) = backoff {
            self.blocked_until = Some(Instant::now() + backoff);
        } else if self.last_block_reason.as_deref() == Some(reason.as_str()) {
            return None;
        }
        tracing::warn!(interface = %self.primary, "guard: {reason}");
        self.last_block_reason = Some(reason.clone());
        Some(Event::PinGuardBlocked {
            interface: self.primary.clone(),
            reason,
            retry_in_seconds: backoff.map_or(0, |b| b.as_secs()),
        })
    }
}
