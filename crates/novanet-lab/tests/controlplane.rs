//! The lab's genuine Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler built by `tools/build.sh`) in a namespace of its own, driven with a genuine kubectl.
//!
//! Needs root (network namespaces). Tests that need the Kubernetes binaries skip (a failure under CI)
//! when they are not built; the others always run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
mod common;

use common::{ok_stdout, run_with_stdin, say};
use novanet_lab::controlplane::{
    CONTROL_PLANE_BINARIES, ControlPlane, ControlPlaneConfig, ControlPlaneError, Forwarder,
    bins_or_skip,
};
use novanet_lab::netns::{NetNs, unique_prefix};

const CP_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// A fresh namespace with the control-plane address on its loopback.
fn cp_namespace() -> NetNs {
    let ns = NetNs::create(&format!("{}cp", unique_prefix())).unwrap();
    ns.ip(&["addr", "add", &format!("{CP_ADDRESS}/32"), "dev", "lo"])
        .unwrap();
    ns
}

fn kubectl(bins: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bins.join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig).arg("--request-timeout=10s").args(args);
    run_with_stdin(&mut cmd, stdin)
}


fn assert_gone(pids: &[u32], netns: &str, work_dir: &Path) {
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
    }
    assert!(
        !Path::new("/run/netns").join(netns).exists(),
        "netns {netns} is still there"
    );
    assert!(!work_dir.exists(), "{} is still there", work_dir.display());
}

#[test]
fn controller_manager_assigns_pod_cidr_and_node_survives_apiserver_restart() {
    let test = "controller_manager_assigns_pod_cidr_and_node_survives_apiserver_restart";
    let mut names = CONTROL_PLANE_BINARIES.to_vec();
    names.push("kubectl");
    let Some(bins) = bins_or_skip(test, &names) else {
        return;
    };
    let ns = cp_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let work_dir = tmp.path().join("cp");
    let mut cfg = ControlPlaneConfig::new(&bins, &work_dir, ns.name(), CP_ADDRESS);
    cfg.cluster_cidr = "10.244.0.0/16".parse().unwrap();
    cfg.node_cidr_mask = 24;
    let cluster_cidr = cfg.cluster_cidr;

    let started = Instant::now();
    let mut cp = ControlPlane::start(cfg).unwrap();
    say(&format!(
        "control plane ready in {:?}, pids {:?}, local {:?}",
        started.elapsed(),
        cp.pids(),
        cp.local_addr()
    ));
    assert_eq!(cp.pids().len(), 4);
    let local = cp.local_kubeconfig().to_path_buf();

    let version = ok_stdout(
        "kubectl version",
        kubectl(&bins, &local, &["version", "-o", "json"], None),
    );
    assert!(
        version.contains("\"gitVersion\": \"v1.34.4\""),
        "unexpected version: {version}"
    );

    // The admin kubeconfig is for processes inside lab namespaces: the apiserver's own address.
    let mut inside = Command::new("nsenter");
    inside
        .arg(format!("--net=/run/netns/{}", ns.name()))
        .arg("--")
        .arg(bins.join("kubectl"));
    inside
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(["get", "--raw", "/readyz"]);
    assert_eq!(
        ok_stdout(
            "kubectl get --raw /readyz inside the netns",
            inside.output().unwrap()
        ),
        "ok"
    );

    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-node-1\n  labels:\n    novanet.io/test: controlplane\n";
    ok_stdout(
        "kubectl apply node",
        kubectl(&bins, &local, &["apply", "-f", "-"], Some(node)),
    );
    let get_cidr = [
        "get",
        "node",
        "lab-node-1",
        "-o",
        "jsonpath={.spec.podCIDR}",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod_cidr = loop {
        let cidr = ok_stdout("kubectl get node", kubectl(&bins, &local, &get_cidr, None));
        if !cidr.is_empty() {
            break cidr;
        }
        assert!(
            Instant::now() < deadline,
            "no spec.podCIDR on lab-node-1 after 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let pod_cidr: Ipv4Net = pod_cidr.parse().unwrap();
    say(&format!(
        "lab-node-1 got podCIDR {pod_cidr} after {:?}",
        started.elapsed()
    ));
    assert_eq!(pod_cidr.prefix_len(), 24);
    assert!(
        cluster_cidr.contains(&pod_cidr),
        "{pod_cidr} is not in {cluster_cidr}"
    );

    let before = cp.pids();
    let stopping = Instant::now();
    cp.stop_apiserver();
    say(&format!("apiserver stopped in {:?}", stopping.elapsed()));
    assert_eq!(
        cp.pids().len(),
        3,
        "the apiserver should be the only one stopped"
    );
    let down = kubectl(
        &bins,
        &local,
        &["get", "node", "lab-node-1", "--request-timeout=3s"],
        None,
    );
    assert!(
        !down.status.success(),
        "kubectl worked with the apiserver stopped"
    );
    let restart = Instant::now();
    cp.start_apiserver().unwrap();
    say(&format!("apiserver ready again in {:?}", restart.elapsed()));
    let after = ok_stdout(
        "kubectl get node after restart",
        kubectl(&bins, &local, &get_cidr, None),
    );
    assert_eq!(
        after,
        pod_cidr.to_string(),
        "the Node changed across the apiserver restart"
    );
    assert_ne!(before, cp.pids(), "the apiserver should have a new pid");

    let pids = cp.pids();
    let netns = ns.name().to_string();
    let stopping = Instant::now();
    drop(cp);
    say(&format!(
        "control plane stopped in {:?}",
        stopping.elapsed()
    ));
    drop(ns);
    assert_gone(&pids, &netns, &work_dir);
}

#[test]
fn failed_start_names_the_component_and_its_log() {
    // A fake etcd that fails at once: the error must say which component and where its log is, and
    // the work dir (with that log) must survive for the reader.
    let ns = cp_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for name in CONTROL_PLANE_BINARIES {
        let path = bins.join(name);
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"fake $0 refuses to start\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let work_dir = tmp.path().join("cp");
    let err = ControlPlane::start(ControlPlaneConfig::new(
        &bins,
        &work_dir,
        ns.name(),
        CP_ADDRESS,
    ))
    .unwrap_err();
    let text = err.to_string();
    say(&format!(
        "failed start reports: {}",
        text.lines().next().unwrap_or_default()
    ));
    assert!(
        matches!(
            err,
            ControlPlaneError::Exited {
                component: "etcd",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains(&work_dir.join("etcd.log").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("refuses to start"),
        "the log tail is missing: {text}"
    );
    assert!(work_dir.join("etcd.log").exists());
}

#[test]
fn missing_binaries_point_at_tools_build() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = cp_namespace();
    let err = ControlPlane::start(ControlPlaneConfig::new(
        tmp.path(),
        tmp.path().join("cp"),
        ns.name(),
        CP_ADDRESS,
    ))
    .unwrap_err();
    assert!(
        matches!(err, ControlPlaneError::MissingBinary { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tools/build.sh etcd"), "{err}");
}

#[test]
fn refuses_a_work_dir_that_holds_other_files() {
    // Drop removes the work dir, so adopting a directory with other content would delete it.
    let ns = cp_namespace();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let err = ControlPlane::start(ControlPlaneConfig::new(
        tmp.path(),
        tmp.path(),
        ns.name(),
        CP_ADDRESS,
    ))
    .unwrap_err();
    assert!(
        matches!(err, ControlPlaneError::InvalidConfig { .. }),
        "{err:?}"
    );
    assert!(tmp.path().join("precious.txt").exists());
}

#[test]
fn forwarder_carries_tcp_into_the_namespace() {
    // An echo server bound to the namespace's address, reached from the root namespace's loopback.
    let ns = cp_namespace();
    let ns_path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let file = std::fs::File::open(ns_path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind((CP_ADDRESS, 0)).unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = conn.try_clone().unwrap();
            std::io::copy(&mut reader, &mut conn).unwrap();
        }
    });
    let target: SocketAddr = rx.recv().unwrap();
    let fwd = Forwarder::start("127.0.0.1:0".parse().unwrap(), ns.name(), target).unwrap();
    for round in 0..2 {
        let mut conn = std::net::TcpStream::connect(fwd.local_addr()).unwrap();
        let msg = format!("hello through the forwarder {round}");
        conn.write_all(msg.as_bytes()).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        std::io::Read::read_to_string(&mut conn, &mut back).unwrap();
        assert_eq!(back, msg);
    }
    server.join().unwrap();
    drop(fwd);
}
