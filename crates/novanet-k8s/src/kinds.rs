//! The object kinds NovaNet follows, their keys, and the change notifications the stores emit.
//!
//! Invariant: [`WatchedKind`] is implemented exactly for the six typed k8s-openapi objects below, so
//! both sources (apiserver and manifests) produce the very same Rust types.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use serde::de::DeserializeOwned;

/// The kinds of Kubernetes object NovaNet follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// core/v1 Pod.
    Pod,
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Node.
    Node,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
}

impl ObjectKind {
    /// All kinds, in a fixed order (the order of [`crate::ClusterObjects::health`]).
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Pod,
        ObjectKind::Namespace,
        ObjectKind::Node,
        ObjectKind::NetworkPolicy,
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
    ];

    /// The Kubernetes `kind` string; also usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "Pod",
            ObjectKind::Namespace => "Namespace",
            ObjectKind::Node => "Node",
            ObjectKind::NetworkPolicy => "NetworkPolicy",
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
        }
    }

    /// Position in [`ObjectKind::ALL`].
    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of an object inside its kind: namespace (None for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace; `None` for Nodes and Namespaces.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A cluster-scoped key.
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of an object (empty name if the object has none, which the sources never store).
    pub fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    pub(crate) fn to_ref<K: WatchedKind>(&self) -> ObjectRef<K> {
        let r = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(ns) => r.within(ns),
            None => r,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One change to one store, emitted after the store already reflects it.
///
/// A relist (the watcher's Init..InitDone, after a 410 Gone or a restart) is turned into the
/// per-object changes it implies: objects that appeared or differ are `deleted: false`, objects that
/// vanished are `deleted: true`. Objects the relist left unchanged emit nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange {
    /// Which store changed.
    pub kind: ObjectKind,
    /// Which object.
    pub key: ObjectKey,
    /// `metadata.uid` of the object (of the removed object when `deleted`).
    pub uid: Option<String>,
    /// The object is gone from the store.
    pub deleted: bool,
}

/// A Kubernetes type one of the stores holds. Sealed: implemented for the six kinds of [`ObjectKind`].
pub trait WatchedKind:
    Resource<DynamicType = ()>
    + Clone
    + PartialEq
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// The kind tag.
    const KIND: ObjectKind;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! watched {
    ($($ty:ty => $kind:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl WatchedKind for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
        }
    )*};
}

watched! {
    Pod => Pod,
    Namespace => Namespace,
    Node => Node,
    NetworkPolicy => NetworkPolicy,
    Service => Service,
    EndpointSlice => EndpointSlice,
}
