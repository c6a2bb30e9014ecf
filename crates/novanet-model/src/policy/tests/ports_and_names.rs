//! Ports: numbers, protocols, endPort ranges and named ports (ingress on the local pod, egress per
//! destination pod).

use serde_json::json;

use super::*;

fn http_on(c: &mut Cluster, key: &str, port: u16) {
    let mut ports = vec![NamedPort { name: "http".into(), protocol: TCP, port }];
    ports.push(NamedPort { name: "dns".into(), protocol: UDP, port: 53 });
    c.set_ports(key, ports);
}

#[test]
fn allow_one_port_only() {
    let mut c = Cluster::new();
    c.add("x", "port-81", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}));
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
    c.expect(81, TCP, |_, _| true);
    c.expect(81, UDP, |_, to| ns_of(to) != "x");
}

#[test]
fn udp_and_sctp_are_distinct_protocols() {
    let mut c = Cluster::new();
    c.add("x", "udp-80", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]}));
    c.add("x", "sctp-81", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81, "protocol": "SCTP"}]}]}));
    c.expect(80, UDP, |_, _| true);
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
    c.expect(80, SCTP, |_, to| ns_of(to) != "x");
    c.expect(81, SCTP, |_, _| true);
    c.expect(81, UDP, |_, to| ns_of(to) != "x");
}

#[test]
fn a_port_entry_with_only_a_protocol_allows_all_its_ports() {
    let mut c = Cluster::new();
    c.add("x", "all-udp", json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}));
    for port in [1, 80, 81, 65535] {
        assert!(c.allowed("y/a", "x/a", port, UDP));
        assert!(!c.allowed("y/a", "x/a", port, TCP));
    }
    // A port entry with nothing at all is TCP, every port.
    let mut c = Cluster::new();
    c.add("x", "all-tcp", json!({"podSelector": {}, "ingress": [{"ports": [{}]}]}));
    assert!(c.allowed("y/a", "x/a", 12345, TCP));
    assert!(!c.allowed("y/a", "x/a", 12345, UDP));
}

#[test]
fn end_port_makes_a_range() {
    let mut c = Cluster::new();
    c.add("x", "range", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]}));
    c.expect(80, TCP, |_, _| true);
    c.expect(81, TCP, |_, _| true);
    for port in [79, 82] {
        assert!(!c.allowed("y/a", "x/a", port, TCP));
    }
}

#[test]
fn end_port_ranges_lower_exactly_every_port_in_none_out() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "ranges",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [
        {"port": 1000, "endPort": 2047}, {"port": 30001, "endPort": 30003, "protocol": "UDP"}]}]}),
    );
    let all: Vec<_> = c.pods.iter().map(|p| p.ip).collect();
    let entries = lower(&compile(&c.input(), &all));
    let (xa, yb) = (c.ip("x/a"), c.pods.iter().find(|p| p.key() == "y/b").unwrap().clone());
    for port in 0..=u16::MAX {
        let tcp = lookup(&entries, xa, Direction::Ingress, yb.ip, yb.identity, 6, port).allows();
        let udp = lookup(&entries, xa, Direction::Ingress, yb.ip, yb.identity, 17, port).allows();
        assert_eq!(tcp, (1000..=2047).contains(&port), "tcp {port}");
        assert_eq!(udp, (30001..=30003).contains(&port), "udp {port}");
    }
}

#[test]
fn ingress_named_port_resolves_on_each_destination_pod() {
    let mut c = Cluster::new();
    http_on(&mut c, "x/a", 80);
    http_on(&mut c, "x/b", 81);
    c.add("x", "http", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}));
    c.expect(80, TCP, |_, to| ns_of(to) != "x" || to == "x/a");
    c.expect(81, TCP, |_, to| ns_of(to) != "x" || to == "x/b");
    // x/c has no port named http: isolated, nothing allowed.
    assert!(!c.allowed("y/a", "x/c", 80, TCP));
    assert!(c.compile_notices().is_empty(), "{:?}", c.compile_notices());
}

#[test]
fn egress_named_port_resolves_per_destination_pod() {
    let mut c = Cluster::new();
    http_on(&mut c, "y/a", 80);
    http_on(&mut c, "y/b", 81);
    c.add("x", "to-http", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
        "ports": [{"port": "http"}]}]}));
    c.expect(80, TCP, |from, to| ns_of(from) != "x" || to == "y/a");
    c.expect(81, TCP, |from, to| ns_of(from) != "x" || to == "y/b");
    // Named port protocol must match: the name http is TCP only.
    assert!(!c.allowed("x/a", "y/a", 80, UDP));
    let t = c.trace("x/a", "y/b", 81, TCP);
    assert!(matches!(t.egress.lookup, Some(Lookup::Allowed { matched: Matched::CidrClass { .. }, .. })), "{t:?}");
}

#[test]
fn egress_named_port_to_any_destination_and_with_protocol() {
    let mut c = Cluster::new();
    http_on(&mut c, "z/c", 8080);
    c.add(
        "x",
        "dns-and-http",
        json!({"podSelector": {}, "egress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]}),
    );
    assert!(c.allowed("x/a", "z/c", 8080, TCP));
    assert!(c.allowed("x/a", "z/c", 53, UDP));
    assert!(!c.allowed("x/a", "z/c", 53, TCP));
    assert!(!c.allowed("x/a", "z/b", 8080, TCP));
    // An outside address defines no names.
    assert!(!c.allowed("x/a", "8.8.8.8", 53, UDP));
}

#[test]
fn a_rule_may_list_a_number_and_a_name() {
    let mut c = Cluster::new();
    c.add("x", "num-and-name", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"port": "serve-81-udp", "protocol": "UDP"}]}]}));
    c.expect(80, TCP, |_, _| true);
    c.expect(81, UDP, |_, _| true);
    c.expect(81, TCP, |_, to| ns_of(to) != "x");
    c.expect(80, UDP, |_, to| ns_of(to) != "x");
}

#[test]
fn an_unresolved_port_name_allows_nothing_and_says_so() {
    let mut c = Cluster::new();
    c.add("x", "nowhere", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "no-such-port"}]}]}));
    c.add(
        "y",
        "nowhere-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "no-such-port"}]}]}),
    );
    for port in [80, 81] {
        c.expect(port, TCP, |from, to| ns_of(to) != "x" && ns_of(from) != "y");
    }
    let notices = c.compile_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.iter().all(|n| matches!(n.problem, Problem::UnresolvedPortName { .. })));
    assert_eq!(notices[0].policy, "x/nowhere");
    assert!(notices[0].message.contains("no-such-port"));
}

#[test]
fn a_named_port_with_the_wrong_protocol_does_not_resolve() {
    let mut c = Cluster::new();
    c.add(
        "x",
        "wrong-proto",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp", "protocol": "UDP"}]}]}),
    );
    c.expect(80, UDP, |_, to| ns_of(to) != "x");
    c.expect(80, TCP, |_, to| ns_of(to) != "x");
}

impl Cluster {
    pub fn compile_notices(&self) -> Vec<Notice> {
        compile(&self.input(), &[]).notices
    }
}
