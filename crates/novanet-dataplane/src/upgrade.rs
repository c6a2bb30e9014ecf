//! Map layout upgrades (see `layout.rs`): which pins an earlier agent left in another layout, carrying
//! their entries into this build's freshly created maps, and removing them once nothing uses them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, MapInfo, PerCpuArray};
use novanet_common::{COUNTERS_MAP, CounterValue, ENDPOINTS_MAP, EndpointInfo, EndpointKey, NAT_FLOWS_MAP, NatFlowKey, NatFlowSeen};

use crate::DataplaneError;
use crate::maps::map_err;
use crate::layout::{Carry, MapShape, MapSpec, pinned_version};

/// A pin of another layout version of one of this build's maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub map: &'static str,
    pub version: u32,
    pub path: PathBuf,
    /// What is carried into the new map (only when the new map was created by this load).
    pub carry: Carry,
}

/// What a load found in the pin directory.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Maps whose pin of this build's version did not exist yet: this load creates them.
    pub fresh: Vec<&'static str>,
    pub superseded: Vec<Superseded>,
}

/// Reads the shape of the map pinned at `path`.
pub(crate) fn pinned_shape(map: &'static str, path: &Path) -> Result<Option<MapShape>, DataplaneError> {
    let info = MapInfo::from_pin(path).map_err(|source| DataplaneError::Map {
        map,
        operation: "reading the pinned map's info",
        source: Box::new(source),
    })?;
    Ok(info.map_type().ok().map(|map_type| MapShape {
        map_type,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    }))
}

/// Checks the pins of this build's versions (a pin of the current version with another shape means a
/// layout was changed without a version bump: refused) and finds the pins of other versions.
pub(crate) fn plan(pin_dir: &Path, maps: &[MapSpec]) -> Result<Plan, DataplaneError> {
    let mut plan = Plan::default();
    for spec in maps {
        let path = spec.pin_path(pin_dir);
        if !path.exists() {
            plan.fresh.push(spec.name);
            continue;
        }
        let found = pinned_shape(spec.name, &path)?;
        if found != Some(spec.shape) {
            return Err(DataplaneError::IncompatiblePinnedMap { path, detail: mismatch(found, spec.shape) });
        }
    }
    let entries = fs::read_dir(pin_dir)
        .map_err(|source| DataplaneError::PinDir { operation: "listing", path: pin_dir.to_path_buf(), source })?;
    for entry in entries {
        let entry =
            entry.map_err(|source| DataplaneError::PinDir { operation: "listing", path: pin_dir.to_path_buf(), source })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        for spec in maps {
            let Some(version) = pinned_version(spec.name, name).filter(|v| *v != spec.version) else { continue };
            let path = entry.path();
            let found = pinned_shape(spec.name, &path)?;
            let carry = match spec.past.iter().find(|p| p.version == version) {
                Some(past) if Some(past.shape) == found => past.carry,
                Some(_) => Carry::Nothing("the pinned map does not have that version's shape"),
                None => Carry::Nothing("a layout version this build does not know (a newer agent's?)"),
            };
            plan.superseded.push(Superseded { map: spec.name, version, path, carry });
        }
    }
    plan.superseded.sort_by(|a, b| (a.map, a.version).cmp(&(b.map, b.version)));
    Ok(plan)
}

/// Describes how `found` differs from `want`.
pub(crate) fn mismatch(found: Option<MapShape>, want: MapShape) -> String {
    let Some(found) = found else { return format!("unknown map type, want {:?}", want.map_type) };
    let detail = [
        (found.map_type != want.map_type).then(|| format!("type {:?}, want {:?}", found.map_type, want.map_type)),
        (found.key_size != want.key_size).then(|| format!("key size {}, want {}", found.key_size, want.key_size)),
        (found.value_size != want.value_size)
            .then(|| format!("value size {}, want {}", found.value_size, want.value_size)),
        (found.max_entries != want.max_entries)
            .then(|| format!("max entries {}, want {}", found.max_entries, want.max_entries)),
    ];
    detail.into_iter().flatten().collect::<Vec<_>>().join(", ")
}

/// Copies the entries of the superseded pin `old` into `new` (this build's map of the same name, just
/// created and not yet used by any attached program). Returns how many.
pub(crate) fn carry_entries(old: &Superseded, new: &mut Map) -> Result<usize, DataplaneError> {
    let data = MapData::from_pin(&old.path).map_err(map_err(old.map, "opening the superseded pin"))?;
    let mut copied = 0;
    match old.map {
        COUNTERS_MAP => {
            let from: PerCpuArray<_, CounterValue> =
                PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(map_err(old.map, "opening"))?;
            let mut to: PerCpuArray<&mut MapData, CounterValue> =
                PerCpuArray::try_from(new).map_err(map_err(old.map, "opening"))?;
            for index in 0..from.len().min(to.len()) {
                let values = from.get(&index, 0).map_err(map_err(old.map, "reading"))?;
                to.set(index, values, 0).map_err(map_err(old.map, "writing"))?;
                copied += 1;
            }
        }
        ENDPOINTS_MAP => copied = copy_hash::<EndpointKey, EndpointInfo>(old.map, Map::HashMap(data), new)?,
        NAT_FLOWS_MAP => copied = copy_hash::<NatFlowKey, NatFlowSeen>(old.map, Map::LruHashMap(data), new)?,
        _ => {}
    }
    Ok(copied)
}

fn copy_hash<K: aya::Pod, V: aya::Pod>(name: &'static str, from: Map, to: &mut Map) -> Result<usize, DataplaneError> {
    let from: HashMap<MapData, K, V> = HashMap::try_from(from).map_err(map_err(name, "opening"))?;
    let mut to: HashMap<&mut MapData, K, V> = HashMap::try_from(to).map_err(map_err(name, "opening"))?;
    let mut copied = 0;
    for entry in from.iter() {
        let (key, value) = entry.map_err(map_err(name, "reading"))?;
        to.insert(key, value, 0).map_err(map_err(name, "writing"))?;
        copied += 1;
    }
    Ok(copied)
}

/// Removes the superseded pins (absent is fine). Programs still attached somewhere keep their maps alive;
/// only the names go.
pub(crate) fn unpin(superseded: &[Superseded]) -> Result<(), DataplaneError> {
    for old in superseded {
        match fs::remove_file(&old.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(DataplaneError::PinDir { operation: "removing", path: old.path.clone(), source }),
        }
    }
    Ok(())
}
