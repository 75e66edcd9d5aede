//! Which connections the endpoint keeps when there are too many.
//!
//! A connection is *pending* until it has sent a complete first request head, then
//! *active*. Both pools are bounded. A client earns an active slot only by sending
//! a complete head, so clients that never finish one (slowloris) compete among
//! themselves for pending slots and cannot take the capacity a scraper needs. When
//! a pool is full:
//!
//! - a new connection makes room among the pending ones by shedding the one that
//!   has waited longest for its head;
//! - a connection with a complete head makes room among the active ones by shedding
//!   one that is idle (keep-alive, or slowly sending its next head) or whose
//!   response has not moved for [`STALL_GRACE`] (a client that does not read),
//!   longest-waiting first; when every active connection is busy with a request it
//!   is refused with 503 and `Retry-After`.
//!
//! Every shed connection is counted by reason ([`HttpStats`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::stats::{HttpStats, ShedReason};

/// How long an active connection's response may make no progress before it may
/// be shed for a new request.
pub const STALL_GRACE: Duration = Duration::from_secs(1);
/// How long after its last response an active connection counts as idle (and may
/// be shed for a new request): the time for the response to reach the client.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);

/// The two bounded pools of connections.
#[derive(Debug)]
pub struct Admission {
    pools: Mutex<Pools>,
    max_pending: usize,
    max_active: usize,
    stats: Arc<HttpStats>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Pools {
    next_id: u64,
    /// By id, so in order of arrival.
    pending: BTreeMap<u64, Arc<Notify>>,
    active: HashMap<u64, Arc<ConnState>>,
}

impl Admission {
    /// Pools of at most `max_pending` connections without a complete first head and
    /// `max_active` with one.
    pub fn new(max_pending: usize, max_active: usize, stats: Arc<HttpStats>) -> Arc<Self> {
        Arc::new(Self {
            pools: Mutex::default(),
            max_pending: max_pending.max(1),
            max_active: max_active.max(1),
            stats,
            epoch: Instant::now(),
        })
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a pending slot for a new connection, shedding the longest-waiting
    /// pending connection when the pool is full.
    pub fn arrive(self: &Arc<Self>) -> Pending {
        let mut pools = self.pools();
        if pools.pending.len() >= self.max_pending
            && let Some((_, oldest)) = pools.pending.pop_first()
        {
            oldest.notify_one();
            self.stats.shed(ShedReason::EvictedHead);
        }
        let id = pools.next_id;
        pools.next_id += 1;
        let shed = Arc::new(Notify::new());
        pools.pending.insert(id, Arc::clone(&shed));
        Pending {
            id,
            shed,
            admission: Arc::clone(self),
        }
    }

    /// Moves a connection that sent a complete head to the active pool, shedding
    /// an idle or stalled one when it is full; gives the pending slot back when
    /// every active connection is busy.
    pub fn activate(self: &Arc<Self>, pending: Pending) -> Result<Active, Pending> {
        let mut pools = self.pools();
        if pools.active.len() >= self.max_active {
            let now = self.epoch.elapsed();
            let victim = pools
                .active
                .iter()
                .filter_map(|(id, state)| state.evictable(now).map(|(why, age)| (*id, why, age)))
                // Idle and head-sending ones before stalled ones, longest-waiting first.
                .max_by_key(|(_, why, age)| (*why != ShedReason::EvictedStalled, *age));
            let Some((id, why, _)) = victim else {
                return Err(pending);
            };
            if let Some(state) = pools.active.remove(&id) {
                state.shed.notify_one();
                self.stats.shed(why);
            }
        }
        pools.pending.remove(&pending.id);
        let id = pending.id;
        let state = Arc::new(ConnState::new(self.epoch));
        pools.active.insert(id, Arc::clone(&state));
        drop(pools);
        drop(pending); // its pending slot is already gone
        Ok(Active {
            id,
            state,
            admission: Arc::clone(self),
        })
    }

    /// Connections in each pool: (pending, active).
    pub fn occupancy(&self) -> (usize, usize) {
        let pools = self.pools();
        (pools.pending.len(), pools.active.len())
    }
}

/// A connection that has not sent a complete first head yet; leaves the pool on
/// drop.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    shed: Arc<Notify>,
    admission: Arc<Admission>,
}

impl Pending {
    /// Resolves when the connection is shed to make room.
    pub async fn shed(&self) {
        self.shed.notified().await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.pools().pending.remove(&self.id);
    }
}

/// A connection in the active pool; leaves it on drop.
#[derive(Debug)]
pub struct Active {
    id: u64,
    state: Arc<ConnState>,
    admission: Arc<Admission>,
}

impl Active {
    /// What the connection's IO and request handling report.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.admission.pools().active.remove(&self.id);
    }
}

/// What an active connection is doing, as its IO and its request handling report
/// it (times in milliseconds since the pools' epoch).
#[derive(Debug)]
pub struct ConnState {
    /// Notified when the connection is shed to make room.
    pub shed: Notify,
    epoch: Instant,
    in_service: AtomicU32,
    /// When writes started to make no progress, plus one; 0: they do.
    write_blocked_since: AtomicU64,
    /// The last response finished or the last write progressed.
    last_activity: AtomicU64,
    bytes_read: AtomicU64,
    bytes_read_at_request: AtomicU64,
    write_timed_out: AtomicBool,
}

impl ConnState {
    fn new(epoch: Instant) -> Self {
        let state = Self {
            shed: Notify::new(),
            epoch,
            in_service: AtomicU32::new(0),
            write_blocked_since: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_read_at_request: AtomicU64::new(0),
            write_timed_out: AtomicBool::new(false),
        };
        state.touch();
        state
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request head was complete; the connection is busy until the guard drops
    /// (its response is ready to be written).
    pub fn serving(self: &Arc<Self>) -> ServiceGuard {
        self.in_service.fetch_add(1, Ordering::Relaxed);
        self.bytes_read_at_request
            .store(self.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
        ServiceGuard(Arc::clone(self))
    }

    /// `n` bytes were read from the client.
    pub fn read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A write made progress.
    pub fn wrote(&self) {
        self.write_blocked_since.store(0, Ordering::Relaxed);
        self.touch();
    }

    /// A write could not proceed (the client's window and our buffer are full).
    pub fn write_blocked(&self) {
        let now = self.now_ms() + 1;
        let _ =
            self.write_blocked_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The write timeout fired.
    pub fn write_timed_out(&self) {
        self.write_timed_out.store(true, Ordering::Relaxed);
    }

    /// Whether the write timeout fired.
    pub fn has_write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }

    /// Whether bytes of a request head arrived since the last request began.
    pub fn has_partial_head(&self) -> bool {
        self.bytes_read.load(Ordering::Relaxed) > self.bytes_read_at_request.load(Ordering::Relaxed)
    }

    /// Whether the connection may be shed at `now` (since the epoch), why, and how
    /// long it has been useless.
    fn evictable(&self, now: Duration) -> Option<(ShedReason, Duration)> {
        if self.in_service.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0 {
            let stalled = now.saturating_sub(Duration::from_millis(blocked - 1));
            return (stalled >= STALL_GRACE).then_some((ShedReason::EvictedStalled, stalled));
        }
        let idle = now.saturating_sub(Duration::from_millis(
            self.last_activity.load(Ordering::Relaxed),
        ));
        let why = if self.has_partial_head() {
            ShedReason::EvictedHead
        } else {
            ShedReason::EvictedIdle
        };
        (idle >= IDLE_GRACE).then_some((why, idle))
    }
}

/// Marks a connection busy with a request while it lives.
#[derive(Debug)]
pub struct ServiceGuard(Arc<ConnState>);

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        self.0.in_service.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(pending: usize, active: usize) -> (Arc<Admission>, Arc<HttpStats>) {
        let stats = Arc::new(HttpStats::default());
        (Admission::new(pending, active, Arc::clone(&stats)), stats)
    }

    fn shed(stats: &HttpStats, reason: &str) -> u64 {
        stats
            .shed_counts()
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }

    #[test]
    fn a_full_pending_pool_sheds_its_oldest() {
        let (admission, stats) = admission(2, 4);
        let first = admission.arrive();
        let _second = admission.arrive();
        let _third = admission.arrive();
        assert_eq!(admission.occupancy(), (2, 0));
        assert_eq!(shed(&stats, "evicted_head"), 1);
        // The first was told (a permit is stored until it waits).
        crate::watch::http::block_on(first.shed());
    }

    #[test]
    fn a_complete_head_takes_an_idle_or_stalled_slot_never_a_busy_one() {
        let (admission, stats) = admission(8, 2);
        let busy = admission.activate(admission.arrive()).unwrap();
        let _serving = busy.state().serving();
        let stalled = admission.activate(admission.arrive()).unwrap();
        // Both just started: nothing may be shed yet, the newcomer is refused.
        let refused = admission.activate(admission.arrive());
        assert!(refused.is_err());
        drop(refused);
        // A write blocked for longer than the grace: that one goes.
        stalled
            .state()
            .write_blocked_since
            .store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_GRACE + Duration::from_millis(50));
        let newcomer = admission.activate(admission.arrive());
        assert!(newcomer.is_ok());
        assert_eq!(shed(&stats, "evicted_stalled"), 1);
        assert_eq!(admission.occupancy(), (0, 2));
        // The busy one is still there, the newcomer is idle now but young.
        assert!(admission.activate(admission.arrive()).is_err());
        drop(stalled);
        assert_eq!(admission.occupancy(), (0, 2), "the shed one left already");
    }

    #[test]
    fn idle_connections_go_before_stalled_ones() {
        let (admission, stats) = admission(8, 2);
        let idle = admission.activate(admission.arrive()).unwrap();
        let stalled = admission.activate(admission.arrive()).unwrap();
        stalled
            .state()
            .write_blocked_since
            .store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_GRACE + Duration::from_millis(50));
        let _new = admission.activate(admission.arrive()).unwrap();
        assert_eq!(shed(&stats, "evicted_idle"), 1);
        assert_eq!(shed(&stats, "evicted_stalled"), 0);
        drop((idle, stalled));
    }
}
