//! Makes sure the pin root is a bpffs. Nodes whose init system did not mount `/sys/fs/bpf` get one
//! mounted by the agent (as Cilium's init container does); pins are only shared with the host when the
//! mount propagates (the chart's `Bidirectional` mount when privileged, or a host-mounted bpffs).

use std::path::Path;

use anyhow::Context;
use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
use tracing::info;

pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).map(|s| s.filesystem_type() == BPF_FS_MAGIC).unwrap_or(false)
}

pub fn ensure_mounted(root: &Path) -> anyhow::Result<()> {
    if is_bpffs(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    mount(Some("bpf"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("{} is not a bpffs and mounting one there failed", root.display()))?;
    info!(path = %root.display(), "mounted a bpffs for the pins");
    Ok(())
}
