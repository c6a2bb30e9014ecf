//! The agent on the Kubernetes API: the node's pod CIDR, publishing the node's underlay address, the
//! object stores, and the orphan sweep. All apiserver traffic goes through `novanet-k8s`.
//!
//! While the apiserver is down the agent keeps serving pods: the pod CIDR comes from the persisted
//! endpoint table when there is one, the stores keep their last contents, and the sweep never treats a
//! store that has not completed a list as "every pod is gone".

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use novanet_k8s::kube::Client;
use novanet_k8s::{ClusterObjects, ObjectKind};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{AgentConfig, PodCidrSource};
use crate::endpoint_manager::EndpointManager;

/// How long a fresh node waits for kube-controller-manager to assign its pod CIDR.
const POD_CIDR_WAIT: Duration = Duration::from_secs(300);

pub async fn client(cfg: &AgentConfig) -> anyhow::Result<Client> {
    match &cfg.kubeconfig {
        Some(path) => Ok(novanet_k8s::client_from_kubeconfig(path).await?),
        None => Client::try_default().await.context("in-cluster Kubernetes configuration"),
    }
}

fn first_v4(cidrs: &[IpNet]) -> Option<Ipv4Net> {
    cidrs.iter().find_map(|c| match c {
        IpNet::V4(v4) => Some(*v4),
        IpNet::V6(_) => None,
    })
}

/// The node's pod CIDR from the API: `Node.spec.podCIDRs` or, in cluster-pool mode, a block the agent
/// claims from `clusterCIDR`.
pub async fn pod_cidr_from_api(client: &Client, cfg: &AgentConfig, node: &str) -> anyhow::Result<Ipv4Net> {
    match cfg.pod_cidr_source {
        PodCidrSource::ClusterPool => {
            let cluster = cfg.cluster_cidr.context("cluster-pool needs clusterCIDR")?;
            let pool = novanet_k8s::CidrPool::new(IpNet::V4(cluster), cfg.node_cidr_mask_size)?;
            let cidr = novanet_k8s::allocate_node_cidr(client, &pool, node).await?;
            first_v4(&[cidr]).context("cluster pool returned an IPv6 block")
        }
        _ => {
            let cidrs = novanet_k8s::wait_for_pod_cidr(client, node, POD_CIDR_WAIT).await?;
            first_v4(&cidrs).with_context(|| format!("node {node} has no IPv4 pod CIDR: {cidrs:?}"))
        }
    }
}

/// Warns when the API now assigns the node another pod CIDR than the persisted one (in the background).
pub fn verify_pod_cidr(client: Client, cfg: AgentConfig, node: String, persisted: Ipv4Net) -> JoinHandle<()> {
    tokio::spawn(async move {
        match pod_cidr_from_api(&client, &cfg, &node).await {
            Ok(api) if api == persisted => info!(%node, cidr = %api, "persisted pod CIDR matches the API"),
            Ok(api) => warn!(%node, %persisted, %api, "the API assigns another pod CIDR; restart the node's pods to move them"),
            Err(e) => warn!(%node, error = %e, "could not read the pod CIDR from the API"),
        }
    })
}

/// Publishes the node's underlay address (retrying in the background while the apiserver is away).
pub fn publish_underlay(client: Client, node: String, ip: IpAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            match novanet_k8s::publish_node_address(&client, &node, ip).await {
                Ok(()) => {
                    info!(%node, %ip, "published the node's underlay address");
                    return;
                }
                Err(e) => warn!(%node, error = %e, "could not publish the underlay address; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    })
}

/// Starts the orphan sweep over the stores. It runs every `orphanSweepSeconds` and whenever a pod is
/// deleted: an endpoint is released when its pod is gone from the API and its host interface is gone too
/// (the sandbox vanished without a CNI DEL). An endpoint whose pod is gone but whose interface still
/// exists is left for the runtime's DEL: releasing the address of a live sandbox would let two pods
/// share it.
pub fn spawn_orphan_sweep(
    objects: ClusterObjects,
    node: &str,
    manager: Arc<Mutex<EndpointManager>>,
    interval: Duration,
) -> JoinHandle<()> {
    let sweep_objects = objects;
    let node = node.to_string();
    tokio::spawn(async move {
        let mut changes = sweep_objects.subscribe();
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                change = changes.recv() => match change {
                    Ok(c) if c.kind == ObjectKind::Pod && c.deleted => {}
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
            let Some(live) = sweep_objects.present_pod_uids(Some(&node)) else { continue };
            let manager = manager.clone();
            let swept = tokio::task::spawn_blocking(move || sweep(&manager, &live)).await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(released = n, "orphan sweep released endpoints of deleted pods"),
                Ok(Err(e)) => warn!(error = %e, "orphan sweep failed"),
                Err(e) => warn!(error = %e, "orphan sweep task failed"),
            }
        }
    })
}

fn sweep(manager: &Mutex<EndpointManager>, live: &HashSet<String>) -> anyhow::Result<usize> {
    let mut m = manager.lock().map_err(|_| anyhow::anyhow!("endpoint state lock poisoned"))?;
    let orphans = m.table().orphans(|uid| live.contains(uid));
    let mut gone = Vec::new();
    for id in orphans {
        let Some(ep) = m.table().get(&id) else { continue };
        if m.interface_exists(&ep.host_ifname) {
            warn!(attachment = %id, pod = %ep.pod.name, "pod is gone from the API but its interface remains; waiting for CNI DEL");
            continue;
        }
        gone.push(id);
    }
    let removal = m.remove_all(gone);
    if let Some((id, e)) = removal.failed.first() {
        warn!(attachment = %id, error = %e, failed = removal.failed.len(), "orphan sweep could not release some endpoints; retrying at the next sweep");
    }
    Ok(removal.released.len())
}
