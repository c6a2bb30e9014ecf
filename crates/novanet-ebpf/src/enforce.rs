//! Where policy and conntrack happen, per hook (only while `PolicyConfig::FLAG_ENFORCE` is set; otherwise
//! the hooks behave exactly as without policy and never touch conntrack):
//!
//! - [`from_pod`] (tc ingress of pod A's host veth, after anti-spoofing): a tracked flow passes. A new flow
//!   to a local endpoint B is judged for A's egress *and* B's ingress here (the redirect skips B's hooks),
//!   with one CT entry. A new flow to a Service address (`IDENTITY_SERVICE`, which the stack will DNAT) is
//!   not judged: it is tracked with `CtEntry::FLAG_DEFERRED`, so the un-DNATed replies pass at A's egress
//!   hook, and the translated flow is judged where it reaches a local pod ([`to_pod`]) or leaves the node
//!   ([`node_egress`]). Anything else is judged for A's egress.
//! - [`to_pod`] (tc egress of pod B's host veth: what the stack delivers): a new flow is judged for B's
//!   ingress, and, when its source is a local endpoint A (a Service DNATed to a local backend, or a flow
//!   that needed the stack), for A's egress too, with the post-DNAT destination.
//! - [`node_egress`] (tc egress of the node's underlay interface): a new flow from a local endpoint is
//!   judged for its egress (post-DNAT Service traffic to another node or outside).
//!
//! Established flows stay open when policy changes; only new flows are judged against the new rules.

use aya_ebpf::programs::TcContext;
use novanet_common::{Counter, CtEntry, DIRECTION_EGRESS, DIRECTION_INGRESS, IDENTITY_SERVICE, PolicyConfig};

use crate::{
    conntrack,
    counters::count,
    packet::Ipv4Frame,
    policy::{End, Target, allows},
};

/// Policy for a frame pod A (`frame.saddr`) sent; `dst_local`: its destination is a local endpoint.
/// `Err(reason)` to drop.
#[inline(always)]
pub fn from_pod(ctx: &TcContext, cfg: &PolicyConfig, frame: &Ipv4Frame, dst_local: bool) -> Result<(), Counter> {
    let now = conntrack::now_ns();
    if let Some(tracked) = conntrack::track(frame, now) {
        count(ctx, tracked);
        return Ok(());
    }
    let target = Target { proto: frame.tuple.proto, dport: frame.policy_dport };
    let (src, dst) = (End::of(frame.saddr), End::of(frame.daddr));
    let mut flags = 0;
    if dst_local {
        if !allows(ctx, cfg, &src, DIRECTION_EGRESS, &dst, target) {
            return Err(Counter::DropPolicyEgress);
        }
        if !allows(ctx, cfg, &dst, DIRECTION_INGRESS, &src, target) {
            return Err(Counter::DropPolicyIngress);
        }
    } else if dst.identity() == IDENTITY_SERVICE {
        flags = CtEntry::FLAG_DEFERRED;
    } else if !allows(ctx, cfg, &src, DIRECTION_EGRESS, &dst, target) {
        return Err(Counter::DropPolicyEgress);
    }
    open(ctx, cfg, frame, flags, now)
}

/// Policy for a frame the stack delivers to local pod B (`frame.daddr`); `src_local`: its source is a
/// local endpoint.
#[inline(always)]
pub fn to_pod(
    ctx: &TcContext,
    cfg: &PolicyConfig,
    frame: &Ipv4Frame,
    src_local: impl FnOnce() -> bool,
) -> Result<(), Counter> {
    let now = conntrack::now_ns();
    if let Some(tracked) = conntrack::track(frame, now) {
        count(ctx, tracked);
        return Ok(());
    }
    let target = Target { proto: frame.tuple.proto, dport: frame.policy_dport };
    let (src, dst) = (End::of(frame.saddr), End::of(frame.daddr));
    if !allows(ctx, cfg, &dst, DIRECTION_INGRESS, &src, target) {
        return Err(Counter::DropPolicyIngress);
    }
    if src_local() && !allows(ctx, cfg, &src, DIRECTION_EGRESS, &dst, target) {
        return Err(Counter::DropPolicyEgress);
    }
    open(ctx, cfg, frame, 0, now)
}

/// Policy for a frame from local endpoint A (`frame.saddr`) leaving the node.
#[inline(always)]
pub fn node_egress(ctx: &TcContext, cfg: &PolicyConfig, frame: &Ipv4Frame) -> Result<(), Counter> {
    let now = conntrack::now_ns();
    if let Some(tracked) = conntrack::track(frame, now) {
        count(ctx, tracked);
        return Ok(());
    }
    let target = Target { proto: frame.tuple.proto, dport: frame.policy_dport };
    if !allows(ctx, cfg, &End::of(frame.saddr), DIRECTION_EGRESS, &End::of(frame.daddr), target) {
        return Err(Counter::DropPolicyEgress);
    }
    open(ctx, cfg, frame, 0, now)
}

/// Tracks an allowed new flow; fails closed when the entry cannot be inserted.
#[inline(always)]
fn open(ctx: &TcContext, cfg: &PolicyConfig, frame: &Ipv4Frame, flags: u32, now: u64) -> Result<(), Counter> {
    if conntrack::open(frame, flags, cfg.revision, now).is_err() {
        return Err(Counter::CtInsertFailed);
    }
    count(ctx, Counter::CtNew);
    Ok(())
}
