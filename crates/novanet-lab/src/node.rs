//! Lab nodes: a network namespace on the lab underlay, a bpffs of its own, the CNI directories, and a
//! real `novanet-agent` running inside the namespace with paths under the node's lab directory.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use novanet_api::v1::StatusResponse;

use crate::binaries::Binaries;
use crate::netns::{self, NetNs, NetnsError};
use crate::probe::{AgentStatusError, ProbeError};
use crate::process;
use crate::state::NodeState;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("agent of node {node} did not become ready within {secs}s; see {log}: {last}; its log ends:\n{tail}")]
    AgentNotReady { node: String, secs: u64, log: String, tail: String, #[source] last: Box<ProbeError> },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io { what, path: path.to_path_buf(), source }
}

/// Name of the node's underlay interface inside its namespace.
pub const UNDERLAY_IFNAME: &str = "ul0";

/// Creates the node's namespace and joins it to the underlay bridge. Like any real node it has a default
/// route, through the underlay's gateway address (inside the lab's underlay namespace, which forwards
/// nothing): without one a hostNetwork client's connect() to a Service address fails with ENETUNREACH
/// before the node's NAT (kube-proxy's DNAT in OUTPUT) sees it.
pub fn create_netns(node: &NodeState, underlay_ns: &str, underlay: ipnet::Ipv4Net) -> Result<(), NodeError> {
    let prefix_len = underlay.prefix_len();
    let ns = NetNs::create(&node.netns)?;
    let peer = format!("u{}", node.index);
    ns.ip(&["link", "add", UNDERLAY_IFNAME, "type", "veth", "peer", "name", &peer, "netns", underlay_ns])?;
    let ul = NetNs::existing(underlay_ns);
    ul.ip(&["link", "set", &peer, "master", "br0", "up"])?;
    ns.ip(&["addr", "add", &format!("{}/{}", node.underlay_ip, prefix_len), "dev", UNDERLAY_IFNAME])?;
    ns.ip(&["link", "set", UNDERLAY_IFNAME, "up"])?;
    ns.ip(&["route", "add", "default", "via", &underlay_gateway(underlay).to_string(), "dev", UNDERLAY_IFNAME])?;
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
    ns.leak();
    Ok(())
}

/// Routes to another node's pod CIDR through its underlay address (native routing inside the lab,
/// until the overlay exists).
pub fn add_peer_route(node: &NodeState, peer: &NodeState) -> Result<(), NodeError> {
    NetNs::existing(&node.netns).ip(&[
        "route",
        "replace",
        &peer.pod_cidr.to_string(),
        "via",
        &peer.underlay_ip.to_string(),
        "dev",
        UNDERLAY_IFNAME,
    ])?;
    Ok(())
}

/// Prepares the node directory: bpffs, CNI plugin and conflist (through the agent's own `install-cni`,
/// as the DaemonSet's init container does), and the agent configuration.
/// With `kubeconfig`, the agent takes its pod CIDR from the Node object and watches the API; without,
/// the node's pod CIDR is static and its cluster objects come from the lab's `objects_file`, if any (the agent runs
/// in the node's network namespace only, so the lab directory's path is valid for it).
pub fn prepare_files(
    node: &mut NodeState,
    bins: &Binaries,
    kubeconfig: Option<&Path>,
    objects_file: Option<&Path>,
) -> Result<(), NodeError> {
    for dir in [node.dir.clone(), node.state_dir(), node.bpffs_dir(), node.dir.join("run")] {
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    }
    let bpffs = node.bpffs_dir();
    netns::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
    node.bpffs = Some(bpffs.clone());
    let source = match kubeconfig {
        Some(k) => format!("podCIDRSource: kubernetes\nkubeconfig: {}\norphanSweepSeconds: 2", k.display()),
        None => {
            let objects = objects_file.map(|f| format!("\nobjectsFile: {}", f.display())).unwrap_or_default();
            format!("podCIDRSource: static\npodCIDR: {}{objects}", node.pod_cidr)
        }
    };
    let config = format!(
        "nodeName: {name}\n{source}\nsocketPath: {sock}\nstateDir: {state}\n\
         bpffsRoot: {bpf}\nunderlayIP: {ul}\ncni: {{binDir: {bin}, confDir: {conf}}}\n",
        name = node.name,
        sock = node.socket().display(),
        state = node.state_dir().display(),
        bpf = bpffs.display(),
        ul = node.underlay_ip,
        bin = node.cni_bin_dir().display(),
        conf = node.cni_conf_dir().display(),
    );
    let cfg = node.config_file();
    fs::write(&cfg, config).map_err(io("writing", &cfg))?;
    netns::run(
        Command::new(&bins.agent)
            .arg("--config")
            .arg(&cfg)
            .arg("install-cni")
            .arg("--bin-dir")
            .arg(node.cni_bin_dir())
            .arg("--conf-dir")
            .arg(node.cni_conf_dir())
            .arg("--plugin")
            .arg(&bins.cni)
            .arg("--log-file")
            .arg(node.dir.join("cni.log")),
    )?;
    Ok(())
}

/// Starts the agent inside the node's namespace and waits until it answers.
pub fn start_agent(node: &mut NodeState, bins: &Binaries) -> Result<(), NodeError> {
    let mut cmd = NetNs::existing(&node.netns).command(&bins.agent.display().to_string());
    cmd.arg("--config").arg(node.config_file()).env("RUST_LOG", "info");
    let log = node.agent_log();
    let pid = process::spawn_detached(&mut cmd, &log).map_err(io("starting the agent, log", &log))?;
    node.agent_pid = Some(pid);
    wait_agent_ready(node, Duration::from_secs(20))?;
    Ok(())
}

/// Stops the agent (SIGTERM; SIGKILL after a grace period). The pinned datapath stays.
pub fn stop_agent(node: &mut NodeState) {
    if let Some(pid) = node.agent_pid.take() {
        process::stop(pid, "novanet-agent", Duration::from_secs(5));
    }
}

/// Kills the agent with SIGKILL, as a crash would.
pub fn kill_agent(node: &mut NodeState) {
    if let Some(pid) = node.agent_pid.take() {
        process::signal(pid, "novanet-agent", nix::sys::signal::Signal::SIGKILL);
        process::wait_gone(pid, "novanet-agent", Duration::from_secs(5));
    }
}

/// The agent's status over its socket, as `novanetctl status` asks for it.
pub fn agent_status(socket: &Path) -> Result<StatusResponse, AgentStatusError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AgentStatusError::Runtime)?;
    rt.block_on(async {
        let mut client = novanet_api::connect_unix(socket, Duration::from_secs(2))
            .await
            .map_err(|source| AgentStatusError::Connect { socket: socket.to_path_buf(), source })?;
        client
            .status(novanet_api::v1::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|source| AgentStatusError::Rpc { socket: socket.to_path_buf(), source: Box::new(source) })
    })
}

fn wait_agent_ready(node: &NodeState, timeout: Duration) -> Result<(), NodeError> {
    let deadline = Instant::now() + timeout;
    let mut last = ProbeError::NotYet("not probed yet");
    while Instant::now() < deadline {
        match agent_status(&node.socket()) {
            Ok(s) if s.ready => return Ok(()),
            Ok(_) => last = ProbeError::NotYet("the agent reports not ready"),
            Err(e) => last = e.into(),
        }
        if let Some(pid) = node.agent_pid {
            if !process::runs(pid, "novanet-agent") {
                last = ProbeError::Exited;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The log goes with the lab when a test's lab is removed: keep its end in the error.
    let text = std::fs::read_to_string(node.agent_log()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Err(NodeError::AgentNotReady {
        node: node.name.clone(),
        secs: timeout.as_secs(),
        log: node.agent_log().display().to_string(),
        tail,
        last: Box::new(last),
    })
}

/// Removes everything of the node: agent, bpffs (and with it every pin), namespace, directory.
pub fn remove(node: &mut NodeState) -> Vec<String> {
    let mut problems = Vec::new();
    stop_agent(node);
    if let Some(bpffs) = node.bpffs.take() {
        if let Err(e) = netns::run(Command::new("umount").arg(&bpffs)) {
            if is_mounted(&bpffs) {
                problems.push(e.to_string());
                node.bpffs = Some(bpffs);
            }
        }
    }
    if let Err(e) = NetNs::delete(&node.netns) {
        problems.push(e.to_string());
    }
    if node.bpffs.is_none() {
        if let Err(e) = fs::remove_dir_all(&node.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("removing {}: {e}", node.dir.display()));
            }
        }
    }
    problems
}

pub fn is_mounted(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(&path.display().to_string())))
        .unwrap_or(false)
}

/// The underlay's gateway, every node's default route: `<underlay network> + 1`, on the underlay namespace's
/// bridge. That namespace has no uplink and never forwards, so whatever a node sends there that no one
/// translated is dropped inside the lab.
pub fn underlay_gateway(underlay: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(underlay.network()) + 1)
}

/// The node's underlay address: `<underlay network> + 10 + index`.
pub fn underlay_ip(underlay: ipnet::Ipv4Net, index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(underlay.network()) + 10 + index)
}
