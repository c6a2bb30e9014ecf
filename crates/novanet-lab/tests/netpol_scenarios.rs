//! NetworkPolicy scenarios in the style of the upstream netpol suite, on one shared light lab (see
//! `netpol/mod.rs`): namespaces x, y, z with pods a, b, c each over two nodes, TCP and UDP on 80 and 81.
//! Each scenario applies policies with `novanet lab apply`, waits for enforcement and compares the full
//! probe matrix with the expectation it computes. `no_policy_means_every_pod_reaches_every_pod` needs no
//! enforcement; every other scenario needs the agent's policy subsystem and the eBPF policy datapath.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
mod netpol;

use netpol::{Conn, Reachability, scenario};
use novanet_lab::connectivity::Protocol;

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

#[test]
fn no_policy_means_every_pod_reaches_every_pod() {
    let Some(s) = scenario() else { return };
    // `scenario()` already waited for this matrix; probe once more and check it in full.
    let all = Reachability::all(&s.pods, true);
    let got = s.probe(&all);
    assert_eq!(got.len(), 9 * 9 * 2 * 2);
    assert!(all.mismatches(&got).is_empty(), "{:?}", all.mismatches(&got));
}

#[test]
fn default_deny_ingress_isolates_the_namespace_from_every_source() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"));
    s.expect(&Reachability::with(&s.pods, |c| c.dst_ns() != "x"));
}

#[test]
fn default_deny_egress_stops_the_namespace_reaching_anyone() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "deny-egress", "  podSelector: {}\n  policyTypes: [Egress]\n"));
    s.expect(&Reachability::with(&s.pods, |c| c.src_ns() != "x"));
}

#[test]
fn deny_all_ingress_and_egress() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"));
    s.expect(&Reachability::with(&s.pods, |c| c.src_ns() != "x" && c.dst_ns() != "x"));
}

#[test]
fn allow_from_the_same_namespace_only() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "same-ns", "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n"));
    s.expect(&Reachability::with(&s.pods, |c| c.dst_ns() != "x" || c.src_ns() == "x"));
}

#[test]
fn pod_selector_only_matches_pods_of_the_policy_namespace() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "a-from-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.from == "x/b"));
}

#[test]
fn namespace_selector_only_matches_every_pod_of_those_namespaces() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "a-from-y",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.src_ns() == "y"));
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_an_and() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "a-from-y-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.from == "y/b"));
}

#[test]
fn pod_and_namespace_selector_in_two_peers_is_an_or() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "a-from-y-or-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.src_ns() == "y" || c.from == "x/b"));
}

fn namespace_expression(s: &netpol::Scenario, expression: &str, allowed: impl Fn(&str) -> bool) {
    s.apply(&policy(
        "x",
        "a-expr",
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{expression}]\n"
        ),
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || allowed(c.src_ns())));
}

#[test]
fn match_expressions_in() {
    let Some(s) = scenario() else { return };
    namespace_expression(&s, "{key: ns, operator: In, values: [y, z]}", |ns| ns == "y" || ns == "z");
}

#[test]
fn match_expressions_not_in() {
    let Some(s) = scenario() else { return };
    namespace_expression(&s, "{key: ns, operator: NotIn, values: [y]}", |ns| ns != "y");
}

fn pod_expression(s: &netpol::Scenario, expression: &str, allowed: impl Fn(&str) -> bool) {
    s.apply(&policy(
        "x",
        "a-pod-expr",
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{}}\n      podSelector:\n        matchExpressions: [{expression}]\n"
        ),
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || allowed(c.src_pod())));
}

#[test]
fn match_expressions_exists() {
    let Some(s) = scenario() else { return };
    pod_expression(&s, "{key: tier, operator: Exists}", |pod| pod == "c");
}

#[test]
fn match_expressions_does_not_exist() {
    let Some(s) = scenario() else { return };
    pod_expression(&s, "{key: tier, operator: DoesNotExist}", |pod| pod != "c");
}

#[test]
fn ip_block_with_a_pod_excepted_from_a_16() {
    let Some(mut s) = scenario() else { return };
    let yb = s.ip("y/b");
    s.apply(&policy(
        "x",
        "a-from-block",
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.244.0.0/16, except: [{yb}/32]}}\n"
        ),
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.from != "y/b"));
}

#[test]
fn ip_block_of_a_4_with_an_except_of_one_node() {
    let Some(mut s) = scenario() else { return };
    let on_n2: Vec<String> = s.lab().state.pods.iter().filter(|p| p.node == "n2").map(|p| p.key()).collect();
    s.apply(&policy(
        "x",
        "a-from-slash4",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 0.0.0.0/4, except: [10.244.2.0/24]}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || !on_n2.iter().any(|p| p == c.from)));
}

#[test]
fn a_named_port_resolves_per_pod_same_name_different_numbers() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "web", "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: web, protocol: TCP}\n"));
    // x/a names TCP 80 `web`, x/b names TCP 81 `web`, x/c has no `web`.
    s.expect(&Reachability::with(&s.pods, |c: Conn| match c.to {
        "x/a" => c.tcp() && c.port == 80,
        "x/b" => c.tcp() && c.port == 81,
        "x/c" => false,
        _ => true,
    }));
}

#[test]
fn an_unresolved_named_port_allows_nothing() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "nosuch", "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: nosuch, protocol: TCP}\n"));
    s.expect(&Reachability::with(&s.pods, |c| c.dst_ns() != "x"));
}

#[test]
fn end_port_allows_the_range_only() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "range",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 90, protocol: TCP}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || (c.tcp() && c.port == 81)));
}

#[test]
fn egress_deny_all_with_dns_to_anywhere_allowed() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "dns-only",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {port: 53, protocol: UDP}\n",
    ));
    let expected = Reachability::on(&s.pods, &[53, 80], &[Protocol::Tcp, Protocol::Udp], |c| {
        Some(c.src_ns() != "x" || (c.port == 53 && c.protocol == Protocol::Udp))
    });
    s.expect(&expected);
}

#[test]
fn multiple_policies_are_a_union() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "from-y",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    ));
    s.apply(&policy(
        "x",
        "from-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.src_ns() == "y" || c.from == "x/b"));
}

#[test]
fn a_policy_update_takes_effect_while_traffic_flows() {
    let Some(s) = scenario() else { return };
    let from = |ns: &str| {
        policy(
            "x",
            "moving",
            &format!(
                "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{ns: {ns}}}}}\n"
            ),
        )
    };
    s.apply(&from("y"));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.src_ns() == "y"));
    // Traffic keeps flowing (probes in a loop) while the same policy is updated to another namespace.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let name = s.name.clone();
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new(common::cli::NOVANET)
                    .args(["lab", "probe", "--name", &name, "--json", "--timeout-ms", "300", "--to", "x/a"])
                    // Another port than the scenario's: this probe's servers must not stand in for its own.
                    .args(["--ports", "8080"])
                    .output();
            }
        })
    };
    s.apply(&from("z"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.src_ns() == "z"))
    }));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    result.unwrap();
}

#[test]
fn deleting_the_policy_restores_access() {
    let Some(s) = scenario() else { return };
    let deny = policy("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n");
    s.apply(&deny);
    s.expect(&Reachability::with(&s.pods, |c| c.dst_ns() != "x"));
    s.delete(&deny);
    s.expect(&Reachability::all(&s.pods, true));
}

#[test]
fn a_pod_relabelled_into_and_out_of_a_selector() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "from-clients",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {role: client}}\n",
    ));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a"));
    let mut labels = netpol::pod_labels("b");
    labels.insert("role".into(), "client".into());
    s.apply(&netpol::pod_yaml("y", "b", "n2", &labels));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" || c.from == "y/b"));
    s.apply(&netpol::pod_yaml("y", "b", "n2", &netpol::pod_labels("b")));
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a"));
}

#[test]
fn allow_from_one_namespace_isolates_the_pod_from_everyone_else() {
    let Some(s) = scenario() else { return };
    s.apply(&policy(
        "y",
        "from-x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n",
    ));
    // y/a: only from x (its own namespace included in "everyone else"); the other pods of y stay open.
    s.expect(&Reachability::with(&s.pods, |c| c.to != "y/a" || c.src_ns() == "x"));
}

#[test]
fn an_egress_allow_on_the_client_does_not_override_the_server_ingress_isolation() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "a-deny-ingress", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n"));
    s.apply(&policy(
        "y",
        "b-egress-to-x-a",
        "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: a}}\n",
    ));
    // y/b may only send to x/a, which admits no one: y/b reaches no one; no one reaches x/a.
    s.expect(&Reachability::with(&s.pods, |c| c.to != "x/a" && c.from != "y/b"));
}

#[test]
fn a_policy_in_place_before_the_pod_starts_applies_from_its_first_packet() {
    let Some(mut s) = scenario() else { return };
    s.apply(&policy(
        "x",
        "d-from-y",
        "  podSelector: {matchLabels: {pod: d}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    ));
    let spec = novanet_lab::PodSpec {
        namespace: "x".into(),
        name: "d".into(),
        uid: format!("uid-netpol-d-{}", std::process::id()),
        node: "n2".into(),
        labels: netpol::pod_labels("d"),
        command: None,
    };
    s.lab().add_pod(&spec).unwrap();
    s.pods.push("x/d".into());
    // The first probe already sees the policy (no waiting for enforcement to catch up).
    let expected = Reachability::with(&s.pods, |c| c.to != "x/d" || c.src_ns() == "y");
    let first = s.probe(&expected);
    let wrong = expected.mismatches(&first);
    assert!(wrong.is_empty(), "first probe after the pod started: {wrong:?}");
}

#[test]
fn bad_input_leaves_the_other_policies_working() {
    let Some(s) = scenario() else { return };
    s.apply(&policy("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"));
    // Invalid CIDR, and an unknown port name, in policies of another namespace.
    s.apply(&policy(
        "y",
        "bad-cidr",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.300.0.0/33}\n",
    ));
    s.apply(&policy(
        "z",
        "unknown-port",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: no-such-port}\n",
    ));
    // y/a and z/a: whatever the agent makes of the bad policies; x stays isolated, everyone else open.
    let expected = Reachability::on(&s.pods, &netpol::PORTS, &netpol::PROTOCOLS, |c| match c.to {
        "y/a" | "z/a" => None,
        _ => Some(c.dst_ns() != "x"),
    });
    s.expect(&expected);
    // A later valid policy still takes effect.
    s.apply(&policy("y", "deny-b", "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress]\n"));
    let expected = Reachability::on(&s.pods, &netpol::PORTS, &netpol::PROTOCOLS, |c| match c.to {
        "y/a" | "z/a" => None,
        _ => Some(c.dst_ns() != "x" && c.to != "y/b"),
    });
    s.expect(&expected);
}
