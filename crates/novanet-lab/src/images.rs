//! The lab's container images: OCI image archives built without Docker by `tools/images/build.sh`
//! (pause, busybox, agnhost, dnsutils, coredns, the NovaNet agent), cached outside the clone. Each archive comes with the
//! references it carries (`<name>.refs` next to it), which are what [`crate::registry::Registry::push`]
//! takes.
//!
//! ```no_run
//! # fn main() -> Result<(), novanet_lab::images::ImageError> {
//! for image in novanet_lab::images::build(&["busybox"])? {
//!     println!("{} {} {:?}", image.name, image.path.display(), image.references);
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from building or finding image archives.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("could not run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error("{script} failed ({status}):\n{stderr}")]
    Failed {
        script: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{script} printed an unexpected line: {line:?}")]
    Output { script: PathBuf, line: String },
}

/// One built archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The builder's short name: `pause`, `busybox`, `agnhost`, `dnsutils`, `coredns` or `agent`.
    pub name: String,
    /// `<cache>/images/<recipe>/<name>.tar`, an `oci-archive`.
    pub path: PathBuf,
    /// Full references (`registry.k8s.io/pause:3.10`), each an index entry of the archive.
    pub references: Vec<String>,
}

/// Every image the builder knows.
pub const ALL_IMAGES: [&str; 6] = ["pause", "busybox", "agnhost", "dnsutils", "coredns", "agent"];

/// `tools/images/build.sh` of this source tree.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/images/build.sh")
}

/// Builds (or finds up to date in the cache) the named images, all of them when `names` is empty. Slow
/// only the first time: the agent image may need a release build of the workspace, and agnhost the
/// Go-built agnhost and coredns (`tools/build.sh`).
pub fn build(names: &[&str]) -> Result<Vec<ImageArchive>, ImageError> {
    run_build(&[], names)
}

/// Like [`build`], but rebuilds NovaNet's release binaries first (`--cargo`), so the agent image holds
/// this tree's code rather than whatever release build was lying around.
pub fn build_fresh(names: &[&str]) -> Result<Vec<ImageArchive>, ImageError> {
    run_build(&["--cargo"], names)
}

fn run_build(flags: &[&str], names: &[&str]) -> Result<Vec<ImageArchive>, ImageError> {
    let script = build_script();
    let out = Command::new("bash")
        .arg(&script)
        .args(flags)
        .args(names)
        .output()
        .map_err(|source| ImageError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::Failed {
            script,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let Some((name, path)) = line.split_once(' ') else {
                return Err(ImageError::Output {
                    script: script.clone(),
                    line: line.to_string(),
                });
            };
            archive(name, Path::new(path))
        })
        .collect()
}

/// The archive at `path` with the references listed in `<name>.refs` beside it.
pub fn archive(name: &str, path: &Path) -> Result<ImageArchive, ImageError> {
    let refs = path.with_extension("refs");
    let text =
        std::fs::read_to_string(&refs).map_err(|source| ImageError::Read { path: refs, source })?;
    Ok(ImageArchive {
        name: name.to_string(),
        path: path.to_path_buf(),
        references: text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    })
}
