//! Local endpoint lookup and same-node delivery.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_peer,
    programs::TcContext,
};
use novanet_common::{Counter, EndpointInfo, EndpointKey};

use crate::{counters::count, maps::ENDPOINTS, packet::Ipv4Frame};

/// What to do with a frame a pod sent (tc ingress of its host-side veth).
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> i32 {
    let Some(mut frame) = Ipv4Frame::parse(ctx) else {
        count(ctx, Counter::PassNonIpv4);
        return TC_ACT_OK as i32;
    };
    let Some(info) = lookup(frame.daddr) else {
        count(ctx, Counter::PassToStack);
        return TC_ACT_OK as i32;
    };
    if info.flags & EndpointInfo::FLAG_DELETING != 0 {
        count(ctx, Counter::DropEndpointDeleting);
        return TC_ACT_SHOT as i32;
    }
    frame.set_macs(info.pod_mac, info.host_mac);
    redirect_to_pod(ctx, info.host_ifindex)
}

/// Copies the endpoint entry for `daddr` out of the map (so a concurrent delete cannot change it under us).
#[inline(always)]
fn lookup(daddr: u32) -> Option<EndpointInfo> {
    let ptr = ENDPOINTS.get_ptr(EndpointKey { ip: daddr })?;
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
