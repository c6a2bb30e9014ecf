//! Starting the node's processes (in a session of their own, in the node's `system` cgroup, optionally
//! killed by the kernel when the starting thread ends) and finding them again: only PIDs the node recorded,
//! still running the expected program in the node's mount namespace, or processes in the node's own cgroup
//! tree, are ever signalled.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Starts `cmd` with stdout and stderr appended to `log`, in a new session, moved into every cgroup whose
/// `cgroup.procs` is listed before it execs; returns its PID.
pub fn spawn(cmd: &mut Command, log: &Path, cgroup_procs: Vec<CString>, die_with_parent: bool) -> std::io::Result<u32> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: the hook runs in the forked child before exec and only makes async-signal-safe system calls
    // (setsid, prctl, open, write, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for path in &cgroup_procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let write_err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(write_err);
                }
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

/// The mount namespace of `pid` as its inode number.
pub fn mnt_ns(pid: u32) -> Option<u64> {
    ns_inode(&format!("/proc/{pid}/ns/mnt"))
}

/// `mnt:[4026532246]` -> 4026532246.
pub fn ns_inode(link: &str) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_string_lossy();
    s.split_once('[')?.1.trim_end_matches(']').parse().ok()
}

fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok().map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
}

/// True while `pid` exists and is not a zombie (reaping it if it is our child). Readiness waits use this
/// rather than the command line, which reads empty while `nsenter` execs the daemon.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    if stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')).unwrap_or(false) {
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
        return false;
    }
    true
}

/// True when `pid` runs, is not a zombie, its command line contains `needle` and (if given) it is in mount
/// namespace `mnt`.
pub fn runs(pid: u32, needle: &str, mnt: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    if stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')).unwrap_or(false) {
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
        return false;
    }
    cmdline(pid).map(|c| c.contains(needle)).unwrap_or(false) && (mnt.is_none() || mnt_ns(pid) == mnt)
}

/// SIGTERM, up to `grace`, then SIGKILL; true when it is gone.
pub fn stop(pid: u32, needle: &str, mnt: Option<u64>, grace: Duration) -> bool {
    if !runs(pid, needle, mnt) {
        return true;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    if wait_gone(pid, needle, grace) {
        return true;
    }
    if runs(pid, needle, mnt) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    wait_gone(pid, needle, Duration::from_secs(5))
}

pub fn wait_gone(pid: u32, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
        if !runs(pid, needle, None) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to `pid` (no checks: callers found it in the node's own cgroup tree).
pub fn kill9(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Every process whose mount namespace is `mnt`, with its command line.
pub fn in_mount_ns(mnt: u64) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mnt_ns(*pid) == Some(mnt))
        .filter(|pid| {
            // Zombies keep their /proc entry but have left every namespace; reap ours.
            let _ = waitpid(Pid::from_raw(*pid as i32), Some(WaitPidFlag::WNOHANG));
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')).unwrap_or(true))
                .unwrap_or(false)
        })
        .map(|pid| (pid, cmdline(pid).unwrap_or_default()))
        .collect()
}

pub fn command_line(pid: u32) -> String {
    cmdline(pid).unwrap_or_default()
}
