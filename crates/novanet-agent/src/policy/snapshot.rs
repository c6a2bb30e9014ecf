//! What policy needs from the object stores, read once per recompute: namespaces with their labels, every
//! pod of the cluster that has an address (hostNetwork pods are the node's), the NetworkPolicies, the
//! nodes' addresses and the Services' addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use novanet_k8s::ClusterObjects;
use novanet_k8s::k8s_openapi::api::core::v1::{Node, Pod, Service};
use novanet_k8s::k8s_openapi::api::networking::v1::NetworkPolicy;
use novanet_model::identity::IdentityLabels;
use novanet_model::policy::{NamedPort, PodView, Protocol};

/// The namespace-name label every namespace carries (Kubernetes sets it; the lab's may not).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A pod with an address, before it has an identity number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// (name, protocol upper-case, port) of every named container port.
    pub ports: Vec<(String, String, u16)>,
    /// The label set its identity stands for.
    pub identity_labels: IdentityLabels,
}

/// One read of the stores.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<PodEntry>,
    pub policies: Vec<NetworkPolicy>,
    /// Every node's addresses (InternalIP and the published underlay address), by node name.
    pub nodes: BTreeMap<String, Vec<Ipv4Addr>>,
    /// ClusterIPs (and external IPs) of every Service: translated by the node's stack.
    pub service_ips: Vec<Ipv4Addr>,
}

impl Snapshot {
    pub fn read(objects: &ClusterObjects) -> Snapshot {
        let namespaces = namespace_labels_of(objects, |_| true);
        let mut pods: Vec<PodEntry> = objects.pods().state().iter().filter_map(|p| pod_entry(p, &namespaces)).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut policies: Vec<NetworkPolicy> = objects.network_policies().state().iter().map(|p| (**p).clone()).collect();
        policies.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let nodes = objects.nodes().state().iter().filter_map(|n| node_addresses(n)).collect();
        let service_ips = objects.services().state().iter().flat_map(|s| service_ips(s)).collect();
        Snapshot { namespaces, pods, policies, nodes, service_ips }
    }
}

/// Labels of the namespaces `wanted` accepts, each with its `kubernetes.io/metadata.name`.
pub fn namespace_labels_of(
    objects: &ClusterObjects,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, BTreeMap<String, String>> {
    objects
        .namespaces()
        .state()
        .iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.clone().filter(|n| wanted(n))?;
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
            Some((name, labels))
        })
        .collect()
}

fn namespace_labels(namespaces: &BTreeMap<String, BTreeMap<String, String>>, namespace: &str) -> BTreeMap<String, String> {
    namespaces
        .get(namespace)
        .cloned()
        .unwrap_or_else(|| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())]))
}

/// The identity labels of a pod with `labels` in `namespace`.
pub fn identity_labels(
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> IdentityLabels {
    IdentityLabels::new(namespace, labels.clone(), namespace_labels(namespaces, namespace))
}

/// The policy view of a pod: `None` for pods without an IPv4 address, hostNetwork pods (their address is
/// the node's) and pods that finished (their address may already be someone else's).
pub fn pod_entry(pod: &Pod, namespaces: &BTreeMap<String, BTreeMap<String, String>>) -> Option<PodEntry> {
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    pod_entry_at(pod, namespaces, ip)
}

/// [`pod_entry`] with the address given (a local endpoint's, from the endpoint table).
pub fn pod_entry_at(pod: &Pod, namespaces: &BTreeMap<String, BTreeMap<String, String>>, ip: Ipv4Addr) -> Option<PodEntry> {
    if novanet_k8s::pods::pod_host_network(pod) {
        return None;
    }
    if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return None;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone()?;
            let port = u16::try_from(p.container_port).ok()?;
            Some((name, p.protocol.clone().unwrap_or_else(|| "TCP".to_string()).to_uppercase(), port))
        })
        .collect();
    Some(PodEntry {
        identity_labels: identity_labels(namespaces, &namespace, &labels),
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: novanet_k8s::pod_node_name(pod).map(str::to_string),
        namespace,
        ip,
        labels,
        ports,
    })
}

fn node_addresses(node: &Node) -> Option<(String, Vec<Ipv4Addr>)> {
    let name = node.metadata.name.clone()?;
    let mut ips: Vec<Ipv4Addr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    if let Some(std::net::IpAddr::V4(ip)) = novanet_k8s::node_underlay_ip(node) {
        ips.push(ip);
    }
    ips.sort_unstable();
    ips.dedup();
    Some((name, ips))
}

fn service_ips(svc: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .chain(spec.external_ips.iter().flatten())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// The compiler's view of a pod with its identity number.
pub fn pod_view(entry: &PodEntry, identity: u32) -> PodView {
    PodView {
        namespace: entry.namespace.clone(),
        name: entry.name.clone(),
        ip: entry.ip,
        identity,
        labels: entry.labels.clone(),
        ports: entry
            .ports
            .iter()
            .filter_map(|(name, protocol, port)| {
                Some(NamedPort { name: name.clone(), protocol: Protocol::parse(protocol)?, port: *port })
            })
            .collect(),
    }
}
