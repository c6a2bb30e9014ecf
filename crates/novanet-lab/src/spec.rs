//! What a lab is made of, read from a YAML file of Kubernetes objects (the same parser and the same
//! typed objects the agent's static source uses): Nodes with pod CIDRs, and Pods bound to them. The other
//! objects (Namespaces, NetworkPolicies, Services, EndpointSlices) and the Pods as written (labels, named
//! `containerPort`s) are kept in [`LabSpec::manifests`] for the agents' objects file ([`crate::objects`]).

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::Ipv4Net;
use novanet_k8s::Manifests;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Manifest(#[from] novanet_k8s::ManifestError),
    #[error("node {node} has no IPv4 pod CIDR (spec.podCIDR)")]
    NodeWithoutCidr { node: String },
    #[error("pod {namespace}/{name} has no spec.nodeName")]
    PodWithoutNode { namespace: String, name: String },
    #[error("pod {namespace}/{name} is bound to node {node}, which the lab does not define")]
    UnknownNode { namespace: String, name: String, node: String },
    #[error("pod CIDRs of nodes {a} and {b} overlap")]
    OverlappingCidrs { a: String, b: String },
    #[error("the lab defines no nodes")]
    NoNodes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub pod_cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// Command to run inside the pod's namespace (`spec.containers[0].command`), if any.
    pub command: Option<Vec<String>>,
}

impl PodSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabSpec {
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<PodSpec>,
    /// The lab file's objects but its Nodes (see the module doc). Pods added later without an object here
    /// get one made from their [`PodSpec`].
    pub manifests: Manifests,
}

impl LabSpec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        Self::from_manifests(novanet_k8s::load_manifests(path)?)
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        Self::from_manifests(novanet_k8s::parse_manifests(text)?)
    }

    pub fn from_manifests(m: Manifests) -> Result<Self, SpecError> {
        let mut nodes = Vec::new();
        for node in &m.nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let pod_cidr = novanet_k8s::node_pod_cidrs(node)
                .into_iter()
                .find_map(|c| match c {
                    ipnet::IpNet::V4(v4) => Some(v4),
                    ipnet::IpNet::V6(_) => None,
                })
                .ok_or_else(|| SpecError::NodeWithoutCidr { node: name.clone() })?;
            nodes.push(NodeSpec { name, pod_cidr });
        }
        if nodes.is_empty() {
            return Err(SpecError::NoNodes);
        }
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                if a.pod_cidr.contains(&b.pod_cidr.network()) || b.pod_cidr.contains(&a.pod_cidr.network()) {
                    return Err(SpecError::OverlappingCidrs { a: a.name.clone(), b: b.name.clone() });
                }
            }
        }
        let mut pods = Vec::new();
        for pod in &m.pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = pod.metadata.name.clone().unwrap_or_default();
            let node = novanet_k8s::pod_node_name(pod)
                .map(str::to_string)
                .ok_or_else(|| SpecError::PodWithoutNode { namespace: namespace.clone(), name: name.clone() })?;
            if !nodes.iter().any(|n| n.name == node) {
                return Err(SpecError::UnknownNode { namespace, name, node });
            }
            pods.push(PodSpec {
                uid: novanet_k8s::pod_uid(pod).unwrap_or_default().to_string(),
                labels: novanet_k8s::pod_labels(pod),
                command: novanet_k8s::pod_command(pod).map(<[String]>::to_vec),
                namespace,
                name,
                node,
            });
        }
        Ok(LabSpec { nodes, pods, manifests: Manifests { nodes: Vec::new(), ..m } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NODES: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-a
  containers: [{name: c, command: [sleep, infinity]}]
";

    #[test]
    fn reads_nodes_and_pods() {
        let spec = LabSpec::parse(TWO_NODES).unwrap();
        assert_eq!(spec.nodes.len(), 2);
        assert_eq!(spec.pods[0].key(), "default/web");
        assert_eq!(spec.pods[0].node, "node-a");
        assert_eq!(spec.pods[0].labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(spec.pods[0].command.as_deref(), Some(&["sleep".to_string(), "infinity".to_string()][..]));
        assert!(!spec.pods[0].uid.is_empty());
    }

    #[test]
    fn pod_on_unknown_node_is_rejected() {
        let text = TWO_NODES.replace("nodeName: node-a", "nodeName: node-z");
        assert!(matches!(LabSpec::parse(&text), Err(SpecError::UnknownNode { .. })));
    }

    #[test]
    fn overlapping_cidrs_are_rejected() {
        let text = TWO_NODES.replace("10.244.2.0/24", "10.244.1.128/25");
        assert!(matches!(LabSpec::parse(&text), Err(SpecError::OverlappingCidrs { .. })));
    }
}
