//! Named network namespaces (`/run/netns/<name>`) and running commands inside them.
//!
//! Commands enter only the network namespace (`setns(CLONE_NEWNET)` in the child between fork and exec,
//! as `nsenter --net=...` would, without its extra exec), never `ip netns exec`, which remounts `/sys` and
//! hides `/sys/fs/bpf` and the cgroup tree.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors from namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed { command: String, status: String, stderr: String },
    #[error("could not run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
}

/// Runs a command to completion; a non-zero exit becomes [`NetnsError::CommandFailed`] with its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, NetnsError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| NetnsError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(NetnsError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Shorthand for `ip <args>` in the current namespace.
pub fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    run(Command::new("ip").args(args))
}

/// A unique prefix for one lab or one test: `nn<pid-base36><counter>`, short enough for interface names.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("nn{}{}", base36(std::process::id()), base36(n))
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A named network namespace. Dropping it deletes the namespace unless [`NetNs::leak`] was called
/// (the lab hands ownership to its state file so `lab down` removes it later).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    owned: bool,
}

impl NetNs {
    /// Creates `/run/netns/<name>` with loopback up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        ip(&["netns", "add", name])?;
        let ns = NetNs { name: name.to_string(), owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Refers to an existing namespace without owning it.
    pub fn existing(name: &str) -> Self {
        NetNs { name: name.to_string(), owned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside this namespace (network namespace only): the child enters it
    /// before its exec, so `program` runs as a container runtime would run a CNI plugin on a node (one
    /// exec, no `nsenter` in between). A namespace that cannot be opened falls back to `nsenter`, whose
    /// error then names it.
    pub fn command(&self, program: &str) -> Command {
        let Ok(ns) = std::fs::File::open(self.path()) else {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
            return cmd;
        };
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only makes the `setns` syscall
        // (async-signal-safe) on a descriptor the parent opened; `ns` lives as long as the command.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        run(self.command("ip").args(args))
    }

    /// Runs `sysctl -qw key=value` inside the namespace (net.* keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        run(self.command("sysctl").args(["-qw", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// Gives up ownership: the namespace outlives this value.
    pub fn leak(mut self) -> String {
        self.owned = false;
        self.name.clone()
    }

    /// Deletes a namespace by name; absent namespaces are fine.
    pub fn delete(name: &str) -> Result<(), NetnsError> {
        if PathBuf::from("/run/netns").join(name).exists() {
            ip(&["netns", "delete", name])?;
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = NetNs::delete(&self.name) {
                tracing::warn!(netns = %self.name, error = %e, "could not delete network namespace");
            }
        }
    }
}
