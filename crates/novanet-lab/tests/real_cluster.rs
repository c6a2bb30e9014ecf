//! The user's quickstart on a real Kubernetes cluster in the lab: a genuine control plane, containerd +
//! kubelet + kube-proxy per node, images from the lab's own registry, NovaNet installed by its Helm chart,
//! then exactly the README's commands, the lifecycle checks, and Kubernetes' own conformance subset for
//! pod networking (`e2e.test`). Skips, loudly, only when the Kubernetes binaries are not built.

mod common;

use common::wait_for;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use novanet_lab::controlplane::bins_or_skip;
use novanet_lab::{Lab, LabOptions, LabSpec};

/// The pod networking conformance checks, hostPort (NovaNet chains the reference portmap plugin), and
/// Services reached from hostNetwork pods (lab nodes have a default route, so the node's NAT sees them).
const E2E_FOCUS: &str = "Networking Granular Checks: Pods should function for (intra|node)-pod communication: (http|udp)|\
     HostPort validates that there is no conflict between pods with same hostPort but different hostIP and protocol|\
     Services should work after the service has been recreated|\
     Networking Granular Checks: Services should function for service endpoints using hostNetwork";

/// Kubernetes' NetworkPolicy suite, without the specs that need SCTP.
const NETPOL_FOCUS: &str = "\\[sig-network\\] Netpol ";
const NETPOL_SKIP: &str = "SCTP";

/// The agent pod on `node`.
fn agent_on(c: &Cluster, node: &str) -> String {
    c.kubectl(&[
        "get", "pods", "-n", "novanet-system", "--field-selector", &format!("spec.nodeName={node}"), "-o",
        "jsonpath={.items[0].metadata.name}",
    ])
}

struct Cluster {
    lab: Lab,
    bin_dir: std::path::PathBuf,
}

impl Cluster {
    fn cmd(&self, program: &str, args: &[&str]) -> Output {
        let kubeconfig = self.lab.state.kubeconfig.clone().expect("lab kubeconfig");
        let out = Command::new(self.bin_dir.join(program))
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "+ {program} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program, args);
        assert!(out.status.success(), "{program} {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.ok("kubectl", args)
    }

    /// What a reader needs when something did not come up.
    fn diagnostics(&self) {
        self.cmd("kubectl", &["get", "nodes", "-o", "wide"]);
        self.cmd("kubectl", &["get", "pods", "-A", "-o", "wide"]);
        self.cmd("kubectl", &["describe", "pods", "-n", "novanet-system"]);
        self.cmd("kubectl", &["logs", "-n", "novanet-system", "ds/novanet", "-c", "agent", "--tail=50"]);
        self.cmd("kubectl", &["describe", "pods", "-n", "default"]);
        self.cmd("kubectl", &["get", "events", "-A", "--sort-by=.lastTimestamp"]);
    }
}


const SPEC: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.2.0/24}
";

fn run_pod(c: &Cluster, name: &str, node: &str) {
    let overrides = format!("{{\"spec\":{{\"nodeName\":\"{node}\"}}}}");
    c.kubectl(&["run", name, "--image=busybox", "--restart=Never", "--overrides", &overrides, "--", "sleep", "3600"]);
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    c.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"])
}

#[test]
fn quickstart_commands_lifecycle_and_conformance_on_a_real_cluster() {
    let needed = [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
        "helm", "registry", "agnhost", "e2e.test",
    ];
    let Some(bin_dir) = bins_or_skip("quickstart_commands_lifecycle_and_conformance_on_a_real_cluster", &needed)
    else {
        return;
    };
    let started = Instant::now();
    let options = LabOptions { kubernetes: Some(bin_dir.clone()), real_nodes: true, ..Default::default() };
    let lab = Lab::guard_with(&format!("test-real-{}", std::process::id()), &LabSpec::parse(SPEC).unwrap(), &options)
        .unwrap();
    common::say(&format!("lab cluster up in {:?}", started.elapsed()));
    let mut c = Cluster { lab, bin_dir };

    // helm install, as the README says.
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/novanet");
    let values = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/helm-values-lab.yaml");
    let installed = c.cmd(
        "helm",
        &["install", "novanet", chart, "-n", "novanet-system", "--create-namespace", "-f", values, "--wait", "--timeout", "3m"],
    );
    if !installed.status.success() {
        c.diagnostics();
        panic!("helm install failed");
    }
    c.kubectl(&["wait", "nodes", "--all", "--for=condition=Ready", "--timeout=180s"]);
    common::say(&format!("NovaNet installed and nodes Ready after {:?}", started.elapsed()));

    // The quickstart, verbatim. `helm install --wait` counts a DaemonSet ready with `maxUnavailable` (1) of
    // its pods not ready yet, and an agent is ready only once its sources listed: wait for the rollout.
    c.kubectl(&["-n", "novanet-system", "rollout", "status", "daemonset/novanet", "--timeout=180s"]);
    let agents = c.kubectl(&["get", "pods", "-n", "novanet-system", "-o", "wide"]);
    assert_eq!(agents.lines().filter(|l| l.contains("Running")).count(), 2, "{agents}");
    let status = c.kubectl(&["exec", "-n", "novanet-system", "ds/novanet", "-c", "agent", "--", "novanetctl", "status"]);
    assert!(status.contains("ready:      true"), "{status}");
    run_pod(&c, "test-a", "node-a");
    run_pod(&c, "test-b", "node-b");
    run_pod(&c, "test-c", "node-a");
    if !c.cmd("kubectl", &["wait", "pod", "test-a", "test-b", "test-c", "--for=condition=Ready", "--timeout=120s"]).status.success() {
        c.diagnostics();
        panic!("test pods did not become Ready");
    }
    let (b, cc) = (pod_ip(&c, "test-b"), pod_ip(&c, "test-c"));
    c.kubectl(&["exec", "test-a", "--", "ping", "-c", "3", &b]);
    c.kubectl(&["exec", "test-a", "--", "ping", "-c", "3", &cc]);

    // Cluster DNS: the lab's CoreDNS (kube-dns, reached through kube-proxy's Service rules) answers pods.
    c.kubectl(&["rollout", "status", "-n", "kube-system", "deploy/coredns", "--timeout=120s"]);
    // From both nodes: one of them runs CoreDNS, so one query is DNATed to a pod on the client's own node,
    // whose answer must go back through conntrack rather than the redirect fast path.
    // kube-proxy programs the Service's rules asynchronously once CoreDNS is ready (until then it rejects:
    // "connection refused"), so the first answer may take a few seconds.
    for pod in ["test-a", "test-b"] {
        let mut answer = String::new();
        let resolved = common::poll(Duration::from_secs(30), Duration::from_secs(2), || {
            let out = c.cmd("kubectl", &["exec", pod, "--", "nslookup", "kubernetes.default.svc.cluster.local"]);
            answer = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            out.status.success() && answer.contains("10.96.0.1")
        });
        assert!(resolved, "{pod}: kubernetes.default did not resolve to its ClusterIP within 30 s: {answer}");
    }
    let answer = c.kubectl(&["exec", "test-a", "--", "nslookup", "kube-dns.kube-system.svc.cluster.local"]);
    assert!(answer.contains("10.96.0.10"), "{answer}");

    // Deleting the agent pod while two pods ping each other loses no ping.
    let kubeconfig = c.lab.state.kubeconfig.clone().unwrap();
    let pinger = Command::new(c.bin_dir.join("kubectl"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["exec", "test-a", "--", "ping", "-c", "150", "-i", "0.1", &cc])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.kubectl(&["delete", "pod", "-n", "novanet-system", "--field-selector", "spec.nodeName=node-a", "--wait=true"]);
    wait_for("the agent on node-a to come back", Duration::from_secs(120), Duration::from_secs(1), || {
        c.cmd("kubectl", &["rollout", "status", "-n", "novanet-system", "ds/novanet", "--timeout=5s"]).status.success()
    });
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let loss = text.lines().find(|l| l.contains("packet loss")).unwrap_or_default();
    common::say(&format!("pings while node-a's agent pod was replaced: {loss}"));
    assert!(text.contains(" 0% packet loss"), "pings lost while the agent pod was replaced");

    // Deleting a pod leaves no endpoint, map entry, address or veth behind (kubelet's CNI DEL).
    let agent_a = c.kubectl(&[
        "get", "pods", "-n", "novanet-system", "--field-selector", "spec.nodeName=node-a", "-o", "jsonpath={.items[0].metadata.name}",
    ]);
    // (CoreDNS may run on node-a too: count relative to before.)
    let endpoints = |c: &Cluster| -> (usize, bool) {
        let json =
            c.kubectl(&["exec", "-n", "novanet-system", &agent_a, "-c", "agent", "--", "novanetctl", "-o", "json", "endpoints"]);
        (json.matches("\"ip\"").count(), json.contains("\"pod\":\"test-c\""))
    };
    let node_a_veths = |c: &Cluster| pod_veths(c, "node-a").len();
    let ((eps_before, has_c), veths_before) = (endpoints(&c), node_a_veths(&c));
    assert!(has_c && eps_before >= 2, "test-a and test-c on node-a");
    assert_eq!(veths_before, eps_before, "one veth per endpoint");
    c.kubectl(&["delete", "pod", "test-c", "--wait=true"]);
    wait_for("test-c's endpoint to go", Duration::from_secs(60), Duration::from_secs(1), || {
        endpoints(&c) == (eps_before - 1, false) && node_a_veths(&c) == veths_before - 1
    });

    // Kubernetes' own pod-networking conformance checks.
    let e2e_started = Instant::now();
    common::say(&format!("e2e focus: {E2E_FOCUS}"));
    let ul = c.lab.state.underlay_netns.clone().unwrap();
    let admin = c.lab.control_plane_admin_kubeconfig().unwrap();
    let e2e = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ul}"))
        .arg("--")
        .arg(c.bin_dir.join("e2e.test"))
        .arg(format!("--kubeconfig={}", admin.display()))
        .args(["--provider=skeleton", "--ginkgo.no-color", "--ginkgo.timeout=30m"])
        .arg(format!("--ginkgo.focus={E2E_FOCUS}"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&e2e.stdout);
    for line in log.lines().filter(|l| l.contains("Ran ") || l.contains("Passed") || l.contains("FAIL") || l.contains("SUCCESS")) {
        common::say(&format!("e2e: {line}"));
    }
    common::say(&format!("e2e took {:?}", e2e_started.elapsed()));
    assert!(e2e.status.success(), "e2e failed:\n{log}\n{}", String::from_utf8_lossy(&e2e.stderr));

    // Kubernetes' own NetworkPolicy suite: the 45 `[sig-network] Netpol` specs that need no SCTP (this
    // kernel has none). The suite reaches its pods through Services (kube-proxy here).
    let netpol_started = Instant::now();
    let netpol = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ul}"))
        .arg("--")
        .arg(c.bin_dir.join("e2e.test"))
        .arg(format!("--kubeconfig={}", admin.display()))
        .args(["--provider=skeleton", "--ginkgo.no-color", "--ginkgo.timeout=60m"])
        .arg(format!("--ginkgo.focus={NETPOL_FOCUS}"))
        .arg(format!("--ginkgo.skip={NETPOL_SKIP}"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&netpol.stdout);
    for line in log.lines().filter(|l| l.contains("Ran ") || l.contains("Passed") || l.contains("[FAIL]") || l.contains("SUCCESS")) {
        common::say(&format!("netpol e2e: {line}"));
    }
    common::say(&format!("netpol e2e took {:?}", netpol_started.elapsed()));
    assert!(log.contains("Ran 45 of"), "expected the 45 Netpol specs:\n{log}");
    assert!(netpol.status.success(), "netpol e2e failed:\n{log}\n{}", String::from_utf8_lossy(&netpol.stderr));

    // Readiness can be false in the real cluster: an agent whose Pod source cannot list (its RBAC lost
    // `pods`) answers but is not ready, so kubelet's readiness probe keeps it out; it becomes ready once
    // the permission is back.
    let rule0 = |resources: &str| format!("[{{\"op\":\"replace\",\"path\":\"/rules/0/resources\",\"value\":[{resources}]}}]");
    c.kubectl(&["patch", "clusterrole", "novanet-agent", "--type=json", "-p", &rule0("\"namespaces\",\"nodes\",\"services\"")]);
    c.kubectl(&["delete", "pod", "-n", "novanet-system", "--field-selector", "spec.nodeName=node-a", "--wait=true"]);
    let mut said = String::new();
    let unready = common::poll(Duration::from_secs(120), Duration::from_secs(2), || {
        let out = c.cmd("kubectl", &["exec", "-n", "novanet-system", &agent_on(&c, "node-a"), "-c", "agent", "--", "novanetctl", "status", "--ready"]);
        said = String::from_utf8_lossy(&out.stderr).to_string();
        out.status.code() == Some(2)
    });
    assert!(unready, "an agent that cannot list pods must answer not ready (exit 2): {said}");
    assert!(said.contains("Pod source"), "the reason names the Pod source: {said}");
    let ready_col = c.kubectl(&["get", "pods", "-n", "novanet-system", "--field-selector", "spec.nodeName=node-a", "-o", "jsonpath={.items[0].status.containerStatuses[0].ready}"]);
    assert_eq!(ready_col, "false", "kubelet's readiness probe sees it");
    c.kubectl(&["patch", "clusterrole", "novanet-agent", "--type=json", "-p", &rule0("\"pods\",\"namespaces\",\"nodes\",\"services\"")]);
    wait_for("node-a's agent ready again", Duration::from_secs(120), Duration::from_secs(1), || {
        c.cmd("kubectl", &["rollout", "status", "-n", "novanet-system", "ds/novanet", "--timeout=5s"]).status.success()
    });
    common::say("readiness: false while the Pod source could not list, true again once it could");

    // A node removed (its namespaces, containerd, kubelet, agent state all gone) and added back rejoins:
    // it re-registers, gets the agent again from the DaemonSet, and its new pods reach the others.
    let node_b = novanet_lab::NodeSpec { name: "node-b".into(), pod_cidr: c.lab.node("node-b").unwrap().pod_cidr };
    c.lab.remove_node("node-b").unwrap();
    c.lab.add_node(&node_b).unwrap();
    c.kubectl(&["wait", "node", "node-b", "--for=condition=Ready", "--timeout=120s"]);
    wait_for("the agent on the rejoined node", Duration::from_secs(120), Duration::from_secs(1), || {
        c.cmd("kubectl", &["rollout", "status", "-n", "novanet-system", "ds/novanet", "--timeout=5s"]).status.success()
            && c.cmd("kubectl", &["exec", "-n", "novanet-system", "ds/novanet", "-c", "agent", "--", "true"]).status.success()
    });
    run_pod(&c, "test-d", "node-b");
    if !c.cmd("kubectl", &["wait", "pod", "test-d", "--for=condition=Ready", "--timeout=120s"]).status.success() {
        c.diagnostics();
        panic!("a pod on the rejoined node did not become Ready");
    }
    c.kubectl(&["exec", "test-a", "--", "ping", "-c", "3", &pod_ip(&c, "test-d")]);

    // `helm uninstall` leaves the nodes clean: each agent sees its DaemonSet deleted and, as it exits,
    // removes the conflist, the plugin, its pins, endpoint state and socket. (Pods first, as users do.)
    c.kubectl(&["delete", "pod", "test-a", "test-b", "test-d", "--wait=true"]);
    c.kubectl(&["scale", "-n", "kube-system", "deploy/coredns", "--replicas=0"]);
    c.kubectl(&["wait", "-n", "kube-system", "pod", "-l", "k8s-app=kube-dns", "--for=delete", "--timeout=60s"]);
    for node in ["node-a", "node-b"] {
        let installed = novanet_leftovers(&c, node);
        assert_eq!(installed.len(), 6, "while installed, {node} has all six NovaNet files: {installed:?}");
    }
    let uninstalled = Instant::now();
    c.ok("helm", &["uninstall", "novanet", "-n", "novanet-system", "--wait"]);
    for node in ["node-a", "node-b"] {
        let mut left = Vec::new();
        let clean = common::poll(Duration::from_secs(90), Duration::from_secs(1), || {
            left = novanet_leftovers(&c, node);
            left.is_empty()
        });
        if !clean {
            c.diagnostics();
            panic!("helm uninstall left NovaNet on {node}: {left:?}");
        }
    }
    common::say(&format!("helm uninstall: both nodes clean after {:?}", uninstalled.elapsed()));
    common::say(&format!("whole run {:?}", started.elapsed()));
}

/// What NovaNet left on a node: installed files, pins, state, socket, pod veths.
fn novanet_leftovers(c: &Cluster, node: &str) -> Vec<String> {
    let kube_node = c.lab.kube_node(node).expect("a real node");
    let mut left: Vec<String> = [
        "/etc/cni/net.d/10-novanet.conflist",
        "/opt/cni/bin/novanet-cni",
        "/opt/cni/bin/novanet-portmap",
        "/var/lib/novanet/endpoints.json",
    ]
        .into_iter()
        .filter(|p| kube_node.host_path(p).is_some_and(|h| h.exists()))
        .map(String::from)
        .collect();
    // The bpffs and /run are the node's own mounts: look from inside it.
    for path in ["/sys/fs/bpf/novanet", "/run/novanet/novanet.sock"] {
        if kube_node.exec_in_node("test").args(["-e", path]).status().is_ok_and(|s| s.success()) {
            left.push(path.to_string());
        }
    }
    left.extend(pod_veths(c, node));
    left
}

/// The host-side pod veths (`nn*`) of a node, as `ip -o link` lines.
fn pod_veths(c: &Cluster, node: &str) -> Vec<String> {
    let kube_node = c.lab.kube_node(node).expect("a real node");
    let links = kube_node.exec_in_node("ip").args(["-o", "link"]).output().expect("ip link in the node");
    String::from_utf8_lossy(&links.stdout).lines().filter(|l| l.contains(": nn")).map(String::from).collect()
}
