//! The pin directory `<bpffs root>/novanet`: creation, program pins, removal. (Map pins: `layout.rs`.)

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use novanet_common::PIN_DIR;

use crate::DataplaneError;

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
