//! The sources feeding [`ClusterObjects`]: the apiserver ([`KubeSource`]) and the lab's
//! manifests ([`StaticSource`]; [`crate::FileSource`] keeps it equal to a file that changes). Both only ever hand `watcher::Event`s to the [`KindWriter`]s.
//!
//! Invariants:
//! - One watcher task per kind, each wrapped in kube-rs' default backoff: watch restarts, 410 Gone
//!   relists and apiserver outages are retried forever; errors are counted in health and never
//!   clear a store (see [`crate::stores`]).
//! - Dropping (or [`KubeSource::stop`]ping) the source aborts its tasks; the stores stay readable
//!   with their last contents.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::Error;
use crate::kinds::WatchedKind;
use crate::manifests::Manifests;
use crate::stores::{ClusterObjects, KindWriter, ObjectWriters};

/// A client for the cluster of a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    Client::try_from(config).map_err(|source| Error::Client {
        path: path.to_owned(),
        source,
    })
}

/// Watches the apiserver and keeps the stores current. Aborts its tasks when dropped.
#[derive(Debug)]
pub struct KubeSource {
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one watcher per kind (must run inside a tokio runtime). Every kind is watched in full,
    /// Pods too: policy needs the identity of every pod of the cluster, not only this node's
    /// (`node_name` is kept for the callers that filter, e.g. the orphan sweep).
    pub fn start(client: Client, _node_name: &str) -> (ClusterObjects, KubeSource) {
        let (objects, writers) = ClusterObjects::new();
        let ObjectWriters {
            pods,
            namespaces,
            nodes,
            network_policies,
            services,
            endpoint_slices,
        } = writers;
        let all = watcher::Config::default;
        let tasks = vec![
            spawn_watcher(Api::<Pod>::all(client.clone()), all(), pods),
            spawn_watcher(Api::<Namespace>::all(client.clone()), all(), namespaces),
            spawn_watcher(Api::<Node>::all(client.clone()), all(), nodes),
            spawn_watcher(
                Api::<NetworkPolicy>::all(client.clone()),
                all(),
                network_policies,
            ),
            spawn_watcher(Api::<Service>::all(client.clone()), all(), services),
            spawn_watcher(Api::<EndpointSlice>::all(client), all(), endpoint_slices),
        ];
        (objects, KubeSource { tasks })
    }

    /// Stops watching. The stores keep their contents.
    pub fn stop(self) {
        // Drop aborts.
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn spawn_watcher<K: WatchedKind>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: KindWriter<K>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("watch", kind = %K::KIND);
    tokio::spawn(
        async move {
            loop {
                let mut stream = std::pin::pin!(watcher(api.clone(), config.clone()).default_backoff());
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(event) => writer.apply(&event),
                        Err(error) => {
                            tracing::warn!(%error, "watch failed; retrying with backoff, store keeps its contents");
                            writer.record_error(&error);
                        }
                    }
                }
                // The default backoff never gives up, so this is not expected; restart anyway.
                writer.record_error(&"watch stream ended");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        .instrument(span),
    )
}

/// Feeds the stores from manifests (the lab), through the same watcher events as the apiserver.
#[derive(Debug)]
pub struct StaticSource {
    writers: ObjectWriters,
}

impl StaticSource {
    /// Empty, unsynced stores; call [`StaticSource::load`] to sync them.
    pub fn new() -> (ClusterObjects, StaticSource) {
        let (objects, writers) = ClusterObjects::new();
        (objects, StaticSource { writers })
    }

    /// Empty stores synced at once with `manifests`.
    pub fn from_manifests(manifests: &Manifests) -> (ClusterObjects, StaticSource) {
        let (objects, mut source) = StaticSource::new();
        source.load(manifests);
        (objects, source)
    }

    /// Replaces every store's contents with `manifests`, as a relist does: objects absent from
    /// `manifests` are deleted, changed ones updated. Marks every kind synced.
    pub fn load(&mut self, manifests: &Manifests) {
        let mut m = manifests.clone();
        m.normalize();
        let w = &mut self.writers;
        relist(&mut w.pods, m.pods);
        relist(&mut w.namespaces, m.namespaces);
        relist(&mut w.nodes, m.nodes);
        relist(&mut w.network_policies, m.network_policies);
        relist(&mut w.services, m.services);
        relist(&mut w.endpoint_slices, m.endpoint_slices);
    }

    /// Records a source error (e.g. a manifests file that does not parse) on every kind; the stores
    /// keep their contents.
    pub fn record_error(&self, error: &dyn std::fmt::Display) {
        let w = &self.writers;
        w.pods.record_error(error);
        w.namespaces.record_error(error);
        w.nodes.record_error(error);
        w.network_policies.record_error(error);
        w.services.record_error(error);
        w.endpoint_slices.record_error(error);
    }

    /// Adds or updates the objects of `manifests`, leaving others alone.
    pub fn apply(&mut self, manifests: &Manifests) {
        self.each(manifests, false);
    }

    /// Deletes the objects of `manifests` (matched by kind, namespace and name).
    pub fn delete(&mut self, manifests: &Manifests) {
        self.each(manifests, true);
    }

    fn each(&mut self, manifests: &Manifests, delete: bool) {
        let mut m = manifests.clone();
        m.normalize();
        let w = &mut self.writers;
        events(&mut w.pods, m.pods, delete);
        events(&mut w.namespaces, m.namespaces, delete);
        events(&mut w.nodes, m.nodes, delete);
        events(&mut w.network_policies, m.network_policies, delete);
        events(&mut w.services, m.services, delete);
        events(&mut w.endpoint_slices, m.endpoint_slices, delete);
    }
}

fn relist<K: WatchedKind>(writer: &mut KindWriter<K>, objects: Vec<K>) {
    writer.apply(&watcher::Event::Init);
    for obj in objects {
        writer.apply(&watcher::Event::InitApply(obj));
    }
    writer.apply(&watcher::Event::InitDone);
}

fn events<K: WatchedKind>(writer: &mut KindWriter<K>, objects: Vec<K>, delete: bool) {
    for obj in objects {
        writer.apply(&if delete {
            watcher::Event::Delete(obj)
        } else {
            watcher::Event::Apply(obj)
        });
    }
}
