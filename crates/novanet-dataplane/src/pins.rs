//! The pin directory `<bpffs root>/novanet`: creation, program pins, removal. (Map pins: `layout.rs`.)

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use novanet_common::PIN_DIR;

use crate::DataplaneError;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// `<bpffs_root>/novanet`.
pub(crate) fn pin_dir(bpffs_root: &Path) -> PathBuf {
    bpffs_root.join(PIN_DIR)
}

/// Creates the pin directory after checking that `bpffs_root` is a bpf filesystem.
pub(crate) fn prepare_pin_dir(bpffs_root: &Path) -> Result<PathBuf, DataplaneError> {
    if !is_bpffs(bpffs_root)? {
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

fn is_bpffs(path: &Path) -> Result<bool, DataplaneError> {
    let stat_err = |source| DataplaneError::PinDir { operation: "statfs", path: path.to_path_buf(), source };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| stat_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `buf` is a valid, writable `statfs` for the call's duration.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(stat_err(io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast, reason = "f_type is i64 on x86_64 but not on every target")]
    Ok(buf.f_type as i64 == BPF_FS_MAGIC)
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
