//! `novanet-k8s`: where NovaNet's Kubernetes objects come from. **The only crate that talks to the
//! apiserver**, and the reader of the lab's manifest files.
//!
//! Bird's-eye view:
//! - [`ClusterObjects`] holds kube-rs reflector `Store`s of Pods, Namespaces, Nodes,
//!   NetworkPolicies, Services and EndpointSlices, a change channel ([`ObjectChange`]), a
//!   generation counter, and per-kind [`KindHealth`].
//! - Two sources fill it with the same typed k8s-openapi objects through the same
//!   `watcher::Event`s: [`KubeSource`] (apiserver watches with backoff) and [`StaticSource`]
//!   ([`parse_manifests`] of multi-document YAML). Readers cannot tell them apart. [`FileSource`]
//!   keeps a [`StaticSource`] equal to a manifests file that changes (the light lab's agents).
//! - [`ReleaseWatch`]: whether the agent's own DaemonSet is being removed (`helm uninstall`).
//! - Node helpers ([`node_pod_cidrs`], [`wait_for_pod_cidr`], [`publish_node_address`]) and the
//!   cluster-pool allocator ([`allocate_node_cidr`], pure core [`select_free_cidr`]).
//!
//! Architecture invariants:
//! - **Stores survive outages.** Source errors never modify a store; only a completed relist
//!   replaces its contents. Dataplane state derived from the stores is therefore never dropped
//!   because the apiserver is unreachable.
//! - **Absence means nothing until synced.** [`ClusterObjects::present_pod_uids`] answers `None`
//!   before the first full Pod list, so orphan sweeps cannot run on an empty store.
//! - No unwrap/expect outside tests; errors are the structured enums of [`error`].

pub mod cidr_pool;
pub mod error;
pub mod file_source;
pub mod health;
pub mod identities;
pub mod kinds;
pub mod manifests;
pub mod node;
pub mod pods;
pub mod release;
pub mod sources;
pub mod stores;

pub use cidr_pool::{Allocation, CidrPool, allocate_node_cidr, plan_allocation, select_free_cidr};
pub use error::{CidrPoolError, Error, ManifestError};
pub use file_source::FileSource;
pub use health::{KindHealth, KindState};
pub use identities::{Claim, IdentityApi, StoredIdentity};
pub use kinds::{ObjectChange, ObjectKey, ObjectKind, WatchedKind};
pub use manifests::{Manifests, load_manifests, parse_manifests};
pub use node::{
    ANNOTATION_POD_CIDR, ANNOTATION_UNDERLAY_IP, annotate_node, node_annotated_pod_cidr,
    node_pod_cidrs, node_underlay_ip, publish_node_address, wait_for_pod_cidr,
};
pub use pods::{
    find_pod, find_pod_by_uid, pod_command, pod_labels, pod_node_name, pod_uid, pod_uids,
};
pub use release::{Observation, ReleaseState, ReleaseWatch};
pub use sources::{KubeSource, StaticSource, client_from_kubeconfig};
pub use stores::{ClusterObjects, KindWriter, ObjectWriters};

/// Re-exported so callers name the exact versions this crate uses.
pub use k8s_openapi;
pub use kube;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
