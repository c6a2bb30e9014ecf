//! Processes the bench starts inside namespaces (iperf3, sockperf, ss): a guard that stops the child by
//! its own PID when dropped, a run-with-timeout, and "wait until a port listens" inside a namespace.
//!
//! Commands enter only the network namespace (`nsenter --net=...`, without `--fork`), so the PID the bench
//! holds is the measured program itself after nsenter's exec.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use novanet_lab::netns::NetNs;

/// A command running `program` inside the network namespace `/run/netns/<netns>`.
pub fn in_netns(netns: &str, program: &str) -> Command {
    NetNs::existing(netns).command(program)
}

/// `taskset -c <cpu> <program>` inside a namespace: the measured program pinned to one core.
pub fn pinned(netns: &str, cpu: usize, program: &str) -> Command {
    let mut cmd = in_netns(netns, "taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only set a flag; the bench checks it between samples and unwinds through its guards
/// (lab, namespaces, bpf_stats sysctl), so an interrupted run still cleans up.
pub fn install_interrupt_flag() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

/// Fails once SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A child that is stopped (SIGTERM, then SIGKILL after a second) when the guard drops.
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<ChildGuard> {
        let child = cmd.spawn().with_context(|| format!("starting {what}: {cmd:?}"))?;
        Ok(ChildGuard { child, what: what.to_string() })
    }

    /// Exit status if the child has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait().with_context(|| format!("waiting for {}", self.what))
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {}s", self.what, timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the child wrote to its piped stderr (only meaningful after it exited).
    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut s);
        }
        s
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it (by PID) after `timeout`.
pub fn output_with_timeout(cmd: &mut Command, what: &str, timeout: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(cmd, what)?;
    let readers = [guard.child.stdout.take().map(drain), guard.child.stderr.take().map(drain)];
    let status = guard.wait_exit(timeout);
    if status.is_err() {
        guard.stop();
    }
    let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok(Output { status: status?, stdout: out, stderr: err })
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits until a TCP socket listens on `port` inside `netns` (asked with `ss` in that namespace), while
/// checking that the server has not died.
pub fn wait_listening(netns: &str, port: u16, server: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = server.exited()? {
            let stderr = server.stderr_text();
            bail!("{} exited before listening ({status}): {}", server.what, stderr.trim());
        }
        let out = in_netns(netns, "ss").args(["-Hltn", &format!("sport = :{port}")]).output().context("running ss")?;
        if out.status.success() && !out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("{} did not listen on port {port} in {netns} within 10s", server.what)
}
