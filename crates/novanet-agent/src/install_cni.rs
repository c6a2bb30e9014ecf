//! `novanet-agent install-cni`: what the DaemonSet's init container (and the lab) runs to put the CNI
//! plugin and its conflist on a node. Both files are written atomically (temp file + rename), so a
//! runtime never sees half a binary or half a config.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Name of the conflist file; the `10-` prefix makes runtimes prefer it over later files.
pub const CONFLIST_NAME: &str = "10-novanet.conflist";
/// Name of the plugin binary, which is also its `type` in the conflist.
pub const PLUGIN_NAME: &str = "novanet-cni";
/// Name under which the reference `portmap` plugin (hostPort) is installed and chained: NovaNet's own
/// name, so a node's `portmap` is never overwritten and uninstall removes only what NovaNet put there.
pub const PORTMAP_NAME: &str = "novanet-portmap";

pub struct InstallCni {
    pub plugin_source: PathBuf,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub socket: PathBuf,
    pub mtu: u32,
    pub log_file: Option<PathBuf>,
    /// The reference `portmap` plugin to install as [`PORTMAP_NAME`] and chain after NovaNet's, for pods'
    /// `hostPort`s (until NovaNet's datapath maps host ports itself).
    pub portmap_source: Option<PathBuf>,
}

/// The `cniVersion` of the installed conflist. 1.0.0, not 1.1.0: containerd 1.6 (libcni 1.1) rejects a
/// 1.1.0 result ("unsupported CNI result version"); the plugin still answers STATUS and GC to runtimes
/// that ask with 1.1.0.
pub const CONFLIST_CNI_VERSION: &str = "1.0.0";

/// The conflist NovaNet installs; with `portmap`, the hostPort plugin is chained after NovaNet's.
pub fn conflist(socket: &Path, mtu: u32, log_file: Option<&Path>, portmap: bool) -> serde_json::Value {
    let mut plugin = serde_json::json!({
        "type": PLUGIN_NAME,
        "agentSocket": socket,
        "mtu": mtu,
    });
    if let (Some(log), Some(obj)) = (log_file, plugin.as_object_mut()) {
        obj.insert("logFile".into(), serde_json::json!(log));
    }
    let mut plugins = vec![plugin];
    if portmap {
        plugins.push(serde_json::json!({"type": PORTMAP_NAME, "capabilities": {"portMappings": true}}));
    }
    serde_json::json!({
        "cniVersion": CONFLIST_CNI_VERSION,
        "name": "novanet",
        "plugins": plugins,
    })
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("novanet")
    ));
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

impl InstallCni {
    pub fn run(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.bin_dir).with_context(|| format!("creating {}", self.bin_dir.display()))?;
        fs::create_dir_all(&self.conf_dir).with_context(|| format!("creating {}", self.conf_dir.display()))?;
        let binary = fs::read(&self.plugin_source)
            .with_context(|| format!("reading the plugin binary {}", self.plugin_source.display()))?;
        write_atomically(&self.bin_dir.join(PLUGIN_NAME), &binary, 0o755)?;
        if let Some(portmap) = &self.portmap_source {
            let binary =
                fs::read(portmap).with_context(|| format!("reading the portmap plugin {}", portmap.display()))?;
            write_atomically(&self.bin_dir.join(PORTMAP_NAME), &binary, 0o755)?;
        }
        let conf = conflist(&self.socket, self.mtu, self.log_file.as_deref(), self.portmap_source.is_some());
        write_atomically(&self.conf_dir.join(CONFLIST_NAME), &serde_json::to_vec_pretty(&conf)?, 0o644)?;
        tracing::info!(bin_dir = %self.bin_dir.display(), conf_dir = %self.conf_dir.display(), "installed the CNI plugin");
        Ok(())
    }
}

/// Removes what [`InstallCni::run`] put on the node (uninstall): the conflist first, so no new pod is
/// wired through a plugin about to vanish, then the plugins. Returns the files removed; absent is fine.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in [conf_dir.join(CONFLIST_NAME), bin_dir.join(PLUGIN_NAME), bin_dir.join(PORTMAP_NAME)] {
        if remove_if_present(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Removes a file; `Ok(false)` when it was not there.
pub fn remove_if_present(path: &Path) -> anyhow::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_plugin_and_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plugin");
        fs::write(&src, b"#!binary").unwrap();
        InstallCni {
            plugin_source: src,
            bin_dir: dir.path().join("bin"),
            conf_dir: dir.path().join("net.d"),
            socket: "/run/novanet/novanet.sock".into(),
            mtu: 1450,
            log_file: None,
            portmap_source: None,
        }
        .run()
        .unwrap();
        assert_eq!(fs::read(dir.path().join("bin/novanet-cni")).unwrap(), b"#!binary");
        let conf: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("net.d/10-novanet.conflist")).unwrap()).unwrap();
        assert_eq!(conf["plugins"][0]["type"], "novanet-cni");
        assert_eq!(conf["cniVersion"], "1.0.0", "containerd 1.6 understands at most 1.0.0 results");
        assert_eq!(conf["plugins"][0]["mtu"], 1450);
        assert_eq!(conf["plugins"][0]["agentSocket"], "/run/novanet/novanet.sock");
    }

    #[test]
    fn uninstall_removes_only_novanet_files_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
        let src = dir.path().join("plugin");
        fs::write(&src, b"#!binary").unwrap();
        fs::write(dir.path().join("portmap"), b"#!portmap").unwrap();
        let install = InstallCni {
            plugin_source: src,
            bin_dir: bin.clone(),
            conf_dir: conf.clone(),
            socket: "/run/novanet/novanet.sock".into(),
            mtu: 1500,
            log_file: None,
            portmap_source: Some(dir.path().join("portmap")),
        };
        install.run().unwrap();
        assert_eq!(fs::read(bin.join(PORTMAP_NAME)).unwrap(), b"#!portmap");
        let list: serde_json::Value = serde_json::from_slice(&fs::read(conf.join(CONFLIST_NAME)).unwrap()).unwrap();
        assert_eq!(list["plugins"][1]["type"], PORTMAP_NAME, "hostPort plugin chained after NovaNet's");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        fs::write(bin.join("loopback"), b"other").unwrap();
        fs::write(conf.join("99-other.conflist"), b"{}").unwrap();
        assert_eq!(uninstall(&bin, &conf).unwrap().len(), 3);
        assert!(!bin.join(PLUGIN_NAME).exists() && !bin.join(PORTMAP_NAME).exists() && !conf.join(CONFLIST_NAME).exists());
        assert!(bin.join("loopback").exists() && conf.join("99-other.conflist").exists());
        assert!(uninstall(&bin, &conf).unwrap().is_empty());
    }
}
