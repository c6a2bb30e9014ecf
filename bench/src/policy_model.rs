//! The NetworkPolicy inputs of the policy benchmarks, compiled exactly as the agent compiles them
//! (`novanet_model::policy::{compile, lower}`), and the ipcache that goes with them.
//!
//! Two models, both with the lab's two real pods `bench/client` (`role=client`) and `bench/server`
//! (`role=server`):
//! - [`Model::many_rules`]: `n` policies selecting the server, policy `i` allowing TCP/8080 from the
//!   identity `peer=p<i>` (an identity with no pod: selectors match identities, so each policy gives one
//!   `NOVANET_POLICY` entry of the server), plus `allow-client` (everything from `role=client`). The server
//!   is ingress-isolated; the client is selected by nothing.
//! - [`Model::scale`]: `pods` pods in all (the two real ones plus simulated endpoints, i.e. addresses of
//!   the pod CIDR with labels but no namespace or veth: the compiler and the maps cannot tell them from
//!   pods, and no packet goes to them) and `policies` policies in all (background ones in the style of the
//!   model's scale test, `isolate-server`, and the probe policy `allow-probe`: UDP [`PROBE_PORT`] from the
//!   client to the server). Every address is local to the one node (the worst case for one agent: it
//!   compiles and holds entries for all of them). Adding or removing `allow-probe` is the measured change;
//!   it sorts first (rule indices follow policies by namespace and name), so the change also renumbers
//!   every later rule and rewrites the `rule` value of most entries: the largest diff one policy can make.
//!
//! Invariant: the client and the server keep their identities in every model, so switching models never
//! changes who they are, only what is allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Context;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use novanet_common::{GATEWAY_V4, IDENTITY_HOST, IpcacheValue};
use novanet_model::policy::{MapEntries, NamedPort, PodView, PolicyInput, Protocol, compile, lower};
use novanet_model::{IdentityLabels, IdentityTable};
use serde_json::{Value, json};

/// UDP port of the enforcement-latency probe on the server.
pub const PROBE_PORT: u16 = 7777;
pub const NAMESPACE: &str = "bench";
/// A namespace for the real pods that sorts after every background namespace: the probe policy's rule
/// index is then the last but one, and adding or removing it renumbers only `isolate-server`'s rule.
pub const LAST_NAMESPACE: &str = "zz-bench";
const PROBE_POLICY: &str = "allow-probe";

/// What the maps should hold: the compiled entries and the ipcache (identities and isolation flags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub ipcache: BTreeMap<Ipv4Addr, IpcacheValue>,
    pub entries: MapEntries,
}

/// Pods, namespaces, identities and policies, as the agent's policy subsystem would hold them.
pub struct Model {
    /// The namespace of the two real pods (and of the probe policy).
    namespace: String,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: Vec<PodView>,
    table: IdentityTable,
    policies: Vec<NetworkPolicy>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn policy(ns: &str, name: &str, spec: Value) -> anyhow::Result<NetworkPolicy> {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .with_context(|| format!("building NetworkPolicy {ns}/{name}"))
}

impl Model {
    fn with_real_pods(ns: &str, client: Ipv4Addr, server: Ipv4Addr) -> anyhow::Result<Model> {
        let mut m = Model {
            namespace: ns.to_string(),
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            table: IdentityTable::new(),
            policies: Vec::new(),
        };
        m.namespaces.insert(ns.into(), BTreeMap::new());
        m.add_pod(ns, "client", client, labels(&[("role", "client")]))?;
        m.add_pod(ns, "server", server, labels(&[("role", "server")]))?;
        Ok(m)
    }

    fn identity(&mut self, ns: &str, pod_labels: BTreeMap<String, String>) -> anyhow::Result<u32> {
        let ns_labels = self.namespaces.get(ns).cloned().unwrap_or_default();
        self.table
            .allocate(&IdentityLabels::new(ns, pod_labels, ns_labels), |_| false)
            .context("allocating an identity")
    }

    fn add_pod(&mut self, ns: &str, name: &str, ip: Ipv4Addr, l: BTreeMap<String, String>) -> anyhow::Result<()> {
        let identity = self.identity(ns, l.clone())?;
        let ports = vec![NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }];
        self.pods.push(PodView { namespace: ns.into(), name: name.into(), ip, identity, labels: l, ports });
        Ok(())
    }

    /// `n` policies each allowing one distinct identity to the server, plus one allowing the client.
    pub fn many_rules(client: Ipv4Addr, server: Ipv4Addr, n: usize) -> anyhow::Result<Model> {
        let mut m = Model::with_real_pods(NAMESPACE, client, server)?;
        let server_sel = json!({"matchLabels": {"role": "server"}});
        m.policies.push(policy(
            NAMESPACE,
            "allow-client",
            json!({"podSelector": server_sel, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        )?);
        for i in 0..n {
            let peer = format!("p{i}");
            m.identity(NAMESPACE, labels(&[("peer", &peer)]))?;
            m.policies.push(policy(
                NAMESPACE,
                &format!("rule-{i}"),
                json!({"podSelector": server_sel, "ingress": [{"from": [{"podSelector": {"matchLabels": {"peer": peer}}}],
                    "ports": [{"port": 8080, "protocol": "TCP"}]}]}),
            )?);
        }
        Ok(m)
    }

    /// `pods` pods (2 real, the rest simulated at `simulated`'s addresses) and `policies` policies, the
    /// probe policy among them when `with_probe`. The real pods live in `namespace`: [`NAMESPACE`] sorts
    /// before the background namespaces `ns-*`, [`LAST_NAMESPACE`] after them.
    pub fn scale(
        namespace: &str,
        client: Ipv4Addr,
        server: Ipv4Addr,
        simulated: &[Ipv4Addr],
        policies: usize,
        with_probe: bool,
    ) -> anyhow::Result<Model> {
        let mut m = Model::with_real_pods(namespace, client, server)?;
        for ns in 0..20 {
            m.namespaces.insert(format!("ns-{ns}"), labels(&[("team", &format!("t{}", ns % 5))]));
        }
        for (i, ip) in simulated.iter().enumerate() {
            let tier = if (i / 20) % 2 == 0 { "web" } else { "db" };
            m.add_pod(
                &format!("ns-{}", i % 20),
                &format!("sim-{i}"),
                *ip,
                labels(&[("app", &format!("app-{}", i % 50)), ("tier", tier)]),
            )?;
        }
        m.policies.push(policy(
            namespace,
            "isolate-server",
            json!({"podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "nobody"}}}], "ports": [{"port": 9}]}]}),
        )?);
        for i in 0..policies.saturating_sub(2) {
            m.policies.push(policy(&format!("ns-{}", i % 20), &format!("policy-{i}"), background_spec(i))?);
        }
        m.set_probe(with_probe)?;
        Ok(m)
    }

    /// Adds (`true`) or removes the probe policy: the change whose enforcement is timed.
    pub fn set_probe(&mut self, allowed: bool) -> anyhow::Result<()> {
        let is_probe = |p: &NetworkPolicy| p.metadata.name.as_deref() == Some(PROBE_POLICY);
        self.policies.retain(|p| !is_probe(p));
        if allowed {
            self.policies.push(policy(
                &self.namespace,
                PROBE_POLICY,
                json!({"podSelector": {"matchLabels": {"role": "server"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"port": PROBE_PORT, "protocol": "UDP"}]}]}),
            )?);
        }
        Ok(())
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    pub fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            policies: &self.policies,
            namespaces: &self.namespaces,
            pods: &self.pods,
            identities: self.table.identities(),
            default_deny: false,
        }
    }

    /// Every pod is local (one node holds them all).
    pub fn local(&self) -> Vec<Ipv4Addr> {
        self.pods.iter().map(|p| p.ip).collect()
    }

    /// compile + lower for the local endpoints `local`.
    pub fn entries(&self, local: &[Ipv4Addr]) -> MapEntries {
        lower(&compile(&self.input(), local))
    }

    /// The ipcache for `entries`: every pod with its identity, `local` ones flagged local with their
    /// isolation, the pod gateway as the host (as the agent's `desired_ipcache` without nodes/Services).
    pub fn ipcache(&self, local: &[Ipv4Addr], entries: &MapEntries) -> BTreeMap<Ipv4Addr, IpcacheValue> {
        let local: BTreeSet<Ipv4Addr> = local.iter().copied().collect();
        let mut out = BTreeMap::new();
        out.insert(Ipv4Addr::from(GATEWAY_V4), IpcacheValue { identity: IDENTITY_HOST, flags: 0 });
        for pod in &self.pods {
            let flags = if local.contains(&pod.ip) {
                IpcacheValue::FLAG_LOCAL | entries.isolation.get(&pod.ip).copied().unwrap_or(0)
            } else {
                0
            };
            out.insert(pod.ip, IpcacheValue { identity: pod.identity, flags });
        }
        out
    }

    pub fn desired(&self, local: &[Ipv4Addr]) -> Desired {
        let entries = self.entries(local);
        Desired { ipcache: self.ipcache(local, &entries), entries }
    }
}

/// The background policies, a mix like the model's own scale test: pod and namespace selectors with port
/// ranges, ipBlock with except, egress with named ports, and allow-all-in-namespace.
fn background_spec(i: usize) -> Value {
    match i % 4 {
        0 => json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}}, "podSelector": {"matchLabels": {"tier": "web"}}}],
            "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}]}]}),
        1 => {
            json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("10.244.{}.0/24", i % 4)]}}]}]})
        }
        2 => {
            json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"port": "http"}]}, {"ports": [{"port": 53, "protocol": "UDP"}]}]})
        }
        _ => json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    }
}

/// `count` addresses of `cidr` for simulated endpoints, skipping the network address, the first ten
/// (the lab's real pods come from the bottom) and everything in `avoid`.
pub fn simulated_addresses(cidr: ipnet::Ipv4Net, count: usize, avoid: &[Ipv4Addr]) -> anyhow::Result<Vec<Ipv4Addr>> {
    let out: Vec<Ipv4Addr> = cidr.hosts().skip(10).filter(|ip| !avoid.contains(ip)).take(count).collect();
    anyhow::ensure!(out.len() == count, "{cidr} has no room for {count} simulated endpoints");
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use novanet_model::policy::{Verdict, trace};

    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 3);

    fn ingress(m: &Model, from: Ipv4Addr, port: u16, proto: Protocol) -> Verdict {
        trace(&m.input(), from, SERVER, port, proto).ingress.verdict
    }

    #[test]
    fn many_rules_give_one_entry_per_rule_and_allow_the_client_only() {
        let m = Model::many_rules(CLIENT, SERVER, 50).unwrap();
        let d = m.desired(&m.local());
        assert_eq!(d.entries.policy.len(), 51, "50 identities on TCP/8080 plus the client on everything");
        assert_eq!(d.ipcache[&SERVER].flags, IpcacheValue::FLAG_LOCAL | IpcacheValue::FLAG_INGRESS_ISOLATED);
        assert_eq!(d.ipcache[&CLIENT].flags, IpcacheValue::FLAG_LOCAL, "the client is selected by nothing");
        assert_eq!(ingress(&m, CLIENT, 11111, Protocol::Tcp), Verdict::Allowed);
        assert_eq!(ingress(&m, Ipv4Addr::new(10, 244, 0, 9), 11111, Protocol::Tcp), Verdict::Denied);
    }

    #[test]
    fn the_probe_policy_alone_decides_the_probe_and_identities_are_stable() {
        let sim = simulated_addresses("10.244.0.0/22".parse().unwrap(), 98, &[CLIENT, SERVER]).unwrap();
        let mut m = Model::scale(NAMESPACE, CLIENT, SERVER, &sim, 100, true).unwrap();
        assert_eq!((m.pod_count(), m.policy_count()), (100, 100));
        assert_eq!(ingress(&m, CLIENT, PROBE_PORT, Protocol::Udp), Verdict::Allowed);
        let before = m.desired(&m.local());
        m.set_probe(false).unwrap();
        assert_eq!(m.policy_count(), 99);
        assert_eq!(ingress(&m, CLIENT, PROBE_PORT, Protocol::Udp), Verdict::Denied, "the server stays isolated");
        let after = m.desired(&m.local());
        assert_eq!(before.ipcache, after.ipcache);
        let d = novanet_model::policy::diff(&before.entries, &after.entries);
        assert_eq!(d.policy_removals.len(), 1, "the probe's one entry");
        // `allow-probe` sorts first, so removing it renumbers every later rule: the other upserts only
        // rewrite the `rule` of existing keys (the worst case of a change's size, which the bench times).
        assert!(d.policy_upserts.iter().all(|(k, _)| before.entries.policy.contains_key(k)));
        assert!(d.cidr_upserts.is_empty() && d.cidr_removals.is_empty());
        let many = Model::many_rules(CLIENT, SERVER, 3).unwrap().desired(&[CLIENT, SERVER]);
        assert_eq!(many.ipcache[&CLIENT].identity, after.ipcache[&CLIENT].identity);
        assert_eq!(many.ipcache[&SERVER].identity, after.ipcache[&SERVER].identity);
    }

    #[test]
    fn a_probe_policy_sorting_last_changes_a_handful_of_entries() {
        let sim = simulated_addresses("10.244.0.0/22".parse().unwrap(), 98, &[CLIENT, SERVER]).unwrap();
        let mut m = Model::scale(LAST_NAMESPACE, CLIENT, SERVER, &sim, 100, false).unwrap();
        assert_eq!(ingress(&m, CLIENT, PROBE_PORT, Protocol::Udp), Verdict::Denied);
        let before = m.entries(&m.local());
        m.set_probe(true).unwrap();
        assert_eq!(ingress(&m, CLIENT, PROBE_PORT, Protocol::Udp), Verdict::Allowed);
        let d = novanet_model::policy::diff(&before, &m.entries(&m.local()));
        assert!(d.len() <= 3, "the probe's entry and isolate-server's renumbered one: {d:?}");
    }

    #[test]
    fn simulated_addresses_avoid_the_real_pods_and_stay_in_the_cidr() {
        let cidr: ipnet::Ipv4Net = "10.244.0.0/22".parse().unwrap();
        let avoid = [Ipv4Addr::new(10, 244, 0, 11)];
        let sim = simulated_addresses(cidr, 998, &avoid).unwrap();
        assert!(sim.iter().all(|ip| cidr.contains(ip) && !avoid.contains(ip)));
        assert_eq!(sim.iter().collect::<BTreeSet<_>>().len(), 998);
        assert!(simulated_addresses(cidr, 1020, &[]).is_err());
    }
}
