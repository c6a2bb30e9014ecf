//! Running the built `novanet` binary as a user would, from the repository root.

use std::process::{Command, Output};

use novanet_lab::state::{LabState, lab_dir};

pub const NOVANET: &str = env!("CARGO_BIN_EXE_novanet");
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `novanet <args>` from the repository root; echoes the command and its output (shown on failure).
pub fn novanet(args: &[&str]) -> Output {
    let out = Command::new(NOVANET).current_dir(REPO).env("RUST_BACKTRACE", "0").args(args).output().unwrap();
    eprintln!(
        "+ novanet {} ({})\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `novanet lab down` on drop while the lab's state file exists (a failed test leaves nothing).
pub struct DownOnDrop(pub String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if LabState::file(&lab_dir(&self.0)).exists() {
            let _ = Command::new(NOVANET).args(["lab", "down", "--name", &self.0]).status();
        }
    }
}
