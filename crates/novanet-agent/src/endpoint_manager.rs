//! Keeps three things in step: the endpoint table (model), its file on disk, and the eBPF endpoint map
//! plus program attachments (datapath, through [`EndpointDatapath`]).
//!
//! Rollback rules (each has a fault-injection test in `endpoint_manager_tests.rs`):
//! - **ADD** goes table -> datapath -> disk. When a later step fails, the earlier ones are undone: a new
//!   endpoint's address is released, its map entry removed and the tc filter detached if this ADD attached
//!   it; a repeated ADD (same attachment) that changed the entry in place gets the previous table entry and
//!   the previous map entry back.
//! - **DEL** goes datapath -> table -> disk: the address stays owned until the map entry is gone, and when
//!   the state cannot be written the endpoint (address and map entry) is put back, so a retried DEL finds
//!   it and the address is never handed out while the file still lists it.
//! - **Reconciliation** at start and bulk removals (GC, orphan sweep) never stop at one failing endpoint:
//!   they carry on with the others and report the failures.

use std::net::Ipv4Addr;

use novanet_common::{EndpointInfo, IDENTITY_UNKNOWN};
use novanet_dataplane::{Dataplane, DataplaneError};
use novanet_model::{Added, AttachmentId, Endpoint, EndpointTable, IpamError, NewEndpoint, TableError};
use tracing::{info, warn};

use crate::endpoint_datapath::EndpointDatapath;
use crate::state_file::{StateFile, StateFileError, TableStore};

/// Why an endpoint operation failed, with the datapath's or the state file's own error as `source`.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("datapath: {operation} {target}: {source}")]
    Datapath {
        operation: &'static str,
        target: String,
        #[source]
        source: DataplaneError,
    },
    #[error("persisting endpoint state: {0}")]
    Persist(#[source] StateFileError),
}

impl EndpointError {
    fn datapath(operation: &'static str, target: impl ToString) -> impl FnOnce(DataplaneError) -> EndpointError {
        let target = target.to_string();
        move |source| EndpointError::Datapath { operation, target, source }
    }

    /// The node has no room for another endpoint: its pod CIDR is exhausted or the endpoint map is full.
    /// A condition that clears when pods leave, unlike the other failures.
    pub fn is_resource_exhausted(&self) -> bool {
        matches!(
            self,
            EndpointError::Table(TableError::Ipam(IpamError::Exhausted { .. }))
                | EndpointError::Datapath { source: DataplaneError::MapFull { .. }, .. }
        )
    }
}

/// What start-up reconciliation found and fixed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub restored: usize,
    pub missing_interfaces: Vec<String>,
    pub stale_map_entries_removed: usize,
    /// Endpoints (and map sweeps) that could not be reconciled, with the error. Each stays in the table
    /// so CNI DEL can still release it.
    pub failed: Vec<String>,
}

/// What a bulk removal (GC, orphan sweep) released and what it could not.
#[derive(Debug, Default)]
pub struct Removal {
    pub released: Vec<Endpoint>,
    pub failed: Vec<(AttachmentId, EndpointError)>,
}

/// Told of every endpoint the manager adds or removes, while the CNI call is still in flight (policy:
/// a new address must never be judged with its previous owner's state). Failures are the observer's to
/// report: they never fail the CNI call.
pub trait EndpointObserver: Send + Sync {
    fn added(&self, ep: &Endpoint);
    fn removed(&self, ep: &Endpoint);
}

pub struct EndpointManager<D = Dataplane, S = StateFile> {
    table: EndpointTable,
    datapath: D,
    state: S,
    observer: Option<std::sync::Arc<dyn EndpointObserver>>,
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

/// How to undo an ADD that failed after the table accepted it.
struct AddUndo {
    added: Added,
    /// The attachment's table entry before a repeated ADD changed it.
    previous: Option<Endpoint>,
    /// The map entry of the previous endpoint's address before the change.
    previous_entry: Option<EndpointInfo>,
    /// Whether the host interface had NovaNet's filter before this ADD.
    was_attached: bool,
}

impl<S> EndpointManager<Dataplane, S> {
    /// The loaded datapath, for counters and the pin directory.
    pub fn dataplane(&self) -> &Dataplane {
        &self.datapath
    }

    /// The loaded datapath, for the subsystems that attach programs of their own.
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.datapath
    }
}

impl<D: EndpointDatapath, S: TableStore> EndpointManager<D, S> {
    pub fn new(table: EndpointTable, datapath: D, state: S) -> Self {
        EndpointManager { table, datapath, state, observer: None }
    }

    /// Sets the one observer of endpoint changes (the policy engine).
    pub fn set_observer(&mut self, observer: std::sync::Arc<dyn EndpointObserver>) {
        self.observer = Some(observer);
    }

    pub fn table(&self) -> &EndpointTable {
        &self.table
    }

    /// Whether `host_ifname` exists (in the agent's network namespace).
    pub fn interface_exists(&self, host_ifname: &str) -> bool {
        self.datapath.ifindex(host_ifname).is_ok()
    }

    /// Removes the pins of superseded map layouts (see `Dataplane::finish_upgrade`); call after
    /// [`EndpointManager::reconcile`] re-attached every endpoint.
    pub fn finish_upgrade(&mut self) -> Result<Vec<novanet_dataplane::Superseded>, DataplaneError> {
        self.datapath.finish_upgrade()
    }

    fn persist(&mut self) -> Result<(), EndpointError> {
        self.state.save(&self.table.persisted()).map_err(EndpointError::Persist)
    }

    /// Installs one endpoint in the datapath: program on its host veth, entry in the map.
    fn install(&mut self, ep: &Endpoint) -> Result<(), EndpointError> {
        let ifindex = self.datapath.attach(&ep.host_ifname).map_err(EndpointError::datapath("attaching to", &ep.host_ifname))?;
        self.datapath
            .upsert(ep.ip, &endpoint_info(ep, ifindex))
            .map_err(EndpointError::datapath("adding to the endpoint map", ep.ip))
    }

    fn map_entry(&self, ip: Ipv4Addr) -> Result<Option<EndpointInfo>, EndpointError> {
        let entries = self.datapath.entries().map_err(EndpointError::datapath("reading the endpoint map for", ip))?;
        Ok(entries.into_iter().find(|(at, _)| *at == ip).map(|(_, info)| info))
    }

    pub fn add(&mut self, new: NewEndpoint) -> Result<Endpoint, EndpointError> {
        let previous = self.table.get(&new.attachment).cloned();
        let previous_entry = match &previous {
            Some(prev) => self.map_entry(prev.ip)?,
            None => None,
        };
        // An error here means the interface is missing or unreadable: the attach below then fails too.
        let was_attached = self.datapath.is_attached(&new.host_ifname).unwrap_or(false);
        let added = self.table.add(new)?;
        let ep = added.endpoint().clone();
        let undo = AddUndo { added, previous, previous_entry, was_attached };
        if let Err(e) = self.install(&ep) {
            self.undo_add(undo);
            return Err(e);
        }
        if let Err(e) = self.persist() {
            self.undo_add(undo);
            return Err(e);
        }
        if let Some(observer) = &self.observer {
            observer.added(&ep);
        }
        info!(attachment = %ep.attachment, ip = %ep.ip, host_ifname = %ep.host_ifname, pod = %ep.pod.name, "endpoint added");
        Ok(ep)
    }

    /// Best-effort undo of a failed ADD (each step is tried; failures are logged, the ADD's own error is
    /// what the caller gets).
    fn undo_add(&mut self, undo: AddUndo) {
        let ep = undo.added.endpoint();
        match &undo.added {
            Added::New(_) => {
                self.table.remove(&ep.attachment);
                if let Err(e) = self.datapath.remove(ep.ip) {
                    warn!(ip = %ep.ip, error = %e, "rollback could not remove map entry");
                }
            }
            Added::Existing(_) => {
                if let Some(prev) = undo.previous.clone() {
                    let restored = match undo.previous_entry {
                        Some(info) => self.datapath.upsert(prev.ip, &info),
                        None => self.datapath.remove(prev.ip).map(|_| ()),
                    };
                    if let Err(e) = restored {
                        warn!(ip = %prev.ip, error = %e, "rollback could not restore the previous map entry");
                    }
                    if let Err(e) = self.table.put_back(prev) {
                        warn!(attachment = %ep.attachment, error = %e, "rollback could not restore the previous endpoint");
                    }
                }
            }
        }
        if !undo.was_attached
            && let Err(e) = self.datapath.detach(&ep.host_ifname)
        {
            warn!(host_ifname = %ep.host_ifname, error = %e, "rollback could not detach the filter it attached");
        }
    }

    /// Removes an attachment; `Ok(None)` when it was unknown (DEL is idempotent). The address stays owned
    /// until the map entry is gone and the state is written.
    pub fn remove(&mut self, id: &AttachmentId) -> Result<Option<Endpoint>, EndpointError> {
        let Some(ep) = self.table.get(id).cloned() else {
            return Ok(None);
        };
        // Another endpoint may have been given the address since (only after a pod CIDR change), so
        // only remove the map entry when no other endpoint owns it.
        let shared = self.table.iter().any(|other| other.ip == ep.ip && other.attachment != ep.attachment);
        if !shared {
            self.datapath.remove(ep.ip).map_err(EndpointError::datapath("removing from the endpoint map", ep.ip))?;
            if let Some(observer) = &self.observer {
                observer.removed(&ep);
            }
        }
        self.table.remove(id);
        if let Err(e) = self.persist() {
            self.undo_remove(&ep, shared);
            return Err(e);
        }
        info!(attachment = %ep.attachment, ip = %ep.ip, "endpoint removed");
        Ok(Some(ep))
    }

    /// Puts a removed endpoint back (its state could not be written): the table entry with its address,
    /// and its map entry while its interface exists.
    fn undo_remove(&mut self, ep: &Endpoint, shared: bool) {
        if let Err(e) = self.table.put_back(ep.clone()) {
            warn!(attachment = %ep.attachment, error = %e, "rollback could not restore the endpoint");
        }
        if shared {
            return;
        }
        if let Ok(ifindex) = self.datapath.ifindex(&ep.host_ifname)
            && let Err(e) = self.datapath.upsert(ep.ip, &endpoint_info(ep, ifindex))
        {
            warn!(ip = %ep.ip, error = %e, "rollback could not restore the map entry");
        }
    }

    /// CNI GC: releases every attachment not in `valid`.
    pub fn garbage_collect(&mut self, valid: &[AttachmentId]) -> Removal {
        self.remove_all(self.table.stale(valid))
    }

    /// Removes each of `ids`, carrying on past failures.
    pub fn remove_all(&mut self, ids: Vec<AttachmentId>) -> Removal {
        let mut removal = Removal::default();
        for id in ids {
            match self.remove(&id) {
                Ok(Some(ep)) => removal.released.push(ep),
                Ok(None) => {}
                Err(e) => {
                    warn!(attachment = %id, error = %e, "could not release endpoint");
                    removal.failed.push((id, e));
                }
            }
        }
        removal
    }

    /// Whether the endpoint's map entry and program attachment are in place.
    pub fn datapath_ok(&self, ep: &Endpoint) -> bool {
        let attached = self.datapath.is_attached(&ep.host_ifname).unwrap_or(false);
        let in_map = self.map_entry(ep.ip).map(|e| e.is_some()).unwrap_or(false);
        attached && in_map
    }

    /// Start-up: makes the pinned datapath match the persisted table without ever removing an entry a
    /// live pod needs. Re-attaching replaces the program in place, so traffic keeps flowing. An endpoint
    /// that fails is reported and skipped: the others are restored, and it stays in the table for DEL.
    pub fn reconcile(&mut self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let endpoints: Vec<Endpoint> = self.table.iter().cloned().collect();
        for ep in &endpoints {
            if !self.interface_exists(&ep.host_ifname) {
                warn!(host_ifname = %ep.host_ifname, ip = %ep.ip, "host interface is gone; waiting for CNI DEL or GC");
                report.missing_interfaces.push(ep.host_ifname.clone());
                continue;
            }
            match self.install(ep) {
                Ok(()) => report.restored += 1,
                Err(e) => {
                    warn!(attachment = %ep.attachment, ip = %ep.ip, error = %e, "could not restore endpoint; it stays for CNI DEL");
                    report.failed.push(format!("endpoint {} ({}): {e}", ep.attachment, ep.ip));
                }
            }
        }
        // Map entries of endpoints that failed above stay: their pods may still use them.
        let wanted: Vec<Ipv4Addr> = endpoints
            .iter()
            .filter(|ep| !report.missing_interfaces.contains(&ep.host_ifname))
            .map(|ep| ep.ip)
            .collect();
        let entries = match self.datapath.entries() {
            Ok(entries) => entries,
            Err(e) => {
                report.failed.push(format!("reading the endpoint map for stale entries: {e}"));
                return report;
            }
        };
        for (ip, _) in entries {
            if wanted.contains(&ip) {
                continue;
            }
            match self.datapath.remove(ip) {
                Ok(_) => report.stale_map_entries_removed += 1,
                Err(e) => report.failed.push(format!("removing stale map entry {ip}: {e}")),
            }
        }
        report
    }
}

#[cfg(test)]
#[path = "endpoint_manager_tests.rs"]
mod tests;
