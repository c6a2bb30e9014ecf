//! Real Kubernetes nodes in a lab: a genuine control plane in the underlay namespace and two nodes, each
//! with its own mount namespace, containerd 1.6, kubelet and kube-proxy. The kubelets register the Nodes;
//! with a reference CNI (Debian's ptp + host-local, just for this test) the nodes go Ready and pods run
//! with a locally built pause image; teardown leaves no process, mount, namespace or cgroup, and the host's
//! sysctls as they were. Skips (a failure under CI) only when binaries or host tools are missing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{namespaces_with_prefix, ping, say};
use novanet_lab::controlplane::{CONTROL_PLANE_BINARIES, ControlPlane, ControlPlaneConfig, bins_or_skip};
use novanet_lab::kubenode::{self, HostSysctls, KubeNode, KubeNodeError, KubeNodeOptions, KubeNodeState};
use novanet_lab::netns::{NetNs, unique_prefix};
use novanet_lab::state::NodeState;
use novanet_lab::{Lab, LabOptions, LabSpec, NodeSpec};

const TEST: &str = "two_real_nodes_register_run_pods_and_leave_nothing_behind";

const SPEC: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.0.0.0/24}   # ignored: the controller-manager assigns pod CIDRs
";

const REFERENCE_PLUGINS: [&str; 4] = ["ptp", "host-local", "loopback", "portmap"];
const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";

/// Host programs this test needs besides the Kubernetes binaries; skips the test when one is missing.
fn host_or_skip(test: &str) -> bool {
    let mut missing = kubenode::missing_host_tools();
    for p in REFERENCE_PLUGINS {
        if !Path::new(REFERENCE_CNI_DIR).join(p).is_file() {
            missing.push(format!("{REFERENCE_CNI_DIR}/{p} (Debian containernetworking-plugins)"));
        }
    }
    for tool in ["gcc", "tar", "sha256sum", "ping"] {
        if !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success()).unwrap_or(false) {
            missing.push(tool.to_string());
        }
    }
    if !missing.is_empty() {
        novanet_testkit::skip_named(test, format_args!("missing on the host: {}", missing.join(", ")));
        return false;
    }
    true
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sha256(path: &Path) -> String {
    sh(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_string()
}

/// `registry.k8s.io/pause:3.10` as an OCI archive: a static C pause, one uncompressed layer.
fn build_pause_archive(work: &Path) -> PathBuf {
    let src = work.join("pause.c");
    std::fs::write(
        &src,
        "#include <signal.h>\n#include <unistd.h>\n#include <sys/wait.h>\n\
         static void die(int s) { (void)s; _exit(0); }\n\
         static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }\n\
         int main(void) { signal(SIGINT, die); signal(SIGTERM, die); signal(SIGCHLD, reap); for (;;) pause(); }\n",
    )
    .unwrap();
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    sh(Command::new("gcc").args(["-static", "-Os", "-o"]).arg(rootfs.join("pause")).arg(&src));
    let layer = work.join("layer.tar");
    sh(Command::new("tar").args(["--owner=0", "--group=0", "--numeric-owner", "-C"]).arg(&rootfs).arg("-cf").arg(&layer).arg("pause"));
    let oci = work.join("oci");
    let blobs = oci.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |path: &Path| -> (String, u64) {
        let digest = sha256(path);
        std::fs::copy(path, blobs.join(&digest)).unwrap();
        (digest, std::fs::metadata(path).unwrap().len())
    };
    let (layer_digest, layer_size) = blob(&layer);
    let config = work.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        })
        .to_string(),
    )
    .unwrap();
    let (config_digest, config_size) = blob(&config);
    let manifest = work.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
        })
        .to_string(),
    )
    .unwrap();
    let (manifest_digest, manifest_size) = blob(&manifest);
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        oci.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"), "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": kubenode::SANDBOX_IMAGE, "org.opencontainers.image.ref.name": "3.10"},
            }],
        })
        .to_string(),
    )
    .unwrap();
    let archive = work.join("pause.tar");
    sh(Command::new("tar").arg("-C").arg(&oci).arg("-cf").arg(&archive).args(["oci-layout", "index.json", "blobs"]));
    archive
}

/// Debian's reference plugins and a ptp + host-local conflist over the node's pod CIDR (test only: the
/// product's CNI arrives with its Helm chart).
fn install_reference_cni(kube: &KubeNode, pod_cidr: &str) {
    let bin = kube.host_path("/opt/cni/bin").unwrap();
    for p in REFERENCE_PLUGINS {
        std::fs::copy(Path::new(REFERENCE_CNI_DIR).join(p), bin.join(p)).unwrap();
    }
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "lab-ptp",
        "plugins": [
            {"type": "ptp", "ipMasq": false, "mtu": 1500,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    std::fs::write(kube.host_path("/etc/cni/net.d/10-lab-ptp.conflist").unwrap(), conflist.to_string()).unwrap();
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')).unwrap_or(true))
        .unwrap_or(false)
}

#[test]
fn two_real_nodes_register_run_pods_and_leave_nothing_behind() {
    let mut needed = CONTROL_PLANE_BINARIES.to_vec();
    needed.extend(["kubectl", "kubelet", "kube-proxy"]);
    let Some(bin_dir) = bins_or_skip(TEST, &needed) else { return };
    if !host_or_skip(TEST) {
        return;
    }
    let sysctls_before = HostSysctls::record();
    let work = tempfile::tempdir().unwrap();
    let pause = build_pause_archive(work.path());

    let spec = LabSpec::parse(SPEC).unwrap();
    let options = LabOptions { kubernetes: Some(bin_dir.clone()), real_nodes: true, ..Default::default() };
    // The lab with n1, then n2 added to the running lab (timed on its own).
    let t0 = Instant::now();
    let mut lab = Lab::guard_with(&format!("test-kubenode-{}", std::process::id()), &spec, &options).unwrap();
    let up = t0.elapsed();
    let t_add = Instant::now();
    lab.add_node(&NodeSpec { name: "n2".into(), pod_cidr: "10.0.1.0/24".parse().unwrap() }).unwrap();
    let add = t_add.elapsed();
    let node_starts: Vec<String> =
        lab.kube_nodes().iter().map(|k| format!("{} {:.2?}", k.name(), k.startup_time())).collect();
    say(&format!(
        "{TEST}: lab up (control plane + n1 registered with a pod CIDR) {up:.2?}; add_node n2 (start + registration + \
         pod CIDR + routes) {add:.2?}; KubeNode::start alone (holder, mounts, containerd, kubelet healthz, kube-proxy): {}",
        node_starts.join(", ")
    ));
    let kubectl = |args: &[&str]| lab.kubectl(args, None).unwrap();

    // The kubelets registered the Nodes: addresses on the underlay, pod CIDRs from the controller-manager,
    // containerd as the runtime; NotReady, because there is no CNI yet.
    let nodes: serde_json::Value = serde_json::from_str(&kubectl(&["get", "nodes", "-o", "json"])).unwrap();
    let items = nodes["items"].as_array().unwrap();
    let mut names: Vec<&str> = items.iter().map(|n| n["metadata"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["n1", "n2"]);
    for n in items {
        let name = n["metadata"]["name"].as_str().unwrap();
        let state = lab.node(name).unwrap();
        let internal = n["status"]["addresses"].as_array().unwrap().iter().find(|a| a["type"] == "InternalIP").unwrap();
        assert_eq!(internal["address"], state.underlay_ip.to_string(), "{name}");
        assert_eq!(n["spec"]["podCIDR"], state.pod_cidr.to_string(), "{name}");
        assert!(state.pod_cidr.to_string().starts_with("10.244."), "{name}: {}", state.pod_cidr);
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], name);
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.34.4");
        let runtime = n["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap();
        assert!(runtime.starts_with("containerd://1.6"), "{runtime}");
        let ready = n["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_ne!(ready["status"], "True", "{name} is Ready without a CNI?");
        assert!(state.agent_pid.is_none(), "the lab must not start an agent on real nodes");
    }

    // The node's namespaces: own hostname, own bpffs, own /run; the host's cgroup tree stays visible; the
    // kubelet-set sysctls are masked inside, so the host's never change.
    let my_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    for kube in lab.kube_nodes() {
        let name = kube.name();
        assert_eq!(sh(&mut kube.exec_in_node("hostname")), name);
        assert_ne!(std::fs::read_link(kube.mount_ns_path()).unwrap(), my_mnt);
        assert_eq!(sh(kube.exec_in_node("findmnt").args(["-n", "-o", "FSTYPE", "/sys/fs/bpf"])), "bpf");
        assert_eq!(sh(kube.exec_in_node("findmnt").args(["-n", "-o", "FSTYPE", "/run"])), "tmpfs");
        // Shared inside the node (the CRI wants that for HostToContainer volumes), invisible outside it.
        assert_eq!(sh(kube.exec_in_node("findmnt").args(["-n", "-o", "PROPAGATION", "/sys/fs/bpf"])), "shared");
        assert!(kubenode::leaked_mounts(kube.state()).is_empty(), "{:?}", kubenode::leaked_mounts(kube.state()));
        let kubepods = format!("/sys/fs/cgroup/memory{}/kubepods", kube.cgroup_root());
        sh(kube.exec_in_node("test").args(["-d", &kubepods]));
        assert!(Path::new(&kubepods).is_dir());
        assert_eq!(sh(kube.exec_in_node("cat").arg("/proc/sys/kernel/panic")), "10");
        assert!(kube.host_path("/var/lib/kubelet/config.yaml").unwrap().is_file());
        let procs: Vec<String> = kube.all_pids().iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default()).collect();
        assert!(!procs.iter().any(|c| c.contains("novanet-agent")), "{procs:?}");
        assert!(procs.iter().any(|c| c.contains("kubelet")), "{procs:?}");
    }
    assert_eq!(HostSysctls::record(), sysctls_before, "a kubelet changed the host's sysctls");

    // A reference CNI and the pause image: the nodes go Ready, pods run, across nodes they reach each other.
    let t1 = Instant::now();
    for kube in lab.kube_nodes() {
        let cidr = lab.node(kube.name()).unwrap().pod_cidr.to_string();
        install_reference_cni(kube, &cidr);
        kube.import_image(&pause).unwrap();
    }
    let kubeconfig = lab.state.kubeconfig.clone().unwrap();
    for name in ["n1", "n2"] {
        kubenode::wait_node_ready(&bin_dir.join("kubectl"), &kubeconfig, name, Duration::from_secs(120)).unwrap();
    }
    let ready = t1.elapsed();
    for (pod, node) in [("p1", "n1"), ("p2", "n2")] {
        // p1 also mounts the node's bpffs with HostToContainer propagation, as NovaNet's DaemonSet does.
        let mounts = if pod == "p1" {
            serde_json::json!([{"name": "bpf", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"}])
        } else {
            serde_json::json!([])
        };
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "terminationGracePeriodSeconds": 0,
                "volumes": [{"name": "bpf", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}}],
                "containers": [{"name": "pause", "image": kubenode::SANDBOX_IMAGE, "imagePullPolicy": "Never",
                                "volumeMounts": mounts}],
            },
        });
        lab.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string())).unwrap();
    }
    kubectl(&["wait", "--for=condition=Ready", "pod/p1", "pod/p2", "--timeout=120s"]);
    let pods_running = t1.elapsed();
    let pod_ip = |pod: &str| -> Ipv4Addr { kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]).parse().unwrap() };
    let (p1, p2) = (pod_ip("p1"), pod_ip("p2"));
    assert!(lab.node("n1").unwrap().pod_cidr.contains(&p1), "{p1}");
    assert!(lab.node("n2").unwrap().pod_cidr.contains(&p2), "{p2}");
    // Node n2 -> pod on n1 (routed over the underlay), and pod p1 -> pod p2 (from p1's own namespace).
    assert!(ping(lab.node_command("n2", "ping").unwrap(), p1), "n2 -> p1 {p1}");
    let n1 = lab.kube_node("n1").unwrap();
    let cid = kubectl(&["get", "pod", "p1", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    let cid = cid.trim_start_matches("containerd://");
    let tasks = sh(Command::new("ctr").arg("-a").arg(n1.containerd_socket()).args(["-n", "k8s.io", "tasks", "ls"]));
    let p1_pid: u32 = tasks
        .lines()
        .find(|l| l.starts_with(cid))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no task {cid} in {tasks}"));
    let mut from_p1 = Command::new("nsenter");
    from_p1.arg(format!("--net=/proc/{p1_pid}/ns/net")).args(["--", "ping"]);
    assert!(ping(from_p1, p2), "p1 -> p2 {p2}");

    // Teardown leaves nothing: record what there was, bring the lab down, look for all of it.
    let states: Vec<KubeNodeState> = lab.kube_nodes().iter().map(|k| k.state().clone()).collect();
    let mut pids: Vec<u32> = lab.kube_nodes().iter().flat_map(|k| k.all_pids()).collect();
    pids.extend(lab.kube_nodes().iter().flat_map(|k| k.pids()));
    assert!(pids.contains(&p1_pid), "the pod's process is in the node's cgroup tree");
    let prefix = lab.state.prefix.clone();
    let lab_dir = lab.state.dir.clone();
    let t2 = Instant::now();
    lab.down().unwrap();
    let down = t2.elapsed();
    let alive: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    for s in &states {
        let mnt = s.mount_ns.unwrap();
        assert!(kubenode::processes_in_mount_ns(mnt).is_empty(), "{}: mount namespace still used", s.name);
        assert!(kubenode::cgroup_dirs(&s.cgroup_root).is_empty(), "{}: cgroups left", s.name);
        assert!(kubenode::leaked_mounts(s).is_empty(), "{}: mounts left: {:?}", s.name, kubenode::leaked_mounts(s));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&prefix), "mounts named after the lab: {mountinfo}");
    assert!(namespaces_with_prefix(&prefix).is_empty(), "namespaces left: {:?}", namespaces_with_prefix(&prefix));
    assert!(!lab_dir.exists(), "{} left", lab_dir.display());
    assert_eq!(HostSysctls::record(), sysctls_before, "host sysctls not as before");
    say(&format!(
        "{TEST}: CNI installed -> both nodes Ready {ready:.2?}, 2 pods running {pods_running:.2?}; lab down {down:.2?}"
    ));
}

const FAILING: &str = "a_node_whose_kubelet_dies_at_start_is_removed_completely";

/// A failed start (here: a kubelet that exits at once) removes everything it made (holder, mount namespace,
/// containerd, cgroups) and keeps the logs that say why.
#[test]
fn a_node_whose_kubelet_dies_at_start_is_removed_completely() {
    let Some(bin_dir) = bins_or_skip(FAILING, &CONTROL_PLANE_BINARIES) else { return };
    if !host_or_skip(FAILING) {
        return;
    }
    let sysctls_before = HostSysctls::record();
    let prefix = unique_prefix();
    let cp_ns = NetNs::create(&format!("{prefix}cp")).unwrap();
    let cp_ip = Ipv4Addr::new(10, 99, 0, 1);
    cp_ns.ip(&["addr", "add", &format!("{cp_ip}/32"), "dev", "lo"]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(ControlPlaneConfig::new(&bin_dir, work.path().join("cp"), cp_ns.name(), cp_ip)).unwrap();
    // A bin dir (under /tmp, which the node has a private tmpfs over) whose kubelet exits at once.
    let fake = work.path().join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    for b in ["kubelet", "kube-proxy"] {
        let path = fake.join(b);
        std::fs::write(&path, "#!/bin/sh\necho \"fake $0: exiting\" >&2\nexit 1\n").unwrap();
        Command::new("chmod").arg("755").arg(&path).status().unwrap();
    }
    let node_ns = NetNs::create(&format!("{prefix}n")).unwrap();
    let node = NodeState {
        name: "broken".into(),
        index: 0,
        netns: node_ns.name().to_string(),
        underlay_ip: Ipv4Addr::new(10, 99, 0, 10),
        pod_cidr: "10.244.0.0/24".parse().unwrap(),
        dir: work.path().join("node"),
        bpffs: None,
        agent_pid: None,
    };
    let err = KubeNode::start(&node, &cp, &fake, &KubeNodeOptions::default()).unwrap_err();
    assert!(matches!(err, KubeNodeError::NotReady { component: "kubelet", .. }), "{err}");
    assert!(err.to_string().contains("fake"), "the error quotes the kubelet's log: {err}");
    let state = KubeNode::load(&node.dir).unwrap().unwrap().state().clone();
    let mnt = state.mount_ns.expect("the holder had made a mount namespace");
    assert!(kubenode::processes_in_mount_ns(mnt).is_empty(), "{:?}", kubenode::processes_in_mount_ns(mnt));
    assert!(kubenode::cgroup_dirs(&state.cgroup_root).is_empty());
    assert!(kubenode::leaked_mounts(&state).is_empty(), "{:?}", kubenode::leaked_mounts(&state));
    assert_eq!(state.holder_pid, None);
    assert_eq!(state.containerd_pid, None);
    assert!(node.dir.join("containerd.log").is_file() && node.dir.join("kubelet.log").is_file());
    assert_eq!(HostSysctls::record(), sysctls_before);
}
