//! NovaNet's eBPF programs. Entry points only: every program here is a thin wrapper that calls into the
//! modules, which are split by concern (`packet` parsing, `endpoint` lookup and delivery, `flows` the
//! stack delivered, `counters`).
//!
//! Invariants:
//! - Maps are defined once in [`maps`], named after the `novanet_common` constants and pinned by name, so an
//!   agent restart adopts the maps the running programs use and traffic never stops.
//! - Per-packet cost is O(1), no loops: from a pod, two endpoint lookups (source check, destination) and
//!   for TCP/UDP to a local pod one or two NAT-flow lookups; to a pod from the stack, one endpoint lookup and
//!   one NAT-flow lookup for packets that open a flow; one per-CPU counter update each.
//! - Every verdict is counted in exactly one [`novanet_common::Counter`] slot.
//! - Packet pointers are only dereferenced after one bounds check against `data_end` made on the same
//!   pointer (see `packet::Ipv4Frame`), which is what the verifier (6.1 and 6.18) tracks.
#![no_std]
#![no_main]

mod counters;
mod endpoint;
mod flows;
mod maps;
mod packet;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// tc ingress of a pod's host-side veth, i.e. every frame the pod sends. Delivers frames for local pods
/// straight into the destination pod (`bpf_redirect_peer`) and hands everything else to the node's stack.
#[classifier]
pub fn novanet_pod_ingress(ctx: TcContext) -> i32 {
    endpoint::from_pod(&ctx)
}

/// tc egress of a pod's host-side veth, i.e. every frame the node's stack delivers to the pod (frames
/// redirected from other local pods skip it). Records flows between local pods that the stack delivered.
#[classifier]
pub fn novanet_pod_egress(ctx: TcContext) -> i32 {
    endpoint::to_pod(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
