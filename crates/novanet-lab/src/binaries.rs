//! Where the lab finds NovaNet's binaries: `$NOVANET_BIN_DIR`, else next to the running executable
//! (cargo puts every workspace binary in the same target directory; test executables sit one level down
//! in `deps/`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{name} not found in {searched:?}; build the workspace first (`cargo build --workspace --bins`) or set NOVANET_BIN_DIR")]
pub struct MissingBinary {
    pub name: String,
    pub searched: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub agent: PathBuf,
    pub cni: PathBuf,
    pub ctl: PathBuf,
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("NOVANET_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if dir.ends_with("deps") {
                if let Some(up) = dir.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
    }
    dirs
}

fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, MissingBinary> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| Path::is_file(p))
        .ok_or_else(|| MissingBinary { name: name.to_string(), searched: dirs.to_vec() })
}

impl Binaries {
    pub fn discover() -> Result<Self, MissingBinary> {
        let dirs = candidates();
        Ok(Binaries {
            agent: find("novanet-agent", &dirs)?,
            cni: find("novanet-cni", &dirs)?,
            ctl: find("novanetctl", &dirs)?,
        })
    }
}
