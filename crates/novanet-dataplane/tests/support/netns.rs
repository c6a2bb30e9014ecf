//! Named network namespaces for tests, deleted on drop (even when the test panics).
//!
//! Commands enter only the network namespace (`nsenter --net=/run/netns/<name>`), never `ip netns exec`,
//! which remounts /sys and hides /sys/fs/bpf. In-process work runs on a dedicated OS thread that did
//! `setns(CLONE_NEWNET)` and then exits, so no other thread ever changes namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A short prefix unique to this process and call, usable in interface names (at most 15 bytes).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("nd{:x}{n:x}", std::process::id())
}

pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `ip netns add <name>` with loopback up.
    pub fn create(name: &str) -> Self {
        let out = Command::new("ip").args(["netns", "add", name]).output().expect("running ip");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = NetNs { name: name.to_string() };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `args` inside this namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display())).args(args).stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running nsenter")
    }

    /// Runs `args` inside this namespace and panics with its stderr if it fails; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "[{}] {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh OS thread that entered this namespace; the thread ends with `f`.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                let file = File::open(&path).expect("opening the namespace file");
                // SAFETY: `file` is an open network-namespace file; setns only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
