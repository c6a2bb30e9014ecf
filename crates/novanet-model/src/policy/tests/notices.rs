//! Bad input: skipped (fail closed) with a notice naming the policy and the reason; the rest works.

use serde_json::json;

use super::*;

#[test]
fn a_policy_in_a_namespace_that_does_not_exist_is_reported_and_touches_no_one() {
    let mut c = Cluster::new();
    c.add("ghost", "deny", json!({"podSelector": {}}));
    c.expect(80, TCP, |_, _| true);
    let notices = c.compile_notices();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].policy, "ghost/deny");
    assert_eq!(notices[0].problem, Problem::NamespaceMissing { namespace: "ghost".into() });
}

#[test]
fn bad_peers_and_ports_are_skipped_and_allow_nothing_while_the_rest_applies() {
    let mut c = Cluster::new();
    c.add("x", "bad", json!({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]},
        {"from": [{"ipBlock": {"cidr": "nonsense"}}, {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]},
        {"ports": [{"port": 81, "protocol": "ICMP"}]},
        {"ports": [{"port": "http", "endPort": 90}]},
        {"ports": [{"port": 90, "endPort": 85}]},
        {"ports": [{"port": 70000}]},
        {"ports": [{"endPort": 85}]},
        {"from": [{}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
        {"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near", "values": ["a"]}]}}]},
        {"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}
    ]}));
    c.add("z", "fine", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    // Only the good peer (namespace y) of rule 2 allows anything in x; z's own policy is untouched.
    for port in [80, 81, 85, 90] {
        c.expect(port, TCP, |from, to| match ns_of(to) {
            "x" => ns_of(from) == "y",
            "z" => ns_of(from) == "z",
            _ => true,
        });
    }
    let notices = c.compile_notices();
    let kinds: Vec<String> =
        notices.iter().map(|n| format!("{} {}: {}", n.policy, n.location, n.message)).collect();
    let want = [
        "x/bad ingress rule 0 peer 0: invalid CIDR \"10.0.0.0/33\"",
        "x/bad ingress rule 1 peer 0: except 10.1.0.0/24 is not inside cidr 10.0.0.0/16",
        "x/bad ingress rule 2 peer 0: invalid CIDR \"nonsense\"",
        "x/bad ingress rule 3 port 0: unknown protocol \"ICMP\"",
        "x/bad ingress rule 4 port 0: endPort 90 with named port \"http\"",
        "x/bad ingress rule 5 port 0: endPort 85 is below port 90",
        "x/bad ingress rule 6 port 0: port 70000 is out of range 1-65535",
        "x/bad ingress rule 7 port 0: endPort 85 without a port",
        "x/bad ingress rule 8 peer 0: peer has neither selectors nor ipBlock",
        "x/bad ingress rule 9 peer 0: peer combines ipBlock with a selector",
    ];
    for w in want {
        assert!(kinds.iter().any(|k| k == w), "missing {w:?} in {kinds:#?}");
    }
    assert!(kinds.iter().any(|k| k.starts_with("x/bad ingress rule 10 peer 0: invalid selector")), "{kinds:#?}");
    assert!(kinds.iter().any(|k| k.starts_with("x/bad ingress rule 11 peer 0: IPv6 CIDR")), "{kinds:#?}");
    assert_eq!(notices.len(), 12, "{kinds:#?}");
}

#[test]
fn an_invalid_policy_pod_selector_selects_nothing_and_is_reported() {
    let mut c = Cluster::new();
    c.add("x", "bad-selector", json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}}));
    c.expect(80, TCP, |_, _| true);
    assert!(matches!(c.compile_notices()[0].problem, Problem::InvalidSelector { .. }));
}

#[test]
fn compiled_output_serializes_to_json() {
    let mut c = Cluster::new();
    c.add("x", "cidr", json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.1.0/24"]}}],
        "ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}], "policyTypes": ["Ingress", "Sideways"]}));
    let compiled = compile(&c.input(), &[c.ip("x/a")]);
    let text = serde_json::to_string(&compiled).unwrap();
    assert!(text.contains("\"kind\":\"cidr\""), "{text}");
    assert!(text.contains("\"10.0.1.0/24\""), "{text}");
    assert!(text.contains("unknownPolicyType"), "{text}");
    let t = serde_json::to_value(c.trace("y/a", "x/a", 80, UDP)).unwrap();
    assert_eq!(t["ingress"]["verdict"], "denied");
    assert_eq!(t["protocol"], "UDP");
}
