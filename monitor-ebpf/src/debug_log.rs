//! Debug records for userspace, with the `debug-log` feature only: without it
//! [`debug_log!`] expands to nothing (its arguments are not even evaluated), so the
//! default object carries no log code, no log map and no cost on the hot path.
//!
//! Records go through aya-log's ring buffer (`AYA_LOGS`); routemon relays them to
//! its own log at debug level. aya-log-ebpf 0.2 never reads the program context
//! (it writes straight to that map), so call sites need none.

/// `aya_log_ebpf::debug!` with the `debug-log` feature, nothing without it.
#[cfg(feature = "debug-log")]
macro_rules! debug_log {
    ($($arg:tt)+) => {
        ::aya_log_ebpf::debug!(&(), $($arg)+)
    };
}

/// `aya_log_ebpf::debug!` with the `debug-log` feature, nothing without it.
#[cfg(not(feature = "debug-log"))]
macro_rules! debug_log {
    ($($arg:tt)+) => {};
}

pub(crate) use debug_log;
