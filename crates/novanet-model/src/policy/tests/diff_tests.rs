//! The diff: it reaches the new state, and applied in order it never allows what neither state allows.

use serde_json::{Value, json};

use super::*;

fn all_entries(c: &Cluster) -> MapEntries {
    let all: Vec<_> = c.pods.iter().map(|p| p.ip).collect();
    lower(&compile(&c.input(), &all))
}

/// Packets to judge: every pod pair both ways, outside addresses, a few ports and protocols.
fn probes(c: &Cluster) -> Vec<(Ipv4Addr, Direction, Ipv4Addr, u32, u8, u16)> {
    let mut out = Vec::new();
    let mut others: Vec<(Ipv4Addr, u32)> = c.pods.iter().map(|p| (p.ip, p.identity)).collect();
    for ip in ["8.8.8.8", "10.0.1.200", "10.0.7.1", "172.16.0.1"] {
        others.push((ip.parse().unwrap(), novanet_common::IDENTITY_WORLD));
    }
    for local in &c.pods {
        for (peer, identity) in &others {
            for direction in [Direction::Ingress, Direction::Egress] {
                for (proto, port) in [(6, 80), (6, 81), (6, 82), (17, 80), (17, 53), (132, 81)] {
                    out.push((local.ip, direction, *peer, *identity, proto, port));
                }
            }
        }
    }
    out
}

fn check_transition(c: &mut Cluster, old_specs: &[(&str, &str, Value)], new_specs: &[(&str, &str, Value)]) {
    c.policies = old_specs.iter().map(|(ns, n, s)| policy(ns, n, s.clone())).collect();
    let old = all_entries(c);
    c.policies = new_specs.iter().map(|(ns, n, s)| policy(ns, n, s.clone())).collect();
    let new = all_entries(c);
    let d = diff(&old, &new);
    let probes = probes(c);
    let verdict = |e: &MapEntries, p: &(Ipv4Addr, Direction, Ipv4Addr, u32, u8, u16)| {
        lookup(e, p.0, p.1, p.2, p.3, p.4, p.5).allows()
    };
    let allowed_either: Vec<bool> = probes.iter().map(|p| verdict(&old, p) || verdict(&new, p)).collect();
    let mut state = old.clone();
    let mut steps = 0;
    state.apply_with(&d, |s| {
        steps += 1;
        for (p, ok) in probes.iter().zip(&allowed_either) {
            assert!(!verdict(s, p) || *ok, "step {steps}: transient allow of {p:?}");
        }
    });
    assert_eq!(steps, d.len());
    assert_eq!(state, new);
    assert!(diff(&new, &state).is_empty());
}

#[test]
fn identical_states_have_an_empty_diff() {
    let mut c = Cluster::new();
    c.add("x", "deny", json!({"podSelector": {}}));
    let e = all_entries(&c);
    assert!(diff(&e, &e).is_empty());
}

#[test]
fn diff_lists_exactly_the_changed_entries() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "p80",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let old = all_entries(&c);
    c.policies.clear();
    c.add(
        "x",
        "p81",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81}]}]}),
    );
    let new = all_entries(&c);
    let d = diff(&old, &new);
    assert_eq!(d.policy_removals.len(), 1);
    assert_eq!(d.policy_upserts.len(), 1);
    assert!(d.isolation_relax.is_empty() && d.isolation_set.is_empty() && d.cidr_upserts.is_empty());
    assert_eq!(u16::from_be_bytes(d.policy_upserts[0].0.1.dport), 81);
}

#[test]
fn isolation_bits_are_relaxed_first_and_set_last() {
    let mut c = Cluster::new();
    c.add("x", "ingress", json!({"podSelector": {"matchLabels": {"pod": "a"}}}));
    let old = all_entries(&c);
    c.policies.clear();
    c.add("x", "egress", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}));
    let new = all_entries(&c);
    let d = diff(&old, &new);
    let xa = c.ip("x/a");
    assert_eq!(d.isolation_relax, vec![(xa, 0)]);
    assert_eq!(d.isolation_set, vec![(xa, novanet_common::IpcacheValue::FLAG_EGRESS_ISOLATED)]);
}

#[test]
fn cidr_upserts_go_longest_prefix_first_and_removals_shortest_first() {
    let mut c = Cluster::new();
    let old = all_entries(&c);
    c.add("x", "blocks", json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.0.0.0/8", "10.0.1.0/24"]}}]}]}));
    let new = all_entries(&c);
    let d = diff(&old, &new);
    let lens: Vec<u32> = d.cidr_upserts.iter().map(|((l, _), _)| *l).collect();
    assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{lens:?}");
    let back = diff(&new, &old);
    let lens: Vec<u32> = back.cidr_removals.iter().map(|(l, _)| *l).collect();
    assert!(lens.windows(2).all(|w| w[0] <= w[1]), "{lens:?}");
}

#[test]
fn no_transient_allow_between_policy_sets() {
    let deny = json!({"podSelector": {}});
    let from_y =
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]});
    let cidr_a = json!({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.1.0/24"]}}], "ports": [{"port": 80}]},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/16"]}}], "ports": [{"port": 53, "protocol": "UDP"}]}]});
    // Other prefixes, same class numbers with other meanings.
    let cidr_b = json!({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}], "ports": [{"port": 81}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.1.128/25", "10.0.2.0/24"]}}], "ports": [{"port": 53, "protocol": "UDP"}]},
        {"from": [{"ipBlock": {"cidr": "8.0.0.0/7"}}]}]});
    let egress_named = json!({"podSelector": {"matchLabels": {"pod": "b"}}, "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}], "ports": [{"port": "serve-81-sctp", "protocol": "SCTP"}]},
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 80}]}]});
    let egress_other = json!({"podSelector": {"matchLabels": {"pod": "b"}}, "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.1.0/24"}}], "ports": [{"port": 53, "protocol": "UDP"}]}]});
    let states: Vec<Vec<(&str, &str, Value)>> = vec![
        vec![],
        vec![("x", "deny", deny.clone())],
        vec![("x", "cidr", cidr_a.clone()), ("y", "named", egress_named.clone())],
        vec![("x", "cidr", cidr_b.clone()), ("y", "named", egress_other.clone())],
        vec![("x", "from-y", from_y.clone()), ("x", "cidr", cidr_a.clone()), ("z", "named", egress_named.clone())],
        vec![("x", "cidr", cidr_b.clone()), ("z", "named", egress_other.clone()), ("y", "deny", deny.clone())],
        vec![("x", "from-y", from_y.clone())],
    ];
    let mut c = Cluster::new();
    for old in &states {
        for new in &states {
            check_transition(&mut c, old, new);
        }
    }
}
