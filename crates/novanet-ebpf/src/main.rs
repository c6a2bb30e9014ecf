//! NovaNet's eBPF programs. Entry points only: every program here is a thin wrapper that calls into the
//! modules, which are split by concern (`packet` parsing, `endpoint` lookup and delivery, `flows` the
//! stack delivered, `conntrack`, `policy` decisions, `enforce` (which hook judges what), `counters`).
//!
//! Invariants:
//! - Maps are defined once in [`maps`], named after the `novanet_common` constants and pinned by name, so an
//!   agent restart adopts the maps the running programs use and traffic never stops.
//! - Per-packet cost is O(1), no loops: from a pod, two endpoint lookups (source check, destination) and
//!   for TCP/UDP to a local pod one or two NAT-flow lookups; to a pod from the stack, one endpoint lookup and
//!   one NAT-flow lookup for packets that open a flow; one per-CPU counter update each. Policy adds, while
//!   enforced: one config lookup per packet; two CT lookups (four for an ICMP error); and only for a new
//!   flow two ipcache lookups, per judged end one CIDR and at most three policy LPM lookups and one or
//!   two verdict-map operations, one CT insert; at the node interface one endpoint lookup more. A fixed
//!   number, whatever the number of pods, rules or flows.
//! - Every verdict is counted in exactly one [`novanet_common::Counter`] slot: a delivery slot
//!   (`RedirectLocal`, `PassToStack`, `DeliverFromStack`, ...) or a drop slot (`DropPolicy*`,
//!   `CtInsertFailed`, ...). The conntrack slots (`CtNew`, `CtEstablished`, `CtReply`, `CtRelated`)
//!   count what conntrack did for a packet on top of its verdict, once per hook it passes. The node
//!   interface's program counts only what policy does (it sees all of the node's traffic).
//! - Policy is enforced only while `PolicyConfig::FLAG_ENFORCE` is set: otherwise no CT or policy map is
//!   touched and every hook behaves as before policy existed.
//! - Packet pointers are only dereferenced after one bounds check against `data_end` made on the same
//!   pointer (see `packet::Ipv4Frame`), which is what the verifier (6.1 and 6.18) tracks.
#![no_std]
#![no_main]
// Inline assembly for the BPF target (the atomic add of `policy::atomic_add`); the build sets
// RUSTC_BOOTSTRAP (Debian's rustc) or uses a nightly.
#![feature(asm_experimental_arch)]

mod conntrack;
mod counters;
mod endpoint;
mod enforce;
mod flows;
mod maps;
mod packet;
mod policy;

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

/// tc egress of the node's underlay interface: judges the egress of local pods for flows the node's stack
/// translated (Service addresses) before they leave the node.
#[classifier]
pub fn novanet_node_egress(ctx: TcContext) -> i32 {
    endpoint::from_node(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
