//! A quick scale sanity check: 1,000 pods, 1,000 policies; compile + lower + diff. Prints the time (run
//! in release for a meaningful number), asserts only a generous bound.

use std::time::Instant;

use serde_json::json;

use super::*;

#[test]
fn a_thousand_pods_and_a_thousand_policies_compile_lower_and_diff() {
    let mut c = Cluster::new();
    c.pods.clear();
    for ns in 0..20 {
        c.namespaces.insert(format!("ns-{ns}"), labels(&[("team", &format!("t{}", ns % 5))]));
    }
    for i in 0..1000u32 {
        let ns = format!("ns-{}", i % 20);
        let ip = Ipv4Addr::from(0x0a00_0000 + 0x100 + i);
        let app = format!("app-{}", i % 50);
        c.add_pod(
            &ns,
            &format!("pod-{i}"),
            ip,
            labels(&[("app", &app), ("tier", if (i / 20) % 2 == 0 { "web" } else { "db" })]),
            vec![NamedPort { name: "http".into(), protocol: TCP, port: 8000 + (i % 7) as u16 }],
        );
    }
    for i in 0..1000u32 {
        let ns = format!("ns-{}", i % 20);
        let spec = match i % 4 {
            0 => json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}}, "podSelector": {"matchLabels": {"tier": "web"}}}],
                "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}]}]}),
            1 => {
                json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": [format!("10.0.{}.0/24", i % 4)]}}]}]})
            }
            2 => {
                json!({"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"port": "http"}]}, {"ports": [{"port": 53, "protocol": "UDP"}]}]})
            }
            _ => json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        };
        c.add(&ns, &format!("policy-{i}"), spec);
    }
    let local: Vec<Ipv4Addr> = c.pods.iter().map(|p| p.ip).collect();
    let start = Instant::now();
    let compiled = compile(&c.input(), &local);
    let compile_time = start.elapsed();
    let entries = lower(&compiled);
    let lower_time = start.elapsed() - compile_time;
    let d = diff(&MapEntries::default(), &entries);
    let total = start.elapsed();
    c.policies.truncate(900);
    let again = Instant::now();
    let after = lower(&compile(&c.input(), &local));
    let d2 = diff(&entries, &after);
    let second = again.elapsed();
    println!(
        "scale: 1000 pods (all local), 1000 policies: compile {compile_time:?}, lower {lower_time:?}, \
         compile+lower+diff from empty {total:?}; then 100 policies fewer {second:?} (diff {} ops); \
         {} policy entries, {} cidr entries, {} rules, diff {} ops",
        d2.len(),
        entries.policy.len(),
        entries.cidrs.len(),
        compiled.rules.len(),
        d.len()
    );
    assert!(compiled.notices.is_empty(), "{:?}", &compiled.notices[..3.min(compiled.notices.len())]);
    assert!(!d.is_empty());
    assert!(total.as_secs() < 60);
}
