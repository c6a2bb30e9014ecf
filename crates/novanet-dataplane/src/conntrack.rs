//! The agent's side of `NOVANET_CT` (see `novanet_common::CT_MAP`): listing the tracked flows, counting
//! them (a pressure gauge: the map is an LRU, so a full table forgets its least recently used flows), and
//! the sweep that frees expired entries. From handles of its own, like [`crate::NatFlows`].
//!
//! The datapath already treats expired entries as absent; the sweep only frees their slots, so it may run
//! late or fail without changing a verdict.

use std::net::Ipv4Addr;

use novanet_common::{CT_MAP, CtEntry, CtKey, MAX_CT};

use crate::DataplaneError;
use crate::maps::{BpfHashMap, MapHandle};

/// One tracked flow as its first packet had it: (source, source port, destination, destination port, IP
/// protocol), ports in host order (ICMP echo: the identifier twice).
pub type CtFlow = (Ipv4Addr, u16, Ipv4Addr, u16, u8);

/// The flow of a conntrack key.
pub fn ct_flow(k: &CtKey) -> CtFlow {
    (
        Ipv4Addr::from(k.saddr.to_ne_bytes()),
        u16::from_be(k.sport),
        Ipv4Addr::from(k.daddr.to_ne_bytes()),
        u16::from_be(k.dport),
        k.proto,
    )
}

/// Whether `entry` of protocol `proto` has expired at monotonic time `now_ns`.
pub fn ct_expired(proto: u8, entry: &CtEntry, now_ns: u64) -> bool {
    now_ns.saturating_sub(entry.last_seen_ns) > CtEntry::lifetime_ns(proto, entry.flags)
}

/// A handle on the conntrack map (generic so that unit tests can use a [`crate::MemMap`]).
pub struct Conntrack<M = BpfHashMap<CtKey, CtEntry>> {
    map: M,
}

impl Conntrack {
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, DataplaneError> {
        Ok(Self { map: BpfHashMap::open_pinned(CT_MAP, MAX_CT, path, true)? })
    }
}

impl<M: MapHandle<CtKey, CtEntry>> Conntrack<M> {
    /// Wraps any map handle (tests: an in-memory map).
    pub fn with_map(map: M) -> Self {
        Self { map }
    }

    /// Every tracked flow with its entry, sorted by flow.
    pub fn list(&self) -> Result<Vec<(CtFlow, CtEntry)>, DataplaneError> {
        let mut out: Vec<_> = self.map.entries()?.into_iter().map(|(k, v)| (ct_flow(&k), v)).collect();
        out.sort_unstable_by_key(|(flow, _)| *flow);
        Ok(out)
    }

    /// How many flows are tracked.
    pub fn count(&self) -> Result<usize, DataplaneError> {
        Ok(self.map.entries()?.len())
    }

    /// Removes the entries expired at monotonic time `now_ns` ([`crate::monotonic_now_ns`], the clock of
    /// `bpf_ktime_get_ns`). Returns how many.
    pub fn sweep(&mut self, now_ns: u64) -> Result<usize, DataplaneError> {
        let mut removed = 0;
        for (key, entry) in self.map.entries()? {
            // `false` from remove: gone meanwhile (evicted, or re-opened by the datapath).
            if ct_expired(key.proto, &entry, now_ns) && self.map.remove(&key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::MemMap;

    fn key(sport: u16, proto: u8) -> CtKey {
        CtKey {
            saddr: u32::from_ne_bytes([10, 0, 0, 1]),
            daddr: u32::from_ne_bytes([10, 0, 0, 2]),
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    fn entry(last_seen_ns: u64, flags: u32) -> CtEntry {
        CtEntry { last_seen_ns, created_ns: 0, flags, revision: 0, tcp_flags_orig: 0, tcp_flags_reply: 0, _pad: [0; 6] }
    }

    #[test]
    fn sweep_frees_entries_by_their_own_lifetime() {
        let now = 100 * CtEntry::TCP_SYN_NS;
        let mut map = MemMap::<CtKey, CtEntry>::new(CT_MAP, 16);
        let old = now - CtEntry::UDP_NS - 1;
        map.insert(&key(1, 17), &entry(old, 0)).unwrap(); // UDP idle too long
        map.insert(&key(2, 6), &entry(old, CtEntry::FLAG_SEEN_REPLY)).unwrap(); // established TCP lives on
        map.insert(&key(3, 6), &entry(old, 0)).unwrap(); // never answered
        map.insert(&key(4, 6), &entry(now - CtEntry::TCP_CLOSING_NS - 1, CtEntry::FLAG_CLOSING)).unwrap();
        map.insert(&key(5, 1), &entry(now, 0)).unwrap();
        let mut ct = Conntrack::with_map(map);
        assert_eq!(ct.count().unwrap(), 5);
        assert_eq!(ct.sweep(now).unwrap(), 3);
        let left: Vec<u16> = ct.list().unwrap().iter().map(|(f, _)| f.1).collect();
        assert_eq!(left, vec![2, 5]);
    }
}
