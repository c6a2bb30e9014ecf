//! Isolation, peers and selectors, as the upstream netpol suite exercises them.

use serde_json::json;

use super::*;

#[test]
fn no_policy_allows_everything() {
    let c = Cluster::new();
    c.expect(80, TCP, |_, _| true);
    let t = c.trace("x/a", "y/b", 80, TCP);
    assert_eq!(t.egress.verdict, Verdict::NotIsolated);
    assert_eq!(t.ingress.explanation, "not isolated: no policy selects y/b for ingress");
}

#[test]
fn deny_all_ingress_isolates_only_the_namespace_s_pods_for_ingress() {
    let mut c = Cluster::new();
    c.add("x", "deny-all", json!({"podSelector": {}}));
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
    // Egress of x is untouched.
    assert!(c.allowed("x/a", "y/a", 80, TCP));
    let t = c.trace("y/a", "x/b", 80, TCP);
    assert_eq!(t.ingress.verdict, Verdict::Denied);
    assert_eq!(t.ingress.explanation, "denied: no rule of policies x/deny-all (which select the pod) allows it");
}

#[test]
fn deny_all_egress_with_policy_types_egress() {
    let mut c = Cluster::new();
    c.add("x", "deny-egress", json!({"podSelector": {}, "policyTypes": ["Egress"]}));
    c.expect(80, TCP, |from, _| ns_of(from) != "x");
    assert!(c.allowed("y/a", "x/a", 81, UDP));
}

#[test]
fn an_empty_egress_list_implies_both_types() {
    let mut c = Cluster::new();
    c.add("x", "deny-both", json!({"podSelector": {}, "egress": []}));
    c.expect(80, TCP, |from, to| ns_of(from) != "x" && ns_of(to) != "x");
}

#[test]
fn explicit_ingress_type_ignores_egress_rules() {
    let mut c = Cluster::new();
    c.add("x", "ingress-only", json!({"podSelector": {}, "policyTypes": ["Ingress"], "egress": []}));
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
}

#[test]
fn pod_selector_isolates_only_selected_pods() {
    let mut c = Cluster::new();
    c.add("x", "deny-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}}));
    c.expect(80, TCP, |_, to| to != "x/a");
}

#[test]
fn allow_from_the_same_namespace() {
    let mut c = Cluster::new();
    c.add("x", "same-ns", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) == "x");
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_and() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    c.expect(80, TCP, |from, to| to != "x/a" || from == "y/b");
}

#[test]
fn namespace_and_pod_selector_in_two_peers_is_or() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    // Pod selector alone = pods of the policy's namespace (x/b), namespace selector = all of y.
    c.expect(80, TCP, |from, to| to != "x/a" || ns_of(from) == "y" || from == "x/b");
}

#[test]
fn namespace_selector_matches_the_metadata_name_label() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "by-name",
        json!({"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) == "z");
}

#[test]
fn match_expressions_in_and_not_in() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "in",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "ns", "operator": "In", "values": ["y"]}]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) == "y");
    let mut c = Cluster::new();
    c.add(
        "x",
        "not-in",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "ns", "operator": "NotIn", "values": ["y"]}]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) != "y");
}

#[test]
fn match_expressions_exists_and_does_not_exist_on_pods() {
    let mut c = Cluster::new();
    c.set_labels("y/c", labels(&[("pod", "c"), ("trusted", "yes")]));
    c.add(
        "x",
        "exists",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {
        "matchExpressions": [{"key": "trusted", "operator": "Exists"}]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || from == "y/c");
    c.policies.clear();
    c.add(
        "x",
        "dne",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {
        "matchExpressions": [{"key": "trusted", "operator": "DoesNotExist"}]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || from != "y/c");
    // NotIn on a key the pods do not have matches them all.
    c.policies.clear();
    c.add(
        "x",
        "not-in-absent",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {
        "matchExpressions": [{"key": "trusted", "operator": "NotIn", "values": ["yes"]}]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || from != "y/c");
}

#[test]
fn policy_pod_selector_with_match_expressions() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "not-a",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}}),
    );
    c.expect(80, TCP, |_, to| !(ns_of(to) == "x" && pod_of(to) != "a"));
}

#[test]
fn empty_namespace_selector_allows_every_pod_but_no_outside_address() {
    let mut c = Cluster::new();
    c.add("x", "all-pods", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}));
    c.expect(80, TCP, |_, _| true);
    assert!(!c.allowed("192.168.7.7", "x/a", 80, TCP));
    assert!(c.allowed("192.168.7.7", "y/a", 80, TCP));
}

#[test]
fn empty_from_allows_every_address_including_outside() {
    let mut c = Cluster::new();
    c.add("x", "deny", json!({"podSelector": {}}));
    c.add("x", "allow-all", json!({"podSelector": {}, "ingress": [{}]}));
    c.expect(80, TCP, |_, _| true);
    assert!(c.allowed("192.168.7.7", "x/a", 9999, UDP));
    let mut c = Cluster::new();
    c.add("x", "empty-from-list", json!({"podSelector": {}, "ingress": [{"from": []}]}));
    c.expect(81, SCTP, |_, _| true);
}

#[test]
fn empty_to_allows_every_destination() {
    let mut c = Cluster::new();
    c.add("x", "allow-all-egress", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}));
    c.expect(80, TCP, |_, _| true);
    assert!(c.allowed("x/a", "8.8.8.8", 53, UDP));
    let mut c = Cluster::new();
    c.add("x", "deny-egress", json!({"podSelector": {}, "egress": []}));
    assert!(!c.allowed("x/a", "8.8.8.8", 53, UDP));
    // Without policyTypes, a policy with egress rules isolates for ingress too.
    let mut c = Cluster::new();
    c.add("x", "egress-implies-ingress", json!({"podSelector": {}, "egress": [{}]}));
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
}

#[test]
fn several_policies_are_a_union() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    c.add(
        "x",
        "from-z-c",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    );
    c.expect(80, TCP, |from, to| to != "x/a" || ns_of(from) == "y" || from == "z/c");
    let t = c.trace("z/a", "x/a", 80, TCP);
    assert_eq!(t.ingress.selected_by, vec!["x/from-y".to_string(), "x/from-z-c".to_string()]);
    assert!(t.ingress.explanation.contains("x/from-y, x/from-z-c"), "{}", t.ingress.explanation);
}

#[test]
fn a_policy_selects_only_pods_of_its_own_namespace() {
    let mut c = Cluster::new();
    c.add("y", "deny-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}}));
    c.expect(80, TCP, |_, to| to != "y/a");
}

#[test]
fn egress_allow_on_the_client_never_overrides_the_server_s_ingress_isolation() {
    let mut c = Cluster::new();
    c.add("x", "egress-to-y", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}));
    c.add("y", "deny-b", json!({"podSelector": {"matchLabels": {"pod": "b"}}}));
    let t = c.trace("x/a", "y/b", 80, TCP);
    assert_eq!(t.egress.verdict, Verdict::Allowed);
    assert_eq!(t.egress.rule.as_ref().unwrap().policy, "x/egress-to-y");
    assert!(
        t.egress.explanation.starts_with("allowed by x/egress-to-y egress rule 0"),
        "{}",
        t.egress.explanation
    );
    assert_eq!(t.ingress.verdict, Verdict::Denied);
    assert!(!t.allowed);
    c.expect(80, TCP, |from, to| to != "y/b" && (ns_of(from) != "x" || ns_of(to) == "y"));
}

#[test]
fn egress_and_ingress_both_needed_between_isolated_pods() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "a-to-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    c.add(
        "x",
        "b-from-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    c.expect(80, TCP, |from, to| (from != "x/a" || to == "x/b") && (to != "x/b" || from == "x/a"));
}

#[test]
fn default_deny_isolates_every_pod_both_ways_and_policies_add_allows() {
    let mut c = Cluster::new();
    c.default_deny = true;
    c.expect(80, TCP, |_, _| false);
    let t = c.trace("x/a", "y/a", 80, TCP);
    assert!(t.egress.explanation.starts_with("denied: default deny"), "{}", t.egress.explanation);
    c.add("x", "egress-all", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}));
    c.add("y", "ingress-all", json!({"podSelector": {}, "ingress": [{}]}));
    c.expect(80, TCP, |from, to| ns_of(from) == "x" && ns_of(to) == "y");
}

#[test]
fn ipblock_with_a_pod_32_except() {
    let mut c = Cluster::new();
    let yb = c.ip("y/b");
    c.add(
        "x",
        "cidr",
        json!({"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/16", "except": [format!("{yb}/32")]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || from != "y/b");
    assert!(!c.allowed("10.1.0.1", "x/a", 80, TCP));
    assert!(c.allowed("10.0.200.1", "x/a", 80, TCP));
}

#[test]
fn ipblock_of_a_pod_32_allows_that_pod_only() {
    let mut c = Cluster::new();
    let zc = c.ip("z/c");
    c.add(
        "x",
        "one-pod",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": format!("{zc}/32")}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(from) != "x" || to == "z/c");
}

#[test]
fn ipblock_slash_4_with_except() {
    let mut c = Cluster::new();
    // 0.0.0.0/4 holds every pod (10.0.x.x) and 8.8.8.8; y's /24 is excepted.
    c.add(
        "x",
        "wide",
        json!({"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.0.1.0/24"]}}]}]}),
    );
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) != "y");
    assert!(c.allowed("8.8.8.8", "x/a", 80, TCP));
    assert!(!c.allowed("172.16.0.1", "x/a", 80, TCP));
    assert!(!c.allowed("10.0.1.200", "x/a", 80, TCP));
}

#[test]
fn ipblock_and_selector_peers_are_ored_and_overlapping_blocks_union() {
    let mut c = Cluster::new();
    c.add("x", "mixed", json!({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.1.0/24", "10.0.2.0/24"]}},
                  {"podSelector": {"matchLabels": {"pod": "c"}}, "namespaceSelector": {"matchLabels": {"ns": "y"}}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.2.0/25"}}], "ports": [{"port": 81}]}]}));
    // 10.0.2.0/25 holds z/a..c: allowed on 81 only, by the second rule.
    c.expect(80, TCP, |from, to| ns_of(to) != "x" || ns_of(from) == "x" || from == "y/c");
    c.expect(81, TCP, |from, to| ns_of(to) != "x" || ns_of(from) != "y" || from == "y/c");
}

#[test]
fn a_label_change_moves_a_pod_between_peers() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "from-web",
        json!({"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    assert!(!c.allowed("y/a", "x/a", 80, TCP));
    c.set_labels("y/a", labels(&[("pod", "a"), ("app", "web")]));
    assert!(c.allowed("y/a", "x/a", 80, TCP));
}
