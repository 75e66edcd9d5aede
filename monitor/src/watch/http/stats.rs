//! What the endpoint counts about its own connections and requests: shared atomics
//! the server increments and the metrics renderer reads, plus a rate-limited log
//! line when connections start being shed.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Why a connection was closed or refused before it was served normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// No complete request head within the header timeout (slowloris).
    HeaderTimeout,
    /// A response write made no progress within the write timeout (a client
    /// that does not read).
    WriteTimeout,
    /// Closed to make room for a new connection before it sent a complete head.
    EvictedHead,
    /// An idle keep-alive connection closed to make room for a new request.
    EvictedIdle,
    /// Closed to make room for a new request while its response was stalled.
    EvictedStalled,
    /// Refused with 503 and `Retry-After`: every slot was serving a request.
    Overload,
    /// A request head over the size limit, answered with 431.
    OversizedHead,
    /// A TLS handshake that failed (no certificate, a wrong one, not TLS).
    TlsHandshake,
    /// A request without valid basic-auth credentials, answered with 401.
    Unauthorized,
}

impl ShedReason {
    /// Every reason, in the order the exposition lists them.
    pub const ALL: [Self; 9] = [
        Self::HeaderTimeout,
        Self::WriteTimeout,
        Self::EvictedHead,
        Self::EvictedIdle,
        Self::EvictedStalled,
        Self::Overload,
        Self::OversizedHead,
        Self::TlsHandshake,
        Self::Unauthorized,
    ];

    /// The `reason` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::EvictedHead => "evicted_head",
            Self::EvictedIdle => "evicted_idle",
            Self::EvictedStalled => "evicted_stalled",
            Self::Overload => "overload",
            Self::OversizedHead => "oversized_head",
            Self::TlsHandshake => "tls_handshake",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// Status codes counted per response: every status the server sends (400 and 431
/// are hyper's answers to a head it cannot parse or that is too large).
pub const CODES: [u16; 7] = [200, 400, 401, 404, 405, 431, 503];

/// Least time between two "shedding connections" log lines.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The endpoint's counters, shared between the server and the metrics renderer.
#[derive(Debug, Default)]
pub struct HttpStats {
    shed: [AtomicU64; ShedReason::ALL.len()],
    requests: [AtomicU64; CODES.len()],
    log: Mutex<ShedLog>,
}

#[derive(Debug, Default)]
struct ShedLog {
    last_line: Option<Instant>,
    unlogged: u64,
}

impl HttpStats {
    /// Counts a shed connection and logs, at most every [`LOG_INTERVAL`], how many
    /// were shed since the last line.
    pub fn shed(&self, reason: ShedReason) {
        let index = ShedReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.shed[index].fetch_add(1, Ordering::Relaxed);
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        log.unlogged += 1;
        let due = log.last_line.is_none_or(|t| t.elapsed() >= LOG_INTERVAL);
        if due {
            tracing::info!(
                shed = log.unlogged,
                last = reason.label(),
                "metrics endpoint: shedding connections of abusive or excess clients \
                 (see routemon_http_connections_shed_total)"
            );
            log.unlogged = 0;
            log.last_line = Some(Instant::now());
        }
    }

    /// Counts a response with status `code`.
    pub fn response(&self, code: u16) {
        if let Some(index) = CODES.iter().position(|c| *c == code) {
            self.requests[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Shed connections so far, by reason label.
    pub fn shed_counts(&self) -> Vec<(&'static str, u64)> {
        ShedReason::ALL
            .iter()
            .zip(&self.shed)
            .map(|(reason, n)| (reason.label(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Responses so far, by status code.
    pub fn response_counts(&self) -> Vec<(u16, u64)> {
        CODES
            .iter()
            .zip(&self.requests)
            .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_code() {
        let stats = HttpStats::default();
        stats.shed(ShedReason::Overload);
        stats.shed(ShedReason::Overload);
        stats.shed(ShedReason::HeaderTimeout);
        stats.response(503);
        stats.response(299);
        let shed = stats.shed_counts();
        assert_eq!(shed.len(), ShedReason::ALL.len());
        assert!(shed.contains(&("overload", 2)));
        assert!(shed.contains(&("header_timeout", 1)));
        assert!(shed.contains(&("write_timeout", 0)));
        assert!(stats.response_counts().contains(&(503, 1)));
        assert_eq!(
            stats.response_counts().iter().map(|(_, n)| n).sum::<u64>(),
            1
        );
    }
}
