//! Configuration files of a node's containerd, kubelet and kube-proxy, at the paths a kubeadm node uses
//! (inside the node's mount namespace): `/etc/containerd/config.toml`, `/var/lib/kubelet/config.yaml`,
//! `/etc/kubernetes/{kubelet,kube-proxy}.conf`, `/etc/kubernetes/pki/ca.crt`,
//! `/var/lib/kube-proxy/config.conf`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The sandbox (pause) image every lab node's containerd uses.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// containerd's socket inside the node.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The registry host configuration directory (`certs.d`) inside the node.
pub const CERTS_D: &str = "/etc/containerd/certs.d";

/// containerd 1.6, config version 2: its own root, state and socket (all per node through the node's mount
/// namespace), the CRI plugin with cgroupfs, the pause image, CNI at the standard paths, registry hosts
/// from `certs.d`.
pub fn containerd() -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# Snapshotters that would probe for kernel modules or devices the lab does not use.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{CERTS_D}"
"#
    )
}

/// What the kubelet configuration depends on.
pub struct KubeletParams<'a> {
    pub node_ip: Ipv4Addr,
    pub cgroup_root: &'a str,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: &'a str,
}

/// KubeletConfiguration: cgroupfs under the node's own cgroup root (cgroup v1 is still accepted by 1.34),
/// swap tolerated, kernel defaults not enforced (the host's are masked in the node, see `sysctls`), serving
/// on the node's underlay address, client certificates from the cluster CA, webhook authorization, and
/// eviction/image-GC thresholds loose enough that a shared build machine's disk never taints the node.
pub fn kubelet(p: &KubeletParams<'_>) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}
cgroupDriver: cgroupfs
cgroupRoot: {root}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: false
clusterDNS: [{dns}]
clusterDomain: {domain}
resolvConf: /etc/resolv.conf
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: /etc/kubernetes/pki/ca.crt}}
authorization:
  mode: Webhook
rotateCertificates: false
serverTLSBootstrap: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
        ip = p.node_ip,
        root = p.cgroup_root,
        dns = p.cluster_dns,
        domain = p.cluster_domain,
    )
}

/// KubeProxyConfiguration: iptables mode in the node's network namespace, leaving the machine-wide
/// conntrack table size alone (`maxPerCore: 0`).
pub fn kube_proxy(node: &str, cluster_cidr: Ipv4Net) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.conf
mode: iptables
hostnameOverride: {node}
clusterCIDR: {cluster_cidr}
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
"#
    )
}
