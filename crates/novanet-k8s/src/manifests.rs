//! The lab's object source format: a multi-document YAML of Kubernetes objects, parsed into the
//! same typed k8s-openapi objects the apiserver source produces.
//!
//! Supported: v1 Node (`spec.podCIDR`/`podCIDRs`), Namespace, Pod (labels, `spec.nodeName`,
//! `spec.containers[0].command`), Service; networking.k8s.io/v1 NetworkPolicy; discovery.k8s.io/v1
//! EndpointSlice; and v1 List of those. Anything else is an error naming the document.
//!
//! Invariants after [`Manifests::normalize`] (which parsing applies):
//! - namespaced objects have a namespace (`default` when omitted) and cluster-scoped ones none, as
//!   the apiserver would have it;
//! - every object has a `metadata.uid`; a missing one is derived deterministically from kind,
//!   namespace and name, so reloading the same file keeps pod identities stable;
//! - no kind holds two objects with the same key.

use std::collections::HashSet;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use serde_yaml::Value;

use crate::error::ManifestError;
use crate::kinds::{ObjectKey, WatchedKind};

/// Typed objects read from manifests, one list per kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// NetworkPolicies.
    pub network_policies: Vec<NetworkPolicy>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
}

impl Manifests {
    /// Total number of objects.
    pub fn len(&self) -> usize {
        self.nodes.len()
            + self.namespaces.len()
            + self.pods.len()
            + self.network_policies.len()
            + self.services.len()
            + self.endpoint_slices.len()
    }

    /// No objects at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the defaults listed in the module doc (idempotent).
    pub fn normalize(&mut self) {
        self.nodes.iter_mut().for_each(|o| normalize_one(o, false));
        self.namespaces
            .iter_mut()
            .for_each(|o| normalize_one(o, false));
        self.pods.iter_mut().for_each(|o| normalize_one(o, true));
        self.network_policies
            .iter_mut()
            .for_each(|o| normalize_one(o, true));
        self.services
            .iter_mut()
            .for_each(|o| normalize_one(o, true));
        self.endpoint_slices
            .iter_mut()
            .for_each(|o| normalize_one(o, true));
    }
}

fn normalize_one<K: WatchedKind>(obj: &mut K, namespaced: bool) {
    let meta = obj.meta_mut();
    if !namespaced {
        meta.namespace = None; // the apiserver drops it for cluster-scoped kinds too
    } else if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_owned());
    }
    if meta.uid.is_none() {
        let key = format!(
            "{}/{}/{}",
            K::KIND,
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or("")
        );
        meta.uid = Some(derived_uid(&key));
    }
}

/// A UUID-shaped id derived from `key` (two FNV-1a 64 hashes), stable across runs and builds.
fn derived_uid(key: &str) -> String {
    fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, key.as_bytes());
    let lo = fnv1a(0x6c62_272e_07bb_0142, key.as_bytes());
    let v = (u128::from(hi) << 64) | u128::from(lo);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads and parses a manifest file.
pub fn load_manifests(path: &Path) -> Result<Manifests, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_manifests(&text)
}

/// Parses a multi-document YAML string (see the module doc), normalized.
pub fn parse_manifests(text: &str) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    let mut seen: HashSet<(&'static str, ObjectKey)> = HashSet::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value =
            Value::deserialize(doc).map_err(|source| ManifestError::Yaml { document, source })?;
        if value.is_null() {
            continue; // an empty document, e.g. a leading or trailing `---`
        }
        add_value(&mut out, &mut seen, document, value)?;
    }
    out.normalize();
    Ok(out)
}

fn add_value(
    out: &mut Manifests,
    seen: &mut HashSet<(&'static str, ObjectKey)>,
    document: usize,
    value: Value,
) -> Result<(), ManifestError> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err(ManifestError::NotAnObject { document });
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = match value.get("items") {
                Some(Value::Sequence(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(ManifestError::NotAnObject { document }),
            };
            for item in items {
                add_value(out, seen, document, item)?;
            }
            Ok(())
        }
        ("v1", "Node") => push(&mut out.nodes, seen, document, value, false),
        ("v1", "Namespace") => push(&mut out.namespaces, seen, document, value, false),
        ("v1", "Pod") => push(&mut out.pods, seen, document, value, true),
        ("v1", "Service") => push(&mut out.services, seen, document, value, true),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            push(&mut out.network_policies, seen, document, value, true)
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            push(&mut out.endpoint_slices, seen, document, value, true)
        }
        _ => Err(ManifestError::UnknownKind {
            document,
            api_version,
            kind,
        }),
    }
}

fn push<K: WatchedKind>(
    list: &mut Vec<K>,
    seen: &mut HashSet<(&'static str, ObjectKey)>,
    document: usize,
    value: Value,
    namespaced: bool,
) -> Result<(), ManifestError> {
    let kind = K::KIND.as_str();
    let mut obj: K =
        serde_yaml::from_value(value).map_err(|source| ManifestError::InvalidObject {
            document,
            kind,
            source,
        })?;
    if obj.meta().name.as_deref().is_none_or(str::is_empty) {
        return Err(ManifestError::MissingName { document, kind });
    }
    normalize_one(&mut obj, namespaced);
    let key = ObjectKey::of(&obj);
    if !seen.insert((kind, key.clone())) {
        return Err(ManifestError::Duplicate {
            document,
            kind,
            key: key.to_string(),
        });
    }
    list.push(obj);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uid_is_stable_and_uuid_shaped() {
        let a = derived_uid("Pod/default/a");
        assert_eq!(a, derived_uid("Pod/default/a"));
        assert_ne!(a, derived_uid("Pod/default/b"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
