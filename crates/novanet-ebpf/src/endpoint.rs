//! Local endpoint lookup and same-node delivery.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_peer,
    programs::TcContext,
};
use novanet_common::{Counter, EndpointInfo, EndpointKey, FlowKey};

use crate::{
    counters::count,
    maps::{ENDPOINTS, NAT_FLOWS},
    packet::Ipv4Frame,
};

/// What to do with a frame a pod sent (tc ingress of its host-side veth).
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> i32 {
    let Some(mut frame) = Ipv4Frame::parse(ctx) else {
        count(ctx, Counter::PassNonIpv4);
        return TC_ACT_OK as i32;
    };
    let Some(info) = lookup(frame.daddr) else {
        if let Some(ports) = frame.ports.filter(|p| p.opens) {
            remember_flow(FlowKey { ip: frame.saddr, port: ports.sport, proto: ports.proto, _pad: 0 });
        }
        count(ctx, Counter::PassToStack);
        return TC_ACT_OK as i32;
    };
    if info.flags & EndpointInfo::FLAG_DELETING != 0 {
        count(ctx, Counter::DropEndpointDeleting);
        return TC_ACT_SHOT as i32;
    }
    if needs_stack(&frame) {
        count(ctx, Counter::PassLocalViaStack);
        return TC_ACT_OK as i32;
    }
    frame.set_macs(info.pod_mac, info.host_mac);
    redirect_to_pod(ctx, info.host_ifindex)
}

/// Notes the pod side of a TCP/UDP flow the pod opens towards a non-local address, which the stack may
/// translate (a Service address DNATed by kube-proxy to a pod of this node). Only flows the pod opens (a
/// TCP SYN, any UDP datagram): a server pod answering a non-local client must not mark its listening port,
/// or local clients' requests to it would take the stack while its answers take the fast path, and
/// conntrack (kube-proxy drops what it finds INVALID) would see half a connection. A lookup first: known
/// flows cost no update.
#[inline(always)]
fn remember_flow(key: FlowKey) {
    if NAT_FLOWS.get_ptr(key).is_none() {
        // A full LRU map evicts its least recently used entry; failure leaves the flow on the fast path.
        let _ = NAT_FLOWS.insert(key, 1, 0);
    }
}

/// Whether a frame for a local pod must go through the node's stack rather than straight to the pod: it
/// answers a flow the stack may have translated (conntrack must undo the DNAT, or the client would get a
/// reply from the backend's own address), or it is a fragment or has IP options (the stack reassembles
/// and tracks those). Direct pod-to-pod traffic stays on the fast path.
#[inline(always)]
fn needs_stack(frame: &Ipv4Frame) -> bool {
    if !frame.plain {
        return true;
    }
    match frame.ports {
        Some(p) => NAT_FLOWS.get_ptr(FlowKey { ip: frame.daddr, port: p.dport, proto: p.proto, _pad: 0 }).is_some(),
        None => false,
    }
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
