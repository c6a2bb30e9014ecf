//! A bpf filesystem root for one test, removed on drop (even when the test panics).
//!
//! If `/sys/fs/bpf` is a mounted bpffs the root is a fresh `/sys/fs/bpf/novanet-test-<unique>` directory.
//! Otherwise (some CI machines do not mount it) a private bpffs instance is mounted on a fresh
//! `/tmp/novanet-test-<unique>` directory; each bpffs mount is a separate instance, so nothing outside the
//! test sees its pins, and the guard unmounts it. `/sys/fs/bpf` itself is never mounted or changed.
//!
//! The check is the dataplane's own `is_bpffs`, reached as `crate::is_bpffs`: the dataplane's unit tests
//! have it at their crate root; an integration test imports `novanet_dataplane::is_bpffs` at its root.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestBpffs {
    root: PathBuf,
    mounted: bool,
}

impl TestBpffs {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "novanet-test-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        );
        if crate::is_bpffs(Path::new("/sys/fs/bpf")).unwrap_or(false) {
            let root = Path::new("/sys/fs/bpf").join(unique);
            std::fs::create_dir(&root).expect("creating a test pin root under /sys/fs/bpf (needs root)");
            return TestBpffs { root, mounted: false };
        }
        let root = std::env::temp_dir().join(unique);
        std::fs::create_dir(&root).expect("creating a test mount point");
        let mut guard = TestBpffs { root, mounted: false };
        let target = CString::new(guard.root.as_os_str().as_encoded_bytes()).expect("path without NUL");
        // SAFETY: all arguments are valid NUL-terminated strings that outlive the call.
        let rc =
            unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
        assert_eq!(
            rc,
            0,
            "mounting a test bpffs on {}: {} (needs root)",
            guard.root.display(),
            std::io::Error::last_os_error()
        );
        guard.mounted = true;
        guard
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if self.mounted {
            if let Ok(target) = CString::new(self.root.as_os_str().as_encoded_bytes()) {
                // SAFETY: `target` is a valid NUL-terminated path; MNT_DETACH never blocks on busy mounts.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = std::fs::remove_dir(&self.root);
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
