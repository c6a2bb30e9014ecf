//! Compiler tests in the style of the upstream netpol e2e suite: namespaces x/y/z, pods a/b/c, ports
//! 80/81 over TCP, UDP and SCTP. Verdicts come from [`trace`], i.e. from the datapath lookup emulated on
//! the lowered entries.

mod diff_tests;
mod incremental_tests;
mod lower_tests;
mod notices;
mod ports_and_names;
mod scale;
mod semantics;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::*;
use crate::identity::{IdentityLabels, IdentityTable};

pub(super) const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub(super) const PODS: [&str; 3] = ["a", "b", "c"];

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub(super) fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})).unwrap()
}

fn standard_ports() -> Vec<NamedPort> {
    let mut ports = Vec::new();
    for (proto, text) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp"), (Protocol::Sctp, "sctp")] {
        for port in [80, 81] {
            ports.push(NamedPort { name: format!("serve-{port}-{text}"), protocol: proto, port });
        }
    }
    ports
}

pub(super) struct Cluster {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<PodView>,
    pub table: IdentityTable,
    pub policies: Vec<NetworkPolicy>,
    pub default_deny: bool,
}

impl Cluster {
    /// x/y/z with label `ns=<name>`, pods a/b/c with label `pod=<name>` at 10.0.<ns>.<pod>.
    pub fn new() -> Cluster {
        let mut c = Cluster {
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            table: IdentityTable::new(),
            policies: Vec::new(),
            default_deny: false,
        };
        for (i, ns) in NAMESPACES.iter().enumerate() {
            c.namespaces.insert(ns.to_string(), labels(&[("ns", ns)]));
            for (j, pod) in PODS.iter().enumerate() {
                let ip = Ipv4Addr::new(10, 0, i as u8, j as u8 + 1);
                c.add_pod(ns, pod, ip, labels(&[("pod", pod)]), standard_ports());
            }
        }
        c
    }

    pub fn add_pod(
        &mut self,
        ns: &str,
        name: &str,
        ip: Ipv4Addr,
        labels: BTreeMap<String, String>,
        ports: Vec<NamedPort>,
    ) {
        let mut view = PodView { namespace: ns.into(), name: name.into(), ip, identity: 0, labels, ports };
        view.identity = self.identity_of(&view);
        self.pods.retain(|p| p.key() != view.key());
        self.pods.push(view);
    }

    fn identity_of(&mut self, pod: &PodView) -> u32 {
        let ns_labels = self.namespaces.get(&pod.namespace).cloned().unwrap_or_default();
        let l = IdentityLabels::new(pod.namespace.clone(), pod.labels.clone(), ns_labels);
        self.table.allocate(&l, |_| false).unwrap()
    }

    pub fn set_labels(&mut self, key: &str, labels: BTreeMap<String, String>) {
        let i = self.pods.iter().position(|p| p.key() == key).unwrap();
        self.pods[i].labels = labels;
        let pod = self.pods[i].clone();
        self.pods[i].identity = self.identity_of(&pod);
    }

    pub fn set_ports(&mut self, key: &str, ports: Vec<NamedPort>) {
        let i = self.pods.iter().position(|p| p.key() == key).unwrap();
        self.pods[i].ports = ports;
    }

    pub fn add(&mut self, ns: &str, name: &str, spec: Value) -> &mut Self {
        self.policies.push(policy(ns, name, spec));
        self
    }

    pub fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            policies: &self.policies,
            namespaces: &self.namespaces,
            pods: &self.pods,
            identities: self.table.identities(),
            default_deny: self.default_deny,
        }
    }

    pub fn ip(&self, key: &str) -> Ipv4Addr {
        match key.parse() {
            Ok(ip) => ip,
            Err(_) => self.pods.iter().find(|p| p.key() == key).unwrap_or_else(|| panic!("no pod {key}")).ip,
        }
    }

    pub fn trace(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> Trace {
        trace(&self.input(), self.ip(from), self.ip(to), port, protocol)
    }

    pub fn allowed(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
        self.trace(from, to, port, protocol).allowed
    }

    /// Checks the whole pod x pod matrix against `expect(from, to)` on the lowered entries of every pod
    /// (as if all were local), and with [`trace`]; panics listing every wrong pair.
    pub fn expect(&self, port: u16, protocol: Protocol, expect: impl Fn(&str, &str) -> bool) {
        let all: Vec<Ipv4Addr> = self.pods.iter().map(|p| p.ip).collect();
        let entries = lower(&compile(&self.input(), &all));
        let mut wrong = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                let want = expect(&from.key(), &to.key());
                let egress =
                    lookup(&entries, from.ip, Direction::Egress, to.ip, to.identity, protocol.number(), port);
                let ingress =
                    lookup(&entries, to.ip, Direction::Ingress, from.ip, from.identity, protocol.number(), port);
                let got = egress.allows() && ingress.allows();
                let traced = self.allowed(&from.key(), &to.key(), port, protocol);
                if got != want || traced != want {
                    wrong.push(format!("{} -> {}: want {want} got {got} (trace {traced})", from.key(), to.key()));
                }
            }
        }
        assert!(wrong.is_empty(), "{port}/{protocol:?} wrong pairs:\n{}", wrong.join("\n"));
    }
}

pub(super) fn ns_of(key: &str) -> &str {
    key.split('/').next().unwrap_or_default()
}

pub(super) fn pod_of(key: &str) -> &str {
    key.split('/').nth(1).unwrap_or_default()
}

pub(super) const TCP: Protocol = Protocol::Tcp;
pub(super) const UDP: Protocol = Protocol::Udp;
pub(super) const SCTP: Protocol = Protocol::Sctp;
