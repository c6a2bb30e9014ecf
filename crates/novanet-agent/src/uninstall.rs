//! Removing NovaNet from a node when its install is removed (`helm uninstall` deletes the agent's
//! DaemonSet; see `novanet_k8s::ReleaseWatch` for how the agent knows).
//!
//! Order matters: the conflist goes first, so the runtime wires no new pod through a plugin that is about
//! to vanish; then the plugin, the tc filters of endpoints still present (their pods lose NovaNet's
//! datapath: uninstalling a CNI under running pods breaks them, as with any CNI), the pins (maps and
//! program are freed once no filter holds them), the endpoint state and the socket. Every step runs even
//! when an earlier one failed; failures are reported together.
//!
//! Only ever called when the DaemonSet was seen and then removed: an agent restart or upgrade never
//! reaches this.

use std::path::{Path, PathBuf};

use novanet_dataplane::Dataplane;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::install_cni;

/// What [`remove_from_node`] did.
#[derive(Debug, Default)]
pub struct Removed {
    pub files: Vec<PathBuf>,
    pub filters_detached: usize,
    pub errors: Vec<String>,
}

fn remove_file(path: &Path, removed: &mut Removed) {
    match install_cni::remove_if_present(path) {
        Ok(true) => removed.files.push(path.to_path_buf()),
        Ok(false) => {}
        Err(e) => removed.errors.push(format!("{e:#}")),
    }
}

/// Removes NovaNet from the node. `host_ifnames` are the host interfaces of the endpoints still in the
/// table.
pub fn remove_from_node(cfg: &AgentConfig, host_ifnames: &[String]) -> Removed {
    let mut removed = Removed::default();
    match install_cni::uninstall(&cfg.cni.bin_dir, &cfg.cni.conf_dir) {
        Ok(files) => removed.files.extend(files),
        Err(e) => removed.errors.push(format!("{e:#}")),
    }
    for ifname in host_ifnames {
        match Dataplane::detach_endpoint(ifname) {
            Ok(true) => removed.filters_detached += 1,
            Ok(false) => {}
            Err(e) => removed.errors.push(format!("detaching from {ifname}: {e}")),
        }
    }
    if let Err(e) = Dataplane::unpin_all(&cfg.bpffs_root) {
        removed.errors.push(e.to_string());
    }
    let state = cfg.state_file();
    remove_file(&state, &mut removed);
    remove_file(&state.with_extension("json.tmp"), &mut removed);
    remove_file(&cfg.socket_path, &mut removed);
    if removed.errors.is_empty() {
        info!(files = ?removed.files, filters_detached = removed.filters_detached, endpoints_left = host_ifnames.len(),
              "NovaNet removed from this node");
    } else {
        warn!(errors = ?removed.errors, files = ?removed.files, "NovaNet partly removed from this node");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_every_novanet_file_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(s);
        let mut cfg = AgentConfig::from_yaml("{}").unwrap();
        cfg.cni.bin_dir = p("bin");
        cfg.cni.conf_dir = p("net.d");
        cfg.state_dir = p("state");
        cfg.bpffs_root = p("bpffs");
        cfg.socket_path = p("run/novanet.sock");
        for d in ["bin", "net.d", "state", "bpffs/novanet", "run"] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        for f in ["bin/novanet-cni", "bin/loopback", "net.d/10-novanet.conflist", "net.d/99-other.conf",
                  "state/endpoints.json", "bpffs/novanet/NOVANET_ENDPOINTS", "run/novanet.sock"] {
            std::fs::write(p(f), b"x").unwrap();
        }
        let removed = remove_from_node(&cfg, &["nosuchif0".to_string()]);
        assert!(removed.errors.is_empty(), "{:?}", removed.errors);
        assert_eq!(removed.filters_detached, 0, "a vanished interface has no filter to detach");
        assert_eq!(removed.files.len(), 4, "{:?}", removed.files);
        for gone in ["bin/novanet-cni", "net.d/10-novanet.conflist", "state/endpoints.json", "bpffs/novanet", "run/novanet.sock"] {
            assert!(!p(gone).exists(), "{gone} left behind");
        }
        assert!(p("bin/loopback").exists() && p("net.d/99-other.conf").exists());
        let again = remove_from_node(&cfg, &[]);
        assert!(again.errors.is_empty() && again.files.is_empty(), "{again:?}");
    }
}
