//! The policy compiler: Kubernetes NetworkPolicies + pods + namespaces + identities -> the exact eBPF map
//! entries of `novanet_common::policy`, their diff, and a trace that emulates the datapath on them.
//!
//! Pipeline (all pure):
//! 1. [`compile`]: per local endpoint and direction, isolation and the allowed (peer, ports) pairs, each
//!    with the index of the [`RuleRef`] (policy `ns/name`, direction, rule, peer) that allows it, plus
//!    [`Notice`]s for bad input. A bad peer or port is skipped (it allows nothing; a rule whose peers or
//!    ports were all bad allows nothing, never "everything"), the rest of its policy and every other
//!    policy still apply.
//! 2. [`lower`]: [`MapEntries`], the keys and values of `NOVANET_POLICY`, `NOVANET_POLICY_CIDR` and the
//!    isolation bits of `NOVANET_IPCACHE` for the local endpoints.
//! 3. [`diff`]: what to write, in the order that never lets a packet see an allow neither state has.
//! 4. [`Incremental`]: steps 1 and 2 kept between changes, redoing only what a change can affect (the
//!    agent's and the benchmark's way; equal to [`compile`] + [`lower`] by test).
//! 5. [`trace`]: the verdict of both directions of a flow, by looking the lowered entries up as the
//!    datapath does ([`lookup`]).
//!
//! Semantics are Kubernetes NetworkPolicy's (see the tests, written like the upstream netpol e2e suite):
//! - `policyTypes` explicit, or Ingress always plus Egress iff `spec.egress` is present.
//! - A pod is isolated in a direction iff a policy of its namespace selects it with that type (or
//!   `default_deny`); then allowed = union of all rules of all such policies.
//! - Peers OR, ports OR, absent/empty = all. Peer: podSelector (policy's namespace), namespaceSelector,
//!   both (AND), or ipBlock (any address, pods included, in cidr and not in an except).
//! - Named ports: ingress names resolve on the local (destination) pod; egress names resolve per
//!   destination pod, lowered as a /32 CIDR peer per pod with that pod's number. Unresolved = nothing.
//!
//! Rule numbers ([`PolicyValue::rule`](novanet_common::PolicyValue)) are stable hashes of where a rule is
//! (policy, direction, rule, peer), so agents agree and one policy change rewrites only its own entries.

mod compile;
mod diff;
mod incremental;
mod lookup;
mod lower;
mod parse;
mod ports;
mod selector;
mod trace;
mod types;

#[cfg(test)]
mod tests;

pub use compile::{Allow, Compiled, DirectionPolicy, EndpointPolicy, Peer, Ports, RuleRef, compile};
pub use diff::{MapDiff, diff, removals, upserts};
pub use incremental::{Incremental, UpdateStats};
pub use lookup::{Lookup, Matched, lookup};
pub use lower::{CidrEntries, MapEntries, PolicyEntries, lower};
pub use parse::{Notice, Problem};
pub use ports::port_prefixes;
pub use trace::{DirectionTrace, Trace, TraceEnd, Verdict, trace};
pub use types::{Direction, NamedPort, PodView, PolicyInput, Protocol};
