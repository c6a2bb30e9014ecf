//! The agent's side of `NOVANET_NAT_FLOWS` (see `novanet_common::NAT_FLOWS_MAP`): listing, and the sweep
//! that frees idle flows and flows of removed endpoints, from handles of its own, so it never runs under
//! the endpoint manager's lock (nor on the CNI DEL path).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use novanet_common::{ENDPOINTS_MAP, EndpointInfo, EndpointKey, MAX_ENDPOINTS, MAX_NAT_FLOWS, NatFlowKey, NatFlowSeen};

use crate::maps::{BpfHashMap, MapHandle};
use crate::DataplaneError;

/// One flow as the datapath recorded it: (client address, client port, server address, server port, IP
/// protocol), ports in host order.
pub type NatFlow = (Ipv4Addr, u16, Ipv4Addr, u16, u8);

/// Handles on the NAT-flow map and (read only) the endpoint map.
pub struct NatFlows {
    map: BpfHashMap<NatFlowKey, NatFlowSeen>,
    endpoints: BpfHashMap<EndpointKey, EndpointInfo>,
}

impl NatFlows {
    pub(crate) fn open(path: &std::path::Path, endpoints: &std::path::Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            map: BpfHashMap::open_pinned(novanet_common::NAT_FLOWS_MAP, MAX_NAT_FLOWS, path, true)?,
            endpoints: BpfHashMap::open_pinned(ENDPOINTS_MAP, MAX_ENDPOINTS, endpoints, false)?,
        })
    }

    /// Removes, in one walk of the map, the flows idle longer than their protocol's timeout at monotonic
    /// time `now_ns` (the clock of `bpf_ktime_get_ns`, [`monotonic_now_ns`]; the datapath ignores those
    /// already, this frees their slots) and the flows of pods that are no longer local endpoints (removed by
    /// CNI DEL: the DEL itself never walks this map). Returns how many.
    pub fn sweep(&mut self, now_ns: u64) -> Result<usize, DataplaneError> {
        let local: HashSet<u32> = self.endpoints.keys()?.into_iter().map(|k| k.ip).collect();
        let mut removed = 0;
        for (key, seen) in self.map.entries()? {
            let expired = now_ns.saturating_sub(seen.last_seen_ns) > NatFlowSeen::idle_ns(key.proto);
            let gone = !local.contains(&key.client_ip) || !local.contains(&key.server_ip);
            // `false` from remove: gone meanwhile (answered, evicted).
            if (expired || gone) && self.map.remove(&key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every flow, sorted.
    pub fn list(&self) -> Result<Vec<NatFlow>, DataplaneError> {
        let mut out: Vec<NatFlow> = self.map.keys()?.into_iter().map(flow).collect();
        out.sort_unstable();
        Ok(out)
    }
}

fn flow(k: NatFlowKey) -> NatFlow {
    (
        Ipv4Addr::from(k.client_ip.to_ne_bytes()),
        u16::from_be(k.client_port),
        Ipv4Addr::from(k.server_ip.to_ne_bytes()),
        u16::from_be(k.server_port),
        k.proto,
    )
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the datapath stamps flows with.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
