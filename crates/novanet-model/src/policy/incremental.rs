//! The compiler kept between changes: [`Incremental::update`] gives exactly what [`compile`] + [`lower`]
//! give for the same input (the tests compare them on random change sequences), but redoes only what a
//! change can have changed:
//!
//! - a policy is parsed again only when it changed, when namespaces or identities changed (its peers
//!   resolve against them), or, for a policy with named ports, when pods changed;
//! - an endpoint is compiled and lowered again only when its pod changed, `default_deny` changed, or a
//!   policy of its namespace was added, removed or parsed differently;
//! - the full [`MapEntries`] are patched by endpoint (every key holds its endpoint).
//!
//! Rule numbers: each policy is numbered alone ([`parse_alone`]); when two policies' numbers meet (a hash
//! collision, for which [`compile`] probes in name order) the update falls back to the full compile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::compile::{Compiled, EndpointPolicy, RuleRef, compile, endpoint_policy};
use super::lower::{MapEntries, lower, lower_endpoint};
use super::parse::{Notice, ParsedPolicy, parse_alone, policy_id};
use super::types::{PodView, PolicyInput};
use crate::identity::IdentityLabels;

struct CachedPolicy {
    source: NetworkPolicy,
    parsed: Arc<ParsedPolicy>,
    rules: BTreeMap<u32, RuleRef>,
    notices: Vec<Notice>,
    reads_pods: bool,
    /// Changes whenever `parsed` does.
    generation: u64,
}

struct CachedEndpoint {
    pod: Option<PodView>,
    /// Generations of the policies that select it, in name order.
    selecting: Vec<u64>,
    policy: Arc<EndpointPolicy>,
    entries: MapEntries,
}

/// What one update redid (for logs and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    pub policies_parsed: usize,
    pub endpoints_compiled: usize,
    /// The update compiled everything (first update, or a rule-number collision).
    pub full: bool,
}

#[derive(Default)]
pub struct Incremental {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    identities: BTreeMap<u32, IdentityLabels>,
    pods: Vec<PodView>,
    default_deny: bool,
    /// By (namespace, name): the order of [`compile`].
    policies: BTreeMap<(String, String), CachedPolicy>,
    endpoints: BTreeMap<Ipv4Addr, CachedEndpoint>,
    entries: MapEntries,
    rules: BTreeMap<u32, RuleRef>,
    notices: Vec<Notice>,
    next_generation: u64,
    primed: bool,
}

impl Incremental {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map entries of the last update (what [`lower`] of [`compile`] gives).
    pub fn entries(&self) -> &MapEntries {
        &self.entries
    }

    /// The compiled policy of the last update (what [`compile`] gives); endpoint policies are shared.
    pub fn compiled(&self) -> Compiled {
        Compiled {
            endpoints: self.endpoints.iter().map(|(ip, e)| (*ip, e.policy.clone())).collect(),
            rules: self.rules.clone(),
            notices: self.notices.clone(),
        }
    }

    /// Brings the state to `input` for the local `endpoints`.
    pub fn update(&mut self, input: &PolicyInput, endpoints: &[Ipv4Addr]) -> UpdateStats {
        if !self.primed {
            (self.policies, self.endpoints, self.entries) = Default::default();
        }
        let world = !self.primed || self.namespaces != *input.namespaces || self.identities != *input.identities;
        let pods_changed = world || self.pods != input.pods;
        let mut stats = UpdateStats::default();
        let mut changed_namespaces: BTreeSet<String> = BTreeSet::new();
        let mut resolved = HashMap::new();
        let mut seen = BTreeSet::new();
        for p in input.policies {
            let id = policy_id(p);
            seen.insert(id.clone());
            let stale = match self.policies.get(&id) {
                None => true,
                Some(cached) => world || (pods_changed && cached.reads_pods) || cached.source != *p,
            };
            if !stale {
                continue;
            }
            stats.policies_parsed += 1;
            let alone = parse_alone(input, &mut resolved, p);
            if let Some(cached) = self.policies.get_mut(&id) {
                if *cached.parsed == alone.policy {
                    // Same meaning (e.g. a resync): rules and notices may still name other peers or pods.
                    cached.source = p.clone();
                    (cached.rules, cached.notices, cached.reads_pods) = (alone.rules, alone.notices, alone.reads_pods);
                    continue;
                }
            }
            self.next_generation += 1;
            changed_namespaces.insert(id.0.clone());
            self.policies.insert(id, CachedPolicy {
                source: p.clone(),
                parsed: Arc::new(alone.policy),
                rules: alone.rules,
                notices: alone.notices,
                reads_pods: alone.reads_pods,
                generation: self.next_generation,
            });
        }
        self.policies.retain(|id, _| {
            let keep = seen.contains(id);
            if !keep {
                changed_namespaces.insert(id.0.clone());
            }
            keep
        });
        // Rule numbers and notices, in name order.
        let mut rules = BTreeMap::new();
        let mut collision = false;
        for cached in self.policies.values() {
            for (number, rule) in &cached.rules {
                collision |= rules.insert(*number, rule.clone()).is_some();
            }
        }
        if collision {
            return self.full(input, endpoints);
        }
        self.rules = rules;
        self.notices = self.policies.values().flat_map(|c| c.notices.iter().cloned()).collect();
        if world || pods_changed {
            self.namespaces = input.namespaces.clone();
            self.identities = input.identities.clone();
            self.pods = input.pods.to_vec();
        }
        let deny_changed = !self.primed || self.default_deny != input.default_deny;
        self.default_deny = input.default_deny;
        self.primed = true;

        let pods: BTreeMap<Ipv4Addr, &PodView> = input.pods.iter().map(|p| (p.ip, p)).collect();
        let mut by_namespace: BTreeMap<&str, Vec<&CachedPolicy>> = BTreeMap::new();
        for ((namespace, _), cached) in &self.policies {
            by_namespace.entry(namespace.as_str()).or_default().push(cached);
        }
        let wanted: BTreeSet<Ipv4Addr> = endpoints.iter().copied().collect();
        let gone: Vec<Ipv4Addr> = self.endpoints.keys().filter(|ip| !wanted.contains(ip)).copied().collect();
        for ip in gone {
            if let Some(old) = self.endpoints.remove(&ip) {
                remove_entries(&mut self.entries, &old.entries);
            }
        }
        for ip in &wanted {
            let pod = pods.get(ip).copied();
            let cached = self.endpoints.get(ip);
            let unchanged = cached.is_some_and(|c| {
                !deny_changed
                    && c.pod.as_ref() == pod
                    && pod.is_none_or(|p| !changed_namespaces.contains(&p.namespace))
            });
            if unchanged {
                continue;
            }
            let in_namespace = pod.and_then(|p| by_namespace.get(p.namespace.as_str())).map(Vec::as_slice).unwrap_or(&[]);
            let selecting: Vec<&CachedPolicy> =
                in_namespace.iter().copied().filter(|c| pod.is_some_and(|p| c.parsed.selects(p))).collect();
            let generations: Vec<u64> = selecting.iter().map(|c| c.generation).collect();
            if let Some(c) = cached
                && c.pod.as_ref() == pod
                && c.selecting == generations
                && !deny_changed
            {
                continue;
            }
            stats.endpoints_compiled += 1;
            let policy = endpoint_policy(pod, selecting.iter().map(|c| c.parsed.as_ref()), input.default_deny);
            let mut entries = MapEntries::default();
            lower_endpoint(&mut entries, *ip, &policy);
            if let Some(old) = self.endpoints.get(ip) {
                remove_entries(&mut self.entries, &old.entries);
            }
            add_entries(&mut self.entries, &entries);
            self.endpoints.insert(*ip, CachedEndpoint {
                pod: pod.cloned(),
                selecting: generations,
                policy: Arc::new(policy),
                entries,
            });
        }
        stats
    }

    /// Everything from scratch with [`compile`] and [`lower`]; the caches are dropped, so the next update
    /// starts over too.
    fn full(&mut self, input: &PolicyInput, endpoints: &[Ipv4Addr]) -> UpdateStats {
        let compiled = compile(input, endpoints);
        self.entries = lower(&compiled);
        self.rules = compiled.rules;
        self.notices = compiled.notices;
        self.endpoints = compiled
            .endpoints
            .into_iter()
            .map(|(ip, policy)| {
                let entry = CachedEndpoint { pod: None, selecting: Vec::new(), policy, entries: MapEntries::default() };
                (ip, entry)
            })
            .collect();
        // Entries per endpoint are unknown now: the next update must not patch, it starts over.
        self.policies.clear();
        self.primed = false;
        let parsed = input.policies.len();
        UpdateStats { policies_parsed: parsed, endpoints_compiled: endpoints.len(), full: true }
    }
}

fn remove_entries(all: &mut MapEntries, of: &MapEntries) {
    for key in of.policy.keys() {
        all.policy.remove(key);
    }
    for key in of.cidrs.keys() {
        all.cidrs.remove(key);
    }
    for ip in of.isolation.keys() {
        all.isolation.remove(ip);
    }
}

fn add_entries(all: &mut MapEntries, of: &MapEntries) {
    all.policy.extend(of.policy.iter().map(|(k, v)| (*k, *v)));
    all.cidrs.extend(of.cidrs.iter().map(|(k, v)| (*k, *v)));
    all.isolation.extend(of.isolation.iter().map(|(k, v)| (*k, *v)));
}
