//! Policy through the real programs with real packets: a node namespace and two pod namespaces wired as
//! the CNI does (see `pod_to_pod.rs`), ipcache and policy entries written directly through the
//! dataplane's handles, TCP between the pods.
//!
//! Established flows stay open when policy changes: conntrack passes their packets without a policy
//! lookup; only new flows are judged against the rules of the moment.
//!
//! Needs root, iproute2 and python3 (the TCP server and clients). Every namespace, process and pin is
//! removed on drop, even on panic.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "support/bpffs.rs"]
mod bpffs;
#[allow(dead_code, reason = "shared test support; not every test uses every helper")]
#[path = "support/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bpffs::TestBpffs;
use netns::{ChildGuard, NetNs, unique_prefix};
use novanet_common::{DIRECTION_INGRESS, EndpointKey, IpcacheValue, PolicyConfig, PolicyKey, PolicyValue};
#[allow(unused_imports, reason = "support/bpffs.rs uses it as crate::is_bpffs")]
use novanet_dataplane::is_bpffs;
use novanet_dataplane::{Counter, Dataplane, EndpointInfo, LpmHandle, MapHandle, PolicySwitch, endpoint_verdicts};
use novanet_model::format_mac;

const PYTHON: &str = "/usr/bin/python3";
const PORT: u16 = 8080;
const ID_A: u32 = 1000;
const ID_B: u32 = 1001;

/// A TCP echo server for many connections at once.
const SERVER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(16); print("listening", flush=True)
def serve(c):
    while True:
        d = c.recv(64)
        if not d: break
        c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Connects (1 s timeout), then echoes every line of stdin through the connection, printing the answers.
const CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 8080), timeout=1)
except OSError as e:
    print("connect failed", e, flush=True); sys.exit(1)
print("connected", flush=True)
for line in sys.stdin:
    c.sendall(line.encode()); print("echo", c.recv(64).decode().strip(), flush=True)
"#;

struct Pod {
    ns: NetNs,
    host_if: String,
    ip: Ipv4Addr,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
}

/// Field order = drop order: processes, then pods, then the node.
struct Lab {
    a: Pod,
    b: Pod,
    node: NetNs,
}

impl Pod {
    fn create(node: &NetNs, prefix: &str, tag: char, ip: Ipv4Addr) -> Self {
        let ns = NetNs::create(&format!("{prefix}-{tag}"));
        let host_if = format!("{prefix}h{tag}");
        let last = ip.octets()[3];
        let (pod_mac, host_mac) = ([0x02, 0x00, 0x0a, 0xf4, 0x00, last], [0x02, 0x00, 0x0a, 0xf4, 0x01, last]);
        let ns_path = ns.path();
        let (host_mac_s, pod_mac_s) = (format_mac(&host_mac), format_mac(&pod_mac));
        node.ok(&["ip", "link", "add", &host_if, "address", &host_mac_s, "type", "veth", "peer", "name", "eth0"]);
        node.ok(&["ip", "link", "set", "eth0", "address", &pod_mac_s, "netns", ns_path.to_str().unwrap()]);
        node.ok(&["ip", "link", "set", &host_if, "up"]);
        let gw = "169.254.1.1";
        ns.ok(&["ip", "link", "set", "eth0", "up"]);
        ns.ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.ok(&["ip", "route", "add", gw, "dev", "eth0", "scope", "link"]);
        ns.ok(&["ip", "route", "add", "default", "via", gw, "dev", "eth0"]);
        ns.ok(&["ip", "neigh", "add", gw, "lladdr", &host_mac_s, "dev", "eth0", "nud", "permanent"]);
        Pod { ns, host_if, ip, pod_mac, host_mac }
    }

    fn endpoint(&self, host_ifindex: u32) -> EndpointInfo {
        EndpointInfo { host_ifindex, identity: 0, pod_mac: self.pod_mac, host_mac: self.host_mac, flags: 0, _pad: 0 }
    }

    fn python(&self, script: &str, args: &[&str]) -> Command {
        let mut all = vec![PYTHON, "-c", script];
        all.extend_from_slice(args);
        let mut cmd = self.ns.command(&all);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        cmd
    }
}

fn packets(dp: &Dataplane, which: Counter) -> u64 {
    dp.counters().unwrap().into_iter().find(|(c, _)| *c == which).unwrap().1.packets
}

/// A new connection from `from` to `to`'s server: whether it was accepted.
fn connects(from: &Pod, to: &Pod) -> bool {
    let out = from.python(CLIENT, &[&to.ip.to_string()]).stdin(Stdio::null()).output().expect("running python");
    String::from_utf8_lossy(&out.stdout).contains("connected")
}

/// A connection that stays open: one line in, one echo out.
struct OpenConnection {
    child: ChildGuard,
    lines: BufReader<std::process::ChildStdout>,
}

impl OpenConnection {
    fn open(from: &Pod, to: &Pod) -> Self {
        let mut child = ChildGuard(from.python(CLIENT, &[&to.ip.to_string()]).spawn().expect("spawning python"));
        let lines = BufReader::new(child.0.stdout.take().unwrap());
        let mut conn = OpenConnection { child, lines };
        assert_eq!(conn.line(), "connected");
        conn
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn echo(&mut self, word: &str) -> String {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

fn ingress_rule(b: &Pod) -> PolicyKey {
    PolicyKey {
        endpoint: EndpointKey::from_octets(b.ip.octets()).ip,
        peer: ID_A.to_be_bytes(),
        direction: DIRECTION_INGRESS,
        proto: 6,
        dport: PORT.to_be_bytes(),
    }
}

#[test]
fn ingress_policy_denies_new_tcp_connections_without_a_rule_and_keeps_established_ones() {
    if !Path::new(PYTHON).exists() {
        return novanet_testkit::skip(format!("{PYTHON} is needed for the TCP server and clients"));
    }
    let bpffs = TestBpffs::new();
    let p = unique_prefix();
    let node = NetNs::create(&format!("{p}-node"));
    let lab = Lab {
        a: Pod::create(&node, &p, 'a', Ipv4Addr::new(10, 244, 0, 10)),
        b: Pod::create(&node, &p, 'b', Ipv4Addr::new(10, 244, 0, 11)),
        node,
    };
    let dp = lab.node.in_ns(|| {
        let mut dp = Dataplane::load(bpffs.path()).unwrap();
        for pod in [&lab.a, &lab.b] {
            let index = dp.attach_endpoint(&pod.host_if).unwrap();
            dp.upsert_endpoint(pod.ip, &pod.endpoint(index)).unwrap();
        }
        dp
    });
    let mut server = ChildGuard(lab.b.python(SERVER, &[]).spawn().expect("spawning the server"));
    let mut ready = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "listening");
    assert!(connects(&lab.a, &lab.b), "without enforcement everything connects");

    // B is isolated for ingress and nothing allows A yet.
    let mut maps = dp.policy_maps().unwrap();
    let local = IpcacheValue::FLAG_LOCAL;
    maps.ipcache
        .insert(&EndpointKey::from_octets(lab.a.ip.octets()), &IpcacheValue { identity: ID_A, flags: local })
        .unwrap();
    let b_cache = IpcacheValue { identity: ID_B, flags: local | IpcacheValue::FLAG_INGRESS_ISOLATED };
    maps.ipcache.insert(&EndpointKey::from_octets(lab.b.ip.octets()), &b_cache).unwrap();
    maps.config.set(&PolicyConfig { flags: PolicyConfig::FLAG_ENFORCE, revision: 1 }).unwrap();
    assert!(!connects(&lab.a, &lab.b), "no rule: the SYN is dropped and the connect times out");
    assert!(packets(&dp, Counter::DropPolicyIngress) >= 1);
    let b_ip = lab.b.ip;
    assert!(endpoint_verdicts(&maps.verdicts, b_ip).unwrap().ingress_denied.packets >= 1);

    // A rule for A's identity on B's port: new connections are accepted, and stay open.
    maps.policy.insert(PolicyKey::FULL_BITS, &ingress_rule(&lab.b), &PolicyValue { rule: 1, _pad: 0 }).unwrap();
    assert!(connects(&lab.a, &lab.b), "the rule allows it");
    let mut open = OpenConnection::open(&lab.a, &lab.b);
    assert_eq!(open.echo("one"), "echo one");
    assert!(dp.conntrack().unwrap().count().unwrap() >= 2, "both connections are tracked");

    // The rule goes: new connections are denied again, the established one keeps working.
    assert!(maps.policy.remove(PolicyKey::FULL_BITS, &ingress_rule(&lab.b)).unwrap());
    maps.config.set(&PolicyConfig { flags: PolicyConfig::FLAG_ENFORCE, revision: 2 }).unwrap();
    let denied = packets(&dp, Counter::DropPolicyIngress);
    assert!(!connects(&lab.a, &lab.b), "new connections are judged against the new rules");
    assert!(packets(&dp, Counter::DropPolicyIngress) > denied);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(open.echo("two"), "echo two", "the established connection survives the policy change");
    assert!(packets(&dp, Counter::CtEstablished) >= 1 && packets(&dp, Counter::CtReply) >= 1);

    // Enforcement off: back to no policy at all.
    maps.config.set(&PolicyConfig::default()).unwrap();
    assert!(connects(&lab.a, &lab.b));
    drop(open);
    drop(server);
}

#[test]
fn the_node_interface_program_attaches_idempotently_and_detaches() {
    let bpffs = TestBpffs::new();
    let node = NetNs::create(&format!("{}-node", unique_prefix()));
    // A veth pair inside the node namespace stands in for the underlay (no dummy module needed).
    node.ok(&["ip", "link", "add", "underlay0", "type", "veth", "peer", "name", "underlay1"]);
    node.ok(&["ip", "link", "set", "underlay0", "up"]);
    node.in_ns(|| {
        let mut dp = Dataplane::load(bpffs.path()).unwrap();
        assert!(!dp.is_node_interface_attached("underlay0").unwrap());
        let index = dp.attach_node_interface("underlay0").unwrap();
        assert_eq!(dp.attach_node_interface("underlay0").unwrap(), index);
        assert!(dp.is_node_interface_attached("underlay0").unwrap());
        assert!(!dp.is_attached("underlay0").unwrap(), "no pod programs on the node interface");
        let shown = node.ok(&["tc", "filter", "show", "dev", "underlay0", "egress"]);
        assert_eq!(shown.matches("novanet_node_egress").count(), 1, "one filter after two attaches:\n{shown}");
        assert!(Dataplane::detach_node_interface("underlay0").unwrap());
        assert!(!dp.is_node_interface_attached("underlay0").unwrap());
        assert!(!Dataplane::detach_node_interface("underlay0").unwrap());
        assert!(!Dataplane::detach_node_interface("nosuchif0").unwrap());
    });
}
