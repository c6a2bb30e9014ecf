//! The agent against a genuine control plane (etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler built from the pinned Go modules by `tools/build.sh`) running in the lab's underlay
//! namespace. Skips, loudly, only when those binaries have not been built.

mod common;

use std::time::Duration;

use common::*;
use novanet_lab::controlplane::{CONTROL_PLANE_BINARIES, bins_or_skip};
use novanet_lab::{Lab, LabOptions, LabSpec};



fn endpoints_json(lab: &Lab, node: &str) -> serde_json::Value {
    let ctl = novanet_lab::binaries::Binaries::discover().unwrap().ctl;
    let out = std::process::Command::new(ctl)
        .arg("--socket")
        .arg(lab.socket(node).unwrap())
        .args(["-o", "json", "endpoints"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const SPEC: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.0.0.0/24}   # ignored: the controller-manager assigns pod CIDRs in this mode
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.0.1.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: b}}
spec: {nodeName: n2, containers: [{name: c}]}
";

#[test]
fn agent_follows_the_genuine_apiserver_and_survives_its_outage() {
    let mut needed = CONTROL_PLANE_BINARIES.to_vec();
    needed.push("kubectl");
    let Some(bin_dir) = bins_or_skip("agent_follows_the_genuine_apiserver_and_survives_its_outage", &needed) else {
        return;
    };
    let spec = LabSpec::parse(SPEC).unwrap();
    let options = LabOptions { kubernetes: Some(bin_dir), ..Default::default() };
    let mut lab = Lab::guard_with(&format!("test-k8s-{}", std::process::id()), &spec, &options).unwrap();

    // Pod CIDRs come from the controller-manager, through the Node objects.
    for node in ["n1", "n2"] {
        let api_cidr = lab.kubectl(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"], None).unwrap();
        let status = novanet_lab::node::agent_status(&lab.socket(node).unwrap()).unwrap();
        assert_eq!(status.pod_cidr, api_cidr, "node {node}");
        assert!(api_cidr.starts_with("10.244."), "from the cluster CIDR: {api_cidr}");
        assert_eq!(status.source, "kubernetes");
    }
    // Endpoints carry the pod's API identity.
    let uid = lab.kubectl(&["get", "pod", "a", "-o", "jsonpath={.metadata.uid}"], None).unwrap();
    let eps = endpoints_json(&lab, "n1");
    assert_eq!(eps[0]["pod"], "a");
    assert_eq!(eps[0]["namespace"], "default");
    assert_eq!(eps[0]["podUID"], uid.as_str());
    // Pods on the two nodes reach each other.
    assert!(ping(lab.pod_command("a", "ping").unwrap(), lab.pod_ip("b").unwrap()));
    // The agent publishes its underlay address on its Node.
    wait_for("the underlay annotation", Duration::from_secs(20), Duration::from_millis(250), || {
        lab.kubectl(&["get", "node", "n1", "-o", "jsonpath={.metadata.annotations.novanet\\.io/underlay-ip}"], None)
            .map(|ip| ip == lab.node("n1").unwrap().underlay_ip.to_string())
            .unwrap_or(false)
    });

    // Apiserver outage: the agent keeps serving pods and says its sources are degraded.
    lab.control_plane().unwrap().stop_apiserver();
    let socket = lab.socket("n1").unwrap();
    wait_for("a degraded-source notice", Duration::from_secs(60), Duration::from_millis(250), || {
        novanet_lab::node::agent_status(&socket).map(|s| s.notices.iter().any(|n| n.contains("degraded"))).unwrap_or(false)
    });
    let node = lab.node("n1").unwrap().clone();
    let mut during = sandbox("during-outage", "n1", format!("{}-outage", lab.state.prefix));
    // The sandbox is not in the lab's state: its namespace goes even when an assertion below fails.
    let _cleanup = SandboxNetns(during.netns.clone());
    // CNI ADD during the outage (the runtime has the pod; the API is away): wired and reachable.
    novanet_lab::pod::add(&node, &mut during).unwrap();
    assert!(ping(lab.pod_command("a", "ping").unwrap(), during.ip.unwrap()));
    assert!(novanet_lab::pod::remove(Some(&node), &mut during).problems().is_empty());
    // A restart of the agent during the outage keeps its pod CIDR and endpoints and serves, but it is not
    // ready: its sources have not completed a list (the lab waits for readiness, so the restart reports
    // exactly that).
    let restarted = lab.restart_agent("n1", true);
    assert!(
        matches!(&restarted, Err(novanet_lab::LabError::Node(novanet_lab::node::NodeError::AgentNotReady { .. }))),
        "a restarted agent with its apiserver away must not be ready: {restarted:?}"
    );
    let status = novanet_lab::node::agent_status(&socket).unwrap();
    assert!(!status.ready, "{status:?}");
    assert!(
        status.not_ready_reasons.iter().any(|r| r.starts_with("kubernetes: ") && r.contains("waiting for the first list")),
        "{:?}",
        status.not_ready_reasons
    );
    let kubernetes = status.subsystems.iter().find(|s| s.name == "kubernetes").unwrap();
    assert_eq!(kubernetes.state, "not-ready");
    assert!(ping(lab.pod_command("a", "ping").unwrap(), lab.pod_ip("b").unwrap()));

    // The apiserver returns: the sources catch up, the agent becomes ready, and a new pod is wired with
    // its API identity.
    lab.control_plane().unwrap().start_apiserver().unwrap();
    // (Healthy sources first; the policy subsystem then compiles once before the agent is ready.)
    wait_for("healthy sources and a ready agent", Duration::from_secs(90), Duration::from_millis(250), || {
        novanet_lab::node::agent_status(&socket)
            .map(|s| s.ready && !s.notices.iter().any(|n| n.contains("source")))
            .unwrap_or(false)
    });
    let status = novanet_lab::node::agent_status(&socket).unwrap();
    assert!(status.ready && status.not_ready_reasons.is_empty(), "{status:?}");
    lab.add_pod(&pod_spec("c", "n1")).unwrap();
    assert!(ping(lab.pod_command("c", "ping").unwrap(), lab.pod_ip("a").unwrap()));

    // A sandbox that vanished without CNI DEL, then its pod deleted in the API: the sweep releases it.
    let c = lab.pod("c").unwrap().clone();
    novanet_lab::netns::NetNs::delete(&c.netns).unwrap();
    lab.kubectl(&["delete", "pod", "c", "--grace-period=0", "--force", "--wait=false"], None).unwrap();
    wait_for("the orphan sweep", Duration::from_secs(30), Duration::from_millis(250), || {
        novanet_lab::node::agent_status(&socket).map(|s| s.endpoints == 1).unwrap_or(false)
    });
    assert_eq!(endpoint_map_entries(&lab, "n1"), 1);
}

/// Deletes a sandbox's network namespace on drop (already gone after a clean removal: nothing to do).
struct SandboxNetns(String);

impl Drop for SandboxNetns {
    fn drop(&mut self) {
        if std::path::Path::new("/run/netns").join(&self.0).exists() {
            let _ = novanet_lab::netns::NetNs::delete(&self.0);
        }
    }
}
