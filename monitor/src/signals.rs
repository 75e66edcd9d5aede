//! Orderly shutdown on SIGINT, SIGTERM and SIGHUP, and SIGUSR1 for `watch`'s
//! self-check.
//!
//! The handlers are installed before anything is attached, so a signal that arrives
//! while routemon is attaching is held until it can detach cleanly instead of killing
//! the process half-way.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listens for the signals that ask routemon to stop.
pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Shutdown {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next stop signal and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// Listens for SIGUSR1, with which an operator asks `watch` to check its model
/// against a fresh dump.
pub struct SelfCheckRequests(Signal);

impl SelfCheckRequests {
    /// Installs the handler.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self(signal(SignalKind::user_defined1())?))
    }

    /// Waits for the next request.
    pub async fn recv(&mut self) {
        self.0.recv().await;
    }
}
