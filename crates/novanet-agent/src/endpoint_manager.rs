//! Keeps three things in step: the endpoint table (model), its file on disk, and the eBPF endpoint map
//! plus program attachments (dataplane). Every change goes table -> dataplane -> disk, and is rolled back
//! in the same order when a later step fails, so no address, map entry or attachment is leaked.

use std::net::Ipv4Addr;

use anyhow::Context;
use novanet_common::{EndpointInfo, IDENTITY_UNKNOWN};
use novanet_dataplane::Dataplane;
use novanet_model::{Added, AttachmentId, Endpoint, EndpointTable, NewEndpoint, TableError};
use tracing::{info, warn};

use crate::state_file::StateFile;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("datapath: {0:#}")]
    Dataplane(anyhow::Error),
    #[error("persisting endpoint state: {0:#}")]
    Persist(anyhow::Error),
}

/// What start-up reconciliation found and fixed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub restored: usize,
    pub missing_interfaces: Vec<String>,
    pub stale_map_entries_removed: usize,
}

pub struct EndpointManager {
    table: EndpointTable,
    dataplane: Dataplane,
    state: StateFile,
}

fn endpoint_info(ep: &Endpoint, host_ifindex: u32) -> EndpointInfo {
    EndpointInfo {
        host_ifindex,
        identity: IDENTITY_UNKNOWN,
        pod_mac: ep.pod_mac,
        host_mac: ep.host_mac,
        flags: 0,
        _pad: 0,
    }
}

impl EndpointManager {
    pub fn new(table: EndpointTable, dataplane: Dataplane, state: StateFile) -> Self {
        EndpointManager { table, dataplane, state }
    }

    pub fn table(&self) -> &EndpointTable {
        &self.table
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Removes the pins of superseded map layouts (see `Dataplane::finish_upgrade`); call after
    /// [`EndpointManager::reconcile`] re-attached every endpoint.
    pub fn finish_upgrade(&mut self) -> Result<Vec<novanet_dataplane::Superseded>, novanet_dataplane::DataplaneError> {
        self.dataplane.finish_upgrade()
    }

    fn persist(&self) -> Result<(), EndpointError> {
        self.state.save(&self.table.persisted()).map_err(EndpointError::Persist)
    }

    /// Installs one endpoint in the datapath: program on its host veth, entry in the map.
    fn install(&mut self, ep: &Endpoint) -> anyhow::Result<()> {
        let ifindex = self
            .dataplane
            .attach_endpoint(&ep.host_ifname)
            .with_context(|| format!("attaching to {}", ep.host_ifname))?;
        self.dataplane
            .upsert_endpoint(ep.ip, &endpoint_info(ep, ifindex))
            .with_context(|| format!("adding {} to the endpoint map", ep.ip))?;
        Ok(())
    }

    pub fn add(&mut self, new: NewEndpoint) -> Result<Endpoint, EndpointError> {
        let added = self.table.add(new)?;
        let ep = added.endpoint().clone();
        if let Err(e) = self.install(&ep) {
            self.undo_add(&added);
            return Err(EndpointError::Dataplane(e));
        }
        if let Err(e) = self.persist() {
            self.undo_add(&added);
            return Err(e);
        }
        info!(attachment = %ep.attachment, ip = %ep.ip, host_ifname = %ep.host_ifname, pod = %ep.pod.name, "endpoint added");
        Ok(ep)
    }

    fn undo_add(&mut self, added: &Added) {
        if let Added::New(ep) = added {
            self.table.remove(&ep.attachment);
            if let Err(e) = self.dataplane.remove_endpoint(ep.ip) {
                warn!(ip = %ep.ip, error = %e, "rollback could not remove map entry");
            }
        }
    }

    /// Removes an attachment; `Ok(None)` when it was unknown (DEL is idempotent).
    pub fn remove(&mut self, id: &AttachmentId) -> Result<Option<Endpoint>, EndpointError> {
        let Some(ep) = self.table.remove(id) else {
            return Ok(None);
        };
        // Another endpoint may have been given the address since (only after a pod CIDR change), so
        // only remove the map entry when no remaining endpoint owns it.
        if self.table.by_ip(ep.ip).is_none() {
            self.dataplane.remove_endpoint(ep.ip).map_err(|e| EndpointError::Dataplane(e.into()))?;
        }
        self.persist()?;
        info!(attachment = %ep.attachment, ip = %ep.ip, "endpoint removed");
        Ok(Some(ep))
    }

    /// CNI GC: releases every attachment not in `valid`.
    pub fn garbage_collect(&mut self, valid: &[AttachmentId]) -> Result<Vec<Endpoint>, EndpointError> {
        self.remove_all(self.table.stale(valid))
    }

    pub fn remove_all(&mut self, ids: Vec<AttachmentId>) -> Result<Vec<Endpoint>, EndpointError> {
        let mut released = Vec::new();
        for id in ids {
            if let Some(ep) = self.remove(&id)? {
                released.push(ep);
            }
        }
        Ok(released)
    }

    /// Whether the endpoint's map entry and program attachment are in place.
    pub fn datapath_ok(&self, ep: &Endpoint) -> bool {
        let attached = self.dataplane.is_attached(&ep.host_ifname).unwrap_or(false);
        let in_map = self
            .dataplane
            .endpoints()
            .map(|entries| entries.iter().any(|(ip, _)| *ip == ep.ip))
            .unwrap_or(false);
        attached && in_map
    }

    /// Start-up: makes the pinned datapath match the persisted table without ever removing an entry a
    /// live pod needs. Re-attaching replaces the program in place, so traffic keeps flowing.
    pub fn reconcile(&mut self) -> anyhow::Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let endpoints: Vec<Endpoint> = self.table.iter().cloned().collect();
        for ep in &endpoints {
            if novanet_dataplane::ifindex(&ep.host_ifname).is_err() {
                warn!(host_ifname = %ep.host_ifname, ip = %ep.ip, "host interface is gone; waiting for CNI DEL or GC");
                report.missing_interfaces.push(ep.host_ifname.clone());
                continue;
            }
            self.install(ep)?;
            report.restored += 1;
        }
        let wanted: Vec<Ipv4Addr> = endpoints
            .iter()
            .filter(|ep| !report.missing_interfaces.contains(&ep.host_ifname))
            .map(|ep| ep.ip)
            .collect();
        for (ip, _) in self.dataplane.endpoints()? {
            if !wanted.contains(&ip) {
                self.dataplane.remove_endpoint(ip)?;
                report.stale_map_entries_removed += 1;
            }
        }
        Ok(report)
    }
}
