//! Samples for userspace: the 5-tuple of a cross-ENI flow, sent through the ring
//! buffer behind a per-CPU token bucket so that a flood costs a counter, not the
//! ring.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use monitor_common::{SAMPLE_BURST, SAMPLE_CROSS_ENI, SAMPLES_PER_SECOND_PER_CPU, SampleEvent};

use crate::{
    flows::Tuple,
    maps::{SAMPLER, SAMPLES},
    routes::Resolved,
};

/// Sends userspace the 5-tuple of a cross-ENI flow (once per flow: the caller
/// remembers a sample that went through); says whether it did.
#[inline(always)]
pub(crate) fn sample_cross_eni<T: Tuple>(egress: u32, found: &Resolved, flow: &T) -> bool {
    sample(&SampleEvent {
        kind: SAMPLE_CROSS_ENI,
        egress_ifindex: egress,
        source_ifindex: found.source_owner,
        pad: 0,
        flow: flow.flow_key(),
    })
}

/// Sends `event` to userspace unless this CPU's token bucket is empty or the ring
/// buffer is full; either way the outcome is counted in `SAMPLER`. Says whether it
/// was sent.
#[inline(always)]
fn sample(event: &SampleEvent) -> bool {
    let Some(state) = SAMPLER.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, as in count_ingress.
    let state = unsafe { &mut *state };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let earned = now.saturating_sub(state.refilled_ns) * SAMPLES_PER_SECOND_PER_CPU / 1_000_000_000;
    if earned > 0 {
        state.tokens = (state.tokens + earned).min(SAMPLE_BURST);
        state.refilled_ns = now;
    }
    if state.tokens == 0 {
        state.suppressed += 1;
        return false;
    }
    state.tokens -= 1;
    match SAMPLES.output::<SampleEvent>(event, 0) {
        Ok(()) => {
            state.sampled += 1;
            true
        }
        Err(_) => {
            state.suppressed += 1;
            false
        }
    }
}
