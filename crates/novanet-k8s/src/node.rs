//! Node helpers: pod CIDRs, underlay address, and the annotations NovaNet publishes on its Node.
//!
//! Invariant: the only writes to Nodes are JSON merge patches of NovaNet's own annotations
//! (`novanet.io/...`), so they never clobber fields owned by the kubelet or controllers.

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::error::Error;

/// Annotation holding the node's underlay (tunnel endpoint / next hop) address.
pub const ANNOTATION_UNDERLAY_IP: &str = "novanet.io/underlay-ip";
/// Annotation holding the pod CIDR NovaNet's cluster-pool mode gave the node.
pub const ANNOTATION_POD_CIDR: &str = "novanet.io/pod-cidr";
/// Field manager name used on writes.
pub const FIELD_MANAGER: &str = "novanet";

/// The node's pod CIDRs from `spec.podCIDRs`, else `spec.podCIDR`. Unparsable entries are skipped
/// (and logged): the apiserver validates these fields, so that only happens with hand-made objects.
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let raw: Vec<&str> = match spec.pod_cidrs.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.as_deref().into_iter().collect(),
    };
    raw.into_iter()
        .filter_map(|s| match s.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(error) => {
                tracing::warn!(node = node.metadata.name.as_deref(), value = s, %error, "ignoring bad pod CIDR");
                None
            }
        })
        .collect()
}

/// The pod CIDR recorded in the `novanet.io/pod-cidr` annotation (cluster-pool mode), if valid.
pub fn node_annotated_pod_cidr(node: &Node) -> Option<IpNet> {
    annotation(node, ANNOTATION_POD_CIDR)?.parse().ok()
}

/// The node's underlay address: the `novanet.io/underlay-ip` annotation, else its first
/// `InternalIP` in `status.addresses`.
pub fn node_underlay_ip(node: &Node) -> Option<IpAddr> {
    if let Some(ip) = annotation(node, ANNOTATION_UNDERLAY_IP).and_then(|s| s.parse().ok()) {
        return Some(ip);
    }
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Waits until the Node exists and has a pod CIDR in its spec (set by kube-controller-manager's
/// `--allocate-node-cidrs`), returning it. Survives apiserver errors (watch with default backoff);
/// fails only with [`Error::Timeout`], carrying the last error seen.
pub async fn wait_for_pod_cidr(
    client: &Client,
    node_name: &str,
    timeout: Duration,
) -> Result<Vec<IpNet>, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut last_error: Option<String> = None;
    let wait = async {
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(item) = stream.next().await {
            match item {
                Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                    let cidrs = node_pod_cidrs(&node);
                    if !cidrs.is_empty() {
                        return Some(cidrs);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(node = node_name, %error, "waiting for pod CIDR");
                    last_error = Some(error.to_string());
                }
            }
        }
        None
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Some(cidrs)) => Ok(cidrs),
        _ => Err(Error::Timeout {
            what: format!("a pod CIDR on node {node_name}"),
            after: timeout,
            last_error,
        }),
    }
}

/// Merge-patches NovaNet annotations onto a Node (other annotations are untouched).
pub async fn annotate_node(
    client: &Client,
    node_name: &str,
    annotations: &[(&str, &str)],
) -> Result<(), Error> {
    let map: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let patch = serde_json::json!({ "metadata": { "annotations": map } });
    let api: Api<Node> = Api::all(client.clone());
    match api
        .patch(node_name, &write_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::NodeNotFound {
            name: node_name.to_owned(),
        }),
        Err(source) => Err(Error::Kube {
            context: format!("annotate node {node_name}"),
            source,
        }),
    }
}

/// Publishes the node's underlay address as the `novanet.io/underlay-ip` annotation.
pub async fn publish_node_address(
    client: &Client,
    node_name: &str,
    ip: IpAddr,
) -> Result<(), Error> {
    annotate_node(
        client,
        node_name,
        &[(ANNOTATION_UNDERLAY_IP, &ip.to_string())],
    )
    .await
}

pub(crate) fn write_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}
