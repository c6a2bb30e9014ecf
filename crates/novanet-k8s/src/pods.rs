//! Small read helpers over Pods and the Pod store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use crate::kinds::ObjectKey;

/// The pod `namespace/name`, if the store has it.
pub fn find_pod(store: &Store<Pod>, namespace: &str, name: &str) -> Option<Arc<Pod>> {
    store.get(&ObjectKey::namespaced(namespace, name).to_ref())
}

/// The pod with this `metadata.uid`, if the store has it (a linear scan).
pub fn find_pod_by_uid(store: &Store<Pod>, uid: &str) -> Option<Arc<Pod>> {
    store.find(|p| pod_uid(p) == Some(uid))
}

/// `metadata.uid`.
pub fn pod_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.uid.as_deref()
}

/// `metadata.labels` (empty when unset).
pub fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

/// `spec.nodeName`.
pub fn pod_node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// `spec.hostNetwork` (false when unset).
pub fn pod_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// `spec.containers[0].command`, which the light lab runs inside the pod's namespaces.
pub fn pod_command(pod: &Pod) -> Option<&[String]> {
    pod.spec.as_ref()?.containers.first()?.command.as_deref()
}

/// UIDs of the pods in `store`, optionally only those bound to `node`. Pods without a UID are
/// skipped. Prefer [`crate::ClusterObjects::present_pod_uids`], which refuses an unsynced store.
pub fn pod_uids(store: &Store<Pod>, node: Option<&str>) -> HashSet<String> {
    store
        .state()
        .iter()
        .filter(|p| node.is_none_or(|n| pod_node_name(p) == Some(n)))
        .filter_map(|p| pod_uid(p).map(str::to_owned))
        .collect()
}
