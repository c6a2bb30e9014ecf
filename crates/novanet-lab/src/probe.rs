//! Typed reasons a readiness probe or a `kubectl` call failed. The "not ready after N s" errors of the
//! lab's components carry the last [`ProbeError`] as their source, so the cause (curl's stderr, the gRPC
//! status, the I/O error) survives up to the caller instead of being flattened into a string.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::netns::NetnsError;

/// Why one probe of a component failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The component's process is gone: waiting longer is pointless.
    #[error("the process exited")]
    Exited,
    /// Still starting (e.g. "no mount namespace of its own yet").
    #[error("{0}")]
    NotYet(&'static str),
    /// The component answered, but not with what readiness needs (e.g. a Node's Ready condition).
    #[error("reports {0:?}")]
    Reports(String),
    /// A probe command (curl, ctr) failed or could not run.
    #[error(transparent)]
    Command(#[from] NetnsError),
    #[error(transparent)]
    Kubectl(#[from] KubectlError),
    #[error(transparent)]
    Agent(#[from] AgentStatusError),
}

/// `kubectl` against a lab control plane.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    #[error("the lab has no control plane")]
    NoControlPlane,
    #[error("could not run {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("kubectl {args:?} failed ({status}): {stderr}")]
    Failed { args: Vec<String>, status: String, stderr: String },
    #[error("kubectl {args:?}: unparsable output: {source}")]
    Parse { args: Vec<String>, source: serde_json::Error },
    #[error("kubectl {args:?}: the answer has no {what}")]
    Missing { args: Vec<String>, what: &'static str },
}

/// `novanetctl status`'s call, from the lab: the agent's gRPC API on its unix socket.
#[derive(Debug, thiserror::Error)]
pub enum AgentStatusError {
    #[error("could not start a runtime for the agent call: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("could not connect to the agent at {socket}: {source}")]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("the agent at {socket} answered Status with {source}")]
    Rpc { socket: PathBuf, source: Box<tonic::Status> },
}

/// Runs `kubectl --kubeconfig <kubeconfig> <args>` (with `stdin` when given) and returns its stdout.
pub fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, KubectlError> {
    let spawn = |source| KubectlError::Spawn { program: kubectl.to_path_buf(), source };
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        return Err(KubectlError::Failed {
            args: args.iter().map(|a| a.to_string()).collect(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_errors_keep_the_program_and_its_io_error() {
        let err = kubectl(Path::new("/nonexistent/kubectl"), Path::new("/dev/null"), &["version"], None).unwrap_err();
        let KubectlError::Spawn { program, source } = &err else { panic!("{err}") };
        assert_eq!(program, Path::new("/nonexistent/kubectl"));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        let probe = ProbeError::from(err);
        assert!(probe.to_string().contains("/nonexistent/kubectl"), "{probe}");
        let io = std::error::Error::source(&probe).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound), "the I/O error is the source");
    }

    #[test]
    fn a_failed_kubectl_carries_its_status_and_stderr() {
        // bash rejects `--kubeconfig` as an option, on stderr, with exit status 2.
        let err = kubectl(Path::new("/bin/bash"), Path::new("/dev/null"), &["-c", "true"], None).unwrap_err();
        let KubectlError::Failed { stderr, status, args } = &err else { panic!("{err}") };
        assert!(stderr.contains("--kubeconfig"), "{stderr}");
        assert!(status.contains('2'), "{status}");
        assert_eq!(args, &["-c", "true"]);
    }
}
