//! The maps of the programs. Names must equal the `novanet_common::*_MAP` constants (the macro needs a
//! literal; the dataplane's tests check the object against the constants). The agent gives each its pin
//! path (by layout version, see `novanet_common::*_MAP_VERSION`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use novanet_common::{
    CidrKey, CidrValue, Counter, CounterValue, CtEntry, CtKey, EndpointInfo, EndpointKey, IpcacheValue, MAX_CT,
    MAX_ENDPOINTS, MAX_IPCACHE, MAX_NAT_FLOWS, MAX_POLICY_CIDRS, MAX_POLICY_ENTRIES, MAX_VERDICTS, NatFlowKey,
    NatFlowSeen, PolicyConfig, PolicyKey, PolicyValue, VerdictKey, VerdictValue,
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

/// `novanet_common::IPCACHE_MAP`: address -> identity (and, for local endpoints, isolation flags).
#[map(name = "NOVANET_IPCACHE")]
pub static IPCACHE: HashMap<EndpointKey, IpcacheValue> = HashMap::pinned(MAX_IPCACHE, 0);

/// `novanet_common::POLICY_MAP`: allowed (endpoint, peer, direction, protocol, port prefix). aya creates LPM
/// tries with `BPF_F_NO_PREALLOC` (the kernel requires it).
#[map(name = "NOVANET_POLICY")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(MAX_POLICY_ENTRIES, 0);

/// `novanet_common::POLICY_CIDR_MAP`: (endpoint, direction, peer prefix) -> CIDR class.
#[map(name = "NOVANET_POLICY_CIDR")]
pub static POLICY_CIDR: LpmTrie<CidrKey, CidrValue> = LpmTrie::pinned(MAX_POLICY_CIDRS, 0);

/// `novanet_common::CT_MAP`: connection tracking.
#[map(name = "NOVANET_CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MAX_CT, 0);

/// `novanet_common::POLICY_CONFIG_MAP`: slot 0 is the `PolicyConfig`.
#[map(name = "NOVANET_POLICY_CONFIG")]
pub static POLICY_CONFIG: Array<PolicyConfig> = Array::pinned(1, 0);

/// `novanet_common::VERDICTS_MAP`: per-endpoint verdict counters of new flows.
#[map(name = "NOVANET_VERDICTS")]
pub static VERDICTS: HashMap<VerdictKey, VerdictValue> = HashMap::pinned(MAX_VERDICTS, 0);
