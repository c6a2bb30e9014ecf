//! The `endpoints` subsystem: the pinned datapath, the endpoint table restored from disk and reconciled
//! against the datapath (then the pins of superseded map layouts removed), the NAT-flow sweep, and the
//! orphan sweep over the Kubernetes stores.
//!
//! Ready once the datapath is loaded and reconciled. Endpoints that could not be restored do not make
//! the node unready (the others work, and DEL still releases them): they are notes in `status`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ipnet::Ipv4Net;
use novanet_dataplane::Dataplane;
use novanet_k8s::ClusterObjects;
use novanet_model::{EndpointTable, PersistedTable};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Health, Subsystem};
use crate::bpffs;
use crate::config::AgentConfig;
use crate::endpoint_manager::{EndpointManager, ReconcileReport};
use crate::flow_sweep::{FlowSweep, SWEEP_EVERY};
use crate::kubernetes;
use crate::state_file::StateFile;

pub struct Endpoints {
    manager: Arc<Mutex<EndpointManager>>,
    report: ReconcileReport,
    sweep: Option<JoinHandle<()>>,
    flow_sweep: FlowSweep,
}

fn restore_table(persisted: Option<PersistedTable>, cidr: Ipv4Net) -> anyhow::Result<EndpointTable> {
    match persisted {
        None => Ok(EndpointTable::new(cidr)?),
        Some(persisted) => {
            let (table, foreign) = EndpointTable::restore(persisted, cidr)?;
            for ep in foreign {
                warn!(ip = %ep.ip, attachment = %ep.attachment, %cidr, "endpoint address is outside the node's current pod CIDR");
            }
            Ok(table)
        }
    }
}

impl Endpoints {
    /// Loads (or re-adopts) the pinned datapath, restores the table and reconciles; starts the orphan
    /// sweep when there are Kubernetes stores.
    pub fn start(
        cfg: &AgentConfig,
        node: &str,
        pod_cidr: Ipv4Net,
        state: StateFile,
        persisted: Option<PersistedTable>,
        objects: Option<&ClusterObjects>,
    ) -> anyhow::Result<Self> {
        bpffs::ensure_mounted(&cfg.bpffs_root)?;
        let dataplane = Dataplane::load(&cfg.bpffs_root)
            .with_context(|| format!("loading the datapath under {}", cfg.bpffs_root.display()))?;
        let mut flows = dataplane.nat_flows().context("opening the NAT-flow map")?;
        let table = restore_table(persisted, pod_cidr)?;
        let mut manager = EndpointManager::new(table, dataplane, state);
        let report = manager.reconcile();
        info!(%node, cidr = %pod_cidr, restored = report.restored, missing = ?report.missing_interfaces,
              stale_removed = report.stale_map_entries_removed, failed = ?report.failed, "datapath reconciled");
        // Every filter of a restored endpoint now runs this build's programs: the pins of superseded map
        // layouts can go (endpoints that failed to restore lost their old filters' maps' names only).
        for old in manager.finish_upgrade().context("removing superseded map pins")? {
            info!(map = old.map, version = old.version, "superseded map layout unpinned");
        }
        let flow_sweep = FlowSweep::start("nat-flow-sweep", SWEEP_EVERY, move |now| flows.sweep(now))
            .context("starting the NAT-flow sweep")?;
        let manager = Arc::new(Mutex::new(manager));
        let sweep = objects.map(|objects| {
            let interval = Duration::from_secs(cfg.orphan_sweep_seconds.max(1));
            kubernetes::spawn_orphan_sweep(objects.clone(), node, manager.clone(), interval)
        });
        Ok(Endpoints { manager, report, sweep, flow_sweep })
    }

    pub fn manager(&self) -> Arc<Mutex<EndpointManager>> {
        self.manager.clone()
    }
}

#[tonic::async_trait]
impl Subsystem for Endpoints {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn health(&self) -> Health {
        let mut notes: Vec<String> =
            self.report.failed.iter().map(|f| format!("not restored at start: {f}")).collect();
        if !self.report.missing_interfaces.is_empty() {
            notes.push(format!(
                "{} endpoints wait for CNI DEL or GC: their host interfaces were gone at start",
                self.report.missing_interfaces.len()
            ));
        }
        Health::ready_with(notes)
    }

    async fn stop(&mut self) {
        if let Some(sweep) = self.sweep.take() {
            sweep.abort();
        }
        self.flow_sweep.stop();
        // The datapath stays: pinned programs and maps keep forwarding while no agent runs.
    }
}
