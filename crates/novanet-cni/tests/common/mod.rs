//! Helpers shared by the plugin's integration tests: running the built binary the way a runtime does,
//! throw-away network namespaces, and `ip -j` reads inside them (test tooling only: the plugin itself
//! never shells out).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests may panic; not every file uses every helper

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_novanet-cni");

/// Namespace tests need root, iproute2 and nsenter; elsewhere they are skipped (a failure under CI:
/// see `novanet_testkit::skip`) and the caller returns.
pub fn can_make_netns() -> bool {
    // /proc/self belongs to the effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let nsenter = Command::new("nsenter")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && ip && nsenter) {
        novanet_testkit::skip(format_args!(
            "needs root, ip and nsenter (root={root}, ip={ip}, nsenter={nsenter})"
        ));
    }
    root && ip && nsenter
}

/// A network namespace made for one test, removed on drop (also when the test panics).
pub struct TestNetns {
    pub name: String,
    pub path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nncni-{tag}-{}-{n}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        let path = PathBuf::from(format!("/run/netns/{name}"));
        Self { name, path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// `ip -j <args>` inside this namespace.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = self.nsenter("ip", &[&["-j"], args].concat());
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            Value::Array(vec![])
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// `ip <args>` inside this namespace; returns success.
    pub fn ip(&self, args: &[&str]) -> bool {
        self.nsenter("ip", args).status.success()
    }

    fn nsenter(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }

    /// Names of every link in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> Option<Value> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    /// Names of NovaNet host veths ("nn" + 12 hex digits).
    pub fn novanet_links(&self) -> Vec<String> {
        self.link_names()
            .into_iter()
            .filter(|n| n.starts_with("nn") && n.len() == 14)
            .collect()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// What one plugin invocation printed and returned.
#[derive(Debug)]
pub struct PluginRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    /// stdout as JSON (the result or the error structure).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The CNI error code, asserting the run failed with an error structure on stdout.
    pub fn error_code(&self) -> u64 {
        assert!(!self.success, "expected failure: {self:?}");
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code: {self:?}"))
    }
}

/// Runs the plugin with exactly `env` (plus PATH), `stdin`, inside `node` when given (so the host
/// side of anything it creates lands in a test namespace, never the machine's own).
pub fn run_plugin(node: Option<&TestNetns>, env: &[(&str, &str)], stdin: &str) -> PluginRun {
    let mut cmd = match node {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.path.display()))
                .arg("--")
                .arg(PLUGIN);
            c
        }
        None => Command::new(PLUGIN),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The plugin may exit before reading stdin (e.g. no CNI_COMMAND): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    PluginRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A plugin config as libcni would derive it from a one-plugin conflist.
pub fn config(version: &str, socket: &Path, extra: Value) -> String {
    let mut conf = serde_json::json!({
        "cniVersion": version,
        "name": "novanet-test",
        "type": "novanet-cni",
        "agentSocket": socket,
        "mtu": 1500,
        "logLevel": "debug",
    });
    if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            conf.insert(k.clone(), v.clone());
        }
    }
    conf.to_string()
}

/// The environment of an attachment command.
pub fn attachment_env<'a>(
    command: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container_id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=uid-1",
        ),
    ]
}
