//! Cluster-wide security identities as `NovaNetIdentity` objects (`novanet.io/v1alpha1`, cluster-scoped;
//! the CRD is in the Helm chart's `crds/`).
//!
//! An identity's **object name is its number** and its `spec.labels` the label set it stands for (the
//! model's prefixed form: `k8s:<pod label>`, `ns:<namespace label>`). Allocation has no allocator of its
//! own: every agent derives the same candidate numbers from a label set (`novanet_model` identity
//! candidates) and claims the first with create-if-absent. Two agents claiming the same set at the same
//! instant both end up with the same number: one create wins, the other gets `AlreadyExists`, reads the
//! object and finds its own labels. A candidate held by another set is skipped (a hash collision), in the
//! same order on every node.
//!
//! Garbage collection: [`IdentityApi::delete_unchanged`] removes an object only if its resourceVersion
//! is still the one the caller judged unused. A set used again later is claimed again, and gets the same
//! number unless a colliding set took it meanwhile.

use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::Client;

use crate::error::Error;

/// API group, version and kind of the identity objects.
pub const IDENTITY_GROUP: &str = "novanet.io";
pub const IDENTITY_VERSION: &str = "v1alpha1";
pub const IDENTITY_KIND: &str = "NovaNetIdentity";
/// Label on every identity object: the namespace of its pods (for `kubectl get -l`).
pub const IDENTITY_NAMESPACE_LABEL: &str = "novanet.io/namespace";

/// One identity object as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub number: u32,
    pub labels: BTreeMap<String, String>,
    pub resource_version: Option<String>,
    /// `metadata.creationTimestamp`, seconds since the epoch.
    pub created_unix: Option<i64>,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The number is this label set's (created now, or already).
    Ours,
    /// Another label set holds the number: try the next candidate.
    Taken,
}

/// Typed access to the identity objects.
#[derive(Clone)]
pub struct IdentityApi {
    api: Api<DynamicObject>,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(IDENTITY_GROUP, IDENTITY_VERSION, IDENTITY_KIND),
        "novanetidentities",
    )
}

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

impl IdentityApi {
    pub fn new(client: Client) -> Self {
        IdentityApi { api: Api::all_with(client, &resource()) }
    }

    /// Claims `number` for `labels` with create-if-absent semantics.
    pub async fn claim(&self, number: u32, namespace: &str, labels: &BTreeMap<String, String>) -> Result<Claim, Error> {
        let name = number.to_string();
        let mut obj = DynamicObject::new(&name, &resource());
        obj.metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(IDENTITY_NAMESPACE_LABEL.to_string(), label_value(namespace))])),
            ..ObjectMeta::default()
        };
        obj.data = serde_json::json!({ "spec": { "namespace": namespace, "labels": labels } });
        match self.api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(Claim::Ours),
            Err(e) if is_status(&e, 409) => {
                let existing = self.api.get(&name).await.map_err(kube_err(format!("get NovaNetIdentity {name}")))?;
                Ok(if parse(&existing).is_some_and(|s| &s.labels == labels) { Claim::Ours } else { Claim::Taken })
            }
            Err(e) => Err(kube_err(format!("create NovaNetIdentity {name}"))(e)),
        }
    }

    /// Every identity object (objects whose name is not a number are ignored).
    pub async fn list(&self) -> Result<Vec<StoredIdentity>, Error> {
        let list = self.api.list(&ListParams::default()).await.map_err(kube_err("list NovaNetIdentities"))?;
        Ok(list.items.iter().filter_map(parse).collect())
    }

    /// Deletes identity `number` if it still has `resource_version`. `Ok(false)`: changed or gone.
    pub async fn delete_unchanged(&self, number: u32, resource_version: &str) -> Result<bool, Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(resource_version.to_string()), uid: None }),
            ..DeleteParams::default()
        };
        match self.api.delete(&number.to_string(), &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
            Err(e) => Err(kube_err(format!("delete NovaNetIdentity {number}"))(e)),
        }
    }
}

/// A label value is at most 63 characters of `[A-Za-z0-9_.-]`; namespace names always are.
fn label_value(namespace: &str) -> String {
    namespace.chars().take(63).collect()
}

fn parse(obj: &DynamicObject) -> Option<StoredIdentity> {
    let number: u32 = obj.metadata.name.as_deref()?.parse().ok()?;
    let labels = obj
        .data
        .get("spec")?
        .get("labels")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    Some(StoredIdentity {
        number,
        labels,
        resource_version: obj.metadata.resource_version.clone(),
        created_unix: obj.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbered_objects_only() {
        let mut obj = DynamicObject::new("300", &resource());
        obj.data = serde_json::json!({"spec": {"namespace": "x", "labels": {"k8s:app": "web", "ns:kubernetes.io/metadata.name": "x"}}});
        let parsed = parse(&obj).unwrap();
        assert_eq!(parsed.number, 300);
        assert_eq!(parsed.labels.get("k8s:app").map(String::as_str), Some("web"));
        assert!(parse(&DynamicObject::new("not-a-number", &resource())).is_none());
    }
}
