//! Kernel drops: what the `kfree_skb` tracepoint counts, per monitored interface of
//! routemon's namespace and drop reason. Device and namespace are read through
//! offsets the loader takes from the kernel's BTF ([`DROP_CONFIG`]).
use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::RawTracePointContext};
use monitor_common::DropKey;

use crate::{
    debug_log::debug_log,
    maps::{DROP_CONFIG, DROPS, iface_slot, table_stats},
};

#[inline(always)]
pub(crate) fn count_drop(ctx: &RawTracePointContext) -> Option<()> {
    let config = DROP_CONFIG.load();
    if config.enabled == 0 {
        return None;
    }
    let skb: u64 = ctx.arg(0);
    let reason: u64 = ctx.arg(2);
    let dev: u64 = read_kernel(skb, config.skb_dev)?;
    if dev == 0 {
        return None;
    }
    let ifindex: u32 = read_kernel(dev, config.dev_ifindex)?;
    // Monitored interfaces only (the cheap test first)…
    iface_slot(ifindex)?;
    // …of routemon's namespace: ifindexes repeat across namespaces.
    let net: u64 = read_kernel(dev, config.dev_net)?;
    let inum: u32 = read_kernel(net, config.net_inum)?;
    if inum != config.netns_inum {
        return None;
    }
    let key = DropKey {
        ifindex,
        reason: reason as u32,
    };
    match DROPS.get_ptr_mut(key) {
        // SAFETY: per-CPU value; tracing programs run with migration disabled.
        Some(count) => unsafe { *count += 1 },
        None => {
            if DROPS.insert(key, 1, 0).is_err() {
                debug_log!(
                    "DROPS full: drop on {} (reason {}) not counted",
                    ifindex,
                    key.reason
                );
                table_stats(|s| s.drops_uncounted += 1);
            }
        }
    }
    Some(())
}

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails on a bad one.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}
