//! Orderly shutdown on SIGINT, SIGTERM and SIGHUP.
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
