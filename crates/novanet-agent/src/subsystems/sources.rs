//! The `kubernetes` subsystem: the apiserver client, the node's pod CIDR, the object stores (one watcher
//! per kind), publishing the node's underlay address and the watch on the agent's own DaemonSet.
//!
//! Ready once every store completed its first list: until then a store's absences mean nothing (the
//! orphan sweep and, later, policy must not act on them). A store that listed once stays synced through
//! apiserver outages, serving its last contents, so an outage degrades the agent (a note in `status`)
//! but does not make it unready. With `podCIDRSource: static` there is no API: inactive, unless `objectsFile`
//! names a manifests file, which then fills the same stores ([`FileSource`]: the light lab's agents), with the
//! same readiness (ready once the file was read once) and degradation (a version that does not parse).

use std::time::SystemTime;

use anyhow::Context;
use ipnet::Ipv4Net;
use novanet_k8s::{ClusterObjects, FileSource, KindHealth, KindState, KubeSource, ReleaseWatch};
use tokio::task::JoinHandle;

use super::{Health, Subsystem};
use crate::config::{AgentConfig, PodCidrSource};
use crate::kubernetes;

pub struct Sources {
    objects: Option<ClusterObjects>,
    source: Option<KubeSource>,
    file: Option<FileSource>,
    background: Vec<JoinHandle<()>>,
}

/// What the later subsystems take from this one.
pub struct Started {
    pub sources: Sources,
    pub pod_cidr: Ipv4Net,
    pub objects: Option<ClusterObjects>,
    /// Watches the agent's DaemonSet (`cleanupOnUninstall`), for the uninstall decision at exit.
    pub release: Option<ReleaseWatch>,
    /// The apiserver client (identities), when there is an API.
    pub client: Option<novanet_k8s::kube::Client>,
}

impl Sources {
    /// Connects and starts the watchers. The pod CIDR is the persisted one when there is one (a restart:
    /// running pods use its addresses, so the agent serves them at once, even with the apiserver away, and
    /// checks the API's view in the background); otherwise the API's (waiting for it, or claiming a block
    /// in cluster-pool mode).
    pub async fn start(cfg: &AgentConfig, node: &str, persisted_cidr: Option<Ipv4Net>) -> anyhow::Result<Started> {
        if cfg.pod_cidr_source == PodCidrSource::Static {
            let pod_cidr = cfg.pod_cidr.context("podCIDR is required with podCIDRSource static")?;
            let Some(path) = &cfg.objects_file else {
                let sources = Sources { objects: None, source: None, file: None, background: Vec::new() };
                return Ok(Started { sources, pod_cidr, objects: None, release: None, client: None });
            };
            let (objects, file) = FileSource::start(path);
            let sources =
                Sources { objects: Some(objects.clone()), source: None, file: Some(file), background: Vec::new() };
            return Ok(Started { sources, pod_cidr, objects: Some(objects), release: None, client: None });
        }
        let client = kubernetes::client(cfg).await?;
        let mut background = Vec::new();
        let pod_cidr = match persisted_cidr {
            Some(cidr) => {
                background.push(kubernetes::verify_pod_cidr(client.clone(), cfg.clone(), node.to_string(), cidr));
                cidr
            }
            None => kubernetes::pod_cidr_from_api(&client, cfg, node)
                .await
                .with_context(|| format!("getting the pod CIDR of node {node}"))?,
        };
        let release = cfg
            .cleanup_on_uninstall
            .as_ref()
            .map(|own| ReleaseWatch::start(client.clone(), &own.namespace, &own.daemon_set));
        if let Some(ip) = cfg.underlay_ip {
            background.push(kubernetes::publish_underlay(client.clone(), node.to_string(), ip.into()));
        }
        let (objects, source) = KubeSource::start(client.clone(), node);
        let sources = Sources { objects: Some(objects.clone()), source: Some(source), file: None, background };
        Ok(Started { sources, pod_cidr, objects: Some(objects), release, client: Some(client) })
    }
}

/// Not ready while any kind has not completed its first list; degraded kinds are notes.
pub fn sources_health(kinds: &[KindHealth], now: SystemTime) -> Health {
    let mut syncing = Vec::new();
    let mut notes = Vec::new();
    for h in kinds {
        match h.state(now) {
            KindState::Healthy => {}
            KindState::Syncing => syncing.push(match &h.last_error {
                Some(e) => format!("{:?} source: waiting for the first list (last error: {e})", h.kind),
                None => format!("{:?} source: waiting for the first list", h.kind),
            }),
            KindState::Degraded => notes.push(format!(
                "{:?} source degraded ({} errors in a row; serving last known {} objects): {}",
                h.kind,
                h.consecutive_errors,
                h.objects,
                h.last_error.clone().unwrap_or_default()
            )),
        }
    }
    if syncing.is_empty() {
        Health::ready_with(notes)
    } else {
        syncing.extend(notes);
        Health { state: super::State::NotReady, reasons: syncing }
    }
}

#[tonic::async_trait]
impl Subsystem for Sources {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn health(&self) -> Health {
        match &self.objects {
            Some(objects) => sources_health(&objects.health_all(), SystemTime::now()),
            None => Health::inactive("podCIDRSource static: no Kubernetes API (pod CIDR from the configuration)"),
        }
    }

    async fn stop(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
        // Dropping the source aborts its watchers; the stores keep their contents.
        self.source.take();
        self.file.take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use novanet_k8s::ObjectKind;

    use super::*;
    use crate::subsystems::State;

    fn kind(kind: ObjectKind, synced: bool, error_ago: Option<Duration>, now: SystemTime) -> KindHealth {
        KindHealth {
            kind,
            synced,
            objects: 3,
            last_event_at: None,
            last_error_at: error_ago.map(|ago| now - ago),
            last_error: error_ago.map(|_| "connection refused".to_string()),
            errors_total: u64::from(error_ago.is_some()),
            consecutive_errors: u64::from(error_ago.is_some()),
            lists_total: u64::from(synced),
        }
    }

    #[test]
    fn not_ready_until_every_kind_has_listed_with_the_reason() {
        let now = SystemTime::now();
        let health = sources_health(
            &[kind(ObjectKind::Pod, false, Some(Duration::from_secs(1)), now), kind(ObjectKind::Node, true, None, now)],
            now,
        );
        assert_eq!(health.state, State::NotReady);
        assert_eq!(health.reasons.len(), 1, "{health:?}");
        assert!(health.reasons[0].contains("Pod source: waiting for the first list"), "{health:?}");
        assert!(health.reasons[0].contains("connection refused"), "the cause is shown: {health:?}");
    }

    #[test]
    fn synced_kinds_are_ready_even_when_degraded() {
        let now = SystemTime::now();
        let health = sources_health(
            &[kind(ObjectKind::Pod, true, Some(Duration::from_secs(1)), now), kind(ObjectKind::Node, true, None, now)],
            now,
        );
        assert_eq!(health.state, State::Ready);
        assert!(health.reasons[0].contains("degraded"), "{health:?}");
        assert_eq!(sources_health(&[kind(ObjectKind::Pod, true, None, now)], now), Health::ready());
    }
}
