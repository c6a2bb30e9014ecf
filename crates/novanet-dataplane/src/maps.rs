//! Typed map handles behind one small trait, so each manager (endpoints, and later policy, tunnels,
//! services) owns the maps it writes and its tests can use [`crate::MemMap`] instead, with faults injected.

use std::net::Ipv4Addr;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use novanet_common::{Counter, CounterValue};

use crate::DataplaneError;

/// A key/value map of the datapath (an eBPF hash map, or an in-memory stand-in in tests).
pub trait MapHandle<K, V>: Send {
    /// The map's name (`novanet_common::*_MAP`).
    fn name(&self) -> &'static str;
    fn get(&self, key: &K) -> Result<Option<V>, DataplaneError>;
    /// Inserts or replaces; [`DataplaneError::MapFull`] when a new key does not fit.
    fn insert(&mut self, key: &K, value: &V) -> Result<(), DataplaneError>;
    /// Removes `key`; `false` when it was not there.
    fn remove(&mut self, key: &K) -> Result<bool, DataplaneError>;
    /// Every entry, in the map's order.
    fn entries(&self) -> Result<Vec<(K, V)>, DataplaneError>;
}

pub(crate) fn map_err(map: &'static str, operation: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, operation, source: Box::new(source) }
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

/// An eBPF hash or LRU hash map with typed keys and values.
pub struct BpfHashMap<K, V> {
    name: &'static str,
    max_entries: u32,
    map: HashMap<MapData, K, V>,
}

impl<K: aya::Pod, V: aya::Pod> BpfHashMap<K, V> {
    /// Wraps a map taken from the loaded object.
    pub(crate) fn new(name: &'static str, max_entries: u32, map: Map) -> Result<Self, DataplaneError> {
        Ok(Self { name, max_entries, map: HashMap::try_from(map).map_err(map_err(name, "opening"))? })
    }

    /// Opens the map pinned at `path` (a second handle on a map the loaded object uses).
    pub(crate) fn open_pinned(
        name: &'static str,
        max_entries: u32,
        path: &std::path::Path,
        lru: bool,
    ) -> Result<Self, DataplaneError> {
        let data = MapData::from_pin(path).map_err(map_err(name, "opening the pin"))?;
        let map = if lru { Map::LruHashMap(data) } else { Map::HashMap(data) };
        Self::new(name, max_entries, map)
    }

    /// The keys only (cheaper than [`MapHandle::entries`] for big maps).
    pub fn keys(&self) -> Result<Vec<K>, DataplaneError> {
        self.map.keys().map(|k| k.map_err(map_err(self.name, "iterating"))).collect()
    }
}

impl<K: aya::Pod + Send, V: aya::Pod + Send> MapHandle<K, V> for BpfHashMap<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn get(&self, key: &K) -> Result<Option<V>, DataplaneError> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(map_err(self.name, "reading")(e)),
        }
    }

    fn insert(&mut self, key: &K, value: &V) -> Result<(), DataplaneError> {
        self.map.insert(key, value, 0).map_err(|e| {
            if errno(&e) == Some(libc::E2BIG) {
                DataplaneError::MapFull { map: self.name, max_entries: self.max_entries }
            } else {
                map_err(self.name, "inserting")(e)
            }
        })
    }

    fn remove(&mut self, key: &K) -> Result<bool, DataplaneError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(map_err(self.name, "removing")(e)),
        }
    }

    fn entries(&self) -> Result<Vec<(K, V)>, DataplaneError> {
        self.map.iter().map(|e| e.map_err(map_err(self.name, "iterating"))).collect()
    }
}

/// The endpoint map's entries as addresses, sorted.
pub(crate) fn sorted_endpoints<V>(entries: Vec<(novanet_common::EndpointKey, V)>) -> Vec<(Ipv4Addr, V)> {
    let mut out: Vec<_> = entries.into_iter().map(|(k, v)| (Ipv4Addr::from(k.octets()), v)).collect();
    out.sort_by_key(|(ip, _)| *ip);
    out
}

/// Every [`Counter`], summed over CPUs, in [`Counter::ALL`] order.
pub(crate) fn counters(
    name: &'static str,
    array: &PerCpuArray<MapData, CounterValue>,
) -> Result<Vec<(Counter, CounterValue)>, DataplaneError> {
    Counter::ALL
        .iter()
        .map(|&counter| {
            let per_cpu = array.get(&(counter as u32), 0).map_err(map_err(name, "reading"))?;
            Ok((counter, sum(per_cpu.iter())))
        })
        .collect()
}

/// Sums per-CPU slots (wrapping, like the kernel-side counters themselves).
pub(crate) fn sum<'a>(slots: impl Iterator<Item = &'a CounterValue>) -> CounterValue {
    slots.fold(CounterValue::default(), |acc, v| CounterValue {
        packets: acc.packets.wrapping_add(v.packets),
        bytes: acc.bytes.wrapping_add(v.bytes),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use novanet_common::EndpointKey;

    use super::*;

    #[test]
    fn endpoint_key_keeps_network_byte_order() {
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        let key = EndpointKey::from_octets(ip.octets());
        // The datapath reads the destination straight out of the packet into a native u32.
        assert_eq!(key.ip, u32::from_ne_bytes([10, 244, 1, 7]));
        assert_eq!(Ipv4Addr::from(key.octets()), ip);
    }

    #[test]
    fn sum_adds_every_cpu_slot() {
        let slots =
            [CounterValue { packets: 1, bytes: 100 }, CounterValue { packets: 2, bytes: 50 }, CounterValue::default()];
        assert_eq!(sum(slots.iter()), CounterValue { packets: 3, bytes: 150 });
    }
}
