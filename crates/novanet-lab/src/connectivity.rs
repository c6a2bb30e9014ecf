//! `novanet lab probe`: real connection attempts between every ordered pair of pods of a light lab, on each
//! port and protocol, as the upstream NetworkPolicy suite's probe does, printed as a matrix per
//! port/protocol (`.` connected, `X` not) or as JSON lines.
//!
//! Servers: for every target pod, one dedicated OS thread enters the pod's network namespace (`setns`) and
//! binds `0.0.0.0:<port>` for each TCP port (accept, close) and UDP port (echo each datagram back). A port
//! something already listens on (`EADDRINUSE`) is left to that listener. The threads are stopped when the
//! probe returns ([`Servers`] drop); they belong to the probing process, so Ctrl-C or a crash removes them
//! with it: nothing outlives a probe.
//!
//! Clients: a bounded pool of OS threads, each entering the source pod's namespace before its attempt:
//! TCP `connect` with a timeout (connected = the handshake completed), UDP `connect` + send + wait for the
//! echo. A pod's attempt on itself goes over its loopback, never through the datapath (upstream treats
//! loopback as always allowed).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::PodState;

/// A transport protocol of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = ConnectivityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(ConnectivityError::BadProtocol(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectivityError {
    #[error("unknown protocol {0:?} (tcp or udp)")]
    BadProtocol(String),
    #[error("no pod matches {0:?}")]
    NoSuchPod(String),
    #[error("pod {0} has no address")]
    NoAddress(String),
    #[error("entering the network namespace {netns}: {source}")]
    Setns { netns: String, source: std::io::Error },
    #[error("serving {protocol:?} port {port} in pod {pod}: {source}")]
    Bind { pod: String, port: u16, protocol: Protocol, source: std::io::Error },
    #[error("a server or client thread failed: {0}")]
    Thread(String),
}

/// One attempt's result, also the `--json` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub connected: bool,
}

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub ports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    /// Source pods (`ns/pod` or a pod name); all when empty.
    pub from: Vec<String>,
    /// Target pods; all when empty.
    pub to: Vec<String>,
    pub timeout: Duration,
    /// Attempts at once.
    pub parallel: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ports: vec![80],
            protocols: vec![Protocol::Tcp],
            from: Vec::new(),
            to: Vec::new(),
            timeout: Duration::from_millis(1000),
            parallel: 96,
        }
    }
}

/// Whether a probe filter (`ns/pod`, a pod name, or `ns/*`) names the pod `namespace/name`.
pub fn filter_matches(filter: &str, namespace: &str, name: &str) -> bool {
    match filter.split_once('/') {
        Some((ns, "*")) => ns == namespace,
        Some((ns, pod)) => ns == namespace && pod == name,
        None => filter == name,
    }
}

fn select<'a>(pods: &'a [PodState], filter: &[String]) -> Result<Vec<&'a PodState>, ConnectivityError> {
    if filter.is_empty() {
        return Ok(pods.iter().collect());
    }
    let mut out = Vec::new();
    for f in filter {
        let found: Vec<&PodState> = pods.iter().filter(|p| filter_matches(f, &p.namespace, &p.name)).collect();
        if found.is_empty() {
            return Err(ConnectivityError::NoSuchPod(f.clone()));
        }
        out.extend(found);
    }
    Ok(out)
}

/// Probes every ordered pair of the selected pods (sources x targets) on every port and protocol. Results
/// are sorted by protocol, port, source and target.
pub fn probe(pods: &[PodState], options: &ProbeOptions) -> Result<Vec<Outcome>, ConnectivityError> {
    let sources = select(pods, &options.from)?;
    let targets = select(pods, &options.to)?;
    let mut servers = Servers::default();
    for t in &targets {
        servers.start(t, &options.ports, &options.protocols)?;
    }
    let mut work = VecDeque::new();
    for protocol in &options.protocols {
        for port in &options.ports {
            for s in &sources {
                for t in &targets {
                    let ip = t.ip.ok_or_else(|| ConnectivityError::NoAddress(t.key()))?;
                    work.push_back(Attempt {
                        from: s.key(),
                        from_netns: s.netns.clone(),
                        to: t.key(),
                        target: SocketAddrV4::new(ip, *port),
                        protocol: *protocol,
                    });
                }
            }
        }
    }
    let mut out = run_attempts(work, options.timeout, options.parallel.max(1))?;
    servers.stop();
    out.sort_by(|a, b| (a.protocol, a.port, &a.from, &a.to).cmp(&(b.protocol, b.port, &b.from, &b.to)));
    Ok(out)
}

struct Attempt {
    from: String,
    from_netns: String,
    to: String,
    target: SocketAddrV4,
    protocol: Protocol,
}

fn enter_netns(netns: &str) -> Result<(), ConnectivityError> {
    let path = format!("/run/netns/{netns}");
    let err = |source| ConnectivityError::Setns { netns: netns.to_string(), source };
    let file = std::fs::File::open(&path).map_err(err)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| err(e.into()))
}

fn run_attempts(
    work: VecDeque<Attempt>,
    timeout: Duration,
    parallel: usize,
) -> Result<Vec<Outcome>, ConnectivityError> {
    let total = work.len();
    let queue = Arc::new(Mutex::new(work));
    let (tx, rx) = mpsc::channel::<Result<Outcome, ConnectivityError>>();
    let mut workers = Vec::new();
    for _ in 0..parallel.min(total) {
        let (queue, tx) = (queue.clone(), tx.clone());
        // A dedicated OS thread: it changes its network namespace.
        workers.push(std::thread::spawn(move || {
            let mut current: Option<String> = None;
            loop {
                let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
                let Some(a) = next else { return };
                if current.as_deref() != Some(a.from_netns.as_str()) {
                    if let Err(e) = enter_netns(&a.from_netns) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    current = Some(a.from_netns.clone());
                }
                let connected = match a.protocol {
                    Protocol::Tcp => tcp_connects(a.target, timeout),
                    Protocol::Udp => udp_echoes(a.target, timeout),
                };
                let outcome =
                    Outcome { from: a.from, to: a.to, port: a.target.port(), protocol: a.protocol, connected };
                if tx.send(Ok(outcome)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut out = Vec::with_capacity(total);
    let mut first_error = None;
    for r in rx {
        match r {
            Ok(o) => out.push(o),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
    match first_error {
        Some(e) => Err(e),
        None if out.len() == total => Ok(out),
        None => Err(ConnectivityError::Thread(format!("{} of {total} attempts made", out.len()))),
    }
}

fn tcp_connects(target: SocketAddrV4, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::V4(target), timeout).is_ok()
}

fn udp_echoes(target: SocketAddrV4, timeout: Duration) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(target)?;
        let deadline = Instant::now() + timeout;
        let payload = b"novanet-probe";
        let mut buf = [0u8; 64];
        // Resent every 200 ms within the timeout: a first datagram may wait for a neighbour resolution.
        while Instant::now() < deadline {
            socket.send(payload)?;
            let left = deadline.saturating_duration_since(Instant::now());
            socket.set_read_timeout(Some(left.min(Duration::from_millis(200)).max(Duration::from_millis(1))))?;
            match socket.recv(&mut buf) {
                Ok(n) => return Ok(&buf[..n] == payload),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    };
    attempt().unwrap_or(false)
}

/// The probe's servers; stopped (threads joined, sockets closed) on [`Servers::stop`] or drop.
#[derive(Default)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Serves `ports` x `protocols` in `pod`'s namespace; returns once every socket is bound.
    pub fn start(&mut self, pod: &PodState, ports: &[u16], protocols: &[Protocol]) -> Result<(), ConnectivityError> {
        let (tx, rx) = mpsc::channel::<Result<(), ConnectivityError>>();
        let (netns, key, stop) = (pod.netns.clone(), pod.key(), self.stop.clone());
        let (ports, protocols) = (ports.to_vec(), protocols.to_vec());
        self.threads.push(std::thread::spawn(move || {
            let bound = enter_netns(&netns).and_then(|()| bind_all(&key, &ports, &protocols));
            let sockets = match bound {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            serve(&sockets, &stop);
        }));
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|e| ConnectivityError::Thread(format!("server of {}: {e}", pod.key())))?
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Sockets {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

fn bind_all(pod: &str, ports: &[u16], protocols: &[Protocol]) -> Result<Sockets, ConnectivityError> {
    let mut s = Sockets { tcp: Vec::new(), udp: Vec::new() };
    for &port in ports {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        for &protocol in protocols {
            let err = |source| ConnectivityError::Bind { pod: pod.to_string(), port, protocol, source };
            let bound = match protocol {
                // std sets SO_REUSEADDR: the TIME_WAIT sockets of an earlier probe do not block the bind.
                Protocol::Tcp => TcpListener::bind(addr).map(|l| s.tcp.push(l)),
                Protocol::Udp => UdpSocket::bind(addr).map(|u| s.udp.push(u)),
            };
            match bound {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AddrInUse => {
                    tracing::info!(pod, port, ?protocol, "something already listens; left to it");
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    for l in &s.tcp {
        l.set_nonblocking(true).map_err(|e| ConnectivityError::Thread(e.to_string()))?;
    }
    for u in &s.udp {
        u.set_nonblocking(true).map_err(|e| ConnectivityError::Thread(e.to_string()))?;
    }
    Ok(s)
}

fn serve(s: &Sockets, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for l in &s.tcp {
            while let Ok((conn, _)) = l.accept() {
                drop(conn); // accept and close: the handshake is what the probe measures
                busy = true;
            }
        }
        for u in &s.udp {
            while let Ok((n, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], peer);
                busy = true;
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
}

/// The matrix of one port/protocol, as the upstream suite prints it: a header of targets, one row per
/// source, `.` connected, `X` not, `?` not probed.
pub fn matrix(outcomes: &[Outcome], port: u16, protocol: Protocol) -> String {
    let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.port == port && o.protocol == protocol).collect();
    let mut froms: Vec<&str> = mine.iter().map(|o| o.from.as_str()).collect();
    let mut tos: Vec<&str> = mine.iter().map(|o| o.to.as_str()).collect();
    froms.dedup();
    tos.sort();
    tos.dedup();
    let mut out = format!("{} {port} (row connects to column: . connected, X not)\n-", protocol.as_str());
    for t in &tos {
        out.push('\t');
        out.push_str(t);
    }
    out.push('\n');
    for f in &froms {
        out.push_str(f);
        for t in &tos {
            let mark = match mine.iter().find(|o| o.from == *f && o.to == *t) {
                Some(o) if o.connected => ".",
                Some(_) => "X",
                None => "?",
            };
            out.push('\t');
            out.push_str(mark);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(from: &str, to: &str, connected: bool) -> Outcome {
        Outcome { from: from.into(), to: to.into(), port: 80, protocol: Protocol::Tcp, connected }
    }

    #[test]
    fn the_matrix_marks_connected_and_blocked_pairs() {
        let outcomes = [o("x/a", "x/a", true), o("x/a", "x/b", false), o("x/b", "x/a", true), o("x/b", "x/b", true)];
        let m = matrix(&outcomes, 80, Protocol::Tcp);
        assert_eq!(m.lines().skip(1).collect::<Vec<_>>(), ["-\tx/a\tx/b", "x/a\t.\tX", "x/b\t.\t."]);
        assert!(m.starts_with("TCP 80"));
    }

    #[test]
    fn outcomes_are_json_lines_as_documented() {
        let line = serde_json::to_string(&o("x/a", "y/b", true)).unwrap();
        assert_eq!(line, r#"{"from":"x/a","to":"y/b","port":80,"protocol":"TCP","connected":true}"#);
        assert_eq!("udp".parse::<Protocol>().unwrap(), Protocol::Udp);
        assert!("sctp".parse::<Protocol>().is_err());
    }

    fn pod(name: &str, netns: &str, ip: [u8; 4]) -> PodState {
        PodState {
            namespace: "x".into(),
            name: name.into(),
            uid: "u".into(),
            node: "n".into(),
            netns: netns.into(),
            container_id: "c".into(),
            ip: Some(Ipv4Addr::from(ip)),
            cni_result: None,
            process_pid: None,
            process_program: None,
        }
    }

    #[test]
    fn filters_name_a_pod_by_key_or_name_or_a_whole_namespace() {
        let pods = [pod("a", "n1", [10, 0, 0, 1]), pod("b", "n1", [10, 0, 0, 2])];
        let keys = |f: &[&str]| -> Vec<String> {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            select(&pods, &f).unwrap().iter().map(|p| p.key()).collect()
        };
        assert_eq!(keys(&[]), ["x/a", "x/b"]);
        assert_eq!(keys(&["x/b"]), ["x/b"]);
        assert_eq!(keys(&["a"]), ["x/a"]);
        assert_eq!(keys(&["x/*"]), ["x/a", "x/b"]);
        assert!(matches!(select(&pods, &["y/a".to_string()]), Err(ConnectivityError::NoSuchPod(_))));
    }

    #[test]
    fn servers_answer_tcp_and_udp_and_an_unreachable_target_is_not_connected() {
        if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1) != 0 {
            return novanet_testkit::skip("needs root to create network namespaces");
        }
        let prefix = crate::netns::unique_prefix();
        let ns = crate::netns::NetNs::create(&format!("{prefix}-conn")).unwrap();
        // `a` answers on its loopback address; `b`'s address is routed nowhere from `a`'s namespace.
        let pods = [pod("a", ns.name(), [127, 0, 0, 1]), pod("b", ns.name(), [10, 1, 2, 3])];
        let options = ProbeOptions {
            ports: vec![80, 81],
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            from: vec!["x/a".into()],
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let out = probe(&pods, &options).unwrap();
        assert_eq!(out.len(), 8);
        for o in &out {
            assert_eq!(o.connected, o.to == "x/a", "{o:?}");
        }
        // The servers are gone: the ports can be bound again at once, by the next probe.
        let again = probe(&pods, &options).unwrap();
        assert_eq!(again, out);
    }
}
