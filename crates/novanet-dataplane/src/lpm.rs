//! Typed LPM-trie handles (the policy and CIDR maps): entries keyed by `(prefix_len, K)` where the prefix
//! length counts bits of `K`'s bytes in order (as the kernel's `bpf_lpm_trie_key`), behind a small trait so
//! the policy subsystem's unit tests can use [`MemLpm`].
//!
//! Invariant: bits of a key beyond its prefix length are zeroed on insert and remove, by both
//! implementations, so one prefix is one entry whatever bits a caller left behind it.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData, MapError};

use crate::DataplaneError;
use crate::MapHandle;
use crate::maps::map_err;
use crate::mem_map::MemMap;

/// One LPM entry: `((prefix_len, key), value)`.
pub type LpmEntry<K, V> = ((u32, K), V);

/// A longest-prefix-match map of the datapath.
pub trait LpmHandle<K, V>: Send {
    /// The map's name (`novanet_common::*_MAP`).
    fn name(&self) -> &'static str;
    /// Inserts or replaces the entry of the prefix `(prefix_len, key)`; [`DataplaneError::MapFull`] when a
    /// new prefix does not fit.
    fn insert(&mut self, prefix_len: u32, key: &K, value: &V) -> Result<(), DataplaneError>;
    /// Removes the entry of exactly that prefix; `false` when there was none.
    fn remove(&mut self, prefix_len: u32, key: &K) -> Result<bool, DataplaneError>;
    /// Every entry as `((prefix_len, key), value)`.
    fn entries(&self) -> Result<Vec<LpmEntry<K, V>>, DataplaneError>;
    /// The value of the longest prefix matching all of `key`'s bits: what the datapath finds.
    fn lookup(&self, key: &K) -> Result<Option<V>, DataplaneError>;
}

/// `key` with every bit after the first `prefix_len` zeroed.
pub fn masked<K: aya::Pod>(prefix_len: u32, key: &K) -> K {
    let mut out = *key;
    let size = size_of::<K>();
    // SAFETY: `K: Pod` is plain bytes without padding requirements beyond its own fields (every bit pattern
    // valid), and `out` is a local value of exactly `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut((&raw mut out).cast::<u8>(), size) };
    for (i, byte) in bytes.iter_mut().enumerate() {
        let first_bit = (i * 8) as u32;
        if first_bit >= prefix_len {
            *byte = 0;
        } else if prefix_len - first_bit < 8 {
            *byte &= 0xffu8 << (8 - (prefix_len - first_bit));
        }
    }
    out
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

/// An eBPF LPM trie with typed key data and values.
pub struct BpfLpmTrie<K, V> {
    name: &'static str,
    max_entries: u32,
    map: LpmTrie<MapData, K, V>,
}

impl<K: aya::Pod, V: aya::Pod> BpfLpmTrie<K, V> {
    /// Opens the trie pinned at `path` (a handle of its own on a map the loaded object uses).
    pub(crate) fn open_pinned(
        name: &'static str,
        max_entries: u32,
        path: &std::path::Path,
    ) -> Result<Self, DataplaneError> {
        let data = MapData::from_pin(path).map_err(map_err(name, "opening the pin"))?;
        let map = LpmTrie::try_from(Map::LpmTrie(data)).map_err(map_err(name, "opening"))?;
        Ok(Self { name, max_entries, map })
    }
}

impl<K: aya::Pod + Send, V: aya::Pod + Send> LpmHandle<K, V> for BpfLpmTrie<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn insert(&mut self, prefix_len: u32, key: &K, value: &V) -> Result<(), DataplaneError> {
        let key = Key::new(prefix_len, masked(prefix_len, key));
        self.map.insert(&key, value, 0).map_err(|e| {
            // The trie says ENOSPC when full (hash maps say E2BIG).
            if matches!(errno(&e), Some(libc::ENOSPC | libc::E2BIG)) {
                DataplaneError::MapFull { map: self.name, max_entries: self.max_entries }
            } else {
                map_err(self.name, "inserting")(e)
            }
        })
    }

    fn remove(&mut self, prefix_len: u32, key: &K) -> Result<bool, DataplaneError> {
        match self.map.remove(&Key::new(prefix_len, masked(prefix_len, key))) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(map_err(self.name, "removing")(e)),
        }
    }

    fn entries(&self) -> Result<Vec<LpmEntry<K, V>>, DataplaneError> {
        self.map
            .iter()
            .map(|e| e.map(|(k, v)| ((k.prefix_len(), k.data()), v)).map_err(map_err(self.name, "iterating")))
            .collect()
    }

    fn lookup(&self, key: &K) -> Result<Option<V>, DataplaneError> {
        let full = (size_of::<K>() * 8) as u32;
        match self.map.get(&Key::new(full, *key), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(map_err(self.name, "reading")(e)),
        }
    }
}

/// An in-memory LPM map for unit tests: a [`MemMap`] keyed by `(prefix_len, masked key)`, so it has the
/// same capacity and fault injection; `lookup` scans (tests only).
#[derive(Clone, Debug)]
pub struct MemLpm<K, V> {
    inner: MemMap<(u32, K), V>,
}

impl<K: Ord + Clone + aya::Pod, V: Clone> MemLpm<K, V> {
    pub fn new(name: &'static str, capacity: u32) -> Self {
        Self { inner: MemMap::new(name, capacity) }
    }

    /// The underlying map (faults, snapshots).
    pub fn map(&self) -> &MemMap<(u32, K), V> {
        &self.inner
    }
}

impl<K: Ord + Clone + Send + aya::Pod, V: Clone + Send> LpmHandle<K, V> for MemLpm<K, V> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn insert(&mut self, prefix_len: u32, key: &K, value: &V) -> Result<(), DataplaneError> {
        self.inner.insert(&(prefix_len, masked(prefix_len, key)), value)
    }

    fn remove(&mut self, prefix_len: u32, key: &K) -> Result<bool, DataplaneError> {
        self.inner.remove(&(prefix_len, masked(prefix_len, key)))
    }

    fn entries(&self) -> Result<Vec<LpmEntry<K, V>>, DataplaneError> {
        self.inner.entries()
    }

    fn lookup(&self, key: &K) -> Result<Option<V>, DataplaneError> {
        let best = self
            .inner
            .entries()?
            .into_iter()
            .filter(|((len, k), _)| masked(*len, key) == *k)
            .max_by_key(|((len, _), _)| *len);
        Ok(best.map(|(_, v)| v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_only_the_prefix_bits() {
        assert_eq!(masked(0, &0xffff_ffffu32), 0);
        assert_eq!(masked(32, &0x1234_5678u32), 0x1234_5678);
        // Bytes in memory order: the first byte is the most significant part of the prefix.
        assert_eq!(masked(12, &u32::from_ne_bytes([0xab, 0xcd, 0xef, 0x01])), u32::from_ne_bytes([0xab, 0xc0, 0, 0]));
    }

    #[test]
    fn mem_lpm_finds_the_longest_matching_prefix() {
        let mut lpm = MemLpm::<u32, u32>::new("T", 4);
        let key = |b: [u8; 4]| u32::from_ne_bytes(b);
        lpm.insert(8, &key([10, 9, 9, 9]), &1).unwrap();
        lpm.insert(24, &key([10, 1, 2, 0]), &2).unwrap();
        assert_eq!(lpm.lookup(&key([10, 1, 2, 3])).unwrap(), Some(2));
        assert_eq!(lpm.lookup(&key([10, 1, 3, 3])).unwrap(), Some(1));
        assert_eq!(lpm.lookup(&key([11, 1, 2, 3])).unwrap(), None);
        assert_eq!(lpm.entries().unwrap()[0], ((8, key([10, 0, 0, 0])), 1), "stored masked");
        assert!(lpm.remove(8, &key([10, 7, 7, 7])).unwrap(), "any bits after the prefix name the same entry");
        assert_eq!(lpm.lookup(&key([10, 1, 3, 3])).unwrap(), None);
    }
}
