//! The exact map entries.

use novanet_common::{CidrKey, IpcacheValue, PEER_ANY, PEER_CIDR_CLASS, PolicyKey};
use serde_json::json;

use super::*;

fn entries_for(c: &Cluster, key: &str) -> MapEntries {
    lower(&compile(&c.input(), &[c.ip(key)]))
}

fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

#[test]
fn keys_for_any_protocol_one_protocol_one_port_and_a_range() {
    let mut c = Cluster::new();
    c.add("x", "p", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {}, {"ports": [{"protocol": "UDP"}]}, {"ports": [{"port": 80}]}, {"ports": [{"port": 80, "endPort": 81, "protocol": "SCTP"}]}]}));
    let xa = c.ip("x/a");
    let compiled = compile(&c.input(), &[xa]);
    let e = lower(&compiled);
    // Each value names its rule by number; the table gives the rule's index in `spec.ingress`.
    let keys: Vec<(u32, PolicyKey, usize)> =
        e.policy.iter().map(|((l, k), v)| (*l, *k, compiled.rules[&v.rule].rule)).collect();
    let key = |proto: u8, port: u16| PolicyKey {
        endpoint: raw(xa),
        peer: PEER_ANY.to_be_bytes(),
        direction: 0,
        proto,
        dport: port.to_be_bytes(),
    };
    assert_eq!(
        keys,
        vec![(72, key(0, 0), 0), (80, key(17, 0), 1), (96, key(6, 80), 2), (95, key(132, 80), 3),]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // Endpoint in network byte order: the first byte in memory is 10.
    assert_eq!(keys[0].1.endpoint.to_ne_bytes(), [10, 0, 0, 1]);
    assert_eq!(e.isolation.get(&xa), Some(&IpcacheValue::FLAG_INGRESS_ISOLATED));
    assert!(e.cidrs.is_empty());
}

#[test]
fn selector_peers_get_one_entry_per_matching_identity() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
        "ports": [{"port": 80}]}]}),
    );
    let e = entries_for(&c, "x/a");
    let mut peers: Vec<u32> = e.policy.keys().map(|(_, k)| u32::from_be_bytes(k.peer)).collect();
    peers.sort();
    let mut want: Vec<u32> = c.pods.iter().filter(|p| p.namespace == "y").map(|p| p.identity).collect();
    want.sort();
    assert_eq!(peers, want);
    assert!(e.policy.keys().all(|(l, _)| *l == PolicyKey::FULL_BITS));
}

#[test]
fn cidr_classes_carry_exactly_the_blocks_containing_each_prefix() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "blocks",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 80}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}], "ports": [{"port": 81}]}]}),
    );
    let xa = c.ip("x/a");
    let e = entries_for(&c, "x/a");
    let class_of = |net: &str| {
        let net: ipnet::Ipv4Net = net.parse().unwrap();
        let key = CidrKey { endpoint: raw(xa), direction: 0, _pad: [0; 3], addr: raw(net.network()) };
        e.cidrs.get(&(64 + u32::from(net.prefix_len()), key)).map(|v| v.class)
    };
    let ports_of = |class: u32| {
        let mut ports: Vec<u16> = e
            .policy
            .keys()
            .filter(|(_, k)| u32::from_be_bytes(k.peer) == PEER_CIDR_CLASS | class)
            .map(|(_, k)| u16::from_be_bytes(k.dport))
            .collect();
        ports.sort();
        ports
    };
    assert_eq!(e.cidrs.len(), 4);
    // Prefix order: 0.0.0.0/4, 10.0.0.0/8, 10.0.0.0/16, 10.0.1.0/24.
    assert_eq!(class_of("0.0.0.0/4"), Some(0));
    assert_eq!(ports_of(0), vec![80]);
    // The except of the /4 holds no block: a class of its own with no entries.
    assert_eq!(class_of("10.0.0.0/8"), Some(1));
    assert!(ports_of(1).is_empty());
    // 10.0.0.0/16 is inside the /4's except: only the second block.
    assert_eq!(class_of("10.0.0.0/16"), Some(2));
    assert_eq!(ports_of(2), vec![81]);
    // 10.0.1.0/24 is excepted from both: it shares the empty class.
    assert_eq!(class_of("10.0.1.0/24"), Some(1));
}

#[test]
fn the_same_key_from_two_rules_keeps_the_smallest_rule_number() {
    let mut c = Cluster::new();
    c.add("x", "b", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}));
    c.add("x", "a", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}));
    let compiled = compile(&c.input(), &[c.ip("x/a")]);
    let smallest = *compiled.rules.keys().next().unwrap();
    let e = lower(&compiled);
    assert_eq!(e.policy.len(), 1);
    assert_eq!(e.policy.values().next().unwrap().rule, smallest);
}

#[test]
fn adding_a_policy_that_sorts_first_leaves_the_other_rules_numbers_alone() {
    let mut c = Cluster::new();
    c.add("x", "m", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}));
    let before = lower(&compile(&c.input(), &[c.ip("x/a")]));
    c.add("x", "a", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}));
    let after = lower(&compile(&c.input(), &[c.ip("x/a")]));
    let d = diff(&before, &after);
    assert_eq!(d.policy_upserts.len(), 1, "only the new rule's entry is written: {d:?}");
    assert!(d.policy_removals.is_empty(), "{d:?}");
}

#[test]
fn egress_named_ports_become_32_classes_per_resolving_pod() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "to-serve",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{"to": [{"podSelector": {}}],
        "ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
    );
    let e = entries_for(&c, "x/a");
    assert_eq!(e.cidrs.len(), 3, "one /32 per x pod");
    assert!(e.cidrs.keys().all(|(l, k)| *l == 96 && k.direction == 1));
    assert!(e.policy.keys().all(|(l, k)| *l == 96 && k.proto == 17 && u16::from_be_bytes(k.dport) == 81));
    assert_eq!(
        e.isolation.get(&c.ip("x/a")),
        Some(&(IpcacheValue::FLAG_INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED))
    );
}

#[test]
fn endpoints_without_policy_are_listed_with_no_isolation() {
    let c = Cluster::new();
    let e = entries_for(&c, "y/a");
    assert_eq!(e.isolation.get(&c.ip("y/a")), Some(&0));
    assert!(e.policy.is_empty());
    // An endpoint with no pod in the input: isolated only under default deny.
    let mut c = Cluster::new();
    c.default_deny = true;
    let stranger = Ipv4Addr::new(10, 9, 9, 9);
    let compiled = compile(&c.input(), &[stranger]);
    assert_eq!(compiled.endpoints[&stranger].pod, None);
    assert_eq!(
        lower(&compiled).isolation[&stranger],
        IpcacheValue::FLAG_INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED
    );
}
