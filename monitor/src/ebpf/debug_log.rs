//! The eBPF programs' debug records (the `debug-log` feature): read from aya-log's
//! ring buffer and written to routemon's log at their level, so `--log-level debug`
//! (or `-vv`) shows them next to routemon's own records.
use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

/// Starts relaying the loaded object's records on the current tokio runtime. A
/// failure is logged and leaves counting as it is: the records are a debugging aid.
pub(super) fn relay(ebpf: &mut Ebpf) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("eBPF debug records not relayed: no async runtime");
        return;
    };
    let logger = match EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!("eBPF debug records not relayed: {err}");
            return;
        }
    };
    // SAFETY: the logger owns the ring buffer's fd and neither closes nor replaces
    // it while the AsyncFd holds the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!("eBPF debug records not relayed: {err}");
            return;
        }
    };
    runtime.spawn(async move {
        while let Ok(mut ready) = logger.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}

/// aya-log writes to a `log::Log`; routemon logs with tracing.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "routemon::ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "routemon::ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "routemon::ebpf", "{message}"),
            log::Level::Debug => tracing::debug!(target: "routemon::ebpf", "{message}"),
            log::Level::Trace => tracing::trace!(target: "routemon::ebpf", "{message}"),
        }
    }

    fn flush(&self) {}
}
