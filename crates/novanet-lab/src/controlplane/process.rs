//! One control-plane process: started with `nsenter --net=/run/netns/<ns> -- <bin> <args>` (nsenter execs
//! the binary, so the child's PID is the component's), stdout and stderr appended to `<work>/<name>.log`,
//! stopped with SIGTERM, then SIGKILL after a timeout. Only PIDs this value started are ever signalled.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::{ControlPlaneError, Result, io_err};

/// How many bytes of a log an error message quotes.
const LOG_TAIL_BYTES: u64 = 3000;

/// A control-plane component process (etcd, kube-apiserver, ...), restartable with the same command line.
#[derive(Debug)]
pub(crate) struct Component {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    netns: String,
    log: PathBuf,
    die_with_parent: bool,
    child: Option<Child>,
}

impl Component {
    pub fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        netns: &str,
        work_dir: &Path,
    ) -> Self {
        Component {
            name,
            program,
            args,
            netns: netns.to_string(),
            log: work_dir.join(format!("{name}.log")),
            die_with_parent: true,
            child: None,
        }
    }

    /// Whether the kernel should SIGKILL the process when the thread that started it exits.
    pub fn die_with_parent(mut self, yes: bool) -> Self {
        self.die_with_parent = yes;
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (an error if it already runs).
    pub fn spawn(&mut self) -> Result<()> {
        if let Some(pid) = self.pid() {
            return Err(ControlPlaneError::AlreadyRunning {
                component: self.name,
                pid,
            });
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err("open", &self.log))?;
        let _ = writeln!(
            log,
            "---- novanet-lab: starting {} ----",
            self.program.display()
        );
        let err_log = log.try_clone().map_err(io_err("duplicate", &self.log))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        if self.die_with_parent {
            // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
            // async-signal-safe; it touches no memory shared with the parent.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                        .map_err(std::io::Error::from)?;
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| ControlPlaneError::Spawn {
            component: self.name,
            log: self.log.clone(),
            source,
        })?;
        tracing::debug!(component = self.name, pid = child.id(), netns = %self.netns, "started");
        self.child = Some(child);
        Ok(())
    }

    /// `Err(Exited)` if the process has exited (and forgets it), `Err(NotRunning)` if it was never started.
    pub fn check_running(&mut self) -> Result<()> {
        let child = self.child.as_mut().ok_or(ControlPlaneError::NotRunning {
            component: self.name,
        })?;
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(ControlPlaneError::Exited {
                    component: self.name,
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                })
            }
            Err(source) => Err(ControlPlaneError::Io {
                action: "wait for",
                path: self.program.clone(),
                source,
            }),
        }
    }

    /// Polls `probe` every 200 ms until it succeeds, the process exits, or `timeout` passes.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        probe: impl Fn() -> std::result::Result<(), crate::probe::ProbeError>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_running()?;
            let last_probe = match probe() {
                Ok(()) => {
                    tracing::debug!(component = self.name, after = ?start.elapsed(), "ready");
                    return Ok(());
                }
                Err(e) => e,
            };
            if start.elapsed() >= timeout {
                return Err(ControlPlaneError::NotReady {
                    component: self.name,
                    waited: start.elapsed(),
                    last_probe: Box::new(last_probe),
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL and reap. Does nothing if not running.
    pub fn stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::debug!(component = self.name, "stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(
            component = self.name,
            pid = child.id(),
            ?timeout,
            "still running after SIGTERM; killing"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The last few KB of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(cannot read {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `curl` inside the namespace; Ok when it gets a 2xx answer. Extra args carry the TLS material.
pub(crate) fn curl_probe(
    netns: &str,
    url: &str,
    tls_args: &[&Path],
    insecure: bool,
) -> std::result::Result<(), crate::probe::ProbeError> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).args([
        "--",
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
    ]);
    if insecure {
        cmd.arg("--insecure");
    }
    for (flag, path) in ["--cacert", "--cert", "--key"].iter().zip(tls_args) {
        cmd.arg(flag).arg(path);
    }
    cmd.arg(url);
    crate::netns::run(&mut cmd).map(|_| ()).map_err(crate::probe::ProbeError::from)
}
