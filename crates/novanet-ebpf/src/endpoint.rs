//! Local endpoint lookup and same-node delivery, and the node interface's egress hook. Policy
//! (`enforce`) runs after anti-spoofing and the endpoint lookup, before delivery.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_peer,
    programs::TcContext,
};
use novanet_common::{Counter, EndpointInfo, EndpointKey};

use crate::{
    counters::count,
    enforce, flows,
    maps::ENDPOINTS,
    packet::Ipv4Frame,
    policy::{self, enforcing},
};

/// What to do with a frame a pod sent (tc ingress of its host-side veth).
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> i32 {
    let Some(mut frame) = Ipv4Frame::parse(ctx) else {
        count(ctx, Counter::PassNonIpv4);
        return TC_ACT_OK as i32;
    };
    // Anti-spoofing: the source must be the endpoint of the interface the frame came from. Also keeps forged
    // flows out of the NAT-flow map and, later, forged identities out of policy.
    if !sent_by_its_endpoint(ctx, frame.saddr) {
        count(ctx, Counter::DropSpoofedSource);
        return TC_ACT_SHOT as i32;
    }
    let dst = lookup(frame.daddr);
    if let Some(info) = dst
        && info.flags & EndpointInfo::FLAG_DELETING != 0
    {
        count(ctx, Counter::DropEndpointDeleting);
        return TC_ACT_SHOT as i32;
    }
    let cfg = policy::config();
    if enforcing(&cfg)
        && let Err(reason) = enforce::from_pod(ctx, &cfg, &frame, dst.is_some())
    {
        return policy::drop(ctx, reason);
    }
    let Some(info) = dst else {
        count(ctx, Counter::PassToStack);
        return TC_ACT_OK as i32;
    };
    if needs_stack(&frame) {
        count(ctx, Counter::PassLocalViaStack);
        return TC_ACT_OK as i32;
    }
    frame.set_macs(info.pod_mac, info.host_mac);
    redirect_to_pod(ctx, info.host_ifindex)
}

/// What to do with a frame the node's stack delivers to a pod (tc egress of its host-side veth): it goes
/// on to the pod unless policy denies it; a flow one local pod opens towards another through the stack (a
/// Service address DNATed to this pod, a hostPort) is recorded, so the answers take the stack too.
#[inline(always)]
pub fn to_pod(ctx: &TcContext) -> i32 {
    let Some(frame) = Ipv4Frame::parse(ctx) else {
        count(ctx, Counter::DeliverFromStack);
        return TC_ACT_OK as i32;
    };
    let cfg = policy::config();
    if enforcing(&cfg)
        && let Err(reason) = enforce::to_pod(ctx, &cfg, &frame, || lookup(frame.saddr).is_some())
    {
        return policy::drop(ctx, reason);
    }
    count(ctx, Counter::DeliverFromStack);
    if let Some(ports) = frame.ports.filter(|p| p.opens)
        && lookup(frame.saddr).is_some()
    {
        flows::record(frame.saddr, frame.daddr, &ports);
    }
    TC_ACT_OK as i32
}

/// What to do with a frame leaving the node through its underlay interface (tc egress): while policy is
/// enforced, a frame from a local endpoint goes through conntrack and, for a new flow, its egress policy
/// (post-DNAT Service traffic). Everything else passes untouched and uncounted.
#[inline(always)]
pub fn from_node(ctx: &TcContext) -> i32 {
    let cfg = policy::config();
    if !enforcing(&cfg) {
        return TC_ACT_OK as i32;
    }
    let Some(frame) = Ipv4Frame::parse(ctx) else {
        return TC_ACT_OK as i32;
    };
    if lookup(frame.saddr).is_none() {
        return TC_ACT_OK as i32;
    }
    match enforce::node_egress(ctx, &cfg, &frame) {
        Ok(()) => TC_ACT_OK as i32,
        Err(reason) => policy::drop(ctx, reason),
    }
}

/// Whether `saddr` is the address of the endpoint whose host veth the frame arrived on.
#[inline(always)]
fn sent_by_its_endpoint(ctx: &TcContext, saddr: u32) -> bool {
    // SAFETY: `skb` is the program's context pointer, valid for the whole run; `ifindex` is a readable
    // field of `__sk_buff` for tc programs.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    matches!(lookup(saddr), Some(own) if own.host_ifindex == ifindex)
}

/// Whether a frame for a local pod must go through the node's stack rather than straight to the pod: it
/// answers a flow the stack delivered (conntrack must undo the DNAT, or the client would get a reply from
/// the backend's own address), or it is a fragment or has IP options (the stack reassembles and tracks
/// those). Direct pod-to-pod traffic stays on the fast path; a direct flow that reuses the ends of one the
/// stack delivered ends that one.
#[inline(always)]
fn needs_stack(frame: &Ipv4Frame) -> bool {
    if !frame.plain {
        return true;
    }
    match frame.ports {
        Some(p) => {
            if p.opens {
                flows::forget_direct(frame.saddr, frame.daddr, &p);
            }
            flows::answers_stack_flow(frame.saddr, frame.daddr, &p)
        }
        None => false,
    }
}

/// Copies the endpoint entry for `addr` out of the map (so a concurrent delete cannot change it under us).
#[inline(always)]
fn lookup(addr: u32) -> Option<EndpointInfo> {
    let ptr = ENDPOINTS.get_ptr(EndpointKey { ip: addr })?;
    // SAFETY: a non-null pointer from a hash lookup points at a whole `EndpointInfo` value; we copy it at
    // once. Preallocated hash elements may be reused by a concurrent update, which at worst gives a stale
    // but well-formed entry (all fields are plain integers).
    Some(unsafe { *ptr })
}

/// Delivers into the pod behind host veth `host_ifindex`: `bpf_redirect_peer` switches the frame to the
/// veth's peer (the pod-side interface, in the pod's namespace) and runs its ingress without a backlog
/// queue. The kernel drops it later if the peer is gone or down; we count what we can see here.
#[inline(always)]
fn redirect_to_pod(ctx: &TcContext, host_ifindex: u32) -> i32 {
    // SAFETY: plain helper call with scalar arguments; flags must be 0.
    let verdict = unsafe { bpf_redirect_peer(host_ifindex, 0) };
    if verdict == i64::from(TC_ACT_REDIRECT) {
        count(ctx, Counter::RedirectLocal);
        TC_ACT_REDIRECT as i32
    } else {
        count(ctx, Counter::DropRedirectFailed);
        TC_ACT_SHOT as i32
    }
}
