//! The node's endpoint table: one entry per pod attachment (container ID + interface name), owning the
//! pod's address. The table is the single source of truth the agent persists and mirrors into the
//! eBPF endpoint map.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ipam::{Ipam, IpamError};

/// What the runtime calls an attachment: one interface of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

impl std::fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The Kubernetes pod an endpoint belongs to (empty fields when the runtime gave none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What the CNI plugin reports about a new attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub attachment: AttachmentId,
    pub pod: PodRef,
    pub netns: String,
    pub host_ifname: String,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

/// One local endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub attachment: AttachmentId,
    pub pod: PodRef,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub host_ifname: String,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("host interface {host_ifname} already belongs to attachment {owner}")]
    HostInterfaceTaken { host_ifname: String, owner: AttachmentId },
}

/// Persisted form: the endpoints are the truth; the allocator's used set is rebuilt from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedTable {
    pub version: u32,
    pub pod_cidr: Ipv4Net,
    pub cursor: Option<Ipv4Addr>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone)]
pub struct EndpointTable {
    ipam: Ipam,
    endpoints: BTreeMap<AttachmentId, Endpoint>,
}

/// Result of [`EndpointTable::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new endpoint with a new address.
    New(Endpoint),
    /// The attachment existed; its endpoint was refreshed with the new interface details, same address.
    Existing(Endpoint),
}

impl Added {
    pub fn endpoint(&self) -> &Endpoint {
        match self {
            Added::New(e) | Added::Existing(e) => e,
        }
    }
}

impl EndpointTable {
    pub const PERSIST_VERSION: u32 = 1;

    pub fn new(pod_cidr: Ipv4Net) -> Result<Self, TableError> {
        Ok(EndpointTable { ipam: Ipam::new(pod_cidr)?, endpoints: BTreeMap::new() })
    }

    /// Rebuilds the table from its persisted form under the node's current pod CIDR. Endpoints whose
    /// address lies outside that CIDR (the node was given a new CIDR) are kept so they can still be
    /// deleted, but their addresses are not part of the pool. Returns the table and those endpoints.
    pub fn restore(persisted: PersistedTable, pod_cidr: Ipv4Net) -> Result<(Self, Vec<Endpoint>), TableError> {
        let mut table = EndpointTable::new(pod_cidr)?;
        let mut foreign = Vec::new();
        for ep in persisted.endpoints {
            if table.ipam.contains(ep.ip) {
                table.ipam.reserve(ep.ip)?;
            } else {
                foreign.push(ep.clone());
            }
            table.endpoints.insert(ep.attachment.clone(), ep);
        }
        if persisted.pod_cidr.trunc() == table.ipam.cidr() {
            table.ipam = table.ipam.with_cursor(persisted.cursor);
        }
        Ok((table, foreign))
    }

    pub fn persisted(&self) -> PersistedTable {
        PersistedTable {
            version: Self::PERSIST_VERSION,
            pod_cidr: self.ipam.cidr(),
            cursor: self.ipam.cursor(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Adds an attachment, or refreshes it when it exists (a retried ADD keeps its address).
    pub fn add(&mut self, new: NewEndpoint) -> Result<Added, TableError> {
        if let Some(owner) = self
            .endpoints
            .values()
            .find(|e| e.host_ifname == new.host_ifname && e.attachment != new.attachment)
        {
            return Err(TableError::HostInterfaceTaken {
                host_ifname: new.host_ifname,
                owner: owner.attachment.clone(),
            });
        }
        if let Some(existing) = self.endpoints.get_mut(&new.attachment) {
            existing.pod = new.pod;
            existing.netns = new.netns;
            existing.host_ifname = new.host_ifname;
            existing.host_mac = new.host_mac;
            existing.pod_mac = new.pod_mac;
            return Ok(Added::Existing(existing.clone()));
        }
        let ip = self.ipam.allocate()?;
        let ep = Endpoint {
            attachment: new.attachment.clone(),
            pod: new.pod,
            ip,
            netns: new.netns,
            host_ifname: new.host_ifname,
            host_mac: new.host_mac,
            pod_mac: new.pod_mac,
        };
        self.endpoints.insert(new.attachment, ep.clone());
        Ok(Added::New(ep))
    }

    /// Removes an attachment and releases its address.
    pub fn remove(&mut self, id: &AttachmentId) -> Option<Endpoint> {
        let ep = self.endpoints.remove(id)?;
        self.ipam.release(ep.ip);
        Some(ep)
    }

    /// Puts an endpoint back exactly as it was before a change that is being rolled back: replaces the
    /// attachment's current entry (a repeated ADD that refreshed it) or re-inserts a removed one, and
    /// re-reserves its address when that was released meanwhile.
    pub fn put_back(&mut self, ep: Endpoint) -> Result<(), TableError> {
        if let Some(current) = self.endpoints.get(&ep.attachment)
            && current.ip != ep.ip
        {
            self.ipam.release(current.ip);
        }
        if self.ipam.contains(ep.ip) && !self.ipam.is_used(ep.ip) {
            self.ipam.reserve(ep.ip)?;
        }
        self.endpoints.insert(ep.attachment.clone(), ep);
        Ok(())
    }

    pub fn get(&self, id: &AttachmentId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Endpoint> {
        self.endpoints.values().find(|e| e.ip == ip)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Attachments not in `valid` (CNI GC): the ones to release.
    pub fn stale(&self, valid: &[AttachmentId]) -> Vec<AttachmentId> {
        self.endpoints.keys().filter(|id| !valid.contains(id)).cloned().collect()
    }

    /// Attachments whose pod UID is not in `live_uids` (the orphan sweep against the API). Endpoints
    /// without a pod UID are never swept this way: only CNI DEL or GC remove them.
    pub fn orphans<'a>(&self, mut is_live: impl FnMut(&str) -> bool + 'a) -> Vec<AttachmentId> {
        self.endpoints
            .values()
            .filter(|e| !e.pod.uid.is_empty() && !is_live(&e.pod.uid))
            .map(|e| e.attachment.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(id: &str) -> AttachmentId {
        AttachmentId { container_id: id.into(), ifname: "eth0".into() }
    }

    fn new_ep(id: &str, host: &str) -> NewEndpoint {
        NewEndpoint {
            attachment: attach(id),
            pod: PodRef { namespace: "default".into(), name: id.into(), uid: format!("uid-{id}") },
            netns: format!("/run/netns/{id}"),
            host_ifname: host.into(),
            host_mac: [2, 0, 0, 0, 0, 1],
            pod_mac: [2, 0, 0, 0, 0, 2],
        }
    }

    fn table() -> EndpointTable {
        EndpointTable::new("10.244.1.0/24".parse().unwrap()).unwrap()
    }

    #[test]
    fn repeated_add_keeps_the_address() {
        let mut t = table();
        let first = t.add(new_ep("a", "nna")).unwrap();
        assert!(matches!(first, Added::New(_)));
        let again = t.add(new_ep("a", "nna")).unwrap();
        assert!(matches!(again, Added::Existing(_)));
        assert_eq!(first.endpoint().ip, again.endpoint().ip);
        assert_eq!(t.ipam().used(), 1);
    }

    #[test]
    fn pod_delete_releases_address() {
        let mut t = table();
        let ip = t.add(new_ep("a", "nna")).unwrap().endpoint().ip;
        assert_eq!(t.remove(&attach("a")).unwrap().ip, ip);
        assert_eq!(t.ipam().used(), 0);
        assert!(t.remove(&attach("a")).is_none(), "second DEL is a no-op");
    }

    #[test]
    fn host_interface_cannot_serve_two_attachments() {
        let mut t = table();
        t.add(new_ep("a", "nnx")).unwrap();
        assert!(matches!(t.add(new_ep("b", "nnx")), Err(TableError::HostInterfaceTaken { .. })));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn restore_rebuilds_pool_and_cursor() {
        let mut t = table();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            t.add(new_ep(id, &format!("nn{i}"))).unwrap();
        }
        t.remove(&attach("c"));
        let json = serde_json::to_string(&t.persisted()).unwrap();
        let (back, foreign) =
            EndpointTable::restore(serde_json::from_str(&json).unwrap(), t.ipam().cidr()).unwrap();
        assert!(foreign.is_empty());
        assert_eq!(back.len(), 2);
        assert_eq!(back.ipam().used(), 2);
        let mut back = back;
        let next = back.add(new_ep("d", "nnd")).unwrap().endpoint().ip;
        assert_eq!(next, "10.244.1.5".parse::<Ipv4Addr>().unwrap(), "cursor survives the restart");
    }

    #[test]
    fn restore_under_a_new_cidr_reports_foreign_endpoints() {
        let mut t = table();
        t.add(new_ep("a", "nna")).unwrap();
        let (back, foreign) = EndpointTable::restore(t.persisted(), "10.244.9.0/24".parse().unwrap()).unwrap();
        assert_eq!(foreign.len(), 1);
        assert_eq!(back.len(), 1, "kept so a later DEL still finds it");
        assert_eq!(back.ipam().used(), 0);
    }

    #[test]
    fn put_back_undoes_a_refresh_and_a_removal() {
        let mut t = table();
        let before = t.add(new_ep("a", "nna")).unwrap().endpoint().clone();
        t.add(new_ep("a", "nnz")).unwrap();
        t.put_back(before.clone()).unwrap();
        assert_eq!(t.get(&attach("a")), Some(&before));
        let removed = t.remove(&attach("a")).unwrap();
        assert!(!t.ipam().is_used(removed.ip));
        t.put_back(removed).unwrap();
        assert_eq!(t.get(&attach("a")), Some(&before));
        assert!(t.ipam().is_used(before.ip), "the address is reserved again");
        assert_eq!(t.ipam().used(), 1);
    }

    #[test]
    fn stale_and_orphans_select_the_right_attachments() {
        let mut t = table();
        t.add(new_ep("a", "nna")).unwrap();
        t.add(new_ep("b", "nnb")).unwrap();
        assert_eq!(t.stale(&[attach("a")]), vec![attach("b")]);
        assert_eq!(t.orphans(|uid| uid == "uid-b"), vec![attach("a")]);
    }
}
