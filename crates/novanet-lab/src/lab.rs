//! A whole lab: the underlay namespace (a bridge), the nodes, the pods; `up`, `down` and the operations
//! tests need (add and remove pods, restart or kill an agent), and the cluster objects light-lab agents read
//! (`objects.yaml`, rewritten after every change: see [`crate::objects`]; `apply`/`delete`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::binaries::{Binaries, MissingBinary};
use crate::controlplane::{ControlPlane, ControlPlaneConfig};
use crate::kubenode::{self, KubeNode, KubeNodeOptions};
use crate::netns::{NetNs, NetnsError};
use crate::node::{self, NodeError};
use crate::objects;
use crate::pod::{self, PodError};
use crate::spec::{LabSpec, NodeSpec, PodSpec};
use crate::state::{LabState, NodeState, PodState, StateError, SupervisorState, lab_dir};

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
    #[error(transparent)]
    ControlPlane(#[from] crate::controlplane::ControlPlaneError),
    #[error(transparent)]
    Kubectl(#[from] crate::probe::KubectlError),
    #[error(transparent)]
    AgentStatus(#[from] crate::probe::AgentStatusError),
    #[error("node {node}: the pod CIDR {cidr:?} is not a CIDR: {source}")]
    BadPodCidr { node: String, cidr: String, source: ipnet::AddrParseError },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("lab down left things behind: {0:?}")]
    Leftovers(Vec<String>),
    #[error(transparent)]
    KubeNode(#[from] crate::kubenode::KubeNodeError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Images(#[from] crate::images::ImageError),
    #[error("{0}")]
    RealNodes(&'static str),
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectsError),
}

/// The underlay network inside the lab's namespaces (never the host's).
pub const UNDERLAY_CIDR: &str = "172.30.0.0/24";

/// A running lab. Dropping it does nothing unless it was made with [`Lab::guard`] (tests).
pub struct Lab {
    pub state: LabState,
    bins: Binaries,
    down_on_drop: bool,
    control_plane: Option<ControlPlane>,
    /// Real Kubernetes nodes (containerd + kubelet + kube-proxy), when the lab runs them.
    kube_nodes: Vec<KubeNode>,
    /// Binaries of the control plane and the real nodes.
    k8s_bin_dir: Option<PathBuf>,
    /// The lab's image registry (real nodes pull every image through it).
    registry: Option<crate::registry::Registry>,
    real_nodes: bool,
    no_object_source: bool,
}

/// How a lab is built.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Run a genuine Kubernetes control plane (binaries in this directory) in the underlay namespace;
    /// agents then take pod CIDRs from their Node objects and watch the API, and pods are created in
    /// the API before the CNI wires them.
    pub kubernetes: Option<PathBuf>,
    /// With `kubernetes`: each node is a real Kubernetes node (its own mount namespace, containerd, kubelet,
    /// kube-proxy; see [`crate::kubenode`]). The kubelets register the Nodes, the lab creates no Node object
    /// and starts no NovaNet agent (NovaNet arrives through its Helm chart), and nodes stay NotReady until a
    /// CNI is installed. Pod CIDRs are the controller-manager's; the lab routes them over the underlay.
    pub real_nodes: bool,
    /// Light nodes' agents get no objects file: their policy subsystem is inactive and never touches the
    /// policy maps (for the benchmark, which writes those maps itself). Only for labs this process runs.
    pub no_object_source: bool,
}

/// The lab registry's port (on [`CONTROL_PLANE_IP`]).
pub const REGISTRY_PORT: u16 = 5000;

/// The control plane's address on the lab underlay.
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

impl Lab {
    /// Brings up a lab from `spec` under `name`. On failure, everything made so far is removed.
    pub fn up(name: &str, spec: &LabSpec) -> Result<Lab, LabError> {
        Self::up_with(name, spec, &LabOptions::default())
    }

    pub fn up_with(name: &str, spec: &LabSpec, options: &LabOptions) -> Result<Lab, LabError> {
        Self::create(name, spec, options, None)
    }

    /// Like [`Lab::guard_with`], for the lab's supervisor process (`novanet lab cluster --detach`): the
    /// supervisor is in the state file from the first write on, so `lab down` finds it at any step.
    pub fn guard_supervised(
        name: &str,
        spec: &LabSpec,
        options: &LabOptions,
        supervisor: SupervisorState,
    ) -> Result<Lab, LabError> {
        let mut lab = Self::create(name, spec, options, Some(supervisor))?;
        lab.down_on_drop = true;
        Ok(lab)
    }

    fn create(
        name: &str,
        spec: &LabSpec,
        options: &LabOptions,
        supervisor: Option<SupervisorState>,
    ) -> Result<Lab, LabError> {
        if options.real_nodes && options.kubernetes.is_none() {
            return Err(LabError::RealNodes("real nodes need a control plane (LabOptions::kubernetes)"));
        }
        let bins = Binaries::discover()?;
        let dir = lab_dir(name);
        if LabState::file(&dir).exists() {
            return Err(LabError::Exists(name.to_string()));
        }
        let prefix = crate::netns::unique_prefix();
        let state = LabState { name: name.to_string(), dir, prefix, supervisor, ..Default::default() };
        let mut lab = Lab {
            state,
            bins,
            down_on_drop: true,
            control_plane: None,
            kube_nodes: Vec::new(),
            k8s_bin_dir: options.kubernetes.clone(),
            registry: None,
            real_nodes: options.real_nodes,
            no_object_source: options.no_object_source,
        };
        lab.state.save()?;
        lab.build(spec, options)?;
        lab.down_on_drop = false;
        Ok(lab)
    }

    /// Like [`Lab::up`], but the lab is torn down when the value drops (tests, even when they panic).
    pub fn guard(name: &str, spec: &LabSpec) -> Result<Lab, LabError> {
        Self::guard_with(name, spec, &LabOptions::default())
    }

    pub fn guard_with(name: &str, spec: &LabSpec, options: &LabOptions) -> Result<Lab, LabError> {
        let mut lab = Lab::up_with(name, spec, options)?;
        lab.down_on_drop = true;
        Ok(lab)
    }

    pub fn load(name: &str) -> Result<Lab, LabError> {
        let state = LabState::load(name)?;
        let mut kube_nodes = Vec::new();
        for node in &state.nodes {
            kube_nodes.extend(KubeNode::load(&node.dir)?);
        }
        let real_nodes = !kube_nodes.is_empty();
        Ok(Lab {
            state,
            bins: Binaries::discover()?,
            down_on_drop: false,
            control_plane: None,
            kube_nodes,
            k8s_bin_dir: None,
            registry: None,
            real_nodes,
            no_object_source: false,
        })
    }

    fn build(&mut self, spec: &LabSpec, options: &LabOptions) -> Result<(), LabError> {
        let underlay: Ipv4Net = UNDERLAY_CIDR.parse().unwrap_or_else(|_| unreachable!("constant CIDR"));
        let ul_name = format!("{}-ul", self.state.prefix);
        let ul = NetNs::create(&ul_name)?;
        self.state.underlay_netns = Some(ul.leak());
        self.state.underlay_cidr = Some(underlay);
        let ul = NetNs::existing(&ul_name);
        ul.ip(&["link", "add", "br0", "type", "bridge"])?;
        ul.ip(&["link", "set", "br0", "up"])?;
        // The nodes' default gateway (see `node::create_netns`): the underlay has no uplink, and it must
        // not forward between its ports either, whatever the machine's defaults for new namespaces are.
        ul.sysctl("net.ipv4.ip_forward", "0")?;
        self.state.save()?;
        // Before any agent starts: a light-lab agent is ready once it has read its objects file.
        objects::save_record(&self.state.dir, &spec.manifests)?;
        self.write_objects()?;
        if let Some(bin_dir) = &options.kubernetes {
            self.start_control_plane(bin_dir, &ul_name, underlay.prefix_len())?;
            if options.real_nodes {
                self.start_registry(bin_dir, &ul_name)?;
                self.install_cluster_dns()?;
            }
        }
        // After the control plane's address, which stays the bridge's primary (its connections' source).
        let gateway = format!("{}/{}", node::underlay_gateway(underlay), underlay.prefix_len());
        ul.ip(&["addr", "add", &gateway, "dev", "br0"])?;
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
        node::create_netns(&node, &ul_name, underlay)?;
        self.state.nodes.push(node.clone());
        self.state.save()?;
        if self.real_nodes {
            return self.add_real_node(node);
        }
        self.write_objects()?;
        let kubeconfig = self.control_plane.as_ref().map(|cp| cp.admin_kubeconfig().to_path_buf());
        if kubeconfig.is_some() {
            self.kubectl_apply(&serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
            }))?;
        }
        let objects_file = (!self.no_object_source).then(|| objects::objects_file(&self.state.dir));
        let result = node::prepare_files(&mut node, &self.bins, kubeconfig.as_deref(), objects_file.as_deref());
        self.replace_node(&node)?;
        result?;
        let result = node::start_agent(&mut node, &self.bins);
        if result.is_ok() && kubeconfig.is_some() {
            // The pod CIDR is the controller-manager's choice; the agent reports it.
            let status = node::agent_status(&node.socket())?;
            node.pod_cidr = status.pod_cidr.parse().map_err(|source| LabError::BadPodCidr {
                node: node.name.clone(),
                cidr: status.pod_cidr.clone(),
                source,
            })?;
        }
        self.replace_node(&node)?;
        result?;
        self.route_between(&node)?;
        Ok(())
    }

    /// Routes each other node's pod CIDR from `node`, and `node`'s pod CIDR from each other node, over the
    /// underlay (until the overlay exists).
    fn route_between(&self, node: &NodeState) -> Result<(), LabError> {
        for peer in self.state.nodes.iter().filter(|p| p.name != node.name) {
            node::add_peer_route(node, peer)?;
            node::add_peer_route(peer, node)?;
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
        if self.real_nodes {
            return Err(LabError::RealNodes("lab pods need light nodes; on real nodes create Pods with kubectl"));
        }
        if self.state.pod(&spec.key()).is_some() {
            return Err(LabError::PodExists(spec.key()));
        }
        let node = self.node(&spec.node)?.clone();
        self.record_pod_object(spec)?;
        let seq = self.state.pods.len();
        let uid = if self.control_plane.is_some() { self.create_api_pod(spec)? } else { spec.uid.clone() };
        let mut pod = PodState {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid,
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
                let _ = pod::remove(Some(&node), &mut pod);
                return Err(e.into());
            }
        }
        self.state.pods.push(pod);
        self.state.save()?;
        self.write_objects()?;
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
        if self.control_plane.is_some() {
            self.kubectl(&["delete", "pod", "-n", &pod.namespace, &pod.name, "--grace-period=0", "--force", "--wait=false", "--ignore-not-found"], None)?;
        }
        let node = self.state.node(&pod.node).cloned();
        let problems = pod::remove(node.as_ref(), &mut pod).problems();
        self.state.save()?;
        self.forget_pod_object(&pod.namespace, &pod.name)?;
        if problems.is_empty() { Ok(()) } else { Err(LabError::Leftovers(problems)) }
    }

    /// Puts the Pod object of `spec` (Pending, with its labels) in the agents' objects file, so they know
    /// it before its CNI ADD, as kubelet's pods exist before theirs (an ADD waits for its pod's policy).
    pub fn record_pod_object(&self, spec: &PodSpec) -> Result<(), LabError> {
        let mut record = objects::load_record(&self.state.dir)?;
        if !record.pods.iter().any(|p| is_pod(p, &spec.namespace, &spec.name)) {
            record.pods.push(objects::pod_object(spec));
            objects::save_record(&self.state.dir, &record)?;
        }
        self.write_objects()
    }

    /// Takes the Pod object `namespace/name` out of the agents' objects file.
    pub fn forget_pod_object(&self, namespace: &str, name: &str) -> Result<(), LabError> {
        let mut record = objects::load_record(&self.state.dir)?;
        record.pods.retain(|p| !is_pod(p, namespace, name));
        objects::save_record(&self.state.dir, &record)?;
        self.write_objects()
    }

    /// Rewrites the agents' objects file from the lab's record and state (see [`crate::objects`]).
    pub fn write_objects(&self) -> Result<(), LabError> {
        if self.real_nodes {
            return Ok(()); // real nodes' agents read the apiserver
        }
        let record = objects::load_record(&self.state.dir)?;
        Ok(objects::write_objects(&self.state, &record)?)
    }

    /// `novanet lab apply`: adds or updates Namespaces, NetworkPolicies, Services and EndpointSlices, and the
    /// labels of pods in the lab; then rewrites the objects file. One line per object says what was done.
    pub fn apply(&self, changes: &novanet_k8s::Manifests) -> Result<Vec<String>, LabError> {
        self.light_only()?;
        let mut record = objects::load_record(&self.state.dir)?;
        let done = objects::apply(&mut record, &self.state, changes)?;
        objects::save_record(&self.state.dir, &record)?;
        self.write_objects()?;
        Ok(done)
    }

    /// `novanet lab delete`: removes the Namespaces, NetworkPolicies, Services and EndpointSlices named, then
    /// rewrites the objects file.
    pub fn delete(&self, changes: &novanet_k8s::Manifests) -> Result<Vec<String>, LabError> {
        self.light_only()?;
        let mut record = objects::load_record(&self.state.dir)?;
        let done = objects::delete(&mut record, changes)?;
        objects::save_record(&self.state.dir, &record)?;
        self.write_objects()?;
        Ok(done)
    }

    fn light_only(&self) -> Result<(), LabError> {
        if self.real_nodes || self.control_plane.is_some() || self.state.kubeconfig.is_some() {
            return Err(LabError::RealNodes("lab apply/delete change a light lab's objects; with an apiserver use kubectl"));
        }
        Ok(())
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

    /// Starts a node's agent again after it died (see [`crate::agent_supervision`]), recording its PID. An
    /// agent that does not become ready is stopped again, so the next attempt finds it dead, not hung.
    pub fn revive_agent(&mut self, node_name: &str) -> Result<u32, LabError> {
        let mut node = self.node(node_name)?.clone();
        node::stop_agent(&mut node); // a recorded PID that still runs something else is left alone
        let result = node::start_agent(&mut node, &self.bins);
        if result.is_err() {
            node::stop_agent(&mut node);
        }
        self.replace_node(&node)?;
        result?;
        Ok(node.agent_pid.unwrap_or_default())
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
        // The control plane goes first, so agents see an outage, never a mass deletion of pods.
        self.control_plane = None;
        self.registry = None;
        if let (Some(pid), Some(dir)) = (self.state.registry_pid.take(), self.state.registry_dir.take()) {
            if let Err(e) = crate::registry::stop_recorded(pid, &dir) {
                problems.push(format!("stopping the registry: {e}"));
            }
        }
        for pid in std::mem::take(&mut self.state.control_plane_pids) {
            for name in ["kube-", "etcd"] {
                crate::process::stop(pid, name, std::time::Duration::from_secs(5));
            }
        }
        // A failed CNI DEL (its agent down) leaves the pod's endpoint on its node: a leftover only if that
        // node is not removed right after, with its agent state, pins and directory.
        let mut del_failures: Vec<(String, String)> = Vec::new();
        while let Some(mut pod) = self.state.pods.pop() {
            let node = self.state.node(&pod.node).cloned();
            let removal = pod::remove(node.as_ref(), &mut pod);
            if let Some(e) = removal.del_failed {
                del_failures.push((pod.node.clone(), format!("pod {}: {e}", pod.key())));
            }
            problems.extend(removal.netns_left.map(|e| e.to_string()));
            let _ = self.state.save();
        }
        let mut kept = Vec::new();
        while let Some(node) = self.state.nodes.pop() {
            let name = node.name.clone();
            let (left, p) = self.dismantle_node(node);
            let (of_node, rest) = del_failures.into_iter().partition(|(n, _)| *n == name);
            del_failures = rest;
            let of_node = of_node.into_iter().map(|(_, p)| p);
            if left.is_some() || !p.is_empty() {
                problems.extend(of_node);
            } else {
                for p in of_node {
                    tracing::info!(node = %name, "{p}; nothing of it is left: its node is removed");
                }
            }
            kept.extend(left);
            problems.extend(p);
        }
        // Pods of nodes the state no longer knows: nothing removed their endpoints.
        problems.extend(del_failures.into_iter().map(|(_, p)| p));
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

impl Lab {
    fn start_control_plane(&mut self, bin_dir: &std::path::Path, ul_name: &str, prefix_len: u8) -> Result<(), LabError> {
        NetNs::existing(ul_name).ip(&["addr", "add", &format!("{CONTROL_PLANE_IP}/{prefix_len}"), "dev", "br0"])?;
        let mut cfg = ControlPlaneConfig::new(bin_dir, self.state.dir.join("control-plane"), ul_name, CONTROL_PLANE_IP);
        // A test's lab lives in its thread; `novanet lab up` must outlive the command.
        cfg.die_with_parent = self.down_on_drop;
        let cp = ControlPlane::start(cfg)?;
        self.state.control_plane_pids = cp.pids();
        self.state.kubeconfig = Some(cp.local_kubeconfig().to_path_buf());
        self.control_plane = Some(cp);
        self.state.save()?;
        Ok(())
    }

    pub fn control_plane(&mut self) -> Option<&mut ControlPlane> {
        self.control_plane.as_mut()
    }

    /// Runs kubectl against the lab's control plane (root-namespace kubeconfig), returning stdout.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
        let cp = self.control_plane.as_ref().ok_or(crate::probe::KubectlError::NoControlPlane)?;
        Ok(crate::probe::kubectl(&cp.config().bin_dir.join("kubectl"), cp.local_kubeconfig(), args, stdin)?)
    }

    fn kubectl_apply(&self, object: &serde_json::Value) -> Result<String, LabError> {
        self.kubectl(&["apply", "-o", "json", "-f", "-"], Some(&object.to_string()))
    }

    /// Creates the pod in the API (bound to its node, as the scheduler would) and returns its UID.
    fn create_api_pod(&self, spec: &PodSpec) -> Result<String, LabError> {
        let out = self.kubectl_apply(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels},
            "spec": {"nodeName": spec.node, "containers": [{"name": "main", "image": "busybox"}]},
        }))?;
        let args = || vec!["apply".to_string(), format!("pod {}/{}", spec.namespace, spec.name)];
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|source| crate::probe::KubectlError::Parse { args: args(), source })?;
        let uid = v["metadata"]["uid"].as_str().map(str::to_string);
        Ok(uid.ok_or_else(|| crate::probe::KubectlError::Missing { args: args(), what: "metadata.uid" })?)
    }
}

/// Real Kubernetes nodes ([`LabOptions::real_nodes`]).
impl Lab {
    /// Starts a real node in the (already made) namespace of `node`, waits for the kubelet's registration
    /// and the controller-manager's pod CIDR, and routes pod CIDRs between the nodes and from the control
    /// plane's namespace over the underlay.
    fn add_real_node(&mut self, mut node: NodeState) -> Result<(), LabError> {
        let cp = self.control_plane.as_ref().ok_or(LabError::RealNodes("real nodes need the lab's control plane"))?;
        let bin_dir = self.k8s_bin_dir.clone().ok_or(LabError::RealNodes("no Kubernetes bin dir"))?;
        let opts = KubeNodeOptions { die_with_parent: self.down_on_drop, ..Default::default() };
        let kube = KubeNode::start(&node, cp, &bin_dir, &opts)?;
        // Like any node image (kind's included), the node ships the reference `loopback` plugin, which
        // containerd's CRI runs for every sandbox's `lo`; NovaNet's chart installs only its own plugin.
        let cni_bin = kube.host_path("/opt/cni/bin").ok_or(LabError::RealNodes("the node has no /opt/cni/bin"))?;
        let loopback = std::path::Path::new("/usr/lib/cni/loopback");
        std::fs::copy(loopback, cni_bin.join("loopback")).map_err(|source| LabError::Io {
            what: "installing the node's loopback CNI plugin from",
            path: loopback.to_path_buf(),
            source,
        })?;
        if let Some(registry) = &self.registry {
            let certs_d = kube
                .host_path("/etc/containerd/certs.d")
                .ok_or(LabError::RealNodes("the node has no /etc/containerd/certs.d"))?;
            crate::registry::write_mirror_config(&certs_d, &registry.url(), &crate::registry::MIRRORED_UPSTREAMS)?;
        }
        self.kube_nodes.push(kube);
        let kubeconfig = cp.local_kubeconfig().to_path_buf();
        node.pod_cidr =
            kubenode::wait_node_pod_cidr(&bin_dir.join("kubectl"), &kubeconfig, &node.name, Duration::from_secs(90))?;
        self.replace_node(&node)?;
        self.route_between(&node)?;
        // Replies from the apiserver to pods (Service 10.96.0.1 -> 172.30.0.2) go back over the underlay.
        if let Some(ul) = &self.state.underlay_netns {
            NetNs::existing(ul).ip(&[
                "route",
                "replace",
                &node.pod_cidr.to_string(),
                "via",
                &node.underlay_ip.to_string(),
            ])?;
        }
        Ok(())
    }

    /// Starts the lab's registry next to the control plane and pushes the lab's images (pause, busybox,
    /// agnhost, and NovaNet's agent from a release build of this tree) into it.
    fn start_registry(&mut self, bin_dir: &std::path::Path, ul_name: &str) -> Result<(), LabError> {
        let work_dir = self.state.dir.join("registry");
        let registry = crate::registry::Registry::start(bin_dir, &work_dir, ul_name, CONTROL_PLANE_IP, REGISTRY_PORT)?;
        self.state.registry_pid = registry.pids().first().copied();
        self.state.registry_dir = Some(work_dir);
        self.state.save()?;
        let started = std::time::Instant::now();
        let archives = crate::images::build_fresh(&[])?;
        for archive in &archives {
            for reference in &archive.references {
                registry.push(&archive.path, reference)?;
            }
        }
        tracing::info!(images = archives.len(), elapsed = ?started.elapsed(), "lab images pushed");
        self.registry = Some(registry);
        Ok(())
    }

    /// CoreDNS as `kube-system/kube-dns` (see [`crate::cluster_dns`]); its pod starts once a CNI is installed.
    fn install_cluster_dns(&self) -> Result<(), LabError> {
        let cp = self.control_plane.as_ref().ok_or(LabError::RealNodes("cluster DNS needs the lab's control plane"))?;
        let ip = crate::cluster_dns::service_ip(cp.config().service_cidr);
        self.kubectl(&["apply", "-f", "-"], Some(&crate::cluster_dns::manifest(ip, crate::cluster_dns::CLUSTER_DOMAIN)))?;
        Ok(())
    }

    /// The real node `name` (labs made with [`LabOptions::real_nodes`]).
    pub fn kube_node(&self, name: &str) -> Option<&KubeNode> {
        self.kube_nodes.iter().find(|k| k.name() == name)
    }

    pub fn kube_nodes(&self) -> &[KubeNode] {
        &self.kube_nodes
    }

    /// The control plane's admin kubeconfig with the in-lab server address (`https://172.30.0.2:6443`), for
    /// tools run inside lab namespaces (e.g. `e2e.test` in the underlay namespace).
    pub fn control_plane_admin_kubeconfig(&self) -> Option<PathBuf> {
        self.control_plane.as_ref().map(|cp| cp.admin_kubeconfig().to_path_buf())
    }

    /// The directory of the Kubernetes binaries (labs with a control plane started by this process).
    pub fn k8s_bin_dir(&self) -> Option<&std::path::Path> {
        self.k8s_bin_dir.as_deref()
    }
}

impl Lab {
    /// Removes everything of one node: a real node's processes, mounts and cgroups first, then its
    /// namespace, bpffs and directory. Returns the node when something could not be removed (so its record
    /// is kept for a later `down`), and the problems met.
    fn dismantle_node(&mut self, mut node: NodeState) -> (Option<NodeState>, Vec<String>) {
        let kube = match self.kube_nodes.iter().position(|k| k.name() == node.name) {
            Some(i) => Some(self.kube_nodes.remove(i)),
            None => KubeNode::load(&node.dir).unwrap_or(None),
        };
        if let Some(mut kube) = kube
            && let Err(e) = kube.stop()
        {
            return (Some(node), vec![e.to_string()]);
        }
        let problems = node::remove(&mut node);
        let left = node.bpffs.is_some().then_some(node);
        (left, problems)
    }

    /// Removes one node (as if its machine went away); its Node object stays in the API, so adding a node
    /// of the same name again makes it rejoin.
    pub fn remove_node(&mut self, name: &str) -> Result<(), LabError> {
        let idx = self
            .state
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| LabError::NoSuchNode(name.to_string()))?;
        let node = self.state.nodes.remove(idx);
        let (left, problems) = self.dismantle_node(node);
        self.state.nodes.extend(left);
        self.state.save()?;
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

fn is_pod(p: &novanet_k8s::k8s_openapi::api::core::v1::Pod, namespace: &str, name: &str) -> bool {
    p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name)
}
