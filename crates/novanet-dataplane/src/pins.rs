//! The pin directory `<bpffs root>/novanet`: checks before adopting pinned maps, the program pin, removal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{MapInfo, MapType};
use aya::programs::SchedClassifier;
use novanet_common::{
    COUNTERS_MAP, Counter, CounterValue, ENDPOINTS_MAP, EndpointInfo, EndpointKey, FlowKey, MAX_ENDPOINTS, MAX_NAT_FLOWS,
    NAT_FLOWS_MAP, PIN_DIR,
};

use crate::DataplaneError;

/// The shape of one pinned map, as this build creates it.
struct MapShape {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

const PINNED_MAPS: [MapShape; 3] = [
    MapShape {
        name: ENDPOINTS_MAP,
        map_type: MapType::Hash,
        key_size: size_of::<EndpointKey>() as u32,
        value_size: size_of::<EndpointInfo>() as u32,
        max_entries: MAX_ENDPOINTS,
    },
    MapShape {
        name: COUNTERS_MAP,
        map_type: MapType::PerCpuArray,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<CounterValue>() as u32,
        max_entries: Counter::COUNT,
    },
    MapShape {
        name: NAT_FLOWS_MAP,
        map_type: MapType::LruHash,
        key_size: size_of::<FlowKey>() as u32,
        value_size: size_of::<u32>() as u32,
        max_entries: MAX_NAT_FLOWS,
    },
];

/// `<bpffs_root>/novanet`.
pub(crate) fn pin_dir(bpffs_root: &Path) -> PathBuf {
    bpffs_root.join(PIN_DIR)
}

/// Creates the pin directory after checking that `bpffs_root` is a bpf filesystem.
pub(crate) fn prepare_pin_dir(bpffs_root: &Path) -> Result<PathBuf, DataplaneError> {
    let bpffs = crate::is_bpffs(bpffs_root).map_err(|source| DataplaneError::PinDir {
        operation: "statfs",
        path: bpffs_root.to_path_buf(),
        source,
    })?;
    if !bpffs {
        return Err(DataplaneError::NotBpffs { path: bpffs_root.to_path_buf() });
    }
    let dir = pin_dir(bpffs_root);
    fs::create_dir_all(&dir).map_err(|source| DataplaneError::PinDir {
        operation: "creating",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Refuses to adopt a pinned map whose type, key, value or size differ from this build's: aya would
/// adopt it blindly, and the programs and the agent would then read each other's bytes wrongly.
pub(crate) fn check_pinned_maps(pin_dir: &Path) -> Result<(), DataplaneError> {
    for shape in &PINNED_MAPS {
        let path = pin_dir.join(shape.name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|source| DataplaneError::Map {
            map: shape.name,
            operation: "reading the pinned map's info",
            source: Box::new(source),
        })?;
        let found_type = info.map_type().ok();
        let mismatch = [
            (found_type != Some(shape.map_type)).then(|| format!("type {found_type:?}, want {:?}", shape.map_type)),
            (info.key_size() != shape.key_size)
                .then(|| format!("key size {}, want {}", info.key_size(), shape.key_size)),
            (info.value_size() != shape.value_size)
                .then(|| format!("value size {}, want {}", info.value_size(), shape.value_size)),
            (info.max_entries() != shape.max_entries)
                .then(|| format!("max entries {}, want {}", info.max_entries(), shape.max_entries)),
        ];
        let detail: Vec<String> = mismatch.into_iter().flatten().collect();
        if !detail.is_empty() {
            return Err(DataplaneError::IncompatiblePinnedMap { path, detail: detail.join(", ") });
        }
    }
    Ok(())
}

/// Pins `prog` at `<pin_dir>/<name>`, atomically replacing an older pin (pin a temporary name, then
/// rename over): there is always a pinned program, and programs still attached by tc filters live on
/// regardless, since each filter holds its own reference.
pub(crate) fn pin_program(prog: &mut SchedClassifier, pin_dir: &Path, name: &str) -> Result<(), DataplaneError> {
    let path = pin_dir.join(name);
    // bpffs refuses names containing a dot (EPERM), hence the suffix.
    let tmp = pin_dir.join(format!("{name}_new"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(DataplaneError::PinDir { operation: "removing", path: tmp, source }),
    }
    prog.pin(&tmp).map_err(|source| DataplaneError::Pin { path: tmp.clone(), source: Box::new(source) })?;
    fs::rename(&tmp, &path).map_err(|source| DataplaneError::PinDir { operation: "renaming a pin to", path, source })
}

/// Removes `<bpffs_root>/novanet` and everything pinned in it. Absent is fine.
pub(crate) fn unpin_all(bpffs_root: &Path) -> Result<(), DataplaneError> {
    let dir = pin_dir(bpffs_root);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::PinDir { operation: "removing", path: dir, source }),
    }
}
