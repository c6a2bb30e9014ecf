//! Real packets between lab pods through the real agent, CNI plugin and eBPF programs.
//! Needs root and the workspace binaries (`cargo build --workspace --bins`); run by `scripts/test.sh`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use novanet_lab::LabError;
use novanet_lab::pod::PodError;

#[test]
fn pods_on_one_node_ping_and_tcp_through_the_datapath() {
    let lab = lab("samenode", &one_node("10.244.1.0/24", &["a", "b", "c"]));
    let (a, b, c) = (lab.pod_ip("a").unwrap(), lab.pod_ip("b").unwrap(), lab.pod_ip("c").unwrap());
    assert!(ping(lab.pod_command("a", "ping").unwrap(), b));
    assert!(ping(lab.pod_command("b", "ping").unwrap(), c));
    assert!(ping(lab.pod_command("c", "ping").unwrap(), a));
    tcp_echo(&lab, "a", "b", 4 << 20);
    let status = novanet_lab::node::agent_status(&lab.socket("n1").unwrap()).unwrap();
    let redirected = status.counters.iter().find(|c| c.name == "redirect_local").unwrap().packets;
    assert!(redirected > 100, "pod-to-pod packets must be redirected by the eBPF program, counter = {redirected}");
    lab.check_pod("a").unwrap();
}

/// What kube-proxy does for a ClusterIP Service, by hand: the node DNATs a Service address to a pod. When
/// client and backend are on the same node, the backend's answers must go through the node's conntrack
/// (which gives them the Service address back), not straight into the client pod.
#[test]
fn service_dnat_to_a_pod_on_the_same_node_answers_from_the_service_address() {
    const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    let lab = lab("svcdnat", &one_node("10.244.1.0/24", &["client", "backend"]));
    let backend = lab.pod_ip("backend").unwrap();
    let dnat = |proto: &str, port: u16, to: SocketAddrV4| {
        let (service, port, to) = (SERVICE.to_string(), port.to_string(), to.to_string());
        node_iptables(&lab, &["-t", "nat", "-A", "PREROUTING", "-d", &service, "-p", proto, "--dport", &port,
            "-j", "DNAT", "--to-destination", &to]);
    };

    // TCP: the handshake and 1 MiB each way through the Service address.
    tcp_echo_via(&lab, "client", "backend", 1 << 20, |server| {
        dnat("tcp", 80, server);
        SocketAddrV4::new(SERVICE, 80)
    });

    // UDP: the answer must come from the Service address, as the client asked.
    let server_ns = lab.pod("backend").unwrap().netns.clone();
    let server = in_netns(&server_ns, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(backend, 5353)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&buf[..n], peer).unwrap();
    });
    dnat("udp", 53, SocketAddrV4::new(backend, 5353));
    let client_ns = lab.pod("client").unwrap().netns.clone();
    let answer = in_netns(&client_ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.send_to(b"query", SocketAddrV4::new(SERVICE, 53)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    })
    .join()
    .unwrap();
    server.join().unwrap();
    assert_eq!(answer, (b"query".to_vec(), SocketAddrV4::new(SERVICE, 53).into()));

    let status = novanet_lab::node::agent_status(&lab.socket("n1").unwrap()).unwrap();
    let via_stack = status.counters.iter().find(|c| c.name == "pass_local_via_stack").unwrap().packets;
    assert!(via_stack >= 2, "the backend's answers went through the node's stack, counter = {via_stack}");

    // The flows the stack delivered (TCP and UDP) are recorded, and go with the client's endpoint: CNI DEL
    // does not walk the map, the agent's sweep frees them within seconds.
    assert!(pinned_map_entries(&lab, "n1", "NOVANET_NAT_FLOWS_v2") >= 2);
    let mut lab = lab;
    lab.remove_pod("client").unwrap();
    wait_for("the removed pod's flows to be swept", Duration::from_secs(15), Duration::from_millis(250), || {
        pinned_map_entries(&lab, "n1", "NOVANET_NAT_FLOWS_v2") == 0
    });
}

/// A server pod that answered a non-local client (its node here, as kubelet's probes do) must still serve
/// local pods, with kube-proxy's rule that drops what conntrack finds INVALID: its answers must not mark
/// its listening port, or local clients' packets would take the stack while its replies bypass it.
#[test]
fn a_server_pod_that_answered_its_node_still_serves_local_pods() {
    let lab = lab("svport", &one_node("10.244.1.0/24", &["client", "server"]));
    node_iptables(&lab, &["-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
    let server_ip = lab.pod_ip("server").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = in_netns(&lab.pod("server").unwrap().netns.clone(), move || {
        let listener = TcpListener::bind(SocketAddrV4::new(server_ip, 0)).unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let hello = move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        buf == *b"hello"
    };
    assert!(in_netns(&lab.node("n1").unwrap().netns.clone(), hello).join().unwrap(), "node -> server pod");
    assert!(in_netns(&lab.pod("client").unwrap().netns.clone(), hello).join().unwrap(), "local pod -> server pod");
    server.join().unwrap();
}

/// A hostNetwork client (the node's own namespace, as kubelet's probes and hostNetwork pods are) connects
/// to a Service address only the node's NAT knows: kube-proxy's DNAT in OUTPUT runs after the route lookup
/// of connect(), so the node needs a default route (into the lab's underlay) or the connect fails with
/// ENETUNREACH first. The underlay, its gateway, has no uplink and forwards nothing.
#[test]
fn the_node_reaches_a_service_address_that_its_nat_translates() {
    const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
    let lab = lab("hostsvc", &one_node("10.244.1.0/24", &["backend"]));
    let gateway = novanet_lab::node::underlay_gateway(lab.state.underlay_cidr.unwrap());
    let routes = ok_stdout("ip route", lab.node_command("n1", "ip").unwrap().args(["-4", "route", "show", "default"]).output().unwrap());
    assert_eq!(routes, format!("default via {gateway} dev {}", novanet_lab::node::UNDERLAY_IFNAME));
    let underlay = novanet_lab::netns::NetNs::existing(lab.state.underlay_netns.as_deref().unwrap());
    let forward = ok_stdout("sysctl", underlay.command("sysctl").args(["-n", "net.ipv4.ip_forward"]).output().unwrap());
    assert_eq!(forward, "0", "the underlay namespace must not forward");
    let ul_links = ok_stdout("ip link", underlay.command("ip").args(["-o", "link", "show"]).output().unwrap());
    let names: Vec<&str> = ul_links.lines().filter_map(|l| l.split(": ").nth(1)?.split('@').next()).collect();
    assert_eq!(names, ["lo", "br0", "u0"], "the underlay has no uplink, only the bridge and the nodes' ports");

    let backend = lab.pod_ip("backend").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = in_netns(&lab.pod("backend").unwrap().netns.clone(), move || {
        let listener = TcpListener::bind(SocketAddrV4::new(backend, 0)).unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let to = SocketAddrV4::new(backend, port).to_string();
    node_iptables(&lab, &["-t", "nat", "-A", "OUTPUT", "-d", &SERVICE.to_string(), "-p", "tcp", "--dport", "80",
        "-j", "DNAT", "--to-destination", &to]);
    let hello = in_netns(&lab.node("n1").unwrap().netns.clone(), move || {
        let mut conn = TcpStream::connect_timeout(&SocketAddrV4::new(SERVICE, 80).into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("node -> Service {SERVICE}:80: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        buf == *b"hello"
    });
    assert!(hello.join().unwrap(), "the backend's answer came back through the Service address");
    server.join().unwrap();
}

/// One iptables rule in node n1 (inside the lab's namespace, never the host's).
fn node_iptables(lab: &novanet_lab::Lab, rule: &[&str]) {
    ok_stdout("iptables", lab.node_command("n1", "iptables").unwrap().arg("-w").args(rule).output().unwrap());
}

#[test]
fn pod_reaches_its_node_and_the_node_reaches_the_pod() {
    let lab = lab("podnode", &one_node("10.244.1.0/24", &["a"]));
    let node_ip = lab.node("n1").unwrap().underlay_ip;
    assert!(ping(lab.pod_command("a", "ping").unwrap(), node_ip), "pod -> node");
    assert!(ping(lab.node_command("n1", "ping").unwrap(), lab.pod_ip("a").unwrap()), "node -> pod");
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_underlay() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/two-nodes.yaml")).unwrap();
    let lab = lab("twonodes", &yaml);
    assert!(ping(lab.pod_command("a1", "ping").unwrap(), lab.pod_ip("b1").unwrap()));
    assert!(ping(lab.pod_command("b2", "ping").unwrap(), lab.pod_ip("a2").unwrap()));
    tcp_echo(&lab, "a1", "b2", 1 << 20);
}

#[test]
fn agent_crash_and_restart_loses_no_packets() {
    let mut lab = lab("restart", &one_node("10.244.1.0/24", &["a", "b"]));
    let b = lab.pod_ip("b").unwrap();
    // 300 pings 20 ms apart: 6 s of traffic across a SIGKILL and a restart of the agent.
    let pinger = lab
        .pod_command("a", "ping")
        .unwrap()
        .args(["-c", "300", "-i", "0.02", "-W", "1", &b.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    lab.restart_agent("n1", true).unwrap();
    // A second, graceful restart while traffic still flows.
    lab.restart_agent("n1", false).unwrap();
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "packets lost across the restarts:\n{text}");
    // The restarted agent re-adopted the endpoints and its address pool.
    let status = novanet_lab::node::agent_status(&lab.socket("n1").unwrap()).unwrap();
    assert_eq!(status.endpoints, 2);
    assert_eq!(status.pool_used, 2);
    lab.add_pod(&pod_spec("c", "n1")).unwrap();
    let c = lab.pod_ip("c").unwrap();
    assert!(c != b && c != lab.pod_ip("a").unwrap(), "no address handed out twice after a restart");
    assert!(ping(lab.pod_command("c", "ping").unwrap(), b));
}

/// An agent that died (and stayed dead: no supervisor in a test's lab) makes CNI DEL fail during `down`,
/// but removing its node takes the pods' endpoints with it: `down` must succeed and leave nothing.
#[test]
fn down_with_a_dead_agent_reports_only_what_remains() {
    let lab = lab("deadagent", &one_node("10.244.1.0/24", &["a", "b"]));
    let pid = lab.node("n1").unwrap().agent_pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("the agent to die", Duration::from_secs(5), Duration::from_millis(20), || {
        !novanet_lab::process::runs(pid, "novanet-agent")
    });
    let (prefix, dir) = (lab.state.prefix.clone(), lab.state.dir.clone());
    lab.down().unwrap();
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn two_hundred_add_del_cycles_leak_nothing() {
    let mut lab = lab("churn", &one_node("10.244.1.0/24", &["keep"]));
    let links_before = links(&lab, "n1");
    let prefix = lab.state.prefix.clone();
    let namespaces_before = namespaces_with_prefix(&prefix);
    for i in 0..200 {
        let name = format!("churn{i}");
        lab.add_pod(&pod_spec(&name, "n1")).unwrap();
        lab.remove_pod(&name).unwrap();
    }
    assert_eq!(links(&lab, "n1"), links_before, "veths leaked in the node namespace");
    assert_eq!(namespaces_with_prefix(&prefix), namespaces_before, "pod namespaces leaked");
    let status = novanet_lab::node::agent_status(&lab.socket("n1").unwrap()).unwrap();
    assert_eq!(status.endpoints, 1, "endpoints leaked in the agent");
    assert_eq!(status.pool_used, 1, "addresses leaked");
    assert_eq!(endpoint_map_entries(&lab, "n1"), 1, "entries leaked in the eBPF endpoint map");
    assert!(ping(lab.pod_command("keep", "ping").unwrap(), lab.node("n1").unwrap().underlay_ip));
}

#[test]
fn exhausted_pool_is_a_clear_cni_error_and_leaks_nothing() {
    // A /30 has one assignable address (network, node address and broadcast are reserved).
    let mut lab = lab("exhausted", &one_node("10.244.7.0/30", &["only"]));
    let links_before = links(&lab, "n1");
    let err = lab.add_pod(&pod_spec("second", "n1")).unwrap_err();
    match &err {
        LabError::Pod(PodError::Cni { command, msg, code, .. }) => {
            assert_eq!(command, "ADD");
            assert!(msg.contains("no free address"), "unclear error: {err}");
            // The agent's RESOURCE_EXHAUSTED, as the plugin reports a full node: "try again later".
            assert!(msg.starts_with("no room for another pod on this node"), "not told apart from other failures: {err}");
            assert_eq!(*code, 11, "{err}");
        }
        other => panic!("expected a CNI error, got {other}"),
    }
    assert_eq!(links(&lab, "n1"), links_before, "the failed ADD left a veth behind");
    assert_eq!(lab.state.pods.len(), 1);
    assert_eq!(endpoint_map_entries(&lab, "n1"), 1);
}

#[test]
fn add_into_a_missing_netns_fails_cleanly() {
    let lab = lab("nonetns", &one_node("10.244.1.0/24", &[]));
    let node = lab.node("n1").unwrap().clone();
    let links_before = links(&lab, "n1");
    let pod = sandbox("ghost", "n1", format!("{}-does-not-exist", lab.state.prefix));
    let conf = novanet_lab::pod::plugin_config(&node, None).unwrap();
    let err = novanet_lab::pod::run_cni(&node, &pod, "ADD", &conf).unwrap_err();
    let PodError::Cni { msg, .. } = &err else { panic!("expected a CNI error, got {err}") };
    assert!(msg.contains("does-not-exist"), "the error must name the netns: {msg}");
    assert_eq!(links(&lab, "n1"), links_before);
    assert_eq!(novanet_lab::node::agent_status(&node.socket()).unwrap().pool_used, 0);
    // DEL of something that never existed succeeds (idempotent).
    novanet_lab::pod::run_cni(&node, &pod, "DEL", &conf).unwrap();
}

#[test]
fn del_is_idempotent_and_check_fails_after_it() {
    let mut lab = lab("idempotent", &one_node("10.244.1.0/24", &["a"]));
    let node = lab.node("n1").unwrap().clone();
    let pod = lab.pod("a").unwrap().clone();
    let conf = novanet_lab::pod::plugin_config(&node, pod.cni_result.as_ref()).unwrap();
    novanet_lab::pod::run_cni(&node, &pod, "DEL", &conf).unwrap();
    novanet_lab::pod::run_cni(&node, &pod, "DEL", &conf).unwrap();
    assert!(novanet_lab::pod::run_cni(&node, &pod, "CHECK", &conf).is_err());
    assert_eq!(endpoint_map_entries(&lab, "n1"), 0);
    lab.remove_pod("a").unwrap();
}

#[test]
fn del_answers_before_the_veth_is_gone_and_a_re_add_of_the_same_attachment_waits_for_it() {
    let lab = lab("readd", &one_node("10.244.1.0/24", &[]));
    let node = lab.node("n1").unwrap().clone();
    let links_before = links(&lab, "n1");
    let netns = novanet_lab::netns::NetNs::create(&format!("{}-readd", lab.state.prefix)).unwrap();
    let pod = sandbox("readd", "n1", netns.name().to_string());
    lab.record_pod_object(&novanet_lab::PodSpec {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        node: "n1".into(),
        labels: Default::default(),
        command: None,
    })
    .unwrap();
    let conf = novanet_lab::pod::plugin_config(&node, None).unwrap();
    for round in 0..3 {
        // ADD straight after the DEL of the same attachment: the old veth (same names) may still be
        // being deleted by the agent.
        let result = novanet_lab::pod::run_cni(&node, &pod, "ADD", &conf).unwrap_or_else(|e| panic!("ADD {round}: {e}"));
        let with_result = novanet_lab::pod::plugin_config(&node, Some(&result)).unwrap();
        novanet_lab::pod::run_cni(&node, &pod, "CHECK", &with_result).unwrap();
        novanet_lab::pod::run_cni(&node, &pod, "DEL", &with_result).unwrap();
    }
    wait_for("the last host veth to be deleted by the agent", Duration::from_secs(5), Duration::from_millis(20), || {
        links(&lab, "n1") == links_before
    });
    assert_eq!(novanet_lab::node::agent_status(&node.socket()).unwrap().pool_used, 0);
    drop(netns);
    lab.forget_pod_object("default", "readd").unwrap();
}
