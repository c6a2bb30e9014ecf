//! Background processes the lab starts (agents, pod commands): started in a session of their own so they
//! outlive the `novanet lab up` command, and stopped only by the PID the lab recorded, after checking the
//! PID still runs the program the lab started (PIDs get reused).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Starts `cmd` detached (new session, stdin from /dev/null, output appended to `log`); returns its PID.
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> std::io::Result<u32> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

/// True when `pid` runs and its command line contains `needle` (or is momentarily empty, see below).
pub fn runs(pid: u32, needle: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // A zombie (state Z after the command name) has exited.
    if stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')).unwrap_or(false) {
        reap(pid);
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        // An empty command line while not a zombie: the process is between fork and exec (nsenter
        // exec'ing the daemon) or exiting. Either way it is still the process we started.
        Ok(c) if c.is_empty() => true,
        Ok(c) => String::from_utf8_lossy(&c).contains(needle),
        Err(_) => false,
    }
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`, clock ticks since boot), `None` when it does not
/// exist or is a zombie. With the PID it names one process for good: a reused PID has another start time.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    let mut rest = stat.rsplit_once(") ")?.1.split_whitespace();
    if rest.next()? == "Z" {
        return None;
    }
    rest.nth(22 - 4)?.parse().ok()
}

/// True while the process `pid` that started at `start` (see [`start_time`]) runs.
pub fn is_same_process(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// Collects the exit status of `pid` if it is our child (tests start agents from their own process).
fn reap(pid: u32) {
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Sends `signal` to `pid` if it still runs `needle`.
pub fn signal(pid: u32, needle: &str, sig: Signal) -> bool {
    runs(pid, needle) && kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// SIGTERM, wait up to `grace`, then SIGKILL; returns once the process is gone.
pub fn stop(pid: u32, needle: &str, grace: Duration) {
    if !signal(pid, needle, Signal::SIGTERM) {
        return;
    }
    if wait_gone(pid, needle, grace) {
        return;
    }
    signal(pid, needle, Signal::SIGKILL);
    wait_gone(pid, needle, Duration::from_secs(5));
}

/// Waits until `pid` no longer runs `needle`; false on timeout. A process that is exiting (its
/// command line already empty, not yet a zombie) still counts as running, and our own children are reaped,
/// so no zombie is left behind.
pub fn wait_gone(pid: u32, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        reap(pid);
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
        if stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')).unwrap_or(false) {
            reap(pid);
            // Still a zombie: not our child; its parent reaps it. It runs nothing any more.
            return true;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.is_empty() && !String::from_utf8_lossy(&cmdline).contains(needle) {
            return true; // the PID now belongs to another program
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_one_process() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert_eq!(start_time(me), start);
        let start = start.unwrap_or_default();
        assert!(is_same_process(me, start));
        assert!(!is_same_process(me, start + 1), "another start time is another process");
        assert_eq!(start_time(u32::MAX), None);
    }
}
