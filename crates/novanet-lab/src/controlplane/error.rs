//! The control plane's error type: one structured variant per way a start or stop can fail. Every
//! variant about a component names its log file, so a failed start says where to look.

use std::path::PathBuf;
use std::time::Duration;

/// Errors from starting, restarting or forwarding to a lab control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{name} is not in {bin_dir}: build it with `tools/build.sh {name}`")]
    MissingBinary { name: String, bin_dir: PathBuf },
    #[error("network namespace {netns} does not exist (no /run/netns/{netns})")]
    NoSuchNetns { netns: String },
    #[error("invalid control plane configuration: {reason}")]
    InvalidConfig { reason: &'static str },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}")]
    CommandSpawn {
        command: String,
        source: std::io::Error,
    },
    #[error("could not start {component}: {source} (log: {log})")]
    Spawn {
        component: &'static str,
        log: PathBuf,
        source: std::io::Error,
    },
    #[error("{component} exited ({status}) before it was ready; log {log} ends with:\n{tail}")]
    Exited {
        component: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{component} was not ready after {waited:?} (last probe: {last_probe}); log {log} ends with:\n{tail}"
    )]
    NotReady {
        component: &'static str,
        waited: Duration,
        #[source]
        last_probe: Box<crate::probe::ProbeError>,
        log: PathBuf,
        tail: String,
    },
    #[error("{component} is not running")]
    NotRunning { component: &'static str },
    #[error("{component} is already running (pid {pid})")]
    AlreadyRunning { component: &'static str, pid: u32 },
    #[error("forwarder: could not {action}: {source}")]
    Forward {
        action: &'static str,
        source: std::io::Error,
    },
}

pub type Result<T, E = ControlPlaneError> = std::result::Result<T, E>;

/// Shorthand for [`ControlPlaneError::Io`].
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let path = path.into();
    move |source| ControlPlaneError::Io {
        action,
        path,
        source,
    }
}
