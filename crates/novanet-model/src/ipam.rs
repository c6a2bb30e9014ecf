//! Node-local IPv4 address management over the node's pod CIDR.
//!
//! Rules: the network address, the broadcast address and the first host address (kept for the node
//! itself, e.g. a tunnel or router address later) are never handed out; allocation walks forward from
//! the last address handed out (wrapping), so a released address is reused as late as possible and a
//! slow DEL of an old pod cannot collide with a new pod on the same address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {cidr} has no free address ({used} of {size} in use)")]
    Exhausted { cidr: Ipv4Net, used: u32, size: u32 },
    #[error("pod CIDR {cidr} is too small: at least a /30 is needed")]
    CidrTooSmall { cidr: Ipv4Net },
    #[error("address {ip} is outside pod CIDR {cidr}")]
    OutOfRange { ip: Ipv4Addr, cidr: Ipv4Net },
    #[error("address {ip} is already in use")]
    InUse { ip: Ipv4Addr },
}

/// Allocator state. Serialisable so the agent can persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipam {
    cidr: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
    /// Last address handed out; the next search starts after it.
    cursor: Option<Ipv4Addr>,
}

impl Ipam {
    pub fn new(cidr: Ipv4Net) -> Result<Self, IpamError> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(IpamError::CidrTooSmall { cidr });
        }
        Ok(Ipam { cidr, used: BTreeSet::new(), cursor: None })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// Number of addresses that can be handed out.
    pub fn size(&self) -> u32 {
        let (first, last) = self.range();
        last - first + 1
    }

    pub fn used(&self) -> u32 {
        self.used.len() as u32
    }

    /// The address reserved for the node itself (first host address).
    pub fn node_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// First and last assignable addresses as integers.
    fn range(&self) -> (u32, u32) {
        let network = u32::from(self.cidr.network());
        let broadcast = u32::from(self.cidr.broadcast());
        (network + 2, broadcast - 1)
    }

    /// Last address handed out.
    pub fn cursor(&self) -> Option<Ipv4Addr> {
        self.cursor
    }

    /// The same allocator continuing after `cursor` (restoring persisted state).
    pub fn with_cursor(mut self, cursor: Option<Ipv4Addr>) -> Self {
        self.cursor = cursor;
        self
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.range();
        (first..=last).contains(&u32::from(ip))
    }

    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&ip)
    }

    /// Hands out the next free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = self.range();
        let size = last - first + 1;
        let start = match self.cursor.map(u32::from) {
            Some(c) if (first..last).contains(&c) => c + 1,
            _ => first,
        };
        for i in 0..size {
            let candidate = Ipv4Addr::from(first + (start - first + i) % size);
            if !self.used.contains(&candidate) {
                self.used.insert(candidate);
                self.cursor = Some(candidate);
                return Ok(candidate);
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr, used: self.used(), size })
    }

    /// Marks a specific address as used (restoring persisted state).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.contains(ip) {
            return Err(IpamError::OutOfRange { ip, cidr: self.cidr });
        }
        if !self.used.insert(ip) {
            return Err(IpamError::InUse { ip });
        }
        Ok(())
    }

    /// Returns an address to the pool; true when it was in use.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.used.remove(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_broadcast_and_node_address() {
        let mut ipam = Ipam::new(net("10.244.1.0/29")).unwrap();
        assert_eq!(ipam.size(), 5);
        assert_eq!(ipam.node_address(), Ipv4Addr::new(10, 244, 1, 1));
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 244, 1, 6)));
    }

    #[test]
    fn exhausted_pool_is_a_clear_error() {
        let mut ipam = Ipam::new(net("10.244.1.0/30")).unwrap();
        ipam.allocate().unwrap();
        let err = ipam.allocate().unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { used: 1, size: 1, .. }));
        assert!(err.to_string().contains("no free address"));
    }

    #[test]
    fn never_hands_out_an_address_twice() {
        let mut ipam = Ipam::new(net("10.244.0.0/24")).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..ipam.size() {
            assert!(seen.insert(ipam.allocate().unwrap()));
        }
        assert!(ipam.allocate().is_err());
    }

    #[test]
    fn released_address_is_reused_last() {
        let mut ipam = Ipam::new(net("10.244.0.0/28")).unwrap();
        let a = ipam.allocate().unwrap();
        let b = ipam.allocate().unwrap();
        assert!(ipam.release(a));
        let c = ipam.allocate().unwrap();
        assert_ne!(c, a, "a just-released address must not come straight back");
        assert_ne!(c, b);
        assert!(!ipam.release(a), "double release reports nothing released");
    }

    #[test]
    fn wraps_around_to_freed_addresses() {
        let mut ipam = Ipam::new(net("10.244.0.0/29")).unwrap();
        let all: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        ipam.release(all[1]);
        assert_eq!(ipam.allocate().unwrap(), all[1]);
    }

    #[test]
    fn reserve_rejects_foreign_and_duplicate_addresses() {
        let mut ipam = Ipam::new(net("10.244.0.0/24")).unwrap();
        assert!(matches!(ipam.reserve(Ipv4Addr::new(10, 245, 0, 5)), Err(IpamError::OutOfRange { .. })));
        assert!(matches!(ipam.reserve(Ipv4Addr::new(10, 244, 0, 1)), Err(IpamError::OutOfRange { .. })));
        ipam.reserve(Ipv4Addr::new(10, 244, 0, 5)).unwrap();
        assert!(matches!(ipam.reserve(Ipv4Addr::new(10, 244, 0, 5)), Err(IpamError::InUse { .. })));
    }

    #[test]
    fn too_small_cidr_is_rejected() {
        assert!(matches!(Ipam::new(net("10.0.0.0/31")), Err(IpamError::CidrTooSmall { .. })));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut ipam = Ipam::new(net("10.244.3.0/24")).unwrap();
        ipam.allocate().unwrap();
        let back: Ipam = serde_json::from_str(&serde_json::to_string(&ipam).unwrap()).unwrap();
        assert_eq!(back, ipam);
    }
}
