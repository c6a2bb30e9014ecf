//! A real Kubernetes node inside a lab node: containerd 1.6, the genuine kubelet and kube-proxy, running in
//! the node's network namespace and in a mount (and UTS) namespace of its own, as a kind node's container
//! would (see [`mounts`] for the filesystem view). The Node object is the kubelet's own registration; nothing
//! NovaNet runs here until it is installed (its Helm chart's standard host paths work unchanged).
//!
//! ```no_run
//! # use novanet_lab::kubenode::*;
//! # fn f(node: &novanet_lab::state::NodeState, cp: &novanet_lab::controlplane::ControlPlane) -> Result<(), KubeNodeError> {
//! let mut kn = KubeNode::start(node, cp, std::path::Path::new("/cache/k8s/bin"), &KubeNodeOptions::default())?;
//! kn.import_image(std::path::Path::new("/tmp/pause.tar"))?;              // ctr -n k8s.io images import
//! let conf_dir = kn.host_path("/etc/cni/net.d").unwrap_or_default();      // the node's /etc/cni/net.d, seen from the host
//! kn.exec_in_node("ip").args(["route"]).status().ok();                    // a command in the node's namespaces
//! kn.stop()?;
//! # Ok(()) }
//! ```
//!
//! Invariants: every process of the node runs in `<cgroup root>/system` (daemons, containerd's shims) or in
//! the kubelet's `<cgroup root>/kubepods` (pods), so teardown finds all of them, and only them; recorded PIDs
//! are signalled only while they still run the expected program in the node's mount namespace. The node's
//! record (`<node dir>/kubenode.json`) is rewritten after every step, so [`KubeNode::load`] + `stop` finishes
//! a half-built node from another process. Teardown: kube-proxy, kubelet, the pods' processes, containerd,
//! its shims, the holder (with it the mount namespace and every mount in it), the cgroups in every hierarchy,
//! then the host's sysctls are compared with the values recorded at start.

mod cgroups;
mod config;
mod mounts;
mod procs;
mod sysctls;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use config::{CERTS_D, CONTAINERD_SOCKET, SANDBOX_IMAGE};
pub use mounts::NODE_DIRS;
pub use sysctls::{HostSysctls, KUBELET_SYSCTLS};

use crate::controlplane::{ControlPlane, ControlPlaneError};
use crate::state::NodeState;
use crate::probe::{KubectlError, ProbeError};

/// PATH of every process started in the node.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Programs from the host the node needs.
pub const HOST_TOOLS: [&str; 9] =
    ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "bash", "iptables", "curl"];
/// The node's record, in its directory.
const STATE_FILE: &str = "kubenode.json";

#[derive(Debug, thiserror::Error)]
pub enum KubeNodeError {
    #[error("{0} is not installed (needed on the host to run a real node)")]
    MissingTool(String),
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{component} of node {node} is not ready after {secs}s ({last}); {log} ends with:\n{tail}")]
    NotReady { component: &'static str, node: String, secs: u64, #[source] last: Box<ProbeError>, log: PathBuf, tail: String },
    #[error("node {node}: the pod CIDR {cidr:?} is not a CIDR: {source}")]
    BadPodCidr { node: String, cidr: String, source: ipnet::AddrParseError },
    #[error("node {node} is not {what} after {secs}s: {last}")]
    Timeout { node: String, what: &'static str, secs: u64, #[source] last: Box<ProbeError> },
    #[error("stopping node {node} left things behind: {problems:?}")]
    Leftovers { node: String, problems: Vec<String> },
}

type Result<T, E = KubeNodeError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KubeNodeError + 'a {
    move |source| KubeNodeError::Io { what, path: path.to_path_buf(), source }
}

/// How a node is run.
#[derive(Debug, Clone)]
pub struct KubeNodeOptions {
    /// Have the kernel SIGKILL the node's daemons when the thread that started them ends (tests). containerd's
    /// shims and the pods are not covered: `stop` (or `novanet lab down`) removes them.
    pub die_with_parent: bool,
    /// Run kube-proxy (iptables mode).
    pub kube_proxy: bool,
    /// The cluster DNS Service address pods are given; default: the 10th address of the service CIDR.
    pub cluster_dns: Option<Ipv4Addr>,
    pub cluster_domain: String,
    /// How long containerd and the kubelet each get to answer.
    pub start_timeout: Duration,
    /// `--v` of kubelet and kube-proxy.
    pub verbosity: u8,
}

impl Default for KubeNodeOptions {
    fn default() -> Self {
        KubeNodeOptions {
            die_with_parent: true,
            kube_proxy: true,
            cluster_dns: None,
            cluster_domain: crate::cluster_dns::CLUSTER_DOMAIN.into(),
            start_timeout: Duration::from_secs(60),
            verbosity: 1,
        }
    }
}

/// What a node made, as recorded in `<node dir>/kubenode.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeNodeState {
    pub name: String,
    pub netns: String,
    pub dir: PathBuf,
    pub underlay_ip: Ipv4Addr,
    /// The holder's process name and the prefix of the node's mount sources (`novanet-<tag>-run`, ...).
    pub tag: String,
    /// The kubelet's cgroupRoot (`/novanet-<netns>`), present in every hierarchy.
    pub cgroup_root: String,
    pub holder_pid: Option<u32>,
    /// Inode of the node's mount namespace (`mnt:[N]`); kept after `stop`, to check that it is gone.
    pub mount_ns: Option<u64>,
    pub containerd_pid: Option<u32>,
    pub kubelet_pid: Option<u32>,
    pub kube_proxy_pid: Option<u32>,
    /// Host values of the sysctls a kubelet sets, before this node started.
    pub host_sysctls: HostSysctls,
}

/// A running real node. Dropping it does nothing unless [`KubeNode::stop_on_drop`] was asked for.
#[derive(Debug)]
pub struct KubeNode {
    state: KubeNodeState,
    stop_on_drop: bool,
    /// How long `start` took (zero for a node loaded from its record).
    startup: Duration,
}

/// The host programs a real node needs that are not on PATH.
pub fn missing_host_tools() -> Vec<String> {
    HOST_TOOLS
        .iter()
        .filter(|t| {
            !NODE_PATH.split(':').any(|d| Path::new(d).join(t).is_file())
        })
        .map(|t| t.to_string())
        .collect()
}

impl KubeNode {
    /// Starts the node `node` (its network namespace must exist) against `cp`: holder and mounts,
    /// containerd, kubelet (registers the Node), kube-proxy. Returns once containerd answers and the kubelet's
    /// healthz is ok; the Node is then registering (see [`wait_node_pod_cidr`], [`wait_node_ready`]). On
    /// failure everything made so far is removed and the logs in the node directory are kept.
    pub fn start(node: &NodeState, cp: &ControlPlane, bin_dir: &Path, opts: &KubeNodeOptions) -> Result<KubeNode> {
        if let Some(tool) = missing_host_tools().into_iter().next() {
            return Err(KubeNodeError::MissingTool(tool));
        }
        let mut needed = vec!["kubelet"];
        if opts.kube_proxy {
            needed.push("kube-proxy");
        }
        crate::controlplane::require_binaries(bin_dir, &needed)?;
        let cgroup_root = format!("/novanet-{}", node.netns);
        if let Some(dir) = cgroups::existing(&cgroup_root).into_iter().next() {
            // Left by a crashed lab whose namespace had the same name: never adopt (or remove) it here.
            return Err(KubeNodeError::Command {
                command: format!("create cgroup root {cgroup_root}"),
                detail: format!("{} already exists (a crashed lab's? remove it by hand)", dir.display()),
            });
        }
        fs::create_dir_all(&node.dir).map_err(io("creating", &node.dir))?;
        let started = Instant::now();
        let mut kn = KubeNode {
            state: KubeNodeState {
                name: node.name.clone(),
                netns: node.netns.clone(),
                dir: node.dir.clone(),
                underlay_ip: node.underlay_ip,
                tag: format!("novanet-node-{}", node.netns),
                cgroup_root,
                holder_pid: None,
                mount_ns: None,
                containerd_pid: None,
                kubelet_pid: None,
                kube_proxy_pid: None,
                host_sysctls: HostSysctls::record(),
            },
            stop_on_drop: false,
            startup: Duration::ZERO,
        };
        kn.save()?;
        match kn.bring_up(cp, bin_dir, opts) {
            Ok(()) => {
                kn.startup = started.elapsed();
                tracing::info!(node = %kn.state.name, startup = ?kn.startup, "real node started");
                Ok(kn)
            }
            Err(e) => {
                let problems = kn.teardown();
                if !problems.is_empty() {
                    tracing::warn!(node = %kn.state.name, ?problems, "cleaning up a failed node start left things");
                }
                Err(e)
            }
        }
    }

    /// The node recorded in `dir` (by a `start` in this or another process), if any.
    pub fn load(dir: &Path) -> Result<Option<KubeNode>> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let state = serde_json::from_str(&text).map_err(|e| KubeNodeError::Command {
            command: format!("parse {}", path.display()),
            detail: e.to_string(),
        })?;
        Ok(Some(KubeNode { state, stop_on_drop: false, startup: Duration::ZERO }))
    }

    /// Stop the node when this value drops (tests that use a node without a lab).
    pub fn stop_on_drop(mut self, yes: bool) -> Self {
        self.stop_on_drop = yes;
        self
    }

    /// How long [`KubeNode::start`] took: holder and mounts, containerd, kubelet healthy, kube-proxy listening.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    pub fn state(&self) -> &KubeNodeState {
        &self.state
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The kubelet's cgroupRoot.
    pub fn cgroup_root(&self) -> &str {
        &self.state.cgroup_root
    }

    /// PIDs of the node's daemons: holder, containerd, kubelet, kube-proxy (those started).
    pub fn pids(&self) -> Vec<u32> {
        [self.state.holder_pid, self.state.containerd_pid, self.state.kubelet_pid, self.state.kube_proxy_pid]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Every process in the node's cgroup tree: daemons, containerd's shims, the pods' processes.
    pub fn all_pids(&self) -> Vec<u32> {
        cgroups::procs(&self.state.cgroup_root, "")
    }

    /// `/proc/<holder>/ns/mnt`: the node's mount namespace.
    pub fn mount_ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.state.holder_pid.unwrap_or(0)))
    }

    /// `/proc/<holder>/root`: the node's filesystem as the node sees it, reachable from the host.
    pub fn root_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.state.holder_pid.unwrap_or(0)))
    }

    /// containerd's socket, reachable from the host (`ctr -a <this>`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.root_path().join(CONTAINERD_SOCKET.trim_start_matches('/'))
    }

    /// Where a file under one of [`NODE_DIRS`] (e.g. `/etc/cni/net.d/10-x.conflist`) lives on the host.
    pub fn host_path(&self, node_path: &str) -> Option<PathBuf> {
        NODE_DIRS
            .iter()
            .any(|d| node_path == *d || node_path.starts_with(&format!("{d}/")))
            .then(|| self.state.dir.join("root").join(node_path.trim_start_matches('/')))
    }

    /// Log file of `containerd`, `kubelet`, `kube-proxy`, `holder` or `mounts`.
    pub fn log(&self, component: &str) -> PathBuf {
        self.state.dir.join(format!("{component}.log"))
    }

    /// A command running `program` in the node's network, mount and UTS namespaces (paths on its command
    /// line are the node's).
    pub fn exec_in_node(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let h = self.state.holder_pid.unwrap_or(0);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.state.netns))
            .arg(format!("--mount=/proc/{h}/ns/mnt"))
            .arg(format!("--uts=/proc/{h}/ns/uts"))
            .arg("--")
            .arg(program)
            .env("PATH", NODE_PATH);
        cmd
    }

    /// `ctr -n k8s.io images import <archive>` (an OCI archive on the host) into the node's containerd.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.containerd_socket()).args(["-n", "k8s.io", "images", "import"]).arg(archive);
        run(&mut cmd).map(|_| ())
    }

    /// Stops and removes everything of the node (see the module documentation); an error lists what is left.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_on_drop = false;
        let problems = self.teardown();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KubeNodeError::Leftovers { node: self.state.name.clone(), problems })
        }
    }

    fn save(&self) -> Result<()> {
        let path = self.state.dir.join(STATE_FILE);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&self.state).map_err(|e| KubeNodeError::Command {
            command: "serialize the node record".into(),
            detail: e.to_string(),
        })?;
        fs::write(&tmp, body).map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("writing", &path))
    }

    /// A node daemon's command: `nsenter` into the node's namespaces, then `program`.
    fn node_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.exec_in_node(program)
    }

    fn spawn(&self, cmd: &mut Command, component: &str, opts: &KubeNodeOptions) -> Result<u32> {
        let log = self.log(component);
        procs::spawn(cmd, &log, cgroups::system_procs_files(&self.state.cgroup_root), opts.die_with_parent)
            .map_err(io("starting a node process, log", &log))
    }

    fn bring_up(&mut self, cp: &ControlPlane, bin_dir: &Path, opts: &KubeNodeOptions) -> Result<()> {
        let dir = self.state.dir.clone();
        let cg = self.state.cgroup_root.clone();
        cgroups::create(&cg).map_err(io("creating the node cgroups", Path::new(&cg)))?;

        // The holder: the node's mount and UTS namespaces live as long as it does.
        let mut holder = mounts::holder_command(&self.state.netns, &self.state.name, &self.state.tag);
        let pid = self.spawn(&mut holder, "holder", opts)?;
        self.state.holder_pid = Some(pid);
        self.save()?;
        let own = procs::mnt_ns(std::process::id());
        self.wait("holder", Duration::from_secs(10), || {
            let ready = procs::runs(pid, &self.state.tag, None) && procs::mnt_ns(pid).is_some_and(|m| Some(m) != own);
            if ready { Ok(()) } else { Err(ProbeError::NotYet("no mount namespace of its own yet")) }
        })?;
        self.state.mount_ns = procs::mnt_ns(pid);
        self.save()?;

        // The node's filesystem view.
        let keep = mounts::dirs_to_keep(&[dir.clone(), cp.config().work_dir.clone(), bin_dir.to_path_buf()]);
        let script = mounts::setup_script(&dir, &self.state.tag["novanet-".len()..], &keep);
        let mounts_log = self.log("mounts");
        fs::write(dir.join("mounts.sh"), &script).map_err(io("writing", &dir))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{pid}/ns/mnt")).args(["--", "bash", "-c", &script]);
        let out = cmd.output().map_err(io("running the mount script for", &dir))?;
        let _ = fs::write(&mounts_log, [out.stdout.as_slice(), out.stderr.as_slice()].concat());
        if !out.status.success() {
            return Err(KubeNodeError::Command {
                command: format!("node mount setup ({})", dir.join("mounts.sh").display()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }

        self.write_configs(cp, opts)?;

        // containerd.
        let mut cmd = self.node_command("containerd");
        cmd.args(["--config", "/etc/containerd/config.toml"]);
        let pid = self.spawn(&mut cmd, "containerd", opts)?;
        self.state.containerd_pid = Some(pid);
        self.save()?;
        let socket = self.containerd_socket();
        self.wait("containerd", opts.start_timeout, || {
            if !procs::alive(pid) {
                return Err(ProbeError::Exited);
            }
            crate::netns::run(Command::new("ctr").arg("-a").arg(&socket).arg("version")).map(|_| ()).map_err(ProbeError::from)
        })?;

        // kubelet: registers the Node itself.
        let mut cmd = self.node_command(bin_dir.join("kubelet"));
        cmd.args([
            "--config=/var/lib/kubelet/config.yaml",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--root-dir=/var/lib/kubelet",
        ])
        .arg(format!("--node-ip={}", self.state.underlay_ip))
        .arg(format!("--hostname-override={}", self.state.name))
        .arg(format!("--v={}", opts.verbosity));
        let pid = self.spawn(&mut cmd, "kubelet", opts)?;
        self.state.kubelet_pid = Some(pid);
        self.save()?;
        self.wait("kubelet", opts.start_timeout, || {
            if !procs::alive(pid) {
                return Err(ProbeError::Exited);
            }
            self.curl("http://127.0.0.1:10248/healthz", true)
        })?;

        if opts.kube_proxy {
            let mut cmd = self.node_command(bin_dir.join("kube-proxy"));
            cmd.arg("--config=/var/lib/kube-proxy/config.conf").arg(format!("--v={}", opts.verbosity));
            let pid = self.spawn(&mut cmd, "kube-proxy", opts)?;
            self.state.kube_proxy_pid = Some(pid);
            self.save()?;
            // Listening is enough: its healthz says 503 until it has synced rules, which needs the Node.
            self.wait("kube-proxy", opts.start_timeout, || {
                if !procs::alive(pid) {
                    return Err(ProbeError::Exited);
                }
                self.curl("http://127.0.0.1:10256/healthz", false)
            })?;
        }
        Ok(())
    }

    fn write_configs(&self, cp: &ControlPlane, opts: &KubeNodeOptions) -> Result<()> {
        let name = &self.state.name;
        let put = |node_path: &str, body: &[u8]| -> Result<()> {
            let path = self.state.dir.join("root").join(node_path.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            fs::write(&path, body).map_err(io("writing", &path))
        };
        let copy = |node_path: &str, from: &Path| -> Result<()> {
            put(node_path, &fs::read(from).map_err(io("reading", from))?)
        };
        put("/etc/containerd/config.toml", config::containerd().as_bytes())?;
        fs::create_dir_all(self.state.dir.join("root/etc/containerd/certs.d"))
            .map_err(io("creating", &self.state.dir))?;
        copy("/etc/kubernetes/pki/ca.crt", &cp.pki().ca.cert)?;
        let kubelet_kc = cp.issue_kubeconfig(&format!("kubelet-{name}"), &format!("system:node:{name}"), &["system:nodes"])?;
        copy("/etc/kubernetes/kubelet.conf", &kubelet_kc)?;
        let cfg = cp.config();
        let dns = opts.cluster_dns.unwrap_or_else(|| crate::cluster_dns::service_ip(cfg.service_cidr));
        let kubelet = config::kubelet(&config::KubeletParams {
            node_ip: self.state.underlay_ip,
            cgroup_root: &self.state.cgroup_root,
            cluster_dns: dns,
            cluster_domain: &opts.cluster_domain,
        });
        put("/var/lib/kubelet/config.yaml", kubelet.as_bytes())?;
        if opts.kube_proxy {
            let kc = cp.issue_kubeconfig(&format!("kube-proxy-{name}"), "system:kube-proxy", &[])?;
            copy("/etc/kubernetes/kube-proxy.conf", &kc)?;
            put("/var/lib/kube-proxy/config.conf", config::kube_proxy(name, cfg.cluster_cidr).as_bytes())?;
        }
        Ok(())
    }

    /// curl inside the node's network namespace; with `fail`, only a 2xx answer counts.
    fn curl(&self, url: &str, fail: bool) -> std::result::Result<(), ProbeError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.state.netns))
            .args(["--", "curl", "-sS", "--max-time", "2", "-o", "/dev/null"]);
        if fail {
            cmd.arg("--fail");
        }
        crate::netns::run(cmd.arg(url)).map(|_| ()).map_err(ProbeError::from)
    }

    fn wait(
        &self,
        component: &'static str,
        timeout: Duration,
        mut probe: impl FnMut() -> std::result::Result<(), ProbeError>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            let last = match probe() {
                Ok(()) => {
                    tracing::debug!(node = %self.state.name, component, after = ?start.elapsed(), "ready");
                    return Ok(());
                }
                Err(e) => e,
            };
            if start.elapsed() >= timeout || matches!(last, ProbeError::Exited) {
                let log = self.log(component);
                return Err(KubeNodeError::NotReady {
                    component,
                    node: self.state.name.clone(),
                    secs: start.elapsed().as_secs(),
                    last: Box::new(last),
                    tail: log_tail(&log),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Removes everything; returns what could not be removed. Safe to call again.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mnt = self.state.mount_ns;
        let cg = self.state.cgroup_root.clone();
        let daemons: [(&str, Option<u32>, Duration); 2] = [
            ("kube-proxy", self.state.kube_proxy_pid.take(), Duration::from_secs(5)),
            ("kubelet", self.state.kubelet_pid.take(), Duration::from_secs(10)),
        ];
        for (needle, pid, grace) in daemons {
            if let Some(pid) = pid
                && !procs::stop(pid, needle, mnt, grace)
            {
                problems.push(format!("{needle} (pid {pid}) did not stop"));
            }
        }
        let _ = self.save();
        // The pods' processes, then containerd, then its shims and anything else in the node's cgroups.
        problems.extend(kill_cgroup(&cg, "kubepods", &[]));
        if let Some(pid) = self.state.containerd_pid.take()
            && !procs::stop(pid, "containerd", mnt, Duration::from_secs(10))
        {
            problems.push(format!("containerd (pid {pid}) did not stop"));
        }
        let holder: Vec<u32> = self.state.holder_pid.into_iter().collect();
        problems.extend(kill_cgroup(&cg, "", &holder));
        if let Some(pid) = self.state.holder_pid.take()
            && !procs::stop(pid, &self.state.tag, mnt, Duration::from_secs(5))
        {
            problems.push(format!("the holder (pid {pid}) did not stop"));
        }
        let _ = self.save();
        // The mount namespace (and every mount in it) goes with its last process.
        if let Some(m) = mnt {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = procs::in_mount_ns(m);
                if left.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    problems.push(format!("processes still in the node's mount namespace mnt:[{m}]: {left:?}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        problems.extend(cgroups::remove(&cg, Duration::from_secs(10)));
        for line in leaked_mounts(&self.state) {
            problems.push(format!("mount left in the host's namespace: {line}"));
        }
        for note in self.state.host_sysctls.restore() {
            problems.push(format!("{note} (changed while node {} ran, despite the mask)", self.state.name));
        }
        let _ = self.save();
        problems
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if self.stop_on_drop
            && let Err(e) = self.stop()
        {
            eprintln!("kubenode {}: {e}", self.state.name);
        }
    }
}

/// SIGKILLs every process in `<root>/<sub>` (all of the node's cgroups with `sub` ""), except `keep`, until
/// none is left (they are ours: the cgroup tree is the node's own).
fn kill_cgroup(root: &str, sub: &str, keep: &[u32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = cgroups::procs(root, sub).into_iter().filter(|p| !keep.contains(p)).collect();
        if pids.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return pids
                .iter()
                .map(|p| format!("pid {p} ({}) in cgroup {root}/{sub} survived SIGKILL", procs::command_line(*p)))
                .collect();
        }
        for pid in pids {
            procs::kill9(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's cgroup directories (`<hierarchy>/<cgroup root>`) that exist now.
pub fn cgroup_dirs(cgroup_root: &str) -> Vec<PathBuf> {
    cgroups::existing(cgroup_root)
}

/// Processes (PID, command line) in the mount namespace with inode `mnt`.
pub fn processes_in_mount_ns(mnt: u64) -> Vec<(u32, String)> {
    procs::in_mount_ns(mnt)
}

/// Lines of the host's mount table that name the node's directory or its mount sources.
pub fn leaked_mounts(state: &KubeNodeState) -> Vec<String> {
    let dir = state.dir.display().to_string();
    let tag = &state.tag["novanet-".len().min(state.tag.len())..];
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&dir) || l.contains(&format!("novanet-{tag}-")))
        .map(str::to_string)
        .collect()
}

/// Runs a command; non-zero exit is an error with its stderr.
fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| KubeNodeError::Command { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(KubeNodeError::Command {
            command,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out)
}

fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else { return format!("(cannot read {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(3000)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> std::result::Result<String, KubectlError> {
    crate::probe::kubectl(kubectl, kubeconfig, args, None).map(|out| out.trim().to_string())
}

/// Waits until the Node `name` exists (the kubelet registered it) and has a pod CIDR (the
/// controller-manager's choice), and returns that CIDR.
pub fn wait_node_pod_cidr(kubectl_bin: &Path, kubeconfig: &Path, name: &str, timeout: Duration) -> Result<Ipv4Net> {
    let deadline = Instant::now() + timeout;
    let mut last = ProbeError::NotYet("not asked yet");
    while Instant::now() < deadline {
        match kubectl(kubectl_bin, kubeconfig, &["get", "node", name, "-o", "jsonpath={.spec.podCIDR}"]) {
            Ok(cidr) if !cidr.is_empty() => {
                return cidr.parse().map_err(|source| KubeNodeError::BadPodCidr { node: name.into(), cidr, source });
            }
            Ok(_) => last = ProbeError::NotYet("registered, no pod CIDR yet"),
            Err(e) => last = e.into(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(KubeNodeError::Timeout { node: name.into(), what: "registered with a pod CIDR", secs: timeout.as_secs(), last: Box::new(last) })
}

/// Waits until the Node `name` is Ready (it needs a CNI configuration on the node).
pub fn wait_node_ready(kubectl_bin: &Path, kubeconfig: &Path, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = ProbeError::NotYet("not asked yet");
    while Instant::now() < deadline {
        let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}";
        match kubectl(kubectl_bin, kubeconfig, &["get", "node", name, "-o", jsonpath]) {
            Ok(s) if s.starts_with("True") => return Ok(()),
            Ok(s) => last = ProbeError::Reports(s),
            Err(e) => last = e.into(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(KubeNodeError::Timeout { node: name.into(), what: "Ready", secs: timeout.as_secs(), last: Box::new(last) })
}
