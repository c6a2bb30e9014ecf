//! Validating NetworkPolicies into [`ParsedPolicy`]: selectors checked, peers resolved to identities or
//! CIDRs, ports checked, egress named ports resolved per destination pod, and the [`RuleRef`] table.
//! Everything here depends on the cluster only, not on which endpoints are local, so every node gets the
//! same rule indices and the same notices.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use novanet_common::IDENTITY_CLUSTER_MIN;
use serde::Serialize;

use super::compile::RuleRef;
use super::selector::Selector;
use super::types::{Direction, PodView, PolicyInput, Protocol};
use crate::identity::NAMESPACE_NAME_LABEL;

/// Bad input the compiler skipped (fail closed: the skipped part allows nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Where in the policy: `spec`, `ingress rule 0 peer 1`, `egress rule 2 port 0`.
    pub location: String,
    pub problem: Problem,
    /// `problem` as text.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    #[error("namespace {namespace} does not exist")]
    NamespaceMissing { namespace: String },
    #[error("invalid selector: {reason}")]
    InvalidSelector { reason: String },
    #[error("unknown policy type {policy_type:?}")]
    UnknownPolicyType { policy_type: String },
    #[error("peer has neither selectors nor ipBlock")]
    EmptyPeer,
    #[error("peer combines ipBlock with a selector")]
    IpBlockWithSelector,
    #[error("invalid CIDR {cidr:?}")]
    InvalidCidr { cidr: String },
    #[error("IPv6 CIDR {cidr} ignored: IPv4 only")]
    Ipv6Cidr { cidr: String },
    #[error("except {except} is not inside cidr {cidr}")]
    ExceptOutsideCidr { cidr: String, except: String },
    #[error("unknown protocol {protocol:?}")]
    UnknownProtocol { protocol: String },
    #[error("port {port} is out of range 1-65535")]
    PortOutOfRange { port: i32 },
    #[error("endPort {end_port} with named port {name:?}")]
    EndPortWithName { name: String, end_port: i32 },
    #[error("endPort {end_port} without a port")]
    EndPortWithoutPort { end_port: i32 },
    #[error("endPort {end_port} is below port {port}")]
    EndPortBelowPort { port: i32, end_port: i32 },
    #[error("port name {name:?} ({protocol}) resolves on no pod: it allows nothing")]
    UnresolvedPortName { name: String, protocol: Protocol },
}

/// A destination pod an egress named port resolved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedTarget {
    pub ip: Ipv4Addr,
    pub pod: String,
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerKind {
    Any,
    Identities(Vec<u32>),
    Cidr { cidr: Ipv4Net, except: Vec<Ipv4Net> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPeer {
    pub rule: u32,
    pub kind: PeerKind,
    /// Egress only: every (pod, number) a named port of the rule resolves on among this peer's pods.
    pub named_targets: Vec<NamedTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParsedPort {
    AllPorts(Protocol),
    Range(Protocol, u16, u16),
    Name(Protocol, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedRule {
    pub peers: Vec<ParsedPeer>,
    /// `None`: all ports of all protocols. `Some(empty)`: every port entry was bad, nothing.
    pub ports: Option<Vec<ParsedPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPolicy {
    pub id: String,
    pub namespace: String,
    /// `None`: the selector is invalid and selects nothing.
    pub selector: Option<Selector>,
    pub ingress: Option<Vec<ParsedRule>>,
    pub egress: Option<Vec<ParsedRule>>,
}

impl ParsedPolicy {
    pub(crate) fn selects(&self, pod: &PodView) -> bool {
        pod.namespace == self.namespace && self.selector.as_ref().is_some_and(|s| s.matches(&pod.labels))
    }

    pub(crate) fn rules(&self, direction: Direction) -> Option<&Vec<ParsedRule>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// The parsed policies (sorted by namespace and name), the rule table and the notices.
pub(crate) struct Parsed {
    pub policies: Vec<ParsedPolicy>,
    pub rules: BTreeMap<u32, RuleRef>,
    pub notices: Vec<Notice>,
}

struct Ctx<'a, 'b> {
    input: &'a PolicyInput<'b>,
    rules: BTreeMap<u32, RuleRef>,
    notices: Vec<Notice>,
    /// Identities a (namespace, namespaceSelector, podSelector) resolved to: clusters repeat selectors a
    /// lot, and each resolution walks every identity.
    resolved: HashMap<String, Vec<u32>>,
}

/// The number of a rule (`PolicyValue::rule`): a hash of where it is (policy, direction, rule, peer), so
/// adding or removing one policy leaves every other rule's number, and so its map values, unchanged (a
/// table index would renumber every later rule and rewrite their entries). A collision takes the next free
/// number; policies are parsed in name order, so every agent picks the same.
fn stable_rule_id(rules: &BTreeMap<u32, RuleRef>, policy: &str, direction: Direction, rule: usize, peer: Option<usize>) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{policy}\n{direction:?}\n{rule}\n{peer:?}");
    for b in text.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut id = (hash ^ (hash >> 32)) as u32;
    while rules.contains_key(&id) {
        id = id.wrapping_add(1);
    }
    id
}

impl Ctx<'_, '_> {
    fn notice(&mut self, policy: &str, location: impl Into<String>, problem: Problem) {
        let message = problem.to_string();
        self.notices.push(Notice { policy: policy.into(), location: location.into(), problem, message });
    }
}

pub(crate) fn parse(input: &PolicyInput) -> Parsed {
    let mut sorted: Vec<&NetworkPolicy> = input.policies.iter().collect();
    sorted.sort_by_key(|p| policy_id(p));
    let mut ctx = Ctx { input, rules: BTreeMap::new(), notices: Vec::new(), resolved: HashMap::new() };
    let policies = sorted.into_iter().map(|p| parse_policy(&mut ctx, p)).collect();
    Parsed { policies, rules: ctx.rules, notices: ctx.notices }
}

/// One policy parsed alone: its rules numbered without regard to other policies' (so equal to what
/// [`parse`] gives whenever no two policies' numbers meet, which the caller checks), its notices, and
/// whether it reads pods (named ports: then a change of any pod may change it).
pub(crate) struct ParsedAlone {
    pub policy: ParsedPolicy,
    pub rules: BTreeMap<u32, RuleRef>,
    pub notices: Vec<Notice>,
    pub reads_pods: bool,
}

/// [`parse`] of one policy; `resolved` memoizes selector resolutions across calls with the same input.
pub(crate) fn parse_alone(
    input: &PolicyInput,
    resolved: &mut HashMap<String, Vec<u32>>,
    p: &NetworkPolicy,
) -> ParsedAlone {
    let mut ctx = Ctx { input, rules: BTreeMap::new(), notices: Vec::new(), resolved: std::mem::take(resolved) };
    let policy = parse_policy(&mut ctx, p);
    *resolved = ctx.resolved;
    let named = |rules: &Option<Vec<ParsedRule>>| {
        rules.iter().flatten().flat_map(|r| r.ports.iter().flatten()).any(|p| matches!(p, ParsedPort::Name(..)))
    };
    let reads_pods = named(&policy.ingress) || named(&policy.egress);
    ParsedAlone { policy, rules: ctx.rules, notices: ctx.notices, reads_pods }
}

fn policy_namespace(p: &NetworkPolicy) -> String {
    p.metadata.namespace.clone().unwrap_or_else(|| "default".into())
}

pub(crate) fn policy_id(p: &NetworkPolicy) -> (String, String) {
    (policy_namespace(p), p.metadata.name.clone().unwrap_or_default())
}

fn parse_policy(ctx: &mut Ctx, p: &NetworkPolicy) -> ParsedPolicy {
    let (namespace, name) = policy_id(p);
    let id = format!("{namespace}/{name}");
    if !ctx.input.namespaces.contains_key(&namespace) {
        ctx.notice(&id, "metadata.namespace", Problem::NamespaceMissing { namespace: namespace.clone() });
    }
    let spec = p.spec.clone().unwrap_or_default();
    let selector = match Selector::parse(&spec.pod_selector.clone().unwrap_or_default()) {
        Ok(s) => Some(s),
        Err(reason) => {
            ctx.notice(&id, "spec.podSelector", Problem::InvalidSelector { reason });
            None
        }
    };
    let (mut ingress_type, mut egress_type) = (true, spec.egress.is_some());
    if let Some(types) = &spec.policy_types {
        (ingress_type, egress_type) = (false, false);
        for t in types {
            match t.as_str() {
                "Ingress" => ingress_type = true,
                "Egress" => egress_type = true,
                other => {
                    ctx.notice(&id, "spec.policyTypes", Problem::UnknownPolicyType { policy_type: other.into() })
                }
            }
        }
    }
    let mut policy = ParsedPolicy { id, namespace, selector, ingress: None, egress: None };
    if ingress_type {
        let rules = spec.ingress.iter().flatten().map(|r| (r.from.clone(), r.ports.clone()));
        policy.ingress = Some(parse_rules(ctx, &policy, Direction::Ingress, rules.collect()));
    }
    if egress_type {
        let rules = spec.egress.iter().flatten().map(|r| (r.to.clone(), r.ports.clone()));
        policy.egress = Some(parse_rules(ctx, &policy, Direction::Egress, rules.collect()));
    }
    policy
}

type RawRule = (Option<Vec<NetworkPolicyPeer>>, Option<Vec<NetworkPolicyPort>>);

fn parse_rules(ctx: &mut Ctx, policy: &ParsedPolicy, direction: Direction, raw: Vec<RawRule>) -> Vec<ParsedRule> {
    let dir = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let mut rules = Vec::new();
    for (index, (peers, ports)) in raw.into_iter().enumerate() {
        let ports = parse_ports(ctx, &policy.id, &format!("{dir} rule {index}"), ports.unwrap_or_default());
        let ports_text = describe_ports(&ports);
        let mut parsed = ParsedRule { peers: Vec::new(), ports };
        let peers = peers.unwrap_or_default();
        let kinds: Vec<(Option<usize>, PeerKind, String)> = if peers.is_empty() {
            vec![(None, PeerKind::Any, "any peer".into())]
        } else {
            let mut kinds = Vec::new();
            for (peer_index, peer) in peers.iter().enumerate() {
                let location = format!("{dir} rule {index} peer {peer_index}");
                match parse_peer(ctx.input, &mut ctx.resolved, &policy.namespace, peer) {
                    Ok((kind, text)) => kinds.push((Some(peer_index), kind, text)),
                    Err(problem) => ctx.notice(&policy.id, location, problem),
                }
            }
            kinds
        };
        for (peer, kind, description) in kinds {
            let rule = stable_rule_id(&ctx.rules, &policy.id, direction, index, peer);
            ctx.rules.insert(rule, RuleRef {
                policy: policy.id.clone(),
                direction,
                rule: index,
                peer,
                description,
                ports: ports_text.clone(),
            });
            let named_targets = match direction {
                Direction::Egress => egress_named_targets(ctx.input, &kind, parsed.ports.as_deref()),
                Direction::Ingress => Vec::new(),
            };
            parsed.peers.push(ParsedPeer { rule, kind, named_targets });
        }
        // A named port that resolves nowhere: ingress on the pods the policy selects, egress on the peers.
        for port in parsed.ports.iter().flatten() {
            let ParsedPort::Name(protocol, name) = port else { continue };
            let resolves = match direction {
                Direction::Ingress => ctx
                    .input
                    .pods
                    .iter()
                    .any(|pod| policy.selects(pod) && pod.named_port(name, *protocol).is_some()),
                Direction::Egress => parsed
                    .peers
                    .iter()
                    .any(|p| p.named_targets.iter().any(|t| t.protocol == *protocol && &t.name == name)),
            };
            if !resolves {
                ctx.notice(
                    &policy.id,
                    format!("{dir} rule {index}"),
                    Problem::UnresolvedPortName { name: name.clone(), protocol: *protocol },
                );
            }
        }
        rules.push(parsed);
    }
    rules
}

/// Validates one peer; the text describes it for [`RuleRef::description`].
fn parse_peer(
    input: &PolicyInput,
    resolved: &mut HashMap<String, Vec<u32>>,
    namespace: &str,
    peer: &NetworkPolicyPeer,
) -> Result<(PeerKind, String), Problem> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(Problem::IpBlockWithSelector);
        }
        let cidr = parse_cidr(&block.cidr)?;
        let mut except = Vec::new();
        for e in block.except.iter().flatten() {
            let net = parse_cidr(e)?;
            if !cidr.contains(&net) {
                return Err(Problem::ExceptOutsideCidr { cidr: block.cidr.clone(), except: e.clone() });
            }
            except.push(net);
        }
        let mut text = format!("ipBlock {cidr}");
        if !except.is_empty() {
            let list: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            text.push_str(&format!(" except {}", list.join(",")));
        }
        return Ok((PeerKind::Cidr { cidr, except }, text));
    }
    let parse = |s: &Option<_>| {
        s.as_ref().map(Selector::parse).transpose().map_err(|reason| Problem::InvalidSelector { reason })
    };
    let pod_sel = parse(&peer.pod_selector)?;
    let ns_sel = parse(&peer.namespace_selector)?;
    let text = match (&ns_sel, &pod_sel) {
        (None, None) => return Err(Problem::EmptyPeer),
        (None, Some(p)) => format!("podSelector {} in {namespace}", p.describe()),
        (Some(n), None) => format!("namespaceSelector {}", n.describe()),
        (Some(n), Some(p)) => format!("namespaceSelector {} and podSelector {}", n.describe(), p.describe()),
    };
    let memo = format!("{namespace}\0{ns_sel:?}\0{pod_sel:?}");
    if let Some(identities) = resolved.get(&memo) {
        return Ok((PeerKind::Identities(identities.clone()), text));
    }
    let identities: Vec<u32> = input
        .identities
        .iter()
        .filter(|(id, _)| **id >= IDENTITY_CLUSTER_MIN)
        .filter(|(_, l)| match &ns_sel {
            None => l.namespace == namespace,
            Some(n) => n.matches_by(|k| {
                if k == NAMESPACE_NAME_LABEL {
                    Some(l.namespace.as_str())
                } else {
                    l.namespace_labels.get(k).map(String::as_str)
                }
            }),
        })
        .filter(|(_, l)| pod_sel.as_ref().is_none_or(|p| p.matches(&l.pod)))
        .map(|(id, _)| *id)
        .collect();
    resolved.insert(memo, identities.clone());
    Ok((PeerKind::Identities(identities), text))
}

/// An IPv4 CIDR (host bits cleared, as Kubernetes accepts them); IPv6 is refused.
fn parse_cidr(text: &str) -> Result<Ipv4Net, Problem> {
    match IpNet::from_str(text) {
        Ok(IpNet::V4(net)) => Ok(net.trunc()),
        Ok(IpNet::V6(_)) => Err(Problem::Ipv6Cidr { cidr: text.into() }),
        Err(_) => Err(Problem::InvalidCidr { cidr: text.into() }),
    }
}

/// `None` when the list is empty (all ports); bad entries are skipped with a notice.
fn parse_ports(ctx: &mut Ctx, policy: &str, rule: &str, raw: Vec<NetworkPolicyPort>) -> Option<Vec<ParsedPort>> {
    if raw.is_empty() {
        return None;
    }
    let mut ports = Vec::new();
    for (index, p) in raw.iter().enumerate() {
        let location = format!("{rule} port {index}");
        match parse_port(p) {
            Ok(port) => ports.push(port),
            Err(problem) => ctx.notice(policy, location, problem),
        }
    }
    Some(ports)
}

fn parse_port(p: &NetworkPolicyPort) -> Result<ParsedPort, Problem> {
    let protocol = match &p.protocol {
        None => Protocol::Tcp,
        Some(text) => Protocol::parse(text).ok_or_else(|| Problem::UnknownProtocol { protocol: text.clone() })?,
    };
    let number = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0).ok_or(Problem::PortOutOfRange { port: n });
    match (&p.port, p.end_port) {
        (None, None) => Ok(ParsedPort::AllPorts(protocol)),
        (None, Some(end_port)) => Err(Problem::EndPortWithoutPort { end_port }),
        (Some(IntOrString::String(name)), None) => Ok(ParsedPort::Name(protocol, name.clone())),
        (Some(IntOrString::String(name)), Some(end_port)) => {
            Err(Problem::EndPortWithName { name: name.clone(), end_port })
        }
        (Some(IntOrString::Int(port)), None) => Ok(ParsedPort::Range(protocol, number(*port)?, number(*port)?)),
        (Some(IntOrString::Int(port)), Some(end_port)) => {
            let first = number(*port)?;
            let last = number(end_port)?;
            if last < first {
                return Err(Problem::EndPortBelowPort { port: *port, end_port });
            }
            Ok(ParsedPort::Range(protocol, first, last))
        }
    }
}

fn describe_ports(ports: &Option<Vec<ParsedPort>>) -> String {
    let Some(ports) = ports else { return "all ports".into() };
    if ports.is_empty() {
        return "no valid port".into();
    }
    let parts: Vec<String> = ports
        .iter()
        .map(|p| match p {
            ParsedPort::AllPorts(proto) => format!("{proto}/*"),
            ParsedPort::Range(proto, a, b) if a == b => format!("{proto}/{a}"),
            ParsedPort::Range(proto, a, b) => format!("{proto}/{a}-{b}"),
            ParsedPort::Name(proto, name) => format!("{proto}/{name}"),
        })
        .collect();
    parts.join(", ")
}

/// Egress named ports: every pod matched by the peer that defines the name with the protocol.
fn egress_named_targets(input: &PolicyInput, kind: &PeerKind, ports: Option<&[ParsedPort]>) -> Vec<NamedTarget> {
    let names: Vec<(Protocol, &String)> = ports
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            ParsedPort::Name(proto, name) => Some((*proto, name)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let matches = |pod: &PodView| match kind {
        PeerKind::Any => true,
        PeerKind::Identities(ids) => ids.binary_search(&pod.identity).is_ok(),
        PeerKind::Cidr { cidr, except } => cidr.contains(&pod.ip) && !except.iter().any(|e| e.contains(&pod.ip)),
    };
    let mut targets = Vec::new();
    for pod in input.pods.iter().filter(|p| matches(p)) {
        for (protocol, name) in &names {
            if let Some(port) = pod.named_port(name, *protocol) {
                let name = (*name).clone();
                targets.push(NamedTarget { ip: pod.ip, pod: pod.key(), name, protocol: *protocol, port });
            }
        }
    }
    targets
}

/// Policies by namespace, for the per-endpoint pass.
pub(crate) fn by_namespace(policies: &[ParsedPolicy]) -> BTreeMap<&str, Vec<&ParsedPolicy>> {
    let mut map: BTreeMap<&str, Vec<&ParsedPolicy>> = BTreeMap::new();
    for p in policies {
        map.entry(p.namespace.as_str()).or_default().push(p);
    }
    map
}
