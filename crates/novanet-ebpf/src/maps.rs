//! The maps of the pod programs. Names must equal the `novanet_common::*_MAP` constants (the macro needs a
//! literal; the dataplane's tests check the object against the constants). The agent gives each its pin
//! path (by layout version, see `novanet_common::*_MAP_VERSION`).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use novanet_common::{
    Counter, CounterValue, EndpointInfo, EndpointKey, MAX_ENDPOINTS, MAX_NAT_FLOWS, NatFlowKey, NatFlowSeen,
};

/// `novanet_common::ENDPOINTS_MAP`: local pod IPv4 -> how to deliver to it.
#[map(name = "NOVANET_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// `novanet_common::COUNTERS_MAP`: per-CPU packet/byte counters indexed by `Counter`.
#[map(name = "NOVANET_COUNTERS")]
pub static COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::pinned(Counter::COUNT, 0);

/// `novanet_common::NAT_FLOWS_MAP`: flows between local pods that the node's stack delivered.
#[map(name = "NOVANET_NAT_FLOWS")]
pub static NAT_FLOWS: LruHashMap<NatFlowKey, NatFlowSeen> = LruHashMap::pinned(MAX_NAT_FLOWS, 0);
