//! Per local endpoint: isolation and the allowed (peer, ports) pairs of each direction, with provenance.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::parse::{Notice, ParsedPeer, ParsedPolicy, ParsedPort, PeerKind, by_namespace, parse};
use super::types::{Direction, PodView, PolicyInput, Protocol};

/// One compiled rule: its key in [`Compiled::rules`] is `PolicyValue::rule` (a stable number, see `parse.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `namespace/name`.
    pub policy: String,
    pub direction: Direction,
    /// Index in `spec.ingress` / `spec.egress`.
    pub rule: usize,
    /// Index in `from` / `to`; `None` for a rule with no peers (all peers).
    pub peer: Option<usize>,
    /// The peer: `any peer`, `podSelector pod=a in x`, `ipBlock 10.0.0.0/8 except 10.1.0.0/16`, ...
    pub description: String,
    /// The rule's ports: `all ports`, `TCP/80, UDP/81-90, TCP/serve-80`.
    pub ports: String,
}

/// Who an [`Allow`] admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Peer {
    /// Every address (a rule without peers): `PEER_ANY`.
    Any,
    /// Pods of one identity.
    Identity { identity: u32 },
    /// Addresses in `cidr` and in no `except` (a CIDR class).
    Cidr { cidr: Ipv4Net, except: Vec<Ipv4Net> },
    /// One destination pod an egress named port resolved on: a /32 CIDR class.
    NamedPortPod { ip: Ipv4Addr, pod: String },
}

/// Which ports an [`Allow`] admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Ports {
    /// All protocols, all ports.
    All,
    /// Every port of one protocol.
    Protocol { protocol: Protocol },
    /// `first..=last` of one protocol.
    Range { protocol: Protocol, first: u16, last: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allow {
    pub peer: Peer,
    pub ports: Ports,
    /// Index in [`Compiled::rules`].
    pub rule: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectionPolicy {
    pub isolated: bool,
    /// Policies (`ns/name`) that select the endpoint in this direction.
    pub selected_by: Vec<String>,
    pub allows: Vec<Allow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    /// `ns/name`, `None` for an endpoint with no pod in the input (isolated only under default deny).
    pub pod: Option<String>,
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compiled {
    /// Shared with the incremental compiler's cache ([`super::Incremental`]): a snapshot costs no copy.
    pub endpoints: BTreeMap<Ipv4Addr, Arc<EndpointPolicy>>,
    pub rules: BTreeMap<u32, RuleRef>,
    pub notices: Vec<Notice>,
}

/// Compiles the policies of `input` for `endpoints` (the local pods' addresses).
pub fn compile(input: &PolicyInput, endpoints: &[Ipv4Addr]) -> Compiled {
    let parsed = parse(input);
    let namespaced = by_namespace(&parsed.policies);
    let pods: BTreeMap<Ipv4Addr, &PodView> = input.pods.iter().map(|p| (p.ip, p)).collect();
    let mut compiled = BTreeMap::new();
    for ip in endpoints {
        let pod = pods.get(ip).copied();
        let policies = pod.and_then(|pod| namespaced.get(pod.namespace.as_str()));
        let selecting = policies.into_iter().flatten().copied().filter(|p| pod.is_some_and(|pod| p.selects(pod)));
        compiled.insert(*ip, Arc::new(endpoint_policy(pod, selecting, input.default_deny)));
    }
    Compiled { endpoints: compiled, rules: parsed.rules, notices: parsed.notices }
}

/// The policy of one local endpoint: `pod` (`None`: no Pod in the input) and the policies of its
/// namespace that select it, in name order.
pub(crate) fn endpoint_policy<'a>(
    pod: Option<&PodView>,
    selecting: impl Iterator<Item = &'a ParsedPolicy>,
    default_deny: bool,
) -> EndpointPolicy {
    let mut endpoint = EndpointPolicy {
        pod: pod.map(PodView::key),
        ingress: DirectionPolicy { isolated: default_deny, ..Default::default() },
        egress: DirectionPolicy { isolated: default_deny, ..Default::default() },
    };
    if let Some(pod) = pod {
        for policy in selecting {
            apply(policy, pod, Direction::Ingress, &mut endpoint.ingress);
            apply(policy, pod, Direction::Egress, &mut endpoint.egress);
        }
    }
    endpoint
}

/// Adds what `policy` (which selects `pod`) allows in `direction`.
fn apply(policy: &ParsedPolicy, pod: &PodView, direction: Direction, out: &mut DirectionPolicy) {
    let Some(rules) = policy.rules(direction) else { return };
    out.isolated = true;
    out.selected_by.push(policy.id.clone());
    for rule in rules {
        for peer in &rule.peers {
            match &rule.ports {
                None => push_allows(peer, Ports::All, out),
                Some(ports) => {
                    for port in ports {
                        let ports = match port {
                            ParsedPort::AllPorts(protocol) => Ports::Protocol { protocol: *protocol },
                            ParsedPort::Range(protocol, first, last) => {
                                Ports::Range { protocol: *protocol, first: *first, last: *last }
                            }
                            ParsedPort::Name(protocol, name) => {
                                if direction == Direction::Egress {
                                    named_egress(peer, *protocol, name, out);
                                    continue;
                                }
                                let Some(n) = pod.named_port(name, *protocol) else { continue };
                                Ports::Range { protocol: *protocol, first: n, last: n }
                            }
                        };
                        push_allows(peer, ports, out);
                    }
                }
            }
        }
    }
}

/// One [`Allow`] of `ports` per peer `peer` stands for (every identity it resolved to, or its block).
fn push_allows(peer: &ParsedPeer, ports: Ports, out: &mut DirectionPolicy) {
    let rule = peer.rule;
    match &peer.kind {
        PeerKind::Any => out.allows.push(Allow { peer: Peer::Any, ports, rule }),
        PeerKind::Identities(ids) => {
            out.allows.extend(ids.iter().map(|id| Allow { peer: Peer::Identity { identity: *id }, ports, rule }))
        }
        PeerKind::Cidr { cidr, except } => {
            out.allows.push(Allow { peer: Peer::Cidr { cidr: *cidr, except: except.clone() }, ports, rule })
        }
    }
}

fn named_egress(peer: &ParsedPeer, protocol: Protocol, name: &str, out: &mut DirectionPolicy) {
    for t in peer.named_targets.iter().filter(|t| t.protocol == protocol && t.name == name) {
        out.allows.push(Allow {
            peer: Peer::NamedPortPod { ip: t.ip, pod: t.pod.clone() },
            ports: Ports::Range { protocol, first: t.port, last: t.port },
            rule: peer.rule,
        });
    }
}
