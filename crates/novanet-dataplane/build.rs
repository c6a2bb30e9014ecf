//! Builds `crates/novanet-ebpf` for `bpfel-unknown-none` and leaves the object at
//! `$OUT_DIR/novanet-ebpf.o`, which `src/object.rs` embeds.
//!
//! Toolchains, in order of preference (override with `NOVANET_EBPF_TOOLCHAIN=debian|nightly`):
//! - `debian`: Debian's `rustc-web` (`/usr/bin/rustc`, `/usr/bin/cargo`) whose sysroot ships a prebuilt
//!   `core` for BPF, with `RUSTC_BOOTSTRAP=1` and `--ignore-rust-version` (see DESIGN.md). Installed by
//!   `scripts/setup.sh`, which also builds `bpf-linker` into `$NOVANET_TOOLS/bin`.
//! - `nightly`: a rustup nightly with `rust-src` (`-Z build-std=core`), the usual aya route on laptops.
//!
//! `NOVANET_EBPF_OBJECT=/path/to/object` skips the build and embeds a prebuilt object instead.
//! The inner build's target dir is `$CARGO_TARGET_DIR/bpf` (shared by `build`, `test` and `clippy`), or
//! `$OUT_DIR/bpf-target` when `CARGO_TARGET_DIR` is not set.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const BPF_TARGET: &str = "bpfel-unknown-none";
const SETUP_HINT: &str = "run `scripts/setup.sh` (installs Debian's rustc-web with the BPF `core` and bpf-linker), \
     or install a nightly toolchain with rust-src and bpf-linker, or set NOVANET_EBPF_OBJECT to a prebuilt object";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: novanet-dataplane: cannot build the eBPF object\n{message}");
            ExitCode::FAILURE
        }
    }
}

enum Toolchain {
    Debian { cargo: PathBuf, rustc: PathBuf },
    Nightly,
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let crates = manifest_dir.parent().ok_or("CARGO_MANIFEST_DIR has no parent")?;
    let ebpf_dir = crates.join("novanet-ebpf");
    let common_dir = crates.join("novanet-common");
    let dest = out_dir.join("novanet-ebpf.o");

    // Every file, not just the directories: cargo compares a directory's own mtime, which an in-place edit
    // of a file inside it does not change. The directories too, for files added or removed.
    let mut watched = vec![ebpf_dir.join("Cargo.toml"), ebpf_dir.join("Cargo.lock"), common_dir.join("Cargo.toml")];
    for dir in [ebpf_dir.join("src"), common_dir.join("src")] {
        collect_tree(&dir, &mut watched)?;
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for var in ["NOVANET_EBPF_OBJECT", "NOVANET_EBPF_TOOLCHAIN", "NOVANET_TOOLS", "CARGO_TARGET_DIR", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if let Some(prebuilt) = env::var_os("NOVANET_EBPF_OBJECT") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &dest).map_err(|e| format!("copying NOVANET_EBPF_OBJECT {}: {e}", prebuilt.display()))?;
        return Ok(());
    }

    let toolchain = pick_toolchain()?;
    let linker_dir = find_bpf_linker()?;
    let target_dir = match env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("bpf"),
        _ => out_dir.join("bpf-target"),
    };

    let mut cmd = match &toolchain {
        Toolchain::Debian { cargo, .. } => Command::new(cargo),
        Toolchain::Nightly => Command::new("rustup"),
    };
    // Scrub first: the variables set below must survive.
    scrub_env(&mut cmd);
    match &toolchain {
        Toolchain::Debian { rustc, .. } => {
            cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            cmd.args(["build", "--release", "--target", BPF_TARGET, "--ignore-rust-version"]);
        }
        Toolchain::Nightly => {
            cmd.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core", "--release", "--target", BPF_TARGET]);
        }
    }
    cmd.current_dir(&ebpf_dir).arg("--target-dir").arg(&target_dir).env("PATH", prepend_path(&linker_dir)?);

    // Not `{cmd:?}`: it lists every scrubbed variable.
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = cmd.output().map_err(|e| format!("running `{shown}`: {e}\n{SETUP_HINT}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{shown}` in {} failed ({}):\n{}\n{}",
            ebpf_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let built = target_dir.join(BPF_TARGET).join("release").join("novanet-ebpf");
    fs::copy(&built, &dest).map_err(|e| format!("copying {} to {}: {e}", built.display(), dest.display()))?;
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn pick_toolchain() -> Result<Toolchain, String> {
    let debian = || {
        let (cargo, rustc) = (PathBuf::from("/usr/bin/cargo"), PathBuf::from("/usr/bin/rustc"));
        let core_dir = Path::new("/usr/lib/rustlib").join(BPF_TARGET);
        (cargo.exists() && rustc.exists() && core_dir.is_dir()).then_some(Toolchain::Debian { cargo, rustc })
    };
    let nightly = || nightly_has_rust_src().then_some(Toolchain::Nightly);
    match env::var("NOVANET_EBPF_TOOLCHAIN").ok().as_deref() {
        Some("debian") => debian().ok_or_else(|| {
            format!("NOVANET_EBPF_TOOLCHAIN=debian but /usr/bin/rustc, /usr/bin/cargo or /usr/lib/rustlib/{BPF_TARGET} is missing: {SETUP_HINT}")
        }),
        Some("nightly") => nightly().ok_or_else(|| {
            "NOVANET_EBPF_TOOLCHAIN=nightly but `rustup run nightly` has no rust-src component".to_string()
        }),
        Some(other) => Err(format!("NOVANET_EBPF_TOOLCHAIN={other}: expected `debian` or `nightly`")),
        None => debian().or_else(nightly).ok_or_else(|| format!("no eBPF-capable Rust toolchain found: {SETUP_HINT}")),
    }
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot.join("lib/rustlib/src/rust/library/core").is_dir()
}

/// The directory holding `bpf-linker`: on PATH, in `$NOVANET_TOOLS/bin`, or in the default cache of
/// `scripts/env.sh` (`$HOME/.cache/novanet/tools/bin`).
fn find_bpf_linker() -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(tools) = env::var_os("NOVANET_TOOLS") {
        dirs.push(PathBuf::from(tools).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/novanet/tools/bin"));
    }
    dirs.into_iter()
        .find(|dir| dir.join("bpf-linker").is_file())
        .ok_or_else(|| format!("bpf-linker not found on PATH or in $NOVANET_TOOLS/bin: {SETUP_HINT}"))
}

fn prepend_path(dir: &Path) -> Result<OsString, String> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).map_err(|e| format!("building PATH: {e}"))
}

/// Removes what the outer cargo exports to build scripts, which would otherwise leak into the inner build
/// (host rustflags, clippy's wrapper, the outer profile and target, feature and cfg variables).
fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || matches!(
                key,
                "RUSTFLAGS" | "TARGET" | "HOST" | "OPT_LEVEL" | "PROFILE" | "DEBUG" | "NUM_JOBS" | "OUT_DIR"
            );
        if leaks {
            cmd.env_remove(key);
        }
    }
}

/// `dir` and every directory and file below it.
fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    out.push(dir.to_path_buf());
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_tree(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
