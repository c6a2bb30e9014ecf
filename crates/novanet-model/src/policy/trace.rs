//! Why a flow is allowed or denied: both directions (egress at the client if it is a pod, ingress at the
//! server if it is a pod), judged by [`lookup`] on the lowered entries, with the deciding rule.

use std::net::Ipv4Addr;

use novanet_common::IDENTITY_WORLD;
use serde::Serialize;

use super::compile::{Compiled, RuleRef, compile};
use super::lookup::{Lookup, lookup};
use super::lower::{MapEntries, lower};
use super::types::{Direction, PodView, PolicyInput, Protocol};

/// One end of the traced flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TraceEnd {
    Pod {
        pod: String,
        ip: Ipv4Addr,
        identity: u32,
    },
    /// Not a pod: judged as `IDENTITY_WORLD` with its CIDR class.
    Address {
        ip: Ipv4Addr,
        identity: u32,
    },
}

impl TraceEnd {
    fn of(input: &PolicyInput, ip: Ipv4Addr) -> TraceEnd {
        match input.pods.iter().find(|p| p.ip == ip) {
            Some(pod) => TraceEnd::Pod { pod: pod.key(), ip, identity: pod.identity },
            None => TraceEnd::Address { ip, identity: IDENTITY_WORLD },
        }
    }

    fn identity(&self) -> u32 {
        match self {
            TraceEnd::Pod { identity, .. } | TraceEnd::Address { identity, .. } => *identity,
        }
    }

    fn is_pod(&self) -> bool {
        matches!(self, TraceEnd::Pod { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// This end is not a pod: no policy of NovaNet applies here.
    NotApplicable,
    NotIsolated,
    Allowed,
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectionTrace {
    pub verdict: Verdict,
    /// The emulated datapath lookup (absent when not applicable).
    pub lookup: Option<Lookup>,
    /// The rule that allowed it.
    pub rule: Option<RuleRef>,
    /// Policies that select the pod in this direction.
    pub selected_by: Vec<String>,
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub from: TraceEnd,
    pub to: TraceEnd,
    pub protocol: Protocol,
    pub port: u16,
    /// At the client (`from`).
    pub egress: DirectionTrace,
    /// At the server (`to`).
    pub ingress: DirectionTrace,
    /// Both directions let the flow open.
    pub allowed: bool,
}

/// Traces a new flow `from` -> `to:port/protocol`; an address that is a pod's is that pod.
pub fn trace(input: &PolicyInput, from: Ipv4Addr, to: Ipv4Addr, port: u16, protocol: Protocol) -> Trace {
    let (from_end, to_end) = (TraceEnd::of(input, from), TraceEnd::of(input, to));
    let local: Vec<Ipv4Addr> =
        [(&from_end, from), (&to_end, to)].iter().filter(|(e, _)| e.is_pod()).map(|(_, ip)| *ip).collect();
    let compiled = compile(input, &local);
    let entries = lower(&compiled);
    let judge = |end: &TraceEnd, local: Ipv4Addr, other: &TraceEnd, other_ip: Ipv4Addr, direction: Direction| {
        let TraceEnd::Pod { pod, .. } = end else {
            return DirectionTrace {
                verdict: Verdict::NotApplicable,
                lookup: None,
                rule: None,
                selected_by: Vec::new(),
                explanation: format!("{local} is not a pod"),
            };
        };
        judge_direction(
            &compiled,
            &entries,
            pod,
            local,
            direction,
            other_ip,
            other.identity(),
            protocol,
            port,
            input.default_deny,
        )
    };
    let egress = judge(&from_end, from, &to_end, to, Direction::Egress);
    let ingress = judge(&to_end, to, &from_end, from, Direction::Ingress);
    let allowed = egress.verdict != Verdict::Denied && ingress.verdict != Verdict::Denied;
    Trace { from: from_end, to: to_end, protocol, port, egress, ingress, allowed }
}

#[allow(clippy::too_many_arguments)]
fn judge_direction(
    compiled: &Compiled,
    entries: &MapEntries,
    pod: &str,
    local: Ipv4Addr,
    direction: Direction,
    peer: Ipv4Addr,
    peer_identity: u32,
    protocol: Protocol,
    port: u16,
    default_deny: bool,
) -> DirectionTrace {
    let dir = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let selected_by =
        compiled.endpoints.get(&local).map(|e| e.direction(direction).selected_by.clone()).unwrap_or_default();
    let result = lookup(entries, local, direction, peer, peer_identity, protocol.number(), port);
    let (verdict, rule, explanation) = match result {
        Lookup::NotIsolated => {
            (Verdict::NotIsolated, None, format!("not isolated: no policy selects {pod} for {dir}"))
        }
        Lookup::Allowed { rule, .. } => {
            let r = compiled.rules.get(&rule).cloned();
            let text = match &r {
                Some(r) => {
                    format!("allowed by {} {dir} rule {} ({}; {})", r.policy, r.rule, r.description, r.ports)
                }
                None => format!("allowed by rule {rule}"),
            };
            (Verdict::Allowed, r, text)
        }
        Lookup::Denied => {
            let text = match (selected_by.is_empty(), default_deny) {
                (true, _) => format!("denied: default deny isolates {pod} for {dir} and no policy allows it"),
                (false, deny) => format!(
                    "denied: no rule of policies {} (which select the pod) allows it{}",
                    selected_by.join(", "),
                    if deny { " (default deny)" } else { "" }
                ),
            };
            (Verdict::Denied, None, text)
        }
    };
    DirectionTrace { verdict, lookup: Some(result), rule, selected_by, explanation }
}

impl PodView {
    /// This pod as a trace end.
    pub fn trace_end(&self) -> TraceEnd {
        TraceEnd::Pod { pod: self.key(), ip: self.ip, identity: self.identity }
    }
}
