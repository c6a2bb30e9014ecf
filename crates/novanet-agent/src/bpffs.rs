//! Makes sure the pin root is a bpffs. Nodes whose init system did not mount `/sys/fs/bpf` get one
//! mounted by the agent (as Cilium's init container does); pins are only shared with the host when the
//! mount propagates (the chart's `Bidirectional` mount when privileged, or a host-mounted bpffs).

use std::path::Path;

use anyhow::Context;
use nix::mount::{MsFlags, mount};
use novanet_dataplane::is_bpffs;
use tracing::info;

pub fn ensure_mounted(root: &Path) -> anyhow::Result<()> {
    match is_bpffs(root) {
        Ok(true) => return Ok(()),
        // Not there yet, or something else: make the directory and mount a bpffs on it.
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("statfs {}", root.display())),
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    mount(Some("bpf"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("{} is not a bpffs and mounting one there failed", root.display()))?;
    info!(path = %root.display(), "mounted a bpffs for the pins");
    Ok(())
}
