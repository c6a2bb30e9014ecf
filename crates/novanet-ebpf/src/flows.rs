//! Flows between local pods that the node's stack delivered (see `novanet_common::NAT_FLOWS_MAP`): recorded
//! at the server pod's egress, consulted for the server's answers at its ingress, forgotten when a direct
//! flow reuses the same ends or when idle too long.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use novanet_common::{NatFlowKey, NatFlowSeen};

use crate::{maps::NAT_FLOWS, packet::Ports};

/// The key of the flow `client`:`client_port` -> `server`:`server_port` (network byte order).
#[inline(always)]
pub fn key(client: u32, client_port: u16, server: u32, server_port: u16, proto: u8) -> NatFlowKey {
    NatFlowKey { client_ip: client, server_ip: server, client_port, server_port, proto, _pad: [0; 3] }
}

/// The stack delivered a packet that opens (or continues opening) a flow from local pod `saddr` to local
/// pod `daddr`: record the flow, or refresh it.
#[inline(always)]
pub fn record(saddr: u32, daddr: u32, ports: &Ports) {
    let key = key(saddr, ports.sport, daddr, ports.dport, ports.proto);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    match NAT_FLOWS.get_ptr_mut(key) {
        Some(seen) => refresh(seen, now),
        None => {
            // A full LRU map evicts its least recently used entry; failure leaves the flow on the fast path.
            let _ = NAT_FLOWS.insert(key, NatFlowSeen { last_seen_ns: now }, 0);
        }
    }
}

/// Whether a packet from local pod `saddr` to local pod `daddr` answers a flow the stack delivered (and
/// so must go back through the stack). An expired entry is removed and does not count.
#[inline(always)]
pub fn answers_stack_flow(saddr: u32, daddr: u32, ports: &Ports) -> bool {
    let key = key(daddr, ports.dport, saddr, ports.sport, ports.proto);
    let Some(seen) = NAT_FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a non-null pointer from a hash lookup points at a whole value for this program run.
    let last = unsafe { (*seen).last_seen_ns };
    if now.wrapping_sub(last) > NatFlowSeen::idle_ns(ports.proto) {
        let _ = NAT_FLOWS.remove(key);
        return false;
    }
    refresh(seen, now);
    true
}

/// A pod opens a flow straight to another local pod: if the stack once delivered a flow with exactly these
/// ends (the client reuses its port), that one is over, and the server's answers must take the fast path
/// like the request.
#[inline(always)]
pub fn forget_direct(saddr: u32, daddr: u32, ports: &Ports) {
    // A delete of an absent key is one lookup that writes nothing (ENOENT): no lookup first.
    let _ = NAT_FLOWS.remove(key(saddr, ports.sport, daddr, ports.dport, ports.proto));
}

#[inline(always)]
fn refresh(seen: *mut NatFlowSeen, now: u64) {
    // SAFETY: `seen` comes from a hash lookup in this program run. Concurrent writers store the same kind
    // of value (a recent timestamp), so a lost update is harmless.
    unsafe {
        if now.wrapping_sub((*seen).last_seen_ns) > NatFlowSeen::REFRESH_NS {
            (*seen).last_seen_ns = now;
        }
    }
}
