//! Lowering compiled endpoints to the exact map entries of `novanet_common::policy`.
//!
//! - Policy keys: `(prefix_len, PolicyKey)`; any protocol = [`PolicyKey::FIXED_BITS`] (proto and port
//!   zero), one protocol's ports = `FIXED_BITS + 8`, a port range = [`port_prefixes`] at
//!   `FIXED_BITS + 8 + bits`. Bits beyond the prefix are always zero, so equal prefixes are equal keys.
//!   When several rules give the same key, the value holds the smallest rule index.
//! - CIDR classes, per (endpoint, direction): every cidr and except of the ipBlock peers (and every
//!   egress named-port /32) is a prefix of `NOVANET_POLICY_CIDR`. The class of prefix P carries exactly
//!   the allows whose block contains P's region (P inside the cidr, and no except of that block contains
//!   P); the LPM then gives an address the class of its most specific prefix, which is the set of blocks
//!   that contain the address. Prefixes with the same set share a class; an except that leaves no block
//!   gets a class with no policy entries, so the LPM stops there and nothing is allowed. Classes are
//!   numbered from 0 in prefix order.
//! - Isolation: `IpcacheValue::FLAG_*_ISOLATED` bits of every compiled endpoint (0 when not isolated).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use novanet_common::{CidrKey, CidrValue, IpcacheValue, PEER_ANY, PEER_CIDR_CLASS, PolicyKey, PolicyValue};

use super::compile::{Allow, Compiled, DirectionPolicy, EndpointPolicy, Peer, Ports};
use super::ports::port_prefixes;
use super::types::Direction;

/// `NOVANET_POLICY` entries: `(prefix_len, key) -> value`.
pub type PolicyEntries = BTreeMap<(u32, PolicyKey), PolicyValue>;
/// `NOVANET_POLICY_CIDR` entries: `(prefix_len, key) -> value`.
pub type CidrEntries = BTreeMap<(u32, CidrKey), CidrValue>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub policy: PolicyEntries,
    pub cidrs: CidrEntries,
    /// Local endpoint -> its isolation bits (`IpcacheValue::FLAG_INGRESS_ISOLATED | FLAG_EGRESS_ISOLATED`).
    pub isolation: BTreeMap<Ipv4Addr, u32>,
}

/// An address as the maps hold it (network byte order in memory).
pub(crate) fn raw_addr(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The policy key of `prefix_len` bits, bits beyond the prefix cleared.
pub(crate) fn policy_key(
    endpoint: Ipv4Addr,
    peer: u32,
    direction: Direction,
    proto: u8,
    port: u16,
    prefix_len: u32,
) -> (u32, PolicyKey) {
    let proto_bits = prefix_len.saturating_sub(PolicyKey::FIXED_BITS).min(8);
    let proto = if proto_bits == 0 { 0 } else { proto & (u8::MAX << (8 - proto_bits)) };
    let port_bits = prefix_len.saturating_sub(PolicyKey::FIXED_BITS + 8);
    let port = if port_bits == 0 { 0 } else { port & (u16::MAX << (16 - port_bits)) };
    let key = PolicyKey {
        endpoint: raw_addr(endpoint),
        peer: peer.to_be_bytes(),
        direction: direction.raw(),
        proto,
        dport: port.to_be_bytes(),
    };
    (prefix_len, key)
}

pub(crate) fn cidr_key(endpoint: Ipv4Addr, direction: Direction, net: Ipv4Net) -> (u32, CidrKey) {
    let key = CidrKey {
        endpoint: raw_addr(endpoint),
        direction: direction.raw(),
        _pad: [0; 3],
        addr: raw_addr(net.network()),
    };
    (CidrKey::FIXED_BITS + u32::from(net.prefix_len()), key)
}

fn insert(policy: &mut PolicyEntries, key: (u32, PolicyKey), rule: u32) {
    policy.entry(key).and_modify(|v| v.rule = v.rule.min(rule)).or_insert(PolicyValue { rule, _pad: 0 });
}

fn insert_ports(
    policy: &mut PolicyEntries,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: u32,
    ports: Ports,
    rule: u32,
) {
    let fixed = PolicyKey::FIXED_BITS;
    match ports {
        Ports::All => insert(policy, policy_key(endpoint, peer, direction, 0, 0, fixed), rule),
        Ports::Protocol { protocol } => {
            insert(policy, policy_key(endpoint, peer, direction, protocol.number(), 0, fixed + 8), rule)
        }
        Ports::Range { protocol, first, last } => {
            for (base, bits) in port_prefixes(first, last) {
                insert(
                    policy,
                    policy_key(endpoint, peer, direction, protocol.number(), base, fixed + 8 + bits),
                    rule,
                );
            }
        }
    }
}

/// The block of a CIDR-class peer.
fn block(peer: &Peer) -> Option<(Ipv4Net, &[Ipv4Net])> {
    match peer {
        Peer::Cidr { cidr, except } => Some((*cidr, except.as_slice())),
        Peer::NamedPortPod { ip, .. } => Some((Ipv4Net::from(*ip), &[])),
        Peer::Any | Peer::Identity { .. } => None,
    }
}

pub fn lower(compiled: &Compiled) -> MapEntries {
    let mut out = MapEntries::default();
    for (ip, endpoint) in &compiled.endpoints {
        lower_endpoint(&mut out, *ip, endpoint);
    }
    out
}

/// Adds the entries of one endpoint (keys of distinct endpoints never meet: each key holds its endpoint).
pub(crate) fn lower_endpoint(out: &mut MapEntries, ip: Ipv4Addr, endpoint: &EndpointPolicy) {
    let mut flags = 0;
    if endpoint.ingress.isolated {
        flags |= IpcacheValue::FLAG_INGRESS_ISOLATED;
    }
    if endpoint.egress.isolated {
        flags |= IpcacheValue::FLAG_EGRESS_ISOLATED;
    }
    out.isolation.insert(ip, flags);
    lower_direction(out, ip, Direction::Ingress, &endpoint.ingress);
    lower_direction(out, ip, Direction::Egress, &endpoint.egress);
}

fn lower_direction(out: &mut MapEntries, ip: Ipv4Addr, direction: Direction, policy: &DirectionPolicy) {
    let mut blocks: Vec<(Ipv4Net, &[Ipv4Net], &Allow)> = Vec::new();
    // Policies overlap a lot (the same identity and ports allowed by many rules): each (peer, ports) is
    // lowered once, with its smallest rule.
    let mut peers: Vec<(u32, Ports, u32)> = Vec::with_capacity(policy.allows.len());
    for allow in &policy.allows {
        match &allow.peer {
            Peer::Any => peers.push((PEER_ANY, allow.ports, allow.rule)),
            Peer::Identity { identity } => peers.push((*identity, allow.ports, allow.rule)),
            peer => {
                if let Some((cidr, except)) = block(peer) {
                    blocks.push((cidr, except, allow));
                }
            }
        }
    }
    peers.sort_unstable();
    peers.dedup_by_key(|(peer, ports, _)| (*peer, *ports));
    for (peer, ports, rule) in peers {
        insert_ports(&mut out.policy, ip, direction, peer, ports, rule);
    }
    if blocks.is_empty() {
        return;
    }
    let prefixes: BTreeSet<Ipv4Net> =
        blocks.iter().flat_map(|(c, e, _)| std::iter::once(*c).chain(e.iter().copied())).collect();
    // The blocks whose cidr contains a prefix are those whose cidr is one of its (at most 33) supernets:
    // found by lookup, not by a walk of every block (egress named ports give one /32 block per pod).
    let mut by_cidr: HashMap<Ipv4Net, Vec<usize>> = HashMap::new();
    for (i, (cidr, _, _)) in blocks.iter().enumerate() {
        by_cidr.entry(cidr.trunc()).or_default().push(i);
    }
    let mut classes: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    for prefix in prefixes {
        let mut members: Vec<usize> = (0..=prefix.prefix_len())
            .filter_map(|len| Ipv4Net::new(prefix.network(), len).ok().map(|n| n.trunc()))
            .filter_map(|supernet| by_cidr.get(&supernet))
            .flatten()
            .copied()
            .filter(|i| !blocks[*i].1.iter().any(|e| e.contains(&prefix)))
            .collect();
        members.sort_unstable();
        let next = classes.len() as u32;
        let class = match classes.get(&members) {
            Some(class) => *class,
            None => {
                for i in &members {
                    let allow = blocks[*i].2;
                    insert_ports(&mut out.policy, ip, direction, PEER_CIDR_CLASS | next, allow.ports, allow.rule);
                }
                classes.insert(members, next);
                next
            }
        };
        out.cidrs.insert(cidr_key(ip, direction, prefix), CidrValue { class });
    }
}
