//! Where the Kubernetes binaries are: `tools/build.sh` builds them into a cache directory keyed by the
//! pinned versions (`tools/build.sh --print-bin-dir`); `NOVANET_K8S_BIN_DIR` overrides it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{ControlPlaneError, Result};

/// What [`super::ControlPlane::start`] runs.
pub const CONTROL_PLANE_BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The names in `names` that are not executable files in `bin_dir`.
pub fn missing_binaries(bin_dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_executable(&bin_dir.join(n)))
        .map(|n| n.to_string())
        .collect()
}

/// [`ControlPlaneError::MissingBinary`] for the first missing one.
pub fn require_binaries(bin_dir: &Path, names: &[&str]) -> Result<()> {
    match missing_binaries(bin_dir, names).into_iter().next() {
        Some(name) => Err(ControlPlaneError::MissingBinary {
            name,
            bin_dir: bin_dir.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// `$NOVANET_K8S_BIN_DIR`, else what this source tree's `tools/build.sh --print-bin-dir` says (needs
/// `go` on PATH, since the Go version is part of the cache key). `None` when neither works.
pub fn locate_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NOVANET_K8S_BIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--print-bin-dir")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// For tests: the bin dir when every binary in `names` is built there; otherwise skips `test` (see
/// `novanet_testkit::skip`: a failure under CI) and returns `None`. Only missing binaries skip a test.
pub fn bins_or_skip(test: &str, names: &[&str]) -> Option<PathBuf> {
    let Some(dir) = locate_bin_dir() else {
        novanet_testkit::skip_named(
            test,
            "no Kubernetes bin dir (set NOVANET_K8S_BIN_DIR or install Go and run tools/build.sh)",
        );
        return None;
    };
    let missing = missing_binaries(&dir, names);
    if !missing.is_empty() {
        novanet_testkit::skip_named(
            test,
            format_args!(
                "{} not built in {} (run tools/build.sh {})",
                missing.join(", "),
                dir.display(),
                missing.join(" ")
            ),
        );
        return None;
    }
    Some(dir)
}
