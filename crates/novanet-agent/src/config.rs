//! The agent's configuration file (`/etc/novanet/config.yaml`, the Helm chart's ConfigMap), camelCase
//! keys. Unknown keys are an error so a typo never silently turns a feature off.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PodCidrSource {
    /// `Node.spec.podCIDRs`, as kube-controller-manager allocates them.
    #[default]
    Kubernetes,
    /// The agent allocates its node's CIDR from `clusterCIDR` and records it on the Node.
    ClusterPool,
    /// `podCIDR` from this file (the light lab, single-node setups).
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    #[default]
    Overlay,
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    #[default]
    Vxlan,
    Geneve,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4lbConfig {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub min_rx_ms: Option<u32>,
    #[serde(default)]
    pub min_tx_ms: Option<u32>,
    #[serde(default)]
    pub multiplier: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    pub address: Ipv4Addr,
    #[serde(default)]
    pub asn: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub asn: Option<u32>,
    #[serde(default)]
    pub bfd: BfdConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default, rename = "controlPlaneVIP")]
    pub control_plane_vip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniDirs {
    #[serde(default = "default_cni_bin_dir")]
    pub bin_dir: PathBuf,
    #[serde(default = "default_cni_conf_dir")]
    pub conf_dir: PathBuf,
}

impl Default for CniDirs {
    fn default() -> Self {
        CniDirs { bin_dir: default_cni_bin_dir(), conf_dir: default_cni_conf_dir() }
    }
}

/// The DaemonSet the agent belongs to (the chart fills it in). When it is deleted (`helm uninstall`),
/// the agent removes NovaNet from its node as it exits; see `uninstall.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupOnUninstall {
    pub namespace: String,
    pub daemon_set: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Defaults to `$NODE_NAME`, then the hostname.
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default, rename = "podCIDRSource")]
    pub pod_cidr_source: PodCidrSource,
    /// The node's pod CIDR when `podCIDRSource: static`.
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<Ipv4Net>,
    #[serde(default = "default_mask", rename = "nodeCIDRMaskSize")]
    pub node_cidr_mask_size: u8,
    #[serde(default)]
    pub routing_mode: RoutingMode,
    #[serde(default)]
    pub tunnel_protocol: TunnelProtocol,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    #[serde(default)]
    pub default_deny: bool,
    #[serde(default)]
    pub l4lb: L4lbConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default = "default_socket")]
    pub socket_path: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_bpffs_root")]
    pub bpffs_root: PathBuf,
    #[serde(default)]
    pub cni: CniDirs,
    /// kubeconfig to reach the apiserver; in-cluster configuration when absent.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The node's underlay address, published on its Node for the other nodes.
    #[serde(default, rename = "underlayIP")]
    pub underlay_ip: Option<Ipv4Addr>,
    /// Seconds between sweeps for endpoints whose pod is gone from the API.
    #[serde(default = "default_sweep_secs")]
    pub orphan_sweep_seconds: u64,
    /// Remove NovaNet from the node when this DaemonSet is deleted. Absent: never.
    #[serde(default)]
    pub cleanup_on_uninstall: Option<CleanupOnUninstall>,
    /// With `podCIDRSource: static` only (no apiserver): a manifests file (the lab's format, multi-document
    /// YAML of Nodes, Namespaces, Pods with `status.podIP`, NetworkPolicies, Services, EndpointSlices) that
    /// fills the object stores instead of the API. Re-read when it changes (polled every 100 ms; replace it
    /// atomically); objects missing from a new version are deleted; a version that does not parse keeps the
    /// last good contents and degrades the `kubernetes` subsystem. The light lab writes one per lab.
    #[serde(default)]
    pub objects_file: Option<PathBuf>,
}

fn default_mask() -> u8 {
    24
}
fn default_mtu() -> u32 {
    1500
}
fn default_socket() -> PathBuf {
    PathBuf::from(novanet_api::DEFAULT_SOCKET)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/novanet")
}
fn default_bpffs_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf")
}
fn default_cni_bin_dir() -> PathBuf {
    PathBuf::from("/opt/cni/bin")
}
fn default_cni_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}
fn default_sweep_secs() -> u64 {
    60
}

impl AgentConfig {
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let cfg: AgentConfig = serde_yaml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("invalid agent configuration {}", path.display()))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match self.pod_cidr_source {
            PodCidrSource::Static if self.pod_cidr.is_none() => {
                anyhow::bail!("podCIDRSource is static but podCIDR is not set")
            }
            PodCidrSource::ClusterPool if self.cluster_cidr.is_none() => {
                anyhow::bail!("podCIDRSource is cluster-pool but clusterCIDR is not set")
            }
            _ => {}
        }
        if self.objects_file.is_some() && self.pod_cidr_source != PodCidrSource::Static {
            anyhow::bail!("objectsFile needs podCIDRSource static (otherwise the objects come from the Kubernetes API)");
        }
        if !(8..=30).contains(&self.node_cidr_mask_size) {
            anyhow::bail!("nodeCIDRMaskSize {} is outside 8..=30", self.node_cidr_mask_size);
        }
        if !(576..=9000).contains(&self.mtu) {
            anyhow::bail!("mtu {} is outside 576..=9000", self.mtu);
        }
        Ok(())
    }

    /// Settings that are accepted but whose feature lands in a later release; reported in status.
    pub fn inactive_settings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.l4lb.enabled {
            out.push("l4lb.enabled: socket load balancing is not in this build".to_string());
        }
        if self.routing.enabled || self.routing_mode == RoutingMode::Native {
            out.push("native routing with FRR is not in this build".to_string());
        }
        if self.routing_mode == RoutingMode::Overlay {
            // The default mode: say so, or a user would believe pods on other nodes are tunnelled.
            out.push(format!(
                "routingMode overlay (tunnelProtocol {}): no tunnels in this build; pods on other nodes are \
                 reached through the node's own routes to their pod CIDRs (the lab adds them by hand)",
                match self.tunnel_protocol {
                    TunnelProtocol::Vxlan => "vxlan",
                    TunnelProtocol::Geneve => "geneve",
                }
            ));
        }
        if self.cleanup_on_uninstall.is_some() && self.pod_cidr_source == PodCidrSource::Static {
            out.push("cleanupOnUninstall: needs the Kubernetes API (podCIDRSource kubernetes or cluster-pool)".to_string());
        }
        out
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("endpoints.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        let cfg = AgentConfig::from_yaml("{}").unwrap();
        assert_eq!(cfg.socket_path, PathBuf::from("/run/novanet/novanet.sock"));
        assert_eq!(cfg.pod_cidr_source, PodCidrSource::Kubernetes);
        assert_eq!(cfg.mtu, 1500);
    }

    #[test]
    fn chart_config_parses() {
        let cfg = AgentConfig::from_yaml(
            "podCIDRSource: cluster-pool\nclusterCIDR: 10.244.0.0/16\nnodeCIDRMaskSize: 24\nroutingMode: native\n\
             tunnelProtocol: geneve\nmtu: 1450\ndefaultDeny: true\nl4lb: {enabled: true}\n\
             routing: {enabled: true, protocol: bgp, asn: 64512, bfd: {enabled: true, minRxMs: 100, minTxMs: 100, multiplier: 3},\
              peers: [{address: 10.0.0.1, asn: 64513}], controlPlaneVIP: 10.0.0.100}\n\
             cni: {binDir: /opt/cni/bin, confDir: /etc/cni/net.d}\n\
             cleanupOnUninstall: {namespace: novanet-system, daemonSet: novanet}\n",
        )
        .unwrap();
        assert_eq!(cfg.routing_mode, RoutingMode::Native);
        assert_eq!(cfg.routing.peers.len(), 1);
        assert_eq!(cfg.inactive_settings().len(), 2);
        assert_eq!(cfg.cleanup_on_uninstall.unwrap().daemon_set, "novanet");
    }

    #[test]
    fn overlay_the_default_is_reported_inactive() {
        let cfg = AgentConfig::from_yaml("{}").unwrap();
        assert_eq!(cfg.routing_mode, RoutingMode::Overlay);
        let inactive = cfg.inactive_settings();
        assert_eq!(inactive.len(), 1, "{inactive:?}");
        assert!(inactive[0].contains("routingMode overlay") && inactive[0].contains("no tunnels"), "{inactive:?}");
        assert!(inactive[0].contains("vxlan") && inactive[0].contains("node's own routes"), "{inactive:?}");
        let native = AgentConfig::from_yaml("routingMode: native\n").unwrap();
        assert!(native.inactive_settings().iter().all(|s| !s.contains("overlay")));
    }

    #[test]
    fn typo_is_rejected() {
        let err = AgentConfig::from_yaml("podCidr: 10.0.0.0/24\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn objects_file_is_allowed_with_the_static_source_only() {
        let cfg = AgentConfig::from_yaml("podCIDRSource: static\npodCIDR: 10.244.1.0/24\nobjectsFile: /run/x.yaml\n").unwrap();
        assert_eq!(cfg.objects_file.as_deref(), Some(Path::new("/run/x.yaml")));
        assert!(AgentConfig::from_yaml("objectsFile: /run/x.yaml\n").is_err());
    }

    #[test]
    fn static_source_needs_a_cidr() {
        assert!(AgentConfig::from_yaml("podCIDRSource: static\n").is_err());
        assert!(AgentConfig::from_yaml("podCIDRSource: static\npodCIDR: 10.244.1.0/24\n").is_ok());
    }
}
