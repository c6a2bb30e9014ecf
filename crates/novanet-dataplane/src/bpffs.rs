//! Whether a path is on a bpf filesystem: pins only work there, and the agent mounts one where the node
//! has none. The one check every crate (and the tests' own bpffs roots) uses.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// Whether `path` is on a bpffs (`statfs(2)`'s `f_type`). A path that does not exist is an error
/// (`NotFound`), not `false`.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `buf` is a valid, writable `statfs` for the call's duration.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, reason = "f_type is i64 on x86_64 but not on every target")]
    Ok(buf.f_type as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_a_bpffs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_bpffs(dir.path()).unwrap());
    }

    #[test]
    fn a_missing_path_is_an_error_not_false() {
        let dir = tempfile::tempdir().unwrap();
        let err = is_bpffs(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_path_with_a_nul_byte_is_invalid_input() {
        let err = is_bpffs(Path::new("/sys/fs/bpf\0x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
