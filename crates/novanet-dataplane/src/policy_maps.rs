//! The maps the policy subsystem owns (see `novanet_common::policy`): the ipcache, the policy and CIDR
//! LPM tries, the policy switch and the per-endpoint verdict counters. [`PolicyMaps`] holds handles of
//! its own, opened from the pins, so the subsystem never needs the [`crate::Dataplane`]; every map sits
//! behind a trait ([`MapHandle`], [`LpmHandle`], [`PolicySwitch`]) with an in-memory twin for unit tests.
//!
//! Invariant: the policy switch is the last thing written when enabling enforcement and the first when
//! disabling it: with `FLAG_ENFORCE` clear the datapath touches none of these maps.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::{Array, Map, MapData};
use novanet_common::{
    CidrKey, CidrValue, DIRECTION_EGRESS, DIRECTION_INGRESS, EndpointKey, IPCACHE_MAP, IpcacheValue, MAX_IPCACHE,
    MAX_POLICY_CIDRS, MAX_POLICY_ENTRIES, MAX_VERDICTS, POLICY_CIDR_MAP, POLICY_CONFIG_MAP, POLICY_MAP, PolicyConfig,
    PolicyKey, PolicyValue, VERDICTS_MAP, VerdictKey, VerdictValue,
};

use crate::DataplaneError;
use crate::lpm::BpfLpmTrie;
use crate::maps::{BpfHashMap, MapHandle, map_err};

/// The one-slot policy switch ([`PolicyConfig`]).
pub trait PolicySwitch: Send {
    fn get(&self) -> Result<PolicyConfig, DataplaneError>;
    fn set(&mut self, config: &PolicyConfig) -> Result<(), DataplaneError>;
}

/// The pinned `NOVANET_POLICY_CONFIG` array.
pub struct BpfPolicySwitch {
    array: Array<MapData, PolicyConfig>,
}

impl BpfPolicySwitch {
    pub(crate) fn open_pinned(path: &Path) -> Result<Self, DataplaneError> {
        let data = MapData::from_pin(path).map_err(map_err(POLICY_CONFIG_MAP, "opening the pin"))?;
        let array = Array::try_from(Map::Array(data)).map_err(map_err(POLICY_CONFIG_MAP, "opening"))?;
        Ok(Self { array })
    }
}

impl PolicySwitch for BpfPolicySwitch {
    fn get(&self) -> Result<PolicyConfig, DataplaneError> {
        self.array.get(&0, 0).map_err(map_err(POLICY_CONFIG_MAP, "reading"))
    }

    fn set(&mut self, config: &PolicyConfig) -> Result<(), DataplaneError> {
        self.array.set(0, config, 0).map_err(map_err(POLICY_CONFIG_MAP, "writing"))
    }
}

/// An in-memory policy switch for unit tests (clones share the value).
#[derive(Clone, Debug, Default)]
pub struct MemPolicySwitch {
    value: Arc<Mutex<PolicyConfig>>,
}

impl PolicySwitch for MemPolicySwitch {
    fn get(&self) -> Result<PolicyConfig, DataplaneError> {
        Ok(*self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&mut self, config: &PolicyConfig) -> Result<(), DataplaneError> {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = *config;
        Ok(())
    }
}

/// Handles on the policy maps, for the policy subsystem.
pub struct PolicyMaps {
    pub ipcache: BpfHashMap<EndpointKey, IpcacheValue>,
    pub policy: BpfLpmTrie<PolicyKey, PolicyValue>,
    pub cidr: BpfLpmTrie<CidrKey, CidrValue>,
    pub config: BpfPolicySwitch,
    pub verdicts: BpfHashMap<VerdictKey, VerdictValue>,
}

/// Where each policy map is pinned.
pub(crate) struct PolicyPins<'a> {
    pub ipcache: &'a Path,
    pub policy: &'a Path,
    pub cidr: &'a Path,
    pub config: &'a Path,
    pub verdicts: &'a Path,
}

impl PolicyMaps {
    pub(crate) fn open(pins: &PolicyPins<'_>) -> Result<Self, DataplaneError> {
        Ok(Self {
            ipcache: BpfHashMap::open_pinned(IPCACHE_MAP, MAX_IPCACHE, pins.ipcache, false)?,
            policy: BpfLpmTrie::open_pinned(POLICY_MAP, MAX_POLICY_ENTRIES, pins.policy)?,
            cidr: BpfLpmTrie::open_pinned(POLICY_CIDR_MAP, MAX_POLICY_CIDRS, pins.cidr)?,
            config: BpfPolicySwitch::open_pinned(pins.config)?,
            verdicts: BpfHashMap::open_pinned(VERDICTS_MAP, MAX_VERDICTS, pins.verdicts, false)?,
        })
    }
}

/// The verdict counters of one local endpoint: new-flow packets allowed and denied, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointVerdicts {
    pub ingress_allowed: VerdictValue,
    pub ingress_denied: VerdictValue,
    pub egress_allowed: VerdictValue,
    pub egress_denied: VerdictValue,
}

fn verdict_keys(ip: Ipv4Addr) -> [VerdictKey; 4] {
    let endpoint = EndpointKey::from_octets(ip.octets()).ip;
    let key = |direction, verdict| VerdictKey { endpoint, direction, verdict, _pad: [0; 2] };
    [
        key(DIRECTION_INGRESS, VerdictKey::ALLOWED),
        key(DIRECTION_INGRESS, VerdictKey::DENIED),
        key(DIRECTION_EGRESS, VerdictKey::ALLOWED),
        key(DIRECTION_EGRESS, VerdictKey::DENIED),
    ]
}

/// The verdict counters of endpoint `ip` (zero where the datapath judged nothing yet).
pub fn endpoint_verdicts(
    map: &impl MapHandle<VerdictKey, VerdictValue>,
    ip: Ipv4Addr,
) -> Result<EndpointVerdicts, DataplaneError> {
    let [ia, id, ea, ed] = verdict_keys(ip).map(|k| map.get(&k));
    Ok(EndpointVerdicts {
        ingress_allowed: ia?.unwrap_or_default(),
        ingress_denied: id?.unwrap_or_default(),
        egress_allowed: ea?.unwrap_or_default(),
        egress_denied: ed?.unwrap_or_default(),
    })
}

/// Removes the verdict counters of endpoint `ip` (when it is deleted). Returns how many existed.
pub fn remove_endpoint_verdicts(
    map: &mut impl MapHandle<VerdictKey, VerdictValue>,
    ip: Ipv4Addr,
) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for key in verdict_keys(ip) {
        removed += usize::from(map.remove(&key)?);
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::MemMap;

    #[test]
    fn verdicts_are_read_and_removed_per_endpoint() {
        let mut map = MemMap::<VerdictKey, VerdictValue>::new(VERDICTS_MAP, 16);
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let [_, id, ea, _] = verdict_keys(a);
        map.insert(&id, &VerdictValue { packets: 2, bytes: 120 }).unwrap();
        map.insert(&ea, &VerdictValue { packets: 1, bytes: 60 }).unwrap();
        map.insert(&verdict_keys(b)[0], &VerdictValue { packets: 9, bytes: 9 }).unwrap();
        let v = endpoint_verdicts(&map, a).unwrap();
        assert_eq!(v.ingress_denied, VerdictValue { packets: 2, bytes: 120 });
        assert_eq!(v.egress_allowed.packets, 1);
        assert_eq!(v.ingress_allowed, VerdictValue::default());
        assert_eq!(remove_endpoint_verdicts(&mut map, a).unwrap(), 2);
        assert_eq!(endpoint_verdicts(&map, a).unwrap(), EndpointVerdicts::default());
        assert_eq!(endpoint_verdicts(&map, b).unwrap().ingress_allowed.packets, 9, "other endpoints stay");
    }

    #[test]
    fn mem_policy_switch_is_shared_by_clones() {
        let mut switch = MemPolicySwitch::default();
        let seen = switch.clone();
        assert_eq!(seen.get().unwrap(), PolicyConfig::default());
        switch.set(&PolicyConfig { flags: PolicyConfig::FLAG_ENFORCE, revision: 3 }).unwrap();
        assert_eq!(seen.get().unwrap().revision, 3);
    }
}
