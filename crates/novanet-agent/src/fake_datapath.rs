//! An in-memory [`EndpointDatapath`] and [`TableStore`] for the endpoint manager's tests, with fault
//! injection: fail the Nth attach, detach, upsert, remove or save from now, or give the map a capacity.
//! Both halves share one [`FakeState`] so a test can inspect the whole node after each operation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use novanet_common::EndpointInfo;
use novanet_dataplane::DataplaneError;
use novanet_model::PersistedTable;

use crate::endpoint_datapath::EndpointDatapath;
use crate::state_file::{StateFileError, TableStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Attach,
    Detach,
    Upsert,
    Remove,
    Save,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Attach, Op::Detach, Op::Upsert, Op::Remove, Op::Save];
}

#[derive(Debug, Default)]
pub struct FakeState {
    /// Interfaces that exist, with their ifindex.
    pub interfaces: BTreeMap<String, u32>,
    /// Interfaces with NovaNet's filter.
    pub attached: BTreeSet<String>,
    pub map: BTreeMap<Ipv4Addr, EndpointInfo>,
    /// Entries the map can hold (unbounded when `None`).
    pub capacity: Option<usize>,
    /// The last table saved successfully.
    pub saved: Option<PersistedTable>,
    calls: BTreeMap<Op, u32>,
    failing: BTreeSet<(Op, u32)>,
}

impl FakeState {
    /// Counts a call of `op`; `true` when it is one set to fail.
    fn fails(&mut self, op: Op) -> bool {
        let n = self.calls.entry(op).or_default();
        *n += 1;
        let n = *n;
        self.failing.remove(&(op, n))
    }
}

fn injected(op: Op) -> DataplaneError {
    DataplaneError::Netlink { operation: "injected fault", source: std::io::Error::other(format!("{op:?} failed")) }
}

/// The datapath half; clones share the state.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    /// The store half, sharing this fake's state.
    pub fn store(&self) -> FakeStore {
        FakeStore(self.0.clone())
    }

    pub fn add_interface(&self, name: &str) {
        let mut s = self.state();
        let index = 100 + s.interfaces.len() as u32;
        s.interfaces.insert(name.to_string(), index);
    }

    /// The interface is deleted (as the CNI plugin does after DEL): its filter goes with it.
    pub fn remove_interface(&self, name: &str) {
        let mut s = self.state();
        s.interfaces.remove(name);
        s.attached.remove(name);
    }

    /// Makes the `nth` call of `op` from now fail (1: the next one).
    pub fn fail(&self, op: Op, nth: u32) {
        let mut s = self.state();
        let at = s.calls.get(&op).copied().unwrap_or(0) + nth;
        s.failing.insert((op, at));
    }

    /// Whether every injected fault has been hit.
    pub fn faults_pending(&self) -> bool {
        !self.state().failing.is_empty()
    }

    pub fn clear_faults(&self) {
        self.state().failing.clear();
    }
}

impl EndpointDatapath for Fake {
    fn attach(&mut self, host_ifname: &str) -> Result<u32, DataplaneError> {
        let mut s = self.state();
        if s.fails(Op::Attach) {
            return Err(injected(Op::Attach));
        }
        let index = *s
            .interfaces
            .get(host_ifname)
            .ok_or_else(|| DataplaneError::InterfaceNotFound { name: host_ifname.to_string() })?;
        s.attached.insert(host_ifname.to_string());
        Ok(index)
    }

    fn detach(&mut self, host_ifname: &str) -> Result<bool, DataplaneError> {
        let mut s = self.state();
        if s.fails(Op::Detach) {
            return Err(injected(Op::Detach));
        }
        Ok(s.attached.remove(host_ifname))
    }

    fn is_attached(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        Ok(self.state().attached.contains(host_ifname))
    }

    fn ifindex(&self, host_ifname: &str) -> Result<u32, DataplaneError> {
        self.state()
            .interfaces
            .get(host_ifname)
            .copied()
            .ok_or_else(|| DataplaneError::InterfaceNotFound { name: host_ifname.to_string() })
    }

    fn upsert(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError> {
        let mut s = self.state();
        if s.fails(Op::Upsert) {
            return Err(injected(Op::Upsert));
        }
        if let Some(capacity) = s.capacity
            && !s.map.contains_key(&ip)
            && s.map.len() >= capacity
        {
            return Err(DataplaneError::MapFull { map: "NOVANET_ENDPOINTS", max_entries: capacity as u32 });
        }
        s.map.insert(ip, *info);
        Ok(())
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, DataplaneError> {
        let mut s = self.state();
        if s.fails(Op::Remove) {
            return Err(injected(Op::Remove));
        }
        Ok(s.map.remove(&ip).is_some())
    }

    fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError> {
        Ok(self.state().map.iter().map(|(ip, info)| (*ip, *info)).collect())
    }
}

/// The state-file half.
pub struct FakeStore(Arc<Mutex<FakeState>>);

impl TableStore for FakeStore {
    fn save(&mut self, table: &PersistedTable) -> Result<(), StateFileError> {
        let mut s = self.0.lock().unwrap();
        if s.fails(Op::Save) {
            return Err(StateFileError::Io {
                operation: "injected fault: writing",
                path: "endpoints.json".into(),
                source: std::io::Error::other("Save failed"),
            });
        }
        s.saved = Some(table.clone());
        Ok(())
    }
}
