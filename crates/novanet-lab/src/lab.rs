//! A whole lab: the underlay namespace (a bridge), the nodes, the pods; `up`, `down` and the operations
//! tests need (add and remove pods, restart or kill an agent).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::binaries::{Binaries, MissingBinary};
use crate::netns::{NetNs, NetnsError};
use crate::node::{self, NodeError};
use crate::pod::{self, PodError};
use crate::spec::{LabSpec, NodeSpec, PodSpec};
use crate::state::{LabState, NodeState, PodState, StateError, lab_dir};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Binaries(#[from] MissingBinary),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("lab {0} already exists; run `novanet lab down --name {0}` first")]
    Exists(String),
    #[error("no pod {0} in the lab")]
    NoSuchPod(String),
    #[error("no node {0} in the lab")]
    NoSuchNode(String),
    #[error("pod {0} already exists")]
    PodExists(String),
    #[error("lab down left things behind: {0:?}")]
    Leftovers(Vec<String>),
}

/// The underlay network inside the lab's namespaces (never the host's).
pub const UNDERLAY_CIDR: &str = "172.30.0.0/24";

/// A running lab. Dropping it does nothing unless it was made with [`Lab::guard`] (tests).
pub struct Lab {
    pub state: LabState,
    bins: Binaries,
    down_on_drop: bool,
}

impl Lab {
    /// Brings up a lab from `spec` under `name`. On failure, everything made so far is removed.
    pub fn up(name: &str, spec: &LabSpec) -> Result<Lab, LabError> {
        let bins = Binaries::discover()?;
        let dir = lab_dir(name);
        if LabState::file(&dir).exists() {
            return Err(LabError::Exists(name.to_string()));
        }
        let prefix = crate::netns::unique_prefix();
        let state = LabState { name: name.to_string(), dir, prefix, ..Default::default() };
        let mut lab = Lab { state, bins, down_on_drop: true };
        lab.state.save()?;
        lab.build(spec)?;
        lab.down_on_drop = false;
        Ok(lab)
    }

    /// Like [`Lab::up`], but the lab is torn down when the value drops (tests, even when they panic).
    pub fn guard(name: &str, spec: &LabSpec) -> Result<Lab, LabError> {
        let mut lab = Lab::up(name, spec)?;
        lab.down_on_drop = true;
        Ok(lab)
    }

    pub fn load(name: &str) -> Result<Lab, LabError> {
        Ok(Lab { state: LabState::load(name)?, bins: Binaries::discover()?, down_on_drop: false })
    }

    fn build(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let underlay: Ipv4Net = UNDERLAY_CIDR.parse().unwrap_or_else(|_| unreachable!("constant CIDR"));
        let ul_name = format!("{}-ul", self.state.prefix);
        let ul = NetNs::create(&ul_name)?;
        self.state.underlay_netns = Some(ul.leak());
        self.state.underlay_cidr = Some(underlay);
        let ul = NetNs::existing(&ul_name);
        ul.ip(&["link", "add", "br0", "type", "bridge"])?;
        ul.ip(&["link", "set", "br0", "up"])?;
        self.state.save()?;
        for node_spec in &spec.nodes {
            self.add_node(node_spec)?;
        }
        for pod_spec in &spec.pods {
            self.add_pod(pod_spec)?;
        }
        Ok(())
    }

    pub fn add_node(&mut self, spec: &NodeSpec) -> Result<(), LabError> {
        let underlay = self.state.underlay_cidr.ok_or_else(|| LabError::NoSuchNode("underlay".into()))?;
        let ul_name = self.state.underlay_netns.clone().unwrap_or_default();
        let index = self.state.nodes.iter().map(|n| n.index + 1).max().unwrap_or(0);
        let mut node = NodeState {
            name: spec.name.clone(),
            index,
            netns: format!("{}-{}", self.state.prefix, spec.name),
            underlay_ip: node::underlay_ip(underlay, index),
            pod_cidr: spec.pod_cidr,
            dir: self.state.dir.join("nodes").join(&spec.name),
            bpffs: None,
            agent_pid: None,
        };
        node::create_netns(&node, &ul_name, underlay.prefix_len())?;
        self.state.nodes.push(node.clone());
        self.state.save()?;
        let result = node::prepare_files(&mut node, &self.bins);
        self.replace_node(&node)?;
        result?;
        let result = node::start_agent(&mut node, &self.bins);
        self.replace_node(&node)?;
        result?;
        for peer in self.state.nodes.clone() {
            if peer.name != node.name {
                node::add_peer_route(&node, &peer)?;
                node::add_peer_route(&peer, &node)?;
            }
        }
        Ok(())
    }

    fn replace_node(&mut self, node: &NodeState) -> Result<(), LabError> {
        if let Some(slot) = self.state.nodes.iter_mut().find(|n| n.name == node.name) {
            *slot = node.clone();
        }
        self.state.save()?;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&NodeState, LabError> {
        self.state.node(name).ok_or_else(|| LabError::NoSuchNode(name.to_string()))
    }

    pub fn pod(&self, key: &str) -> Result<&PodState, LabError> {
        self.state.pod(key).ok_or_else(|| LabError::NoSuchPod(key.to_string()))
    }

    pub fn pod_ip(&self, key: &str) -> Result<Ipv4Addr, LabError> {
        self.pod(key)?.ip.ok_or_else(|| LabError::NoSuchPod(key.to_string()))
    }

    /// Creates a pod: its namespace, CNI ADD on its node, and its command if it has one.
    pub fn add_pod(&mut self, spec: &PodSpec) -> Result<&PodState, LabError> {
        if self.state.pod(&spec.key()).is_some() {
            return Err(LabError::PodExists(spec.key()));
        }
        let node = self.node(&spec.node)?.clone();
        let seq = self.state.pods.len();
        let mut pod = PodState {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: spec.uid.clone(),
            node: spec.node.clone(),
            netns: format!("{}-p{}-{}", self.state.prefix, seq, spec.name),
            container_id: pod::new_container_id(),
            ip: None,
            cni_result: None,
            process_pid: None,
            process_program: None,
        };
        pod::add(&node, &mut pod)?;
        if let Some(argv) = &spec.command {
            let log = self.state.dir.join(format!("pod-{}-{}.log", pod.namespace, pod.name));
            if let Err(e) = pod::start_command(&mut pod, argv, &log) {
                pod::remove(Some(&node), &mut pod);
                return Err(e.into());
            }
        }
        self.state.pods.push(pod);
        self.state.save()?;
        Ok(self.state.pods.last().unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// Removes a pod: its command, CNI DEL, its namespace.
    pub fn remove_pod(&mut self, key: &str) -> Result<(), LabError> {
        let idx = self
            .state
            .pods
            .iter()
            .position(|p| p.key() == key || p.name == key)
            .ok_or_else(|| LabError::NoSuchPod(key.to_string()))?;
        let mut pod = self.state.pods.remove(idx);
        let node = self.state.node(&pod.node).cloned();
        let problems = pod::remove(node.as_ref(), &mut pod);
        self.state.save()?;
        if problems.is_empty() { Ok(()) } else { Err(LabError::Leftovers(problems)) }
    }

    pub fn check_pod(&self, key: &str) -> Result<(), LabError> {
        let pod = self.pod(key)?;
        Ok(pod::check(self.node(&pod.node)?, pod)?)
    }

    /// Restarts a node's agent; with `crash` it is killed with SIGKILL first, as a crash would.
    pub fn restart_agent(&mut self, node_name: &str, crash: bool) -> Result<(), LabError> {
        let mut node = self.node(node_name)?.clone();
        if crash { node::kill_agent(&mut node) } else { node::stop_agent(&mut node) }
        self.replace_node(&node)?;
        let result = node::start_agent(&mut node, &self.bins);
        self.replace_node(&node)?;
        Ok(result?)
    }

    /// Runs a program inside a pod's network namespace.
    pub fn pod_command(&self, key: &str, program: &str) -> Result<std::process::Command, LabError> {
        Ok(NetNs::existing(&self.pod(key)?.netns).command(program))
    }

    /// Runs a program inside a node's network namespace.
    pub fn node_command(&self, name: &str, program: &str) -> Result<std::process::Command, LabError> {
        Ok(NetNs::existing(&self.node(name)?.netns).command(program))
    }

    pub fn socket(&self, node: &str) -> Result<PathBuf, LabError> {
        Ok(self.node(node)?.socket())
    }

    /// Removes everything the lab made. Safe to call on a half-built or already partly removed lab.
    pub fn down(mut self) -> Result<(), LabError> {
        self.down_on_drop = false;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), LabError> {
        let mut problems = Vec::new();
        while let Some(mut pod) = self.state.pods.pop() {
            let node = self.state.node(&pod.node).cloned();
            problems.extend(pod::remove(node.as_ref(), &mut pod));
            let _ = self.state.save();
        }
        let mut kept = Vec::new();
        while let Some(mut node) = self.state.nodes.pop() {
            let p = node::remove(&mut node);
            if node.bpffs.is_some() {
                kept.push(node);
            }
            problems.extend(p);
        }
        self.state.nodes = kept;
        if let Some(ul) = self.state.underlay_netns.take() {
            if let Err(e) = NetNs::delete(&ul) {
                problems.push(e.to_string());
            }
        }
        if self.state.nodes.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.state.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(format!("removing {}: {e}", self.state.dir.display()));
                }
            }
        } else {
            let _ = self.state.save();
        }
        // Pods whose DEL failed are still torn down (namespace removed); report, don't hide.
        if problems.is_empty() { Ok(()) } else { Err(LabError::Leftovers(problems)) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down_on_drop {
            if let Err(e) = self.teardown() {
                eprintln!("lab {}: teardown: {e}", self.state.name);
            }
        }
    }
}
