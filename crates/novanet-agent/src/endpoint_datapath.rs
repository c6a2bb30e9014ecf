//! The port between the endpoint manager and the datapath: the few operations the manager needs to keep
//! pod endpoints in the eBPF map and their program on the host veths.
//!
//! Why a trait: the manager's rollback and reconciliation rules are only trustworthy when every failure
//! path is exercised, and real netlink and map failures cannot be provoked on demand. The tests drive
//! the manager through an in-memory fake that fails the Nth call (`fake_datapath.rs`); production uses
//! the thin adapter below over [`Dataplane`]'s public methods, kept in this one file so it is easy to
//! adapt when the dataplane changes.

use std::net::Ipv4Addr;

use novanet_common::EndpointInfo;
use novanet_dataplane::{Dataplane, DataplaneError, Superseded};

/// What the endpoint manager needs from the datapath. Interface names are resolved in the calling
/// thread's network namespace.
pub trait EndpointDatapath: Send {
    /// Attaches the pod programs to the hooks of `host_ifname` (idempotent: replaces the program of an
    /// existing filter in place); returns the interface's ifindex.
    fn attach(&mut self, host_ifname: &str) -> Result<u32, DataplaneError>;
    /// Removes the pod programs' filters from `host_ifname`; `false` when there were none.
    fn detach(&mut self, host_ifname: &str) -> Result<bool, DataplaneError>;
    /// Whether all the pod programs' filters are on `host_ifname`.
    fn is_attached(&self, host_ifname: &str) -> Result<bool, DataplaneError>;
    /// The ifindex of `host_ifname`, or [`DataplaneError::InterfaceNotFound`].
    fn ifindex(&self, host_ifname: &str) -> Result<u32, DataplaneError>;
    /// Inserts or replaces the map entry of `ip` ([`DataplaneError::MapFull`] when there is no room).
    fn upsert(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError>;
    /// Removes the map entry of `ip`; `false` when there was none.
    fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, DataplaneError>;
    /// Every map entry.
    fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError>;
    /// Removes the pins of superseded map layouts once every endpoint runs this build's programs.
    fn finish_upgrade(&mut self) -> Result<Vec<Superseded>, DataplaneError> {
        Ok(Vec::new())
    }
}

impl EndpointDatapath for Dataplane {
    fn attach(&mut self, host_ifname: &str) -> Result<u32, DataplaneError> {
        self.attach_endpoint(host_ifname)
    }

    fn detach(&mut self, host_ifname: &str) -> Result<bool, DataplaneError> {
        Dataplane::detach_endpoint(host_ifname)
    }

    fn is_attached(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        Dataplane::is_attached(self, host_ifname)
    }

    fn ifindex(&self, host_ifname: &str) -> Result<u32, DataplaneError> {
        novanet_dataplane::ifindex(host_ifname)
    }

    fn upsert(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError> {
        self.upsert_endpoint(ip, info)
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, DataplaneError> {
        self.remove_endpoint(ip)
    }

    fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError> {
        self.endpoints()
    }

    fn finish_upgrade(&mut self) -> Result<Vec<Superseded>, DataplaneError> {
        Dataplane::finish_upgrade(self)
    }
}
