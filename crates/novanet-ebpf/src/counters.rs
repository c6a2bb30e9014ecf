//! Per-CPU datapath counters.

use aya_ebpf::programs::TcContext;
use novanet_common::Counter;

use crate::maps::COUNTERS;

/// Adds one packet of `ctx.len()` bytes to `counter` on this CPU.
#[inline(always)]
pub fn count(ctx: &TcContext, counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: `slot` points into this CPU's slot of a per-CPU array, valid for the whole program run;
        // tc programs run with migration disabled, so nothing else writes this slot concurrently.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(ctx.len());
        }
    }
}
