//! The lab's record of everything it created, kept in `<lab dir>/state.json` and rewritten after every
//! step, so `lab down` can remove all of it even when `up` failed halfway or the lab process died.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Root of all lab directories.
pub const LAB_ROOT: &str = "/run/novanet-lab";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("lab {name} does not exist ({path} not found)")]
    NoSuchLab { name: String, path: PathBuf },
    #[error("reading or writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a lab state file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub name: String,
    pub dir: PathBuf,
    /// Prefix of every namespace and interface the lab made.
    pub prefix: String,
    pub underlay_netns: Option<String>,
    pub underlay_cidr: Option<Ipv4Net>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Control-plane processes when the lab runs a genuine Kubernetes control plane.
    #[serde(default)]
    pub control_plane_pids: Vec<u32>,
    /// The lab registry's process and work directory (real-node labs).
    #[serde(default)]
    pub registry_pid: Option<u32>,
    #[serde(default)]
    pub registry_dir: Option<PathBuf>,
    /// kubeconfig for tools in the root namespace (through the lab's forwarder).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The lab's supervisor: the process that runs a detached cluster and removes it on SIGTERM
    /// (`novanet lab cluster --detach`), or the one that restarts a light lab's agents (`novanet lab up`).
    #[serde(default)]
    pub supervisor: Option<SupervisorState>,
}

/// A lab's supervisor: its PID and start time (PIDs get reused; the pair names one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorState {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (see [`crate::process::start_time`]).
    pub start_time: u64,
    /// What it does, hence what SIGTERM asks of it (older state files: a cluster's).
    #[serde(default)]
    pub role: SupervisorRole,
}

/// What a lab's supervisor does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SupervisorRole {
    /// Runs a real cluster (its processes die with it); SIGTERM: remove the lab, then exit.
    #[default]
    Cluster,
    /// Restarts a light lab's agents that die, as kubelet restarts a DaemonSet's pods
    /// ([`crate::agent_supervision`]); SIGTERM: stop supervising and exit, `lab down` removes the lab.
    Agents,
}

impl SupervisorState {
    /// The calling process, as a cluster's supervisor.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id(), SupervisorRole::Cluster)
    }

    /// The running process `pid` in `role`; `None` when it is gone.
    pub fn of(pid: u32, role: SupervisorRole) -> Option<Self> {
        Some(SupervisorState { pid, start_time: crate::process::start_time(pid)?, role })
    }

    /// True while this very process runs (not a zombie, not another process that got its PID).
    pub fn is_running(&self) -> bool {
        crate::process::is_same_process(self.pid, self.start_time)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub name: String,
    pub index: u32,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub dir: PathBuf,
    /// The node's own bpffs instance (mounted by the lab, unmounted by `down`).
    pub bpffs: Option<PathBuf>,
    pub agent_pid: Option<u32>,
}

impl NodeState {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/novanet.sock")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni/bin")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("agent.yaml")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
    pub fn bpffs_dir(&self) -> PathBuf {
        self.dir.join("bpf")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Option<Ipv4Addr>,
    /// The CNI result of ADD, cached as libcni does, handed back as `prevResult` on CHECK and DEL.
    pub cni_result: Option<serde_json::Value>,
    pub process_pid: Option<u32>,
    /// The program the pod's process runs, checked before it is signalled (PIDs get reused).
    #[serde(default)]
    pub process_program: Option<String>,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

impl LabState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(name: &str) -> Result<Self, StateError> {
        let path = Self::file(&lab_dir(name));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NoSuchLab { name: name.to_string(), path });
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| StateError::Parse { path, source })
    }

    pub fn save(&self) -> Result<(), StateError> {
        let path = Self::file(&self.dir);
        let io = |source| StateError::Io { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse { path: path.clone(), source })?;
        fs::write(&tmp, body).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A pod by `name` or `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&PodState> {
        self.pods.iter().find(|p| p.key() == key || (!key.contains('/') && p.name == key))
    }

    /// Names of all labs that have a state file.
    pub fn list() -> Vec<String> {
        let Ok(entries) = fs::read_dir(LAB_ROOT) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| Self::file(&e.path()).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_without_a_supervisor_still_load_and_the_record_round_trips() {
        let old = r#"{"name": "x", "dir": "/run/novanet-lab/x", "prefix": "nn1", "underlayNetns": null,
                      "underlayCidr": null, "nodes": [], "pods": []}"#;
        let state: LabState = serde_json::from_str(old).unwrap_or_default();
        assert_eq!(state.name, "x");
        assert_eq!(state.supervisor, None);
        let me = SupervisorState::current();
        assert!(me.is_some_and(|s| s.is_running()));
        let with = LabState { supervisor: me, ..state };
        let text = serde_json::to_string(&with).unwrap_or_default();
        assert!(text.contains("\"supervisor\":{\"pid\":"), "{text}");
        let back: LabState = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back.supervisor, me);
    }
}
