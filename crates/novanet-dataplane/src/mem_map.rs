//! An in-memory [`MapHandle`] for unit tests of the managers, with a capacity (so "map full" can be
//! tested) and injectable faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::MapError;
use aya::sys::SyscallError;

use crate::DataplaneError;
use crate::maps::MapHandle;

/// An operation of a [`MapHandle`], for fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    Get,
    Insert,
    Remove,
    Entries,
}

/// Faults to inject into a [`MemMap`]; shared, so a test keeps it after handing the map to a manager.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    inner: Arc<Mutex<Vec<(MapOp, usize)>>>,
}

impl Faults {
    /// Makes the `nth` (0 = the next) call of `op` from now on fail with EIO, as a failing `bpf(2)` would.
    pub fn fail(&self, op: MapOp, nth: usize) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).push((op, nth));
    }

    /// Whether this call of `op` fails; counts it down.
    fn trip(&self, op: MapOp) -> bool {
        let mut pending = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tripped = false;
        pending.retain_mut(|(o, n)| {
            if *o != op {
                return true;
            }
            if *n == 0 {
                tripped = true;
                return false;
            }
            *n -= 1;
            true
        });
        tripped
    }
}

/// An in-memory map: ordered by key, `capacity` entries at most.
#[derive(Clone, Debug)]
pub struct MemMap<K, V> {
    name: &'static str,
    capacity: u32,
    entries: Arc<Mutex<BTreeMap<K, V>>>,
    faults: Faults,
}

impl<K: Ord + Clone, V: Clone> MemMap<K, V> {
    pub fn new(name: &'static str, capacity: u32) -> Self {
        Self { name, capacity, entries: Arc::default(), faults: Faults::default() }
    }

    /// The faults of this map (and of its clones, which share its entries too).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// A copy of the entries (for assertions).
    pub fn snapshot(&self) -> BTreeMap<K, V> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn check(&self, op: MapOp, operation: &'static str) -> Result<(), DataplaneError> {
        if self.faults.trip(op) {
            let io_error = std::io::Error::from_raw_os_error(libc::EIO);
            let source = MapError::SyscallError(SyscallError { call: "bpf_map_*_elem (injected)", io_error });
            return Err(DataplaneError::Map { map: self.name, operation, source: Box::new(source) });
        }
        Ok(())
    }
}

impl<K: Ord + Clone + Send, V: Clone + Send> MapHandle<K, V> for MemMap<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn get(&self, key: &K) -> Result<Option<V>, DataplaneError> {
        self.check(MapOp::Get, "reading")?;
        Ok(self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned())
    }

    fn insert(&mut self, key: &K, value: &V) -> Result<(), DataplaneError> {
        self.check(MapOp::Insert, "inserting")?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(key) && entries.len() >= self.capacity as usize {
            return Err(DataplaneError::MapFull { map: self.name, max_entries: self.capacity });
        }
        entries.insert(key.clone(), value.clone());
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<bool, DataplaneError> {
        self.check(MapOp::Remove, "removing")?;
        Ok(self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(key).is_some())
    }

    fn entries(&self) -> Result<Vec<(K, V)>, DataplaneError> {
        self.check(MapOp::Entries, "iterating")?;
        Ok(self.entries.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_refuses_new_keys_but_updates_existing_ones() {
        let mut map = MemMap::<u32, u32>::new("T", 2);
        map.insert(&1, &10).unwrap();
        map.insert(&2, &20).unwrap();
        assert!(matches!(map.insert(&3, &30), Err(DataplaneError::MapFull { map: "T", max_entries: 2 })));
        map.insert(&2, &21).unwrap();
        assert_eq!(map.entries().unwrap(), vec![(1, 10), (2, 21)]);
    }

    #[test]
    fn an_injected_fault_fails_exactly_the_nth_call_of_its_operation() {
        let mut map = MemMap::<u32, u32>::new("T", 8);
        let faults = map.faults();
        faults.fail(MapOp::Insert, 1);
        map.insert(&1, &1).unwrap();
        assert!(map.remove(&9).is_ok(), "other operations are not affected");
        assert!(matches!(map.insert(&2, &2), Err(DataplaneError::Map { operation: "inserting", .. })));
        map.insert(&3, &3).unwrap();
        assert_eq!(map.snapshot().len(), 2);
        // Clones share entries and faults (a test keeps one, the manager owns the other).
        let mut clone = map.clone();
        faults.fail(MapOp::Remove, 0);
        assert!(clone.remove(&1).is_err());
        assert!(map.remove(&1).unwrap());
        assert_eq!(clone.get(&1).unwrap(), None);
    }
}
