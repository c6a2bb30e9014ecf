//! `novanet lab cluster --detach` and `novanet lab down`, run as a user runs them (the built `novanet`
//! binary, from the repository root): the command returns once NovaNet is installed, leaving a supervisor;
//! the KUBECONFIG it prints reaches a two-node cluster whose nodes go Ready; `lab status` and `lab list`
//! show the lab; `lab down` removes it through the supervisor, or by itself when the supervisor was killed,
//! and leaves no process, network namespace, mount, cgroup or file of it. Skips, loudly, only when the
//! Kubernetes binaries are not built. The two tests take turns (one cluster at a time).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cli::{DownOnDrop, novanet};
use common::{namespaces_with_prefix, ok_stdout, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use novanet_lab::controlplane::{CONTROL_PLANE_BINARIES, bins_or_skip};
use novanet_lab::kubenode::{self, KubeNode, KubeNodeState};
use novanet_lab::process::{is_same_process, start_time};
use novanet_lab::state::{LabState, SupervisorState};

/// One lab cluster at a time: they are heavy, and the tests of this file run in parallel threads.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());



/// A process recorded by the lab, with its start time (a reused PID is another process).
struct Recorded {
    what: String,
    pid: u32,
    start: u64,
}

fn record(what: &str, pid: u32, out: &mut Vec<Recorded>) {
    if let Some(start) = start_time(pid) {
        out.push(Recorded { what: what.to_string(), pid, start });
    }
}

/// A lab cluster started with `--detach`, and everything it recorded.
struct Detached {
    test: &'static str,
    name: String,
    state: LabState,
    sup: SupervisorState,
    recorded: Vec<Recorded>,
    nodes: Vec<KubeNodeState>,
    started: Instant,
    _guard: DownOnDrop,
}

fn needed_bins(test: &str) -> Option<PathBuf> {
    let mut needed = CONTROL_PLANE_BINARIES.to_vec();
    needed.extend(["kubelet", "kube-proxy", "kubectl", "helm", "registry", "agnhost"]);
    bins_or_skip(test, &needed)
}

impl Detached {
    /// `novanet lab cluster --detach`, then: the supervisor runs, the printed KUBECONFIG shows two Ready
    /// nodes, `lab status` and `lab list` know the lab.
    fn start(test: &'static str, bin_dir: &std::path::Path, suffix: &str) -> Detached {
        let name = format!("test-cli-{suffix}-{}", std::process::id());
        let guard = DownOnDrop(name.clone());
        let started = Instant::now();
        let stdout = ok_stdout("novanet lab cluster --detach", novanet(&["lab", "cluster", "--detach", "--name", &name]));
        eprintln!("{test}: --detach returned after {:.1?}", started.elapsed());
        let kubeconfig: PathBuf = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
            .and_then(|rest| rest.split_whitespace().next())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no `export KUBECONFIG=` line in:\n{stdout}"));
        assert!(stdout.contains(&format!("novanet lab down --name {name}")), "{stdout}");

        // What the lab recorded, to look for after `down`.
        let state = LabState::load(&name).unwrap();
        let sup = state.supervisor.expect("the supervisor is recorded in the lab state");
        assert!(sup.is_running(), "the supervisor outlives `lab cluster --detach`");
        let mut recorded = vec![Recorded { what: "supervisor".into(), pid: sup.pid, start: sup.start_time }];
        for pid in &state.control_plane_pids {
            record("control plane", *pid, &mut recorded);
        }
        if let Some(pid) = state.registry_pid {
            record("registry", pid, &mut recorded);
        }
        let mut nodes: Vec<KubeNodeState> = Vec::new();
        for node in &state.nodes {
            let kube = KubeNode::load(&node.dir).unwrap().expect("a real node records itself");
            for pid in kube.pids().into_iter().chain(kube.all_pids()) {
                record(&format!("node {}", node.name), pid, &mut recorded);
            }
            nodes.push(kube.state().clone());
        }
        assert_eq!(nodes.len(), 2, "two real nodes");
        assert!(recorded.len() > 10, "recorded {} processes", recorded.len());

        // The printed KUBECONFIG reaches the cluster; both nodes go Ready.
        let kubectl = bin_dir.join("kubectl");
        wait_for("two Ready nodes", Duration::from_secs(240), Duration::from_secs(2), || {
            let out = Command::new(&kubectl).env("KUBECONFIG", &kubeconfig).args(["get", "nodes", "--no-headers"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines.len() == 2 && lines.iter().all(|l| l.split_whitespace().nth(1) == Some("Ready"))
        });
        eprintln!("{test}: two Ready nodes after {:.1?}", started.elapsed());
        let nodes_wide = Command::new(&kubectl).env("KUBECONFIG", &kubeconfig).args(["get", "nodes", "-o", "wide"]).output();
        eprintln!("{}", ok_stdout("kubectl get nodes", nodes_wide.unwrap()));

        let status = ok_stdout("novanet lab status", novanet(&["lab", "status", "--name", &name]));
        assert!(status.contains(&format!("supervisor: pid {} (log", sup.pid)), "{status}");
        assert!(status.contains(&format!("KUBECONFIG={}", kubeconfig.display())), "{status}");
        assert!(status.contains("node-a") && status.contains("node-b"), "{status}");
        let list = ok_stdout("novanet lab list", novanet(&["lab", "list"]));
        assert!(list.lines().any(|l| l == name), "{list}");
        Detached { test, name, state, sup, recorded, nodes, started, _guard: guard }
    }

    /// `novanet lab down`, then: nothing of the lab is left. Returns what `lab down` printed.
    fn down_leaves_nothing(&self) -> String {
        let t = Instant::now();
        let down = ok_stdout("novanet lab down", novanet(&["lab", "down", "--name", &self.name]));
        eprintln!("{}: lab down took {:.1?} (whole run {:.1?})", self.test, t.elapsed(), self.started.elapsed());
        let alive: Vec<String> = self
            .recorded
            .iter()
            .filter(|r| is_same_process(r.pid, r.start))
            .map(|r| format!("{} pid {}", r.what, r.pid))
            .collect();
        assert!(alive.is_empty(), "processes left: {alive:?}");
        // Every namespace of the lab, and each node's cgroup root and mount tag (named after its namespace),
        // starts with `<prefix>-`.
        let prefix = format!("{}-", self.state.prefix);
        assert!(namespaces_with_prefix(&prefix).is_empty(), "namespaces left: {:?}", namespaces_with_prefix(&prefix));
        assert!(!self.state.dir.exists(), "{} left", self.state.dir.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.state.dir.display().to_string();
        let mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&dir) || l.contains(&prefix)).collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        for node in &self.nodes {
            assert!(kubenode::cgroup_dirs(&node.cgroup_root).is_empty(), "{}: cgroups left", node.name);
            assert!(kubenode::leaked_mounts(node).is_empty(), "{}: {:?}", node.name, kubenode::leaked_mounts(node));
            if let Some(mnt) = node.mount_ns {
                assert!(kubenode::processes_in_mount_ns(mnt).is_empty(), "{}: mount namespace still used", node.name);
            }
        }
        let list = ok_stdout("novanet lab list", novanet(&["lab", "list"]));
        assert!(!list.lines().any(|l| l == self.name), "{list}");
        down
    }
}

#[test]
fn cluster_detach_then_down_leaves_nothing() {
    const TEST: &str = "cluster_detach_then_down_leaves_nothing";
    let Some(bin_dir) = needed_bins(TEST) else { return };
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Detached::start(TEST, &bin_dir, "sup");

    // A second cluster of the same name is refused, and the first one is unharmed.
    let again = novanet(&["lab", "cluster", "--detach", "--name", &lab.name]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(lab.sup.is_running());

    let down = lab.down_leaves_nothing();
    assert!(down.contains(&format!("asking its supervisor (pid {})", lab.sup.pid)), "{down}");
    assert!(!down.contains("directly"), "the supervisor removed the lab itself: {down}");
}

#[test]
fn lab_down_removes_a_cluster_whose_supervisor_was_killed() {
    const TEST: &str = "lab_down_removes_a_cluster_whose_supervisor_was_killed";
    let Some(bin_dir) = needed_bins(TEST) else { return };
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Detached::start(TEST, &bin_dir, "kill");

    // The supervisor dies without tearing down (its daemons get their parent-death signal; containerd's
    // shims, the pods and the registry stay): `lab down` notices and removes the lab itself.
    assert!(is_same_process(lab.sup.pid, lab.sup.start_time));
    kill(Pid::from_raw(lab.sup.pid as i32), Signal::SIGKILL).unwrap();
    wait_for("the supervisor to die", Duration::from_secs(10), Duration::from_millis(100), || !lab.sup.is_running());
    let status = ok_stdout("novanet lab status", novanet(&["lab", "status", "--name", &lab.name]));
    assert!(status.contains(&format!("supervisor: pid {} is gone", lab.sup.pid)), "{status}");

    let down = lab.down_leaves_nothing();
    assert!(down.contains("is not running; removing the lab directly"), "{down}");
}
