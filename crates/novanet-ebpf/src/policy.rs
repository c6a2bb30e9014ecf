//! Policy decisions for new flows (see `novanet_common::policy`): whether a local end isolated in a
//! direction has a rule for the peer, and the per-endpoint verdict counters.
//!
//! Invariants:
//! - Judging one end costs at most one CIDR LPM lookup and three policy LPM lookups (identity, CIDR class,
//!   any peer), plus the verdict counter: O(1), no loop over rules.
//! - The node itself (`IDENTITY_HOST`) is always allowed, both ways: traffic from the node to its pods
//!   (kubelet probes) and from a pod to its own node (whatever a Service translated to the node itself, DNS
//!   on the node), as Kubernetes requires of node-local health checks.
//! - The peer identity comes from the ipcache by address; the local end is an endpoint of this node whose
//!   address was checked against its interface (anti-spoofing) or is where the stack delivers.

use aya_ebpf::{bindings::TC_ACT_SHOT, maps::lpm_trie::Key, programs::TcContext};
use novanet_common::{
    CidrKey, Counter, DIRECTION_INGRESS, EndpointKey, IDENTITY_HOST, IDENTITY_WORLD, IpcacheValue, PEER_ANY,
    PEER_CIDR_CLASS, PolicyConfig, PolicyKey, VerdictKey, VerdictValue,
};

use crate::{
    counters::count,
    maps::{IPCACHE, POLICY, POLICY_CIDR, POLICY_CONFIG, VERDICTS},
};

/// `BPF_NOEXIST`.
const NOEXIST: u64 = 1;

/// The policy switch (all zero, i.e. not enforcing, when the slot cannot be read).
#[inline(always)]
pub fn config() -> PolicyConfig {
    match POLICY_CONFIG.get_ptr(0) {
        // SAFETY: an array lookup of an existing index points at a whole value for this program run.
        Some(cfg) => unsafe { *cfg },
        None => PolicyConfig::default(),
    }
}

#[inline(always)]
pub fn enforcing(cfg: &PolicyConfig) -> bool {
    cfg.flags & PolicyConfig::FLAG_ENFORCE != 0
}

/// The ipcache entry of `addr`, copied out of the map.
#[inline(always)]
pub fn ipcache(addr: u32) -> Option<IpcacheValue> {
    let ptr = IPCACHE.get_ptr(EndpointKey { ip: addr })?;
    // SAFETY: a non-null pointer from a hash lookup points at a whole value; copied at once.
    Some(unsafe { *ptr })
}

/// One end of a flow: its address and ipcache entry.
#[derive(Clone, Copy)]
pub struct End {
    pub addr: u32,
    pub cache: Option<IpcacheValue>,
}

impl End {
    #[inline(always)]
    pub fn of(addr: u32) -> Self {
        End { addr, cache: ipcache(addr) }
    }

    /// Its identity (`IDENTITY_WORLD` for addresses the cache does not know).
    #[inline(always)]
    pub fn identity(&self) -> u32 {
        match self.cache {
            Some(v) => v.identity,
            None => IDENTITY_WORLD,
        }
    }
}

/// What a new flow needs from the local end's rules: protocol and destination port (network byte order).
#[derive(Clone, Copy)]
pub struct Target {
    pub proto: u8,
    pub dport: u16,
}

/// Whether the local endpoint `local` may have this new flow with `peer` in `direction`. Only an end
/// isolated in that direction is judged (and its verdict counted); a local endpoint without an ipcache
/// entry is isolated both ways iff default deny is on.
#[inline(always)]
pub fn allows(ctx: &TcContext, cfg: &PolicyConfig, local: &End, direction: u8, peer: &End, target: Target) -> bool {
    let flag = if direction == DIRECTION_INGRESS {
        IpcacheValue::FLAG_INGRESS_ISOLATED
    } else {
        IpcacheValue::FLAG_EGRESS_ISOLATED
    };
    let isolated = match local.cache {
        Some(v) => v.flags & flag != 0,
        None => cfg.flags & PolicyConfig::FLAG_DEFAULT_DENY != 0,
    };
    if !isolated {
        return true;
    }
    let identity = peer.identity();
    let allowed = identity == IDENTITY_HOST || has_rule(local.addr, direction, identity, peer.addr, target);
    count_verdict(ctx, local.addr, direction, allowed);
    allowed
}

/// Whether `endpoint` has a rule for the peer in `direction`: by identity, by CIDR class, or for any peer.
#[inline(always)]
fn has_rule(endpoint: u32, direction: u8, identity: u32, peer_addr: u32, target: Target) -> bool {
    let key = |peer: u32| {
        Key::new(
            PolicyKey::FULL_BITS,
            PolicyKey {
                endpoint,
                peer: peer.to_be_bytes(),
                direction,
                proto: target.proto,
                dport: target.dport.to_ne_bytes(),
            },
        )
    };
    if POLICY.get(key(identity)).is_some() {
        return true;
    }
    let cidr = Key::new(CidrKey::FIXED_BITS + 32, CidrKey { endpoint, direction, _pad: [0; 3], addr: peer_addr });
    if let Some(class) = POLICY_CIDR.get(cidr)
        && POLICY.get(key(PEER_CIDR_CLASS | class.class)).is_some()
    {
        return true;
    }
    POLICY.get(key(PEER_ANY)).is_some()
}

/// Adds the packet to `endpoint`'s verdict counter (created on first use).
#[inline(always)]
fn count_verdict(ctx: &TcContext, endpoint: u32, direction: u8, allowed: bool) {
    let verdict = if allowed { VerdictKey::ALLOWED } else { VerdictKey::DENIED };
    let key = VerdictKey { endpoint, direction, verdict, _pad: [0; 2] };
    let slot = match VERDICTS.get_ptr_mut(key) {
        Some(slot) => slot,
        None => {
            // Another CPU may insert first (EEXIST): either way the slot exists now, unless the map is full.
            let _ = VERDICTS.insert(key, VerdictValue::default(), NOEXIST);
            match VERDICTS.get_ptr_mut(key) {
                Some(slot) => slot,
                None => return,
            }
        }
    };
    // SAFETY: `slot` points at a value of a hash map for this program run; the counters are shared by all
    // CPUs, so they are only changed with atomic adds (aligned u64 fields of a repr(C) value).
    unsafe {
        atomic_add(&raw mut (*slot).packets, 1);
        atomic_add(&raw mut (*slot).bytes, u64::from(ctx.len()));
    }
}

/// `lock *(u64 *)(ptr) += value` (BPF_ATOMIC add without fetch, which every verifier since 4.x accepts).
/// The BPF target has no atomic read-modify-write in `core` (no CAS), hence the instruction itself.
///
/// # Safety
/// `ptr` is an aligned pointer into a map value valid for this program run.
#[inline(always)]
unsafe fn atomic_add(ptr: *mut u64, value: u64) {
    // SAFETY: see the function's contract; the instruction touches only `*ptr`.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) ptr, v = in(reg) value, options(nostack)) };
}

/// The one drop path of policy and conntrack: counts `reason` and drops.
#[inline(always)]
pub fn drop(ctx: &TcContext, reason: Counter) -> i32 {
    count(ctx, reason);
    TC_ACT_SHOT as i32
}
