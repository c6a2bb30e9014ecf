//! The light lab's cluster objects: what the agents read instead of an apiserver (their `objectsFile`).
//!
//! Two files in the lab directory:
//! - `lab-objects.yaml`, the lab's own record of the objects it was given: the Namespaces, Pods,
//!   NetworkPolicies, Services and EndpointSlices of the lab file, changed by `lab apply`/`lab delete`
//!   and by pods added or removed through the library. Only the lab's commands write it; the agent
//!   supervisor never does (it writes `state.json` only), so `lab apply` never races it.
//! - `objects.yaml`, rendered from that record and `state.json`, which every light-lab agent reads
//!   ([`novanet_k8s::FileSource`]): Nodes (pod CIDR, `novanet.io/underlay-ip`, InternalIP), every
//!   Namespace a pod or policy uses (with `kubernetes.io/metadata.name`), Pods with `status.podIP` once
//!   their CNI ADD returned an address, and the rest as given.
//!
//! Invariants: both files are replaced atomically (temp + rename), so an agent never reads half a file;
//! `objects.yaml` is rewritten after every change of either source. Agents run in their node's network
//! namespace only (no mount namespace of their own), so the lab directory is the path they read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use novanet_k8s::{ANNOTATION_UNDERLAY_IP, Manifests, ObjectKey, k8s_openapi};
use serde::Serialize;

use crate::state::LabState;

/// The label every Namespace carries (the apiserver sets it).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error(transparent)]
    Manifest(#[from] novanet_k8s::ManifestError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("rendering a {kind}: {source}")]
    Render { kind: &'static str, source: serde_yaml::Error },
    #[error("building the Node object of {node}: {source}")]
    Node { node: String, source: serde_json::Error },
    #[error("lab apply cannot add or change Nodes ({0}): the lab's nodes are made by `lab up`")]
    NodesNotSupported(String),
    #[error("pod {0} is not in the lab: lab apply only updates the labels of existing pods (pods come from `lab up`)")]
    NewPod(String),
    #[error("lab delete cannot remove pods ({0}): `lab down` removes the lab")]
    PodDelete(String),
}

/// The record's path in a lab directory.
pub fn record_file(dir: &Path) -> PathBuf {
    dir.join("lab-objects.yaml")
}

/// The agents' objects file in a lab directory.
pub fn objects_file(dir: &Path) -> PathBuf {
    dir.join("objects.yaml")
}

/// Reads the record (empty when the lab has none: a lab made before objects existed).
pub fn load_record(dir: &Path) -> Result<Manifests, ObjectsError> {
    let path = record_file(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(novanet_k8s::parse_manifests(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifests::default()),
        Err(source) => Err(ObjectsError::Io { what: "reading", path, source }),
    }
}

/// Writes the record (atomically). Nodes are never part of it (they are rendered from the state).
pub fn save_record(dir: &Path, record: &Manifests) -> Result<(), ObjectsError> {
    let record = Manifests { nodes: Vec::new(), ..record.clone() };
    write_atomic(&record_file(dir), &to_yaml(&record)?)
}

/// Renders `objects.yaml` from the record and the lab state, and writes it (atomically).
pub fn write_objects(state: &LabState, record: &Manifests) -> Result<(), ObjectsError> {
    let rendered = render(state, record)?;
    write_atomic(&objects_file(&state.dir), &to_yaml(&rendered)?)
}

/// The objects the agents see (pure).
pub fn render(state: &LabState, record: &Manifests) -> Result<Manifests, ObjectsError> {
    let mut out = Manifests { nodes: Vec::new(), ..record.clone() };
    for node in &state.nodes {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {"kubernetes.io/hostname": node.name},
                "annotations": {ANNOTATION_UNDERLAY_IP: node.underlay_ip.to_string()},
            },
            "spec": {"podCIDR": node.pod_cidr.to_string(), "podCIDRs": [node.pod_cidr.to_string()]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": node.underlay_ip.to_string()},
                {"type": "Hostname", "address": node.name},
            ]},
        });
        let typed: Node =
            serde_json::from_value(value).map_err(|source| ObjectsError::Node { node: node.name.clone(), source })?;
        out.nodes.push(typed);
    }
    for pod in &mut out.pods {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        let running = state.pods.iter().find(|p| p.key() == key);
        let status = pod.status.get_or_insert_with(Default::default);
        match running.and_then(|p| p.ip.map(|ip| (p, ip))) {
            Some((p, ip)) => {
                pod.metadata.uid = Some(p.uid.clone());
                status.phase = Some("Running".into());
                status.pod_ip = Some(ip.to_string());
                status.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip: ip.to_string() }]);
            }
            None => {
                status.phase = Some("Pending".into());
                status.pod_ip = None;
                status.pod_ips = None;
            }
        }
    }
    // Every namespace used gets an object; all of them carry the name label.
    let mut used: BTreeSet<String> = BTreeSet::new();
    used.extend(out.pods.iter().filter_map(|p| p.metadata.namespace.clone()));
    used.extend(out.network_policies.iter().filter_map(|p| p.metadata.namespace.clone()));
    for ns in &out.namespaces {
        used.remove(ns.metadata.name.as_deref().unwrap_or(""));
    }
    for name in used {
        out.namespaces.push(Namespace { metadata: kube_meta(&name), ..Default::default() });
    }
    for ns in &mut out.namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        ns.metadata.labels.get_or_insert_with(BTreeMap::new).insert(NAMESPACE_NAME_LABEL.into(), name);
    }
    out.normalize();
    Ok(out)
}

fn kube_meta(name: &str) -> novanet_k8s::kube::api::ObjectMeta {
    novanet_k8s::kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }
}

/// `lab apply`: adds or replaces Namespaces, NetworkPolicies, Services and EndpointSlices; for Pods already in
/// the lab, replaces their labels (nothing else of a pod changes). Returns what was done, one line each.
pub fn apply(record: &mut Manifests, state: &LabState, changes: &Manifests) -> Result<Vec<String>, ObjectsError> {
    if let Some(node) = changes.nodes.first() {
        return Err(ObjectsError::NodesNotSupported(node.metadata.name.clone().unwrap_or_default()));
    }
    let mut done = Vec::new();
    for pod in &changes.pods {
        let key = ObjectKey::of(pod);
        let existing = record.pods.iter_mut().find(|p| ObjectKey::of(*p) == key);
        let Some(existing) = existing else {
            let in_state = state.pods.iter().any(|p| p.key() == key.to_string());
            return Err(ObjectsError::NewPod(format!(
                "{key}{}",
                if in_state { " (running, but not recorded)" } else { "" }
            )));
        };
        existing.metadata.labels = pod.metadata.labels.clone();
        done.push(format!("pod/{key} labels updated"));
    }
    upsert(&mut record.namespaces, &changes.namespaces, "namespace", &mut done);
    upsert(&mut record.network_policies, &changes.network_policies, "networkpolicy", &mut done);
    upsert(&mut record.services, &changes.services, "service", &mut done);
    upsert(&mut record.endpoint_slices, &changes.endpoint_slices, "endpointslice", &mut done);
    Ok(done)
}

/// `lab delete`: removes the Namespaces, NetworkPolicies, Services and EndpointSlices named in `changes`
/// (absent ones are reported, not an error). Pods cannot be deleted this way.
pub fn delete(record: &mut Manifests, changes: &Manifests) -> Result<Vec<String>, ObjectsError> {
    if let Some(node) = changes.nodes.first() {
        return Err(ObjectsError::NodesNotSupported(node.metadata.name.clone().unwrap_or_default()));
    }
    if let Some(pod) = changes.pods.first() {
        return Err(ObjectsError::PodDelete(ObjectKey::of(pod).to_string()));
    }
    let mut done = Vec::new();
    remove(&mut record.namespaces, &changes.namespaces, "namespace", &mut done);
    remove(&mut record.network_policies, &changes.network_policies, "networkpolicy", &mut done);
    remove(&mut record.services, &changes.services, "service", &mut done);
    remove(&mut record.endpoint_slices, &changes.endpoint_slices, "endpointslice", &mut done);
    Ok(done)
}

fn upsert<K: novanet_k8s::WatchedKind>(list: &mut Vec<K>, new: &[K], kind: &str, done: &mut Vec<String>) {
    for obj in new {
        let key = ObjectKey::of(obj);
        match list.iter_mut().find(|o| ObjectKey::of(*o) == key) {
            Some(old) if *old == *obj => done.push(format!("{kind}/{key} unchanged")),
            Some(old) => {
                *old = obj.clone();
                done.push(format!("{kind}/{key} configured"));
            }
            None => {
                list.push(obj.clone());
                done.push(format!("{kind}/{key} created"));
            }
        }
    }
}

fn remove<K: novanet_k8s::WatchedKind>(list: &mut Vec<K>, gone: &[K], kind: &str, done: &mut Vec<String>) {
    for obj in gone {
        let key = ObjectKey::of(obj);
        let before = list.len();
        list.retain(|o| ObjectKey::of(o) != key);
        done.push(if list.len() < before {
            format!("{kind}/{key} deleted")
        } else {
            format!("{kind}/{key} not found")
        });
    }
}

/// A Pod object for a pod added without one (the library's `Lab::add_pod`): labels and node only.
pub fn pod_object(spec: &crate::spec::PodSpec) -> Pod {
    Pod {
        metadata: novanet_k8s::kube::api::ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: Some(spec.namespace.clone()),
            uid: Some(spec.uid.clone()),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some(spec.node.clone()),
            containers: vec![k8s_openapi::api::core::v1::Container { name: "main".into(), ..Default::default() }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Multi-document YAML of every object (apiVersion and kind included).
pub fn to_yaml(m: &Manifests) -> Result<String, ObjectsError> {
    let mut out = String::new();
    push_all(&mut out, &m.nodes, "Node")?;
    push_all(&mut out, &m.namespaces, "Namespace")?;
    push_all(&mut out, &m.pods, "Pod")?;
    push_all(&mut out, &m.network_policies, "NetworkPolicy")?;
    push_all(&mut out, &m.services, "Service")?;
    push_all(&mut out, &m.endpoint_slices, "EndpointSlice")?;
    Ok(out)
}

fn push_all<K: Serialize>(out: &mut String, objects: &[K], kind: &'static str) -> Result<(), ObjectsError> {
    for obj in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(obj).map_err(|source| ObjectsError::Render { kind, source })?);
    }
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> Result<(), ObjectsError> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(|source| ObjectsError::Io { what: "writing", path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| ObjectsError::Io {
        what: "replacing",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{NodeState, PodState};

    const LAB: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: n1
  containers: [{name: c, ports: [{name: serve-80, containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: z}
spec: {podSelector: {}}
";

    fn state() -> LabState {
        let node = NodeState {
            name: "n1".into(),
            index: 0,
            netns: "nn-n1".into(),
            underlay_ip: "172.30.0.10".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            dir: "/tmp/x".into(),
            bpffs: None,
            agent_pid: None,
        };
        let pod = PodState {
            namespace: "x".into(),
            name: "a".into(),
            uid: "uid-a".into(),
            node: "n1".into(),
            netns: "nn-p0-a".into(),
            container_id: "c".into(),
            ip: Some("10.244.1.2".parse().unwrap()),
            cni_result: None,
            process_pid: None,
            process_program: None,
        };
        LabState { nodes: vec![node], pods: vec![pod], ..Default::default() }
    }

    #[test]
    fn rendered_objects_have_nodes_namespaces_and_pod_ips_and_parse_back() {
        let record = novanet_k8s::parse_manifests(LAB).unwrap();
        let text = to_yaml(&render(&state(), &record).unwrap()).unwrap();
        let back = novanet_k8s::parse_manifests(&text).unwrap();
        let node = &back.nodes[0];
        assert_eq!(novanet_k8s::node_underlay_ip(node).map(|i| i.to_string()).as_deref(), Some("172.30.0.10"));
        assert_eq!(novanet_k8s::node_pod_cidrs(node).len(), 1);
        let ns: BTreeMap<String, BTreeMap<String, String>> = back
            .namespaces
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap(), n.metadata.labels.clone().unwrap()))
            .collect();
        assert_eq!(ns.keys().cloned().collect::<Vec<_>>(), ["x", "y", "z"], "defined and used namespaces");
        assert_eq!(ns["x"].get("team").map(String::as_str), Some("a"));
        assert!(ns.values().all(|l| l.contains_key(NAMESPACE_NAME_LABEL)));
        let a = back.pods.iter().find(|p| p.metadata.name.as_deref() == Some("a")).unwrap();
        assert_eq!(a.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(a.metadata.uid.as_deref(), Some("uid-a"));
        let port = &a.spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("serve-80"), 80));
        let b = back.pods.iter().find(|p| p.metadata.name.as_deref() == Some("b")).unwrap();
        assert_eq!(b.status.as_ref().unwrap().pod_ip, None, "no address before its CNI ADD");
        assert_eq!(back.network_policies.len(), 1);
    }

    #[test]
    fn apply_updates_pod_labels_and_upserts_policies_delete_removes_them() {
        let mut record = novanet_k8s::parse_manifests(LAB).unwrap();
        let change = novanet_k8s::parse_manifests(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: z}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow, namespace: x}\nspec: {podSelector: {}}\n",
        )
        .unwrap();
        let done = apply(&mut record, &state(), &change).unwrap();
        assert_eq!(done, ["pod/x/a labels updated", "networkpolicy/x/allow created"]);
        let a = record.pods.iter().find(|p| p.metadata.name.as_deref() == Some("a")).unwrap();
        assert_eq!(a.metadata.labels.as_ref().unwrap().get("pod").map(String::as_str), Some("z"));
        assert!(a.spec.as_ref().unwrap().containers[0].ports.is_some(), "the rest of the pod is kept");
        let new_pod =
            novanet_k8s::parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: x}\n").unwrap();
        assert!(matches!(apply(&mut record, &state(), &new_pod), Err(ObjectsError::NewPod(_))));
        let done = delete(&mut record, &change.clone_without_pods()).unwrap();
        assert_eq!(done, ["networkpolicy/x/allow deleted"]);
        assert_eq!(record.network_policies.len(), 1);
        assert!(matches!(delete(&mut record, &change), Err(ObjectsError::PodDelete(_))));
    }

    trait WithoutPods {
        fn clone_without_pods(&self) -> Manifests;
    }
    impl WithoutPods for Manifests {
        fn clone_without_pods(&self) -> Manifests {
            Manifests { pods: Vec::new(), ..self.clone() }
        }
    }
}
