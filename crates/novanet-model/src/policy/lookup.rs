//! The datapath's decision, emulated on [`MapEntries`]: isolation bit, then the CIDR LPM for the peer's
//! class, then the policy LPM with three peers (the identity, the class, `PEER_ANY`); any hit allows.
//! [`super::trace`] and the diff tests judge packets with it, so they test the lowered entries, not the
//! compiler's intent.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use novanet_common::{CidrKey, IpcacheValue, PEER_ANY, PEER_CIDR_CLASS, PolicyKey};
use serde::Serialize;

use super::lower::{MapEntries, cidr_key, policy_key};
use super::types::Direction;

/// Which of the three lookups hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Matched {
    Identity { identity: u32 },
    CidrClass { class: u32, prefix: Ipv4Net },
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Lookup {
    NotIsolated,
    Allowed { rule: u32, matched: Matched },
    Denied,
}

impl Lookup {
    pub fn allows(self) -> bool {
        !matches!(self, Lookup::Denied)
    }
}

/// The longest CIDR prefix of `endpoint`/`direction` containing `peer`, and its class.
fn cidr_class(
    entries: &MapEntries,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: Ipv4Addr,
) -> Option<(u32, Ipv4Net)> {
    (0..=32u8).rev().find_map(|len| {
        let net = Ipv4Net::new(peer, len).ok()?.trunc();
        let key = cidr_key(endpoint, direction, net);
        debug_assert_eq!(key.0, CidrKey::FIXED_BITS + u32::from(len));
        entries.cidrs.get(&key).map(|v| (v.class, net))
    })
}

/// The policy LPM for one peer value: the rule of the longest matching prefix.
fn policy_lpm(
    entries: &MapEntries,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: u32,
    proto: u8,
    port: u16,
) -> Option<u32> {
    (PolicyKey::FIXED_BITS..=PolicyKey::FULL_BITS).rev().find_map(|len| {
        entries.policy.get(&policy_key(endpoint, peer, direction, proto, port, len)).map(|v| v.rule)
    })
}

/// How the datapath judges a new flow at local `endpoint` in `direction` with the other end
/// `peer_addr` of identity `peer_identity`, IP protocol `proto`, destination port `port`.
pub fn lookup(
    entries: &MapEntries,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer_addr: Ipv4Addr,
    peer_identity: u32,
    proto: u8,
    port: u16,
) -> Lookup {
    let bit = match direction {
        Direction::Ingress => IpcacheValue::FLAG_INGRESS_ISOLATED,
        Direction::Egress => IpcacheValue::FLAG_EGRESS_ISOLATED,
    };
    if entries.isolation.get(&endpoint).is_none_or(|flags| flags & bit == 0) {
        return Lookup::NotIsolated;
    }
    if let Some(rule) = policy_lpm(entries, endpoint, direction, peer_identity, proto, port) {
        return Lookup::Allowed { rule, matched: Matched::Identity { identity: peer_identity } };
    }
    if let Some((class, prefix)) = cidr_class(entries, endpoint, direction, peer_addr)
        && let Some(rule) = policy_lpm(entries, endpoint, direction, PEER_CIDR_CLASS | class, proto, port)
    {
        return Lookup::Allowed { rule, matched: Matched::CidrClass { class, prefix } };
    }
    if let Some(rule) = policy_lpm(entries, endpoint, direction, PEER_ANY, proto, port) {
        return Lookup::Allowed { rule, matched: Matched::Any };
    }
    Lookup::Denied
}
