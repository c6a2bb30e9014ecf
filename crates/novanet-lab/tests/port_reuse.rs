//! Same-node connections after source-port reuse, with real connections through the real agent, CNI
//! plugin and eBPF programs, and kube-proxy's rule that drops what conntrack finds INVALID.
//!
//! The defect (measured in the lab cluster): the datapath once remembered only a pod's own (address, port,
//! protocol) for flows it opened towards non-local addresses, and sent local answers to such a port
//! through the stack. When the pod reused the port for a connection to a pod on its own node, that
//! connection's SYN was redirected straight to the peer, the peer's SYN-ACK went through the stack, whose
//! conntrack had never seen the SYN, and kube-proxy's INVALID drop discarded it: connects timed out.
//! Needs root and the workspace binaries; run by `scripts/test.sh`.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;

const TWO_NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: local}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: remote}
spec: {nodeName: n2, containers: [{name: c}]}
";

/// One connect's patience (connect, then the server's close). The defect fails every connect after the
/// reuse, whatever the timeout; a loaded machine can delay a healthy one by a second (the server thread
/// must run to accept and close).
const TIMEOUT: Duration = Duration::from_secs(3);

/// The client's ephemeral ports: few, so every one is reused many times.
const PORTS: std::ops::RangeInclusive<u16> = 41000..=41049;

#[test]
fn same_node_connects_keep_working_after_the_client_reused_its_ports_towards_another_node() {
    let lab = lab("portreuse", TWO_NODES);
    // kube-proxy's rule, in node n1 only (inside the lab's namespace).
    ok_stdout(
        "iptables",
        lab.node_command("n1", "iptables")
            .unwrap()
            .args(["-w", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"])
            .output()
            .unwrap(),
    );
    ok_stdout(
        "sysctl",
        lab.pod_command("client", "sysctl")
            .unwrap()
            .args(["-w", &format!("net.ipv4.ip_local_port_range={} {}", PORTS.start(), PORTS.end())])
            .output()
            .unwrap(),
    );
    let local = serve(&lab, "local");
    let remote = serve(&lab, "remote");
    let client = lab.pod("client").unwrap().netns.clone();
    let client_ip = lab.pod_ip("client").unwrap();
    // How many of `n` connects fail (counting stops at 10: each failure costs up to two timeouts), each from
    // the port `from` gives (None: the kernel's choice).
    let failures = move |to: SocketAddrV4, n: usize, from: fn(usize) -> Option<u16>| {
        in_netns(&client, move || {
            let mut failed = 0;
            for i in 0..n {
                let bind = from(i).map(|port| SocketAddrV4::new(client_ip, port));
                failed += usize::from(!connect_once(bind, to));
                if failed == 10 {
                    break;
                }
            }
            failed
        })
        .join()
        .unwrap()
    };
    let any = |_| None;
    assert_eq!(failures(local, 300, any), 0, "connects to the pod on the same node, before");
    // Every one of the client's ports once towards the other node (as 1,500 connects did in the lab cluster).
    let each_port = |i| Some(PORTS.start() + i as u16);
    assert_eq!(failures(remote, PORTS.len(), each_port), 0, "connects to the pod on the other node");
    let failed = failures(local, 500, any);
    assert_eq!(failed, 0, "connects to the pod on the same node failed after port reuse ({failed}, counting stopped at 10)");
}

/// Starts a server in pod `pod` that accepts and closes every connection (for as long as the test runs).
fn serve(lab: &novanet_lab::Lab, pod: &str) -> SocketAddrV4 {
    let ip: Ipv4Addr = lab.pod_ip(pod).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _server = in_netns(&lab.pod(pod).unwrap().netns.clone(), move || {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, 8080)).unwrap();
        tx.send(()).unwrap();
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    SocketAddrV4::new(ip, 8080)
}

/// One connect with a [`TIMEOUT`] (agnhost uses 1 s; the defect fails at any timeout, as every SYN-ACK is
/// dropped), from `bind` if given, waiting for the server's close, then an abortive close (RST), so no
/// TIME_WAIT keeps the client's few ports from being reused.
fn connect_once(bind: Option<SocketAddrV4>, to: SocketAddrV4) -> bool {
    let connected = match bind {
        None => TcpStream::connect_timeout(&to.into(), TIMEOUT),
        Some(from) => bound_connect(from, to),
    };
    let Ok(mut conn) = connected else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(TIMEOUT));
    let mut buf = [0u8; 1];
    let closed = matches!(conn.read(&mut buf), Ok(0));
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a `linger` value of the size passed.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    closed
}

fn bound_connect(from: SocketAddrV4, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&from.into())?;
    socket.connect_timeout(&to.into(), TIMEOUT)?;
    Ok(socket.into())
}
