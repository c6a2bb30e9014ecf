//! Typed stores of cluster objects, shared by every source, and the change notifications.
//!
//! Layering (kube-rs style): a source produces `watcher::Event`s; a [`KindWriter`] applies each to a
//! kube-rs reflector `store::Writer` (the reflector step) and then tells subscribers what changed.
//! Readers get [`ClusterObjects`], which holds the `Store` read handles.
//!
//! Invariants:
//! - A store changes only through `watcher::Event`s, so the apiserver and the manifest source are
//!   indistinguishable to readers.
//! - Errors never touch a store: during an apiserver outage the stores keep their last contents. A
//!   relist (`Init`, `InitApply`.., `InitDone`) replaces a store atomically at `InitDone`, and only
//!   then are the implied deletions announced.
//! - Notifications are sent after the store reflects the change, and only for real changes (an
//!   `Apply` of an identical object, or a relist that changed nothing, is silent).
//! - The broadcast channel is bounded: a subscriber that lags gets `RecvError::Lagged` and must
//!   resync from the stores. The generation counter never lags (it coalesces).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher;
use tokio::sync::{broadcast, watch};

use crate::error::Error;
use crate::health::{HealthCell, KindHealth};
use crate::kinds::{ObjectChange, ObjectKey, ObjectKind, WatchedKind};

/// Capacity of the change broadcast channel.
pub const CHANGE_CHANNEL_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
struct Notifier {
    changes: broadcast::Sender<ObjectChange>,
    generation: Arc<watch::Sender<u64>>,
}

impl Notifier {
    fn send(&self, batch: Vec<ObjectChange>) {
        if batch.is_empty() {
            return;
        }
        for change in batch {
            // No subscriber is fine: the stores are the source of truth.
            let _ = self.changes.send(change);
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// The writing side of one kind's store: applies watcher events, records health, notifies.
#[derive(Debug)]
pub struct KindWriter<K: WatchedKind> {
    writer: Writer<K>,
    reader: Store<K>,
    notifier: Notifier,
    health: HealthCell,
}

impl<K: WatchedKind> KindWriter<K> {
    fn new(notifier: Notifier) -> Self {
        let writer = Writer::<K>::default();
        let reader = writer.as_reader();
        KindWriter {
            writer,
            reader,
            notifier,
            health: HealthCell::new(K::KIND),
        }
    }

    /// Applies one watcher event (the reflector step), then announces what changed.
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        let changes = match event {
            watcher::Event::Apply(obj) => {
                let key = ObjectKey::of(obj);
                let unchanged = self
                    .reader
                    .get(&key.to_ref())
                    .is_some_and(|old| *old == *obj);
                self.writer.apply_watcher_event(event);
                if unchanged {
                    Vec::new()
                } else {
                    vec![change::<K>(key, obj, false)]
                }
            }
            watcher::Event::Delete(obj) => {
                self.writer.apply_watcher_event(event);
                vec![change::<K>(ObjectKey::of(obj), obj, true)]
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {
                self.writer.apply_watcher_event(event);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let before = snapshot(&self.reader);
                self.writer.apply_watcher_event(event);
                let after = snapshot(&self.reader);
                relist_changes::<K>(&before, &after)
            }
        };
        let list_done = matches!(event, watcher::Event::InitDone);
        self.health.record_event(list_done);
        if list_done && changes.is_empty() {
            // Still wake generation watchers: a (re)sync is news to "wait until synced" loops.
            self.notifier.bump();
        }
        self.notifier.send(changes);
    }

    /// Records a source error for health reporting; the store is left untouched.
    pub fn record_error(&self, error: &dyn std::fmt::Display) {
        self.health.record_error(error.to_string());
    }

    /// A read handle to the same store.
    pub fn reader(&self) -> Store<K> {
        self.reader.clone()
    }
}

fn change<K: WatchedKind>(key: ObjectKey, obj: &K, deleted: bool) -> ObjectChange {
    ObjectChange {
        kind: K::KIND,
        key,
        uid: obj.meta().uid.clone(),
        deleted,
    }
}

fn snapshot<K: WatchedKind>(store: &Store<K>) -> HashMap<ObjectKey, Arc<K>> {
    store
        .state()
        .into_iter()
        .map(|o| (ObjectKey::of(o.as_ref()), o))
        .collect()
}

/// The per-object changes a relist implies (pure; sorted by key for determinism).
fn relist_changes<K: WatchedKind>(
    before: &HashMap<ObjectKey, Arc<K>>,
    after: &HashMap<ObjectKey, Arc<K>>,
) -> Vec<ObjectChange> {
    let mut out: Vec<ObjectChange> = Vec::new();
    for (key, new) in after {
        let same = before
            .get(key)
            .is_some_and(|old| Arc::ptr_eq(old, new) || **old == **new);
        if !same {
            out.push(change::<K>(key.clone(), new, false));
        }
    }
    for (key, old) in before {
        if !after.contains_key(key) {
            out.push(change::<K>(key.clone(), old, true));
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The writers of all six stores; a source owns this (or moves each writer into its own task).
#[derive(Debug)]
pub struct ObjectWriters {
    /// Pods.
    pub pods: KindWriter<Pod>,
    /// Namespaces.
    pub namespaces: KindWriter<Namespace>,
    /// Nodes.
    pub nodes: KindWriter<Node>,
    /// NetworkPolicies.
    pub network_policies: KindWriter<NetworkPolicy>,
    /// Services.
    pub services: KindWriter<Service>,
    /// EndpointSlices.
    pub endpoint_slices: KindWriter<EndpointSlice>,
}

/// Read handles to the six stores, change notifications and health. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    network_policies: Store<NetworkPolicy>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    changes: broadcast::Sender<ObjectChange>,
    generation: watch::Receiver<u64>,
    health: [HealthCell; 6],
}

impl ClusterObjects {
    /// Empty stores and their writers. Sources call this; readers get the `ClusterObjects`.
    pub fn new() -> (ClusterObjects, ObjectWriters) {
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let (generation_tx, generation) = watch::channel(0u64);
        let notifier = Notifier {
            changes: changes.clone(),
            generation: Arc::new(generation_tx),
        };
        let writers = ObjectWriters {
            pods: KindWriter::new(notifier.clone()),
            namespaces: KindWriter::new(notifier.clone()),
            nodes: KindWriter::new(notifier.clone()),
            network_policies: KindWriter::new(notifier.clone()),
            services: KindWriter::new(notifier.clone()),
            endpoint_slices: KindWriter::new(notifier),
        };
        let objects = ClusterObjects {
            pods: writers.pods.reader(),
            namespaces: writers.namespaces.reader(),
            nodes: writers.nodes.reader(),
            network_policies: writers.network_policies.reader(),
            services: writers.services.reader(),
            endpoint_slices: writers.endpoint_slices.reader(),
            changes,
            generation,
            health: [
                writers.pods.health.clone(),
                writers.namespaces.health.clone(),
                writers.nodes.health.clone(),
                writers.network_policies.health.clone(),
                writers.services.health.clone(),
                writers.endpoint_slices.health.clone(),
            ],
        };
        (objects, writers)
    }

    /// Pods (every pod of the cluster).
    pub fn pods(&self) -> &Store<Pod> {
        &self.pods
    }
    /// Namespaces.
    pub fn namespaces(&self) -> &Store<Namespace> {
        &self.namespaces
    }
    /// Nodes (all of them).
    pub fn nodes(&self) -> &Store<Node> {
        &self.nodes
    }
    /// NetworkPolicies.
    pub fn network_policies(&self) -> &Store<NetworkPolicy> {
        &self.network_policies
    }
    /// Services.
    pub fn services(&self) -> &Store<Service> {
        &self.services
    }
    /// EndpointSlices.
    pub fn endpoint_slices(&self) -> &Store<EndpointSlice> {
        &self.endpoint_slices
    }

    /// Subscribes to per-object changes from now on (see the module doc for lag handling).
    pub fn subscribe(&self) -> broadcast::Receiver<ObjectChange> {
        self.changes.subscribe()
    }

    /// A counter bumped after every batch of changes and every completed list: a coalescing
    /// "something changed" signal that never lags.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Waits until every store completed its first full list. Does not time out by itself (the
    /// apiserver may be unreachable for long): wrap it in `tokio::time::timeout`.
    pub async fn wait_synced(&self) -> Result<(), Error> {
        let stopped = |kind| move |_| Error::SourceStopped { kind };
        self.pods
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::Pod))?;
        self.namespaces
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::Namespace))?;
        self.nodes
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::Node))?;
        self.network_policies
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::NetworkPolicy))?;
        self.services
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::Service))?;
        self.endpoint_slices
            .wait_until_ready()
            .await
            .map_err(stopped(ObjectKind::EndpointSlice))?;
        Ok(())
    }

    /// Whether a kind completed its first full list.
    pub fn is_synced(&self, kind: ObjectKind) -> bool {
        self.health(kind).synced
    }

    /// Health of one kind.
    pub fn health(&self, kind: ObjectKind) -> KindHealth {
        self.health[kind.slot()].snapshot(self.len(kind))
    }

    /// Health of every kind, in [`ObjectKind::ALL`] order.
    pub fn health_all(&self) -> Vec<KindHealth> {
        ObjectKind::ALL.iter().map(|k| self.health(*k)).collect()
    }

    fn len(&self, kind: ObjectKind) -> usize {
        match kind {
            ObjectKind::Pod => self.pods.len(),
            ObjectKind::Namespace => self.namespaces.len(),
            ObjectKind::Node => self.nodes.len(),
            ObjectKind::NetworkPolicy => self.network_policies.len(),
            ObjectKind::Service => self.services.len(),
            ObjectKind::EndpointSlice => self.endpoint_slices.len(),
        }
    }

    /// UIDs of the pods in the store (optionally only those bound to `node`), for orphan sweeps.
    ///
    /// `None` until the Pod store completed its first list: an empty or partial store must never
    /// be read as "every pod is gone". During an outage this answers from the last contents.
    pub fn present_pod_uids(&self, node: Option<&str>) -> Option<HashSet<String>> {
        if !self.is_synced(ObjectKind::Pod) {
            return None;
        }
        Some(crate::pods::pod_uids(&self.pods, node))
    }
}
