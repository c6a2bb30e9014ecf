//! [`Incremental`] against the full compile: after every step of random change sequences (policies added,
//! changed, removed; pods relabelled, re-ported, added, removed; namespace labels; default deny; the
//! local endpoint set) its entries and compiled policy equal [`compile`] + [`lower`] of the same input.

use serde_json::json;

use super::*;

/// xorshift64: a fixed, dependency-free sequence per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn random_spec(rng: &mut Rng) -> serde_json::Value {
    let pod = rng.pick(&PODS);
    let ns = rng.pick(&NAMESPACES);
    match rng.below(8) {
        0 => json!({"podSelector": {"matchLabels": {"pod": pod}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": rng.pick(&PODS)}}}]}]}),
        1 => json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": ns}}}], "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}]}]}),
        2 => json!({"podSelector": {"matchLabels": {"pod": pod}}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
        3 => json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": pod}}}], "ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
        4 => json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": [pod]}]}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": [format!("10.0.{}.0/24", rng.below(3))]}}]}]}),
        5 => json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        6 => json!({"podSelector": {"matchLabels": {"pod": pod}}, "egress": [{"to": [{"ipBlock": {"cidr": format!("10.0.{}.0/24", rng.below(3))}}], "ports": [{"port": 80, "endPort": 90}]}]}),
        _ => json!({"podSelector": {"matchLabels": {"pod": pod}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": [ns]}]}, "podSelector": {}}], "ports": [{"port": "nowhere"}]}]}),
    }
}

fn random_change(rng: &mut Rng, c: &mut Cluster, local: &mut Vec<Ipv4Addr>) {
    let key = format!("{}/{}", rng.pick(&NAMESPACES), rng.pick(&PODS));
    match rng.below(10) {
        0..=2 => {
            let (ns, name) = (rng.pick(&NAMESPACES), format!("p{}", rng.below(6)));
            let spec = random_spec(rng);
            c.policies.retain(|p| !(p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(&name)));
            c.add(ns, &name, spec);
        }
        3 => {
            if !c.policies.is_empty() {
                let i = rng.below(c.policies.len());
                c.policies.remove(i);
            }
        }
        4 => {
            if c.pods.iter().any(|p| p.key() == key) {
                c.set_labels(&key, labels(&[("pod", rng.pick(&PODS)), ("extra", rng.pick(&["1", "2"]))]));
            }
        }
        5 => {
            if c.pods.iter().any(|p| p.key() == key) {
                let port = 80 + rng.below(2) as u16;
                c.set_ports(&key, vec![NamedPort { name: "serve-80-tcp".into(), protocol: TCP, port }]);
            }
        }
        6 => {
            let before = c.pods.len();
            c.pods.retain(|p| p.key() != key);
            if c.pods.len() == before {
                let (ns, pod) = key.split_once('/').unwrap();
                let ip = Ipv4Addr::new(10, 0, rng.below(3) as u8, 100 + rng.below(50) as u8);
                if !c.pods.iter().any(|p| p.ip == ip) {
                    c.add_pod(ns, pod, ip, labels(&[("pod", pod)]), Vec::new());
                }
            }
        }
        7 => {
            let ns = rng.pick(&NAMESPACES).to_string();
            let value = rng.pick(&["x", "y", "z"]);
            c.namespaces.insert(ns, labels(&[("ns", value)]));
            // Identities carry namespace labels: renumber every pod as the agent would.
            for i in 0..c.pods.len() {
                let key = c.pods[i].key();
                let labels = c.pods[i].labels.clone();
                c.set_labels(&key, labels);
            }
        }
        8 => c.default_deny = !c.default_deny,
        _ => {
            let ip = c.pods[rng.below(c.pods.len())].ip;
            match local.iter().position(|l| *l == ip) {
                Some(i) => {
                    local.remove(i);
                }
                None => local.push(ip),
            }
            local.push(Ipv4Addr::new(10, 9, 9, 9)); // an endpoint whose pod the input does not know
            local.sort();
            local.dedup();
        }
    }
}

#[test]
fn incremental_updates_equal_the_full_compile_after_every_change() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut c = Cluster::new();
        let mut local: Vec<Ipv4Addr> = c.pods.iter().map(|p| p.ip).take(6).collect();
        let mut inc = Incremental::new();
        for step in 0..120 {
            random_change(&mut rng, &mut c, &mut local);
            let stats = inc.update(&c.input(), &local);
            let compiled = compile(&c.input(), &local);
            let entries = lower(&compiled);
            assert!(inc.entries() == &entries, "seed {seed} step {step}: entries differ ({stats:?})");
            assert!(inc.compiled() == compiled, "seed {seed} step {step}: compiled policy differs ({stats:?})");
        }
    }
}

#[test]
fn a_policy_change_recompiles_only_the_endpoints_of_its_namespace_it_can_concern() {
    let mut c = Cluster::new();
    c.add("x", "isolate-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    c.add("y", "all", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}));
    let local: Vec<Ipv4Addr> = c.pods.iter().map(|p| p.ip).collect();
    let mut inc = Incremental::new();
    assert_eq!(inc.update(&c.input(), &local).endpoints_compiled, 9, "the first update compiles every endpoint");
    let same = inc.update(&c.input(), &local);
    assert_eq!((same.policies_parsed, same.endpoints_compiled), (0, 0), "nothing changed, nothing redone");
    c.add("x", "allow-b", json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    let stats = inc.update(&c.input(), &local);
    assert_eq!(stats.policies_parsed, 1);
    assert_eq!(stats.endpoints_compiled, 1, "only x/b is selected by the new policy: {stats:?}");
    assert!(inc.entries() == &lower(&compile(&c.input(), &local)));
    c.policies.retain(|p| p.metadata.name.as_deref() != Some("all"));
    let stats = inc.update(&c.input(), &local);
    assert_eq!((stats.policies_parsed, stats.endpoints_compiled), (0, 3), "y/a, y/b, y/c lose their policy");
    assert!(inc.entries() == &lower(&compile(&c.input(), &local)));
}
