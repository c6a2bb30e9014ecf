//! Connection tracking (see `novanet_common::CT_MAP`): a flow is keyed by its tuple as its first packet had
//! it; a packet matches it in the original direction (its own tuple) or the reply direction (its reversed
//! tuple). ICMP errors whose embedded datagram belongs to a tracked flow are related to it.
//!
//! Invariants:
//! - An entry is only ever created for a flow that policy allowed (`open`): a hit needs no policy lookup.
//! - An expired entry (`CtEntry::lifetime_ns` after its last packet) counts as absent and is deleted; so
//!   is a closing TCP entry that sees a new SYN (the ports were reused for a new connection, judged anew).
//! - At most two CT lookups per packet, four for an ICMP error: O(1).

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use novanet_common::{Counter, CtEntry, CtKey};

use crate::{
    maps::CT,
    packet::{IPPROTO_TCP, Ipv4Frame, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tuple},
};

#[inline(always)]
fn key(t: &Tuple) -> CtKey {
    CtKey { saddr: t.saddr, daddr: t.daddr, sport: t.sport, dport: t.dport, proto: t.proto, _pad: [0; 3] }
}

/// `bpf_ktime_get_ns()`: the monotonic clock entries are stamped with.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Looks the packet up in conntrack and updates the entry it belongs to. `Some(counter)` (CtEstablished,
/// CtReply, CtRelated) when the packet belongs to a tracked flow and passes; `None` for a new flow that
/// policy must judge.
#[inline(always)]
pub fn track(frame: &Ipv4Frame, now: u64) -> Option<Counter> {
    let t = frame.tuple;
    let forward = key(&t);
    if let Some(entry) = CT.get_ptr_mut(forward) {
        return hit(entry, &forward, frame.tcp_flags, false, now).then_some(Counter::CtEstablished);
    }
    let reverse = key(&t.reversed());
    if let Some(entry) = CT.get_ptr_mut(reverse) {
        return hit(entry, &reverse, frame.tcp_flags, true, now).then_some(Counter::CtReply);
    }
    let inner = frame.icmp_inner?;
    // The embedded datagram was sent by this packet's destination, in either direction of its flow.
    (live(&key(&inner), now) || live(&key(&inner.reversed()), now)).then_some(Counter::CtRelated)
}

/// Whether a tracked flow `key` exists and has not expired (read only: related packets refresh nothing).
#[inline(always)]
fn live(key: &CtKey, now: u64) -> bool {
    match CT.get_ptr(key) {
        // SAFETY: a non-null pointer from a hash lookup points at a whole value for this program run.
        Some(entry) => unsafe { !expired(entry, key.proto, now) },
        None => false,
    }
}

/// # Safety
/// `entry` comes from a CT lookup in this program run.
#[inline(always)]
unsafe fn expired(entry: *const CtEntry, proto: u8, now: u64) -> bool {
    // SAFETY: see the function's contract.
    let (last, flags) = unsafe { ((*entry).last_seen_ns, (*entry).flags) };
    now.wrapping_sub(last) > CtEntry::lifetime_ns(proto, flags)
}

/// A packet hit `entry` (`reply`: in the reply direction). `true` when it passes as part of the flow; the
/// entry is refreshed. `false` when the entry is over (expired, or a new SYN on a closing connection): it
/// is deleted and the packet is a new flow.
#[inline(always)]
fn hit(entry: *mut CtEntry, key: &CtKey, tcp_flags: u8, reply: bool, now: u64) -> bool {
    let tcp = key.proto == IPPROTO_TCP;
    // SAFETY: `entry` comes from a CT lookup in this program run.
    let flags = unsafe { (*entry).flags };
    // SAFETY: as above.
    let over = unsafe { expired(entry, key.proto, now) }
        || (tcp && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && flags & CtEntry::FLAG_CLOSING != 0);
    if over {
        let _ = CT.remove(key);
        return false;
    }
    let mut new_flags = flags;
    if reply {
        new_flags |= CtEntry::FLAG_SEEN_REPLY;
    }
    if tcp && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        new_flags |= CtEntry::FLAG_CLOSING;
    }
    // SAFETY: `entry` comes from a CT lookup in this program run. Fields are only written when they change
    // (no cache-line traffic for the common packet); a lost concurrent update only loses OR-ed bits or a
    // time stamp refresh that the next packet redoes.
    unsafe {
        if now.wrapping_sub((*entry).last_seen_ns) > CtEntry::REFRESH_NS {
            (*entry).last_seen_ns = now;
        }
        if new_flags != flags {
            (*entry).flags = new_flags;
        }
        if tcp {
            if reply {
                if (*entry).tcp_flags_reply | tcp_flags != (*entry).tcp_flags_reply {
                    (*entry).tcp_flags_reply |= tcp_flags;
                }
            } else if (*entry).tcp_flags_orig | tcp_flags != (*entry).tcp_flags_orig {
                (*entry).tcp_flags_orig |= tcp_flags;
            }
        }
    }
    true
}

/// Starts tracking the new flow of `frame`, which policy allowed. `Err` when the entry cannot be inserted.
#[inline(always)]
pub fn open(frame: &Ipv4Frame, flags: u32, revision: u32, now: u64) -> Result<(), i32> {
    let entry = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        flags,
        revision,
        tcp_flags_orig: frame.tcp_flags,
        tcp_flags_reply: 0,
        _pad: [0; 6],
    };
    CT.insert(key(&frame.tuple), entry, 0)
}
