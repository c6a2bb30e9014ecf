//! Lab pods: a network namespace wired by the real `novanet-cni`, invoked exactly as a container runtime
//! (libcni) invokes it: the CNI environment, the plugin's network configuration on stdin built from the
//! node's conflist (with `name` and `cniVersion` injected, `prevResult` from the cached ADD result on
//! CHECK and DEL), run inside the node's network namespace.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::netns::{NetNs, NetnsError};
use crate::process;
use crate::state::{NodeState, PodState};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("reading the conflist {path}: {detail}")]
    Conflist { path: String, detail: String },
    #[error("CNI {command} for pod {pod} failed (exit {exit}, code {code}): {msg}")]
    Cni { command: String, pod: String, exit: i32, code: i64, msg: String, stdout: String, stderr: String },
    #[error("running the CNI plugin: {0}")]
    Spawn(std::io::Error),
    #[error("CNI ADD for pod {pod} returned no IPv4 address: {result}")]
    NoAddress { pod: String, result: String },
    #[error("starting the command of pod {pod}: {source}")]
    Command { pod: String, source: std::io::Error },
}

/// The interface name runtimes give a pod's first interface.
pub const POD_IFNAME: &str = "eth0";

/// The network configuration libcni hands the (single) plugin of the node's conflist.
pub fn plugin_config(node: &NodeState, prev_result: Option<&Value>) -> Result<Value, PodError> {
    let path = node.cni_conf_dir().join("10-novanet.conflist");
    let err = |detail: String| PodError::Conflist { path: path.display().to_string(), detail };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let list: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut plugin = list["plugins"].get(0).cloned().ok_or_else(|| err("no plugins".into()))?;
    let obj = plugin.as_object_mut().ok_or_else(|| err("plugin is not an object".into()))?;
    obj.insert("name".into(), list["name"].clone());
    obj.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    Ok(plugin)
}

/// Runs the plugin for `pod` with `command` (ADD, DEL, CHECK) and returns its parsed stdout.
pub fn run_cni(node: &NodeState, pod: &PodState, command: &str, config: &Value) -> Result<Value, PodError> {
    let plugin = node.cni_bin_dir().join("novanet-cni");
    let mut cmd = NetNs::existing(&node.netns).command(&plugin.display().to_string());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", POD_IFNAME)
        .env("CNI_PATH", node.cni_bin_dir())
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.container_id, pod.uid
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(PodError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(config.to_string().as_bytes()).map_err(PodError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(PodError::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        let parsed: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        return Err(PodError::Cni {
            command: command.to_string(),
            pod: pod.key(),
            exit: out.status.code().unwrap_or(-1),
            code: parsed["code"].as_i64().unwrap_or(-1),
            msg: parsed["msg"].as_str().unwrap_or("").to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        });
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| PodError::Cni {
        command: command.to_string(),
        pod: pod.key(),
        exit: 0,
        code: -1,
        msg: format!("unparsable result: {e}"),
        stdout,
        stderr: String::new(),
    })
}

/// The first IPv4 address of a CNI result.
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let addr = ip["address"].as_str()?;
        addr.split('/').next()?.parse().ok()
    })
}

/// Creates the pod's namespace and calls CNI ADD; on failure nothing is left behind.
pub fn add(node: &NodeState, pod: &mut PodState) -> Result<(), PodError> {
    let ns = NetNs::create(&pod.netns)?;
    let config = plugin_config(node, None)?;
    let result = run_cni(node, pod, "ADD", &config)?;
    let ip = result_ipv4(&result).ok_or_else(|| PodError::NoAddress { pod: pod.key(), result: result.to_string() })?;
    pod.ip = Some(ip);
    pod.cni_result = Some(result);
    ns.leak();
    Ok(())
}

/// CNI CHECK with the cached result.
pub fn check(node: &NodeState, pod: &PodState) -> Result<(), PodError> {
    let config = plugin_config(node, pod.cni_result.as_ref())?;
    run_cni(node, pod, "CHECK", &config).map(|_| ())
}

/// Starts the pod's command in its namespace.
pub fn start_command(pod: &mut PodState, argv: &[String], log: &std::path::Path) -> Result<(), PodError> {
    let Some((program, args)) = argv.split_first() else { return Ok(()) };
    let mut cmd = NetNs::existing(&pod.netns).command(program);
    cmd.args(args);
    let pid = process::spawn_detached(&mut cmd, log).map_err(|source| PodError::Command { pod: pod.key(), source })?;
    pod.process_pid = Some(pid);
    pod.process_program = Some(program.clone());
    Ok(())
}

/// What [`remove`] could not do.
#[derive(Debug, Default)]
pub struct Removal {
    /// CNI DEL failed (e.g. the agent was down): the pod's endpoint stays on its node until a later DEL,
    /// the agent's orphan sweep, or the removal of the whole node (which takes everything of it).
    pub del_failed: Option<PodError>,
    /// The pod's namespace could not be removed.
    pub netns_left: Option<NetnsError>,
    /// The host veth was still on the node [`VETH_GONE_WAIT`] after DEL (the agent deletes it after
    /// answering, the namespace's removal takes it too).
    pub veth_left: Option<String>,
}

impl Removal {
    /// Everything that went wrong, for a caller that keeps the node.
    pub fn problems(self) -> Vec<String> {
        let del = self.del_failed.map(|e| e.to_string());
        let veth = self.veth_left.map(|name| format!("host veth {name} still on the node {VETH_GONE_WAIT:?} after DEL"));
        del.into_iter().chain(self.netns_left.map(|e| e.to_string())).chain(veth).collect()
    }
}

/// Stops the pod's command, calls CNI DEL and removes the namespace. The namespace is removed even when
/// DEL fails (a runtime would retry DEL; the lab reports it).
pub fn remove(node: Option<&NodeState>, pod: &mut PodState) -> Removal {
    let mut removal = Removal::default();
    if let (Some(pid), Some(program)) = (pod.process_pid.take(), pod.process_program.take()) {
        process::stop(pid, &program, Duration::from_secs(2));
    }
    if let Some(node) = node {
        let del = plugin_config(node, pod.cni_result.as_ref()).and_then(|c| run_cni(node, pod, "DEL", &c));
        removal.del_failed = del.err();
    }
    removal.netns_left = NetNs::delete(&pod.netns).err();
    if let (Some(node), Some(name)) = (node, pod.cni_result.as_ref().and_then(host_veth)) {
        let deadline = std::time::Instant::now() + VETH_GONE_WAIT;
        while link_exists(&node.netns, &name) {
            if std::time::Instant::now() >= deadline {
                removal.veth_left = Some(name);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    removal
}

/// How long a removal waits for the pod's host veth to leave the node.
pub const VETH_GONE_WAIT: Duration = Duration::from_secs(5);

/// The host end of the pod's veth in a CNI result: the interface without a sandbox.
fn host_veth(result: &serde_json::Value) -> Option<String> {
    let interfaces = result.get("interfaces")?.as_array()?;
    interfaces.iter().find(|i| i.get("sandbox").is_none()).and_then(|i| Some(i.get("name")?.as_str()?.to_string()))
}

fn link_exists(netns: &str, name: &str) -> bool {
    NetNs::existing(netns).ip(&["link", "show", "dev", name]).is_ok()
}

/// A container ID as a runtime makes them: 64 hex characters.
pub fn new_container_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
