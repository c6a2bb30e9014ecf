//! Cluster-pool pod-CIDR allocation: each node takes the first free `/mask` of a cluster CIDR.
//!
//! **Why a ConfigMap and not just the Node:** a resourceVersion-guarded patch of the node's *own*
//! Node object cannot stop two nodes from picking the same block: each guard only sees its own
//! object. Mutual exclusion needs one shared object, so the claims live in one ConfigMap
//! (`kube-system/novanet-pod-cidrs` by default, `data: {<node>: <cidr>}`), updated with a
//! resourceVersion-guarded `replace`; a 409 Conflict means another node won that round, and the
//! loser re-reads and picks again. After a successful claim the block is also recorded on the Node
//! (annotation `novanet.io/pod-cidr`) for humans and for peers' routes.
//!
//! Invariants:
//! - No two claims in the ConfigMap overlap, and no claim overlaps a Node's `spec.podCIDR(s)` or
//!   another node's `novanet.io/pod-cidr` annotation seen at claim time.
//! - A node that already holds a valid claim keeps it (restarts are stable).
//! - Claims are never released here (a deleted node's block stays taken until an operator removes
//!   its entry).
//!
//! The selection logic is pure ([`select_free_cidr`], [`plan_allocation`]) and unit-tested.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::error::{CidrPoolError, Error};
use crate::node::{
    ANNOTATION_POD_CIDR, FIELD_MANAGER, annotate_node, node_annotated_pod_cidr, node_pod_cidrs,
};

/// Default namespace of the claims ConfigMap.
pub const POOL_NAMESPACE: &str = "kube-system";
/// Default name of the claims ConfigMap.
pub const POOL_CONFIG_MAP: &str = "novanet-pod-cidrs";
/// Conflicts tolerated in a row before giving up.
pub const MAX_ATTEMPTS: u32 = 16;

/// A cluster CIDR cut into per-node blocks of prefix length `mask`, and where claims are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrPool {
    /// The cluster CIDR (stored truncated to its network address).
    pub cluster_cidr: IpNet,
    /// Prefix length of each node's block.
    pub mask: u8,
    /// Namespace of the claims ConfigMap.
    pub namespace: String,
    /// Name of the claims ConfigMap.
    pub config_map: String,
}

impl CidrPool {
    /// A pool with the default claims location; fails if `/mask` does not fit in `cluster_cidr`.
    pub fn new(cluster_cidr: IpNet, mask: u8) -> Result<Self, CidrPoolError> {
        check_mask(cluster_cidr, mask)?;
        Ok(CidrPool {
            cluster_cidr: cluster_cidr.trunc(),
            mask,
            namespace: POOL_NAMESPACE.to_owned(),
            config_map: POOL_CONFIG_MAP.to_owned(),
        })
    }

    /// Whether `net` is exactly one of this pool's blocks.
    pub fn is_block(&self, net: &IpNet) -> bool {
        net.prefix_len() == self.mask && net.trunc() == *net && self.cluster_cidr.contains(net)
    }
}

fn check_mask(cluster: IpNet, mask: u8) -> Result<(), CidrPoolError> {
    let (min, max) = (cluster.prefix_len(), cluster.max_prefix_len());
    if mask < min || mask > max {
        return Err(CidrPoolError::InvalidMask {
            cluster,
            mask,
            min,
            max,
        });
    }
    Ok(())
}

/// What [`plan_allocation`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// The node already holds this claim; nothing to write.
    Existing(IpNet),
    /// Claim this block (write it, guarded by resourceVersion).
    New(IpNet),
}

impl Allocation {
    /// The block either way.
    pub fn cidr(&self) -> IpNet {
        match self {
            Allocation::Existing(c) | Allocation::New(c) => *c,
        }
    }
}

/// Decides the block for `node` (pure).
///
/// - `claims`: the ConfigMap's data (`node -> cidr`); unparsable values are ignored.
/// - `own_annotation`: the node's `novanet.io/pod-cidr`, reused when still free (the ConfigMap was
///   lost but the node kept its block).
/// - `other_used`: every node's `spec.podCIDR(s)` and the other nodes' annotations.
pub fn plan_allocation(
    pool: &CidrPool,
    node: &str,
    claims: &BTreeMap<String, String>,
    own_annotation: Option<IpNet>,
    other_used: &[IpNet],
) -> Result<Allocation, CidrPoolError> {
    if let Some(own) = claims.get(node).and_then(|c| c.parse::<IpNet>().ok())
        && pool.is_block(&own)
    {
        return Ok(Allocation::Existing(own));
    }
    let mut used: Vec<IpNet> = other_used.to_vec();
    used.extend(
        claims
            .iter()
            .filter(|(n, _)| n.as_str() != node)
            .filter_map(|(_, c)| c.parse::<IpNet>().ok()),
    );
    if let Some(own) = own_annotation
        && pool.is_block(&own)
        && !used.iter().any(|u| overlaps(u, &own))
    {
        return Ok(Allocation::New(own));
    }
    select_free_cidr(pool.cluster_cidr, pool.mask, &used).map(Allocation::New)
}

/// Whether two networks share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The lowest `/mask` block of `cluster` that overlaps nothing in `used` (pure). Runs in
/// O(|used|²) whatever the pool size, so IPv6 pools are fine.
pub fn select_free_cidr(cluster: IpNet, mask: u8, used: &[IpNet]) -> Result<IpNet, CidrPoolError> {
    check_mask(cluster, mask)?;
    let exhausted = CidrPoolError::Exhausted { cluster, mask };
    let (v6, start, end) = bounds(&cluster);
    let host_bits = u32::from(cluster.max_prefix_len() - mask);
    let size_m1: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let used: Vec<(u128, u128)> = used
        .iter()
        .map(bounds)
        .filter(|(f, _, _)| *f == v6)
        .map(|(_, s, e)| (s, e))
        .collect();
    let mut cur = start;
    loop {
        let cand_end = cur.checked_add(size_m1).ok_or_else(|| exhausted.clone())?;
        if cand_end > end {
            return Err(exhausted);
        }
        let blocking = used
            .iter()
            .filter(|(s, e)| *s <= cand_end && *e >= cur)
            .map(|(_, e)| *e)
            .max();
        let Some(block_end) = blocking else {
            return to_net(v6, cur, mask).ok_or(exhausted);
        };
        let next = block_end.checked_add(1).ok_or_else(|| exhausted.clone())?;
        cur = if next & size_m1 == 0 {
            next
        } else {
            (next | size_m1)
                .checked_add(1)
                .ok_or_else(|| exhausted.clone())?
        };
    }
}

fn bounds(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => (
            false,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn to_net(v6: bool, addr: u128, mask: u8) -> Option<IpNet> {
    if v6 {
        IpNet::new(Ipv6Addr::from(addr).into(), mask).ok()
    } else {
        IpNet::new(Ipv4Addr::from(u32::try_from(addr).ok()?).into(), mask).ok()
    }
}

/// Claims a block for `node_name` in the cluster (see the module doc), records it on the Node
/// and returns it. Idempotent: a node with a claim gets the same block back.
pub async fn allocate_node_cidr(
    client: &Client,
    pool: &CidrPool,
    node_name: &str,
) -> Result<IpNet, Error> {
    let kube_err = |context: &str| {
        let context = context.to_owned();
        move |source| Error::Kube { context, source }
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &pool.namespace);
    let nodes: Api<Node> = Api::all(client.clone());
    let post = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let claims_cm = match config_maps
            .get_opt(&pool.config_map)
            .await
            .map_err(kube_err("get pod CIDR claims"))?
        {
            Some(cm) => cm,
            None => {
                let empty = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(pool.config_map.clone()),
                        namespace: Some(pool.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                };
                match config_maps.create(&post, &empty).await {
                    Ok(cm) => cm,
                    Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
                    Err(source) => return Err(kube_err("create pod CIDR claims")(source)),
                }
            }
        };
        let all_nodes = nodes
            .list(&ListParams::default())
            .await
            .map_err(kube_err("list nodes"))?
            .items;
        let own = all_nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name))
            .ok_or_else(|| Error::NodeNotFound {
                name: node_name.to_owned(),
            })?;
        let own_annotation = node_annotated_pod_cidr(own);
        let mut used: Vec<IpNet> = Vec::new();
        for n in &all_nodes {
            used.extend(node_pod_cidrs(n));
            if n.metadata.name.as_deref() != Some(node_name) {
                used.extend(node_annotated_pod_cidr(n));
            }
        }
        let claims = claims_cm.data.clone().unwrap_or_default();
        let cidr = match plan_allocation(pool, node_name, &claims, own_annotation, &used)? {
            Allocation::Existing(cidr) => cidr,
            Allocation::New(cidr) => {
                let mut updated = claims_cm;
                updated
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(node_name.to_owned(), cidr.to_string());
                // `updated` carries the resourceVersion we read: a concurrent claim makes this a 409.
                match config_maps.replace(&pool.config_map, &post, &updated).await {
                    Ok(_) => cidr,
                    Err(kube::Error::Api(s)) if s.is_conflict() => {
                        tracing::debug!(
                            node = node_name,
                            attempt,
                            "pod CIDR claim lost a race, retrying"
                        );
                        continue;
                    }
                    Err(source) => return Err(kube_err("record pod CIDR claim")(source)),
                }
            }
        };
        if own_annotation != Some(cidr) {
            annotate_node(
                client,
                node_name,
                &[(ANNOTATION_POD_CIDR, &cidr.to_string())],
            )
            .await?;
        }
        return Ok(cidr);
    }
    Err(Error::AllocationConflict {
        node: node_name.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}
