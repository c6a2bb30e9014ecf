//! Shared helpers of the lab integration tests. Every test builds its own lab with a unique name and
//! unique namespace prefix; the lab is a drop guard, so it is removed even when the test panics.
#![allow(dead_code)]

pub mod cli;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use novanet_lab::{Lab, LabSpec};

pub fn lab(test: &str, yaml: &str) -> Lab {
    let name = format!("test-{test}-{}", std::process::id());
    Lab::guard(&name, &LabSpec::parse(yaml).unwrap()).unwrap()
}

pub fn one_node(cidr: &str, pods: &[&str]) -> String {
    let mut y = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nspec: {{podCIDR: {cidr}}}\n");
    for p in pods {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {p}, labels: {{app: {p}}}}}\nspec: {{nodeName: n1, containers: [{{name: c}}]}}\n"
        ));
    }
    y
}

pub fn pod_spec(name: &str, node: &str) -> novanet_lab::PodSpec {
    novanet_lab::PodSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: node.into(),
        labels: Default::default(),
        command: None,
    }
}

/// A sandbox the runtime made outside the lab's own bookkeeping (no CNI ADD yet): pod `name` in namespace
/// "default" on `node`, in network namespace `netns`.
pub fn sandbox(name: &str, node: &str, netns: String) -> novanet_lab::state::PodState {
    novanet_lab::state::PodState {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: node.into(),
        netns,
        container_id: novanet_lab::pod::new_container_id(),
        ip: None,
        cni_result: None,
        process_pid: None,
        process_program: None,
    }
}

pub fn ping(mut cmd: Command, ip: Ipv4Addr) -> bool {
    cmd.args(["-c", "2", "-i", "0.2", "-W", "2", &ip.to_string()]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs `f` on a fresh OS thread that has entered the network namespace `/run/netns/<netns>`.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Sends `bytes` over TCP from pod `from` to an echo server in pod `to` and checks they come back.
pub fn tcp_echo(lab: &Lab, from: &str, to: &str, bytes: usize) {
    tcp_echo_via(lab, from, to, bytes, |server| server);
}

/// [`tcp_echo`], with the client connecting to `via(server address)` (e.g. a Service address the node
/// translates to the server).
pub fn tcp_echo_via(lab: &Lab, from: &str, to: &str, bytes: usize, via: impl FnOnce(SocketAddrV4) -> SocketAddrV4) {
    let to_ip = lab.pod_ip(to).unwrap();
    let server_ns = lab.pod(to).unwrap().netns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = in_netns(&server_ns, move || {
        let listener = TcpListener::bind(SocketAddrV4::new(to_ip, 0)).unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).unwrap();
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let target = via(SocketAddrV4::new(to_ip, port));
    let client_ns = lab.pod(from).unwrap().netns.clone();
    let client = in_netns(&client_ns, move || {
        let mut conn = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut reader = conn.try_clone().unwrap();
        let expected = data.clone();
        let echo = std::thread::spawn(move || {
            let mut got = vec![0u8; expected.len()];
            reader.read_exact(&mut got).unwrap();
            got == expected
        });
        conn.write_all(&data).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        echo.join().unwrap()
    });
    assert!(client.join().unwrap(), "echoed bytes differ");
    server.join().unwrap();
}

/// Interfaces in a namespace, without `lo`.
pub fn links(lab: &Lab, node: &str) -> Vec<String> {
    let out = lab.node_command(node, "ip").unwrap().args(["-o", "link", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
        .filter(|n| n != "lo")
        .collect()
}

/// Keys in the node's pinned endpoint map, read with bpftool (independent of the agent).
pub fn endpoint_map_entries(lab: &Lab, node: &str) -> usize {
    pinned_map_entries(lab, node, "NOVANET_ENDPOINTS")
}

/// Keys in one of the node's pinned maps, read with bpftool (independent of the agent).
pub fn pinned_map_entries(lab: &Lab, node: &str, map: &str) -> usize {
    let pin = lab.node(node).unwrap().bpffs_dir().join("novanet").join(map);
    let out = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&pin).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().map(|a| a.len()).unwrap_or(0)
}

/// Network namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect())
        .unwrap_or_default()
}

/// Runs `cmd` to completion with `stdin` (or /dev/null) and captured output.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The stdout of a command that must have succeeded; otherwise fails with everything it printed.
pub fn ok_stdout(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `f` every `every` until it holds; fails the test naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, every: Duration, f: impl FnMut() -> bool) {
    assert!(poll(timeout, every, f), "timed out after {timeout:?} waiting for {what}");
}

/// Polls `f` every `every` until it holds (true) or `timeout` passes (false).
pub fn poll(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

/// A line for the CI log, past libtest's capture.
#[allow(unused_imports, reason = "not every test uses it")]
pub use novanet_testkit::say;
