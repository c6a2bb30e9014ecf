//! The node's cgroup root, `/<name>` in every hierarchy the host mounts under /sys/fs/cgroup (this host is
//! hybrid: v1 controllers under /sys/fs/cgroup/<ctrl>, v2 at /sys/fs/cgroup/unified). The kubelet's
//! `cgroupRoot` must exist in each before it starts. The node's own daemons (holder, containerd and its
//! shims, kubelet, kube-proxy) live in `<root>/system`, the pods in `<root>/kubepods/...` (made by the
//! kubelet and runc), so every process of the node is found, and provably ours, through this tree.

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The child of the node root its daemons run in.
pub const SYSTEM: &str = "system";

/// Mount points of cgroup hierarchies (v1 and v2) under /sys/fs/cgroup, from /proc/self/mountinfo.
pub fn hierarchies() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            ((fstype == "cgroup" || fstype == "cgroup2") && mount_point.starts_with("/sys/fs/cgroup"))
                .then(|| PathBuf::from(mount_point))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn rel(root: &str) -> &str {
    root.trim_start_matches('/')
}

/// Creates `<h>/<root>` and `<h>/<root>/system` in every hierarchy; returns the node root directories made.
/// cpuset v1 needs `cpuset.cpus`/`cpuset.mems` before a task may join: they are copied from the parent.
pub fn create(root: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for h in hierarchies() {
        let dir = h.join(rel(root));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("mkdir {}: {e}", dir.display()))),
        }
        made.push(dir.clone());
        let system = dir.join(SYSTEM);
        if let Err(e) = fs::create_dir(&system)
            && e.kind() != ErrorKind::AlreadyExists
        {
            return Err(std::io::Error::new(e.kind(), format!("mkdir {}: {e}", system.display())));
        }
        if h.join("cpuset.cpus").exists() {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = fs::read_to_string(h.join(file))?;
                fs::write(dir.join(file), value.trim())?;
                fs::write(system.join(file), value.trim())?;
            }
        }
    }
    Ok(made)
}

/// `cgroup.procs` of `<root>/system` in every hierarchy, as C strings for a pre-exec hook.
pub fn system_procs_files(root: &str) -> Vec<CString> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel(root)).join(SYSTEM).join("cgroup.procs"))
        .filter(|p| p.exists())
        .filter_map(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
        .collect()
}

/// Every process in `<h>/<root>/<sub>` and below, in any hierarchy (`sub` "" for the whole node).
pub fn procs(root: &str, sub: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for h in hierarchies() {
        let mut base = h.join(rel(root));
        if !sub.is_empty() {
            base = base.join(sub);
        }
        walk(&base, &mut |dir| {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Calls `f` on `dir` and every directory below it, children before parents.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), f);
            }
        }
    }
    if dir.is_dir() {
        f(dir);
    }
}

/// Removes `<h>/<root>` with everything below it in every hierarchy (cgroups go with rmdir, deepest first),
/// retrying while processes finish exiting. Returns what could not be removed.
pub fn remove(root: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for h in hierarchies() {
            let base = h.join(rel(root));
            walk(&base, &mut |dir| {
                if let Err(e) = fs::remove_dir(dir)
                    && e.kind() != ErrorKind::NotFound
                {
                    left.push(format!("cgroup {}: {e}", dir.display()));
                }
            });
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node cgroup directories that still exist.
pub fn existing(root: &str) -> Vec<PathBuf> {
    hierarchies().into_iter().map(|h| h.join(rel(root))).filter(|p| p.exists()).collect()
}
