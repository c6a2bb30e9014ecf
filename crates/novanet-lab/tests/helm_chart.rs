//! The Helm chart (`deploy/helm/novanet`): `helm lint`, `helm template` with the default values and with
//! native routing, the schema's enums, and `kubectl apply` of the rendered manifests to a genuine
//! kube-apiserver (started by `novanet_lab::controlplane` in a namespace of its own), which validates
//! every object as a cluster would.
//!
//! Needs the binaries from `tools/build.sh` (helm, kubectl, and the control plane); without them each
//! test skips (`novanet_testkit::skip`: a failure under CI) and returns. The apiserver test needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

mod common;

use common::{ok_stdout, run_with_stdin, say};
use novanet_lab::controlplane::{
    CONTROL_PLANE_BINARIES, ControlPlane, ControlPlaneConfig, bins_or_skip,
};
use novanet_lab::netns::{NetNs, unique_prefix};

/// Helm values for native routing (the FRR sidecar).
const NATIVE_ROUTING: [&str; 4] = ["--set", "config.routingMode=native", "--set", "routing.enabled=true"];
const CP_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const NAMESPACE: &str = "novanet-system";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/novanet")
}

fn helm(bins: &Path, args: &[&str]) -> Output {
    run_with_stdin(
        Command::new(bins.join("helm")).args(args).env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("novanet-helm-cache"),
        ),
        None,
    )
}

/// `helm template novanet <chart> -n novanet-system <extra>`.
fn render(bins: &Path, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "novanet",
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    ok_stdout(&format!("helm {}", args.join(" ")), helm(bins, &args))
}

#[test]
fn chart_lints_and_renders_with_default_and_native_routing() {
    let Some(bins) = bins_or_skip(
        "chart_lints_and_renders_with_default_and_native_routing",
        &["helm"],
    ) else {
        return;
    };
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let lint = ok_stdout("helm lint", helm(&bins, &["lint", "--strict", chart]));
    say(&format!(
        "helm lint: {}",
        lint.lines().last().unwrap_or_default()
    ));
    ok_stdout(
        "helm lint (native)",
        helm(
            &bins,
            &[
                "lint",
                "--strict",
                chart,
                "--set",
                "config.routingMode=native",
            ],
        ),
    );

    let default = render(&bins, &[]);
    for kind in [
        "kind: DaemonSet",
        "kind: ConfigMap",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
    ] {
        assert!(default.contains(kind), "default render lacks {kind}");
    }
    assert!(default.contains("routingMode: overlay"));
    assert!(
        !default.contains("name: frr"),
        "no FRR sidecar in overlay mode"
    );
    assert!(default.contains("privileged: false"));
    assert!(
        !default
            .lines()
            .any(|l| l.trim_start().starts_with("nodeName:")),
        "nodeName comes from NODE_NAME, not the config file"
    );

    let native = render(&bins, &NATIVE_ROUTING);
    assert!(native.contains("routingMode: native"));
    assert!(
        native.contains("- name: frr"),
        "native routing runs the FRR sidecar"
    );
    assert!(
        native.contains("name: frr-run"),
        "the vty socket dir is shared"
    );
}

#[test]
fn schema_rejects_values_outside_the_enums() {
    let Some(bins) = bins_or_skip("schema_rejects_values_outside_the_enums", &["helm"]) else {
        return;
    };
    let chart = chart_dir();
    for bad in [
        "config.routingMode=bridged",
        "config.tunnelProtocol=gre",
        "config.podCIDRSource=static",
        "routing.protocol=rip",
        "config.mtu=100",
    ] {
        let out = helm(
            &bins,
            &["template", "novanet", chart.to_str().unwrap(), "--set", bad],
        );
        assert!(!out.status.success(), "--set {bad} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("schema"),
            "--set {bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rendered_chart_applies_to_a_genuine_apiserver() {
    let test = "rendered_chart_applies_to_a_genuine_apiserver";
    let mut names = CONTROL_PLANE_BINARIES.to_vec();
    names.extend(["kubectl", "helm"]);
    let Some(bins) = bins_or_skip(test, &names) else {
        return;
    };
    let ns = NetNs::create(&format!("{}helm", unique_prefix())).unwrap();
    ns.ip(&["addr", "add", &format!("{CP_ADDRESS}/32"), "dev", "lo"])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let work_dir = tmp.path().join("cp");
    let started = Instant::now();
    let cp = ControlPlane::start(ControlPlaneConfig::new(
        &bins,
        &work_dir,
        ns.name(),
        CP_ADDRESS,
    ))
    .unwrap();
    say(&format!("control plane ready in {:?}", started.elapsed()));
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(bins.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(cp.local_kubeconfig())
            .arg("--request-timeout=20s")
            .args(args);
        run_with_stdin(&mut cmd, stdin)
    };

    ok_stdout(
        "create namespace",
        kubectl(&["create", "namespace", NAMESPACE], None),
    );
    let default = render(&bins, &[]);
    let applied = ok_stdout(
        "kubectl apply (default values)",
        kubectl(&["apply", "--validate=strict", "-f", "-"], Some(&default)),
    );
    say(&format!("applied default render:\n{}", applied.trim()));
    let containers = [
        "get",
        "daemonset",
        "novanet",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ];
    assert_eq!(
        ok_stdout("get daemonset", kubectl(&containers, None)).trim(),
        "agent"
    );

    let native = render(&bins, &NATIVE_ROUTING);
    let applied = ok_stdout(
        "kubectl apply (native routing)",
        kubectl(&["apply", "--validate=strict", "-f", "-"], Some(&native)),
    );
    say(&format!("applied native render:\n{}", applied.trim()));
    assert_eq!(
        ok_stdout("get daemonset", kubectl(&containers, None)).trim(),
        "agent frr"
    );

    // cluster-pool mode adds a Role in kube-system for the CIDR claims ConfigMap, and nothing more.
    let pool = render(&bins, &["--set", "config.podCIDRSource=cluster-pool", "--set", "config.clusterCIDR=10.244.0.0/16"]);
    ok_stdout("kubectl apply (cluster-pool)", kubectl(&["apply", "--validate=strict", "-f", "-"], Some(&pool)));
    let can_update_claims = kubectl(
        &["auth", "can-i", "update", "configmaps/novanet-pod-cidrs", "-n", "kube-system",
          "--as", "system:serviceaccount:novanet-system:novanet"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&can_update_claims.stdout).trim(), "yes");
    let can_update_others = kubectl(
        &["auth", "can-i", "update", "configmaps/kube-proxy", "-n", "kube-system",
          "--as", "system:serviceaccount:novanet-system:novanet"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&can_update_others.stdout).trim(), "no");

    // Why bpffs is HostToContainer unless privileged: the API refuses Bidirectional otherwise.
    let bidirectional = default.replacen(
        "mountPropagation: HostToContainer",
        "mountPropagation: Bidirectional",
        1,
    );
    let refused = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&bidirectional),
    );
    assert!(
        !refused.status.success(),
        "Bidirectional propagation without privileged was accepted"
    );
    say(&format!(
        "Bidirectional without privileged: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    ));

    // Privileged mode switches bpffs to Bidirectional propagation, which the API accepts only then.
    let privileged = render(
        &bins,
        &[
            "--set",
            "agent.privileged=true",
            "--set",
            "l4lb.enabled=true",
        ],
    );
    ok_stdout(
        "kubectl apply (privileged, l4lb)",
        kubectl(
            &["apply", "--validate=strict", "-f", "-"],
            Some(&privileged),
        ),
    );

    // The agent's ServiceAccount gets exactly what it needs.
    let sa = format!("--as=system:serviceaccount:{NAMESPACE}:novanet");
    for (verb, resource, allowed) in [
        ("watch", "pods", true),
        ("list", "networkpolicies.networking.k8s.io", true),
        ("list", "endpointslices.discovery.k8s.io", true),
        ("patch", "nodes/status", true),
        ("patch", "nodes", true),
        ("create", "pods", false),
        ("get", "secrets", false),
        ("delete", "nodes", false),
        ("update", "services", false),
        // Uninstall cleanup: its own DaemonSet only, read-only.
        ("watch", "daemonsets.apps/novanet", true),
        ("get", "daemonsets.apps/novanet", true),
        ("get", "daemonsets.apps/other", false),
        ("delete", "daemonsets.apps/novanet", false),
    ] {
        let out = kubectl(&["auth", "can-i", verb, resource, "-n", NAMESPACE, &sa], None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            answer == "yes",
            allowed,
            "can-i {verb} {resource}: {answer}"
        );
    }

    let pids = cp.pids();
    let netns = ns.name().to_string();
    drop(cp);
    drop(ns);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
    }
    assert!(!Path::new("/run/netns").join(&netns).exists());
    assert!(!work_dir.exists());
}
