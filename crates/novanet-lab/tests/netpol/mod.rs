//! Support of the NetworkPolicy scenarios (`netpol_scenarios.rs`), in the style of the upstream netpol
//! suite: one light lab shared by every scenario (namespaces x, y, z; pods a, b, c in each, spread over two
//! nodes; TCP and UDP on ports 80 and 81, named container ports), policies applied with `novanet lab
//! apply`, and the full probe matrix (`novanet lab probe --json`) compared with a [`Reachability`] computed
//! in the test.
//!
//! The lab is built by the first scenario and removed when the test process exits (`atexit`); scenarios
//! hold its lock for their whole run, so they run one at a time, and each starts from a clean lab: no
//! policy, the original labels, no extra pod, and the all-connected matrix seen again.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use novanet_lab::connectivity::{Outcome, Protocol};
use novanet_lab::{Lab, LabSpec};

use crate::common::cli::novanet;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];
/// How long a scenario waits for the expected matrix.
pub const ENFORCEMENT_WAIT: Duration = Duration::from_secs(6);

/// The lab: nodes n1 (10.244.1.0/24) and n2 (10.244.2.0/24); namespace `<n>` labelled `ns: <n>`; pod `<p>`
/// labelled `pod: <p>` (and `tier: db` for c), on n1 or n2 alternately. Every pod names its ports
/// `serve-<port>-<tcp|udp>`; pod a also names TCP 80 `web`, pod b names TCP 81 `web` (same name, different
/// numbers), pod c has no `web`.
pub fn lab_yaml() -> String {
    let mut y = String::new();
    for (i, node) in ["n1", "n2"].iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\nspec: {{podCIDR: 10.244.{}.0/24}}\n",
            i + 1
        ));
    }
    let mut seq = 0;
    for ns in NAMESPACES {
        y.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"));
        for pod in PODS {
            let node = if seq % 2 == 0 { "n1" } else { "n2" };
            seq += 1;
            y.push_str(&pod_yaml(ns, pod, node, &pod_labels(pod)));
        }
    }
    y
}

pub fn pod_labels(pod: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([("pod".to_string(), pod.to_string())]);
    if pod == "c" {
        l.insert("tier".into(), "db".into());
    }
    l
}

pub fn pod_yaml(ns: &str, pod: &str, node: &str, labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let mut ports = String::new();
    for port in PORTS {
        for proto in ["TCP", "UDP"] {
            ports.push_str(&format!(
                "      - {{name: serve-{port}-{}, containerPort: {port}, protocol: {proto}}}\n",
                proto.to_lowercase()
            ));
        }
    }
    match pod {
        "a" => ports.push_str("      - {name: web, containerPort: 80, protocol: TCP}\n"),
        "b" => ports.push_str("      - {name: web, containerPort: 81, protocol: TCP}\n"),
        _ => {}
    }
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{{}}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n{ports}",
        labels.join(", ")
    )
}

static SHARED: Mutex<Option<Lab>> = Mutex::new(None);

extern "C" fn remove_shared_lab() {
    let lab = SHARED.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(lab) = lab
        && let Err(e) = lab.down()
    {
        eprintln!("netpol lab teardown: {e}");
    }
}

/// A scenario's hold on the shared lab.
pub struct Scenario {
    guard: MutexGuard<'static, Option<Lab>>,
    pub name: String,
    dir: tempfile::TempDir,
    /// Pods every probe covers (the lab's pods).
    pub pods: Vec<String>,
}

/// The shared lab, clean, or `None` (after a skip) when this machine cannot run it.
pub fn scenario() -> Option<Scenario> {
    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1) != 0 {
        novanet_testkit::skip("needs root (network namespaces, bpffs, eBPF)");
        return None;
    }
    let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        let name = format!("test-netpol-{}", std::process::id());
        let lab = Lab::guard(&name, &LabSpec::parse(&lab_yaml()).unwrap()).unwrap();
        *guard = Some(lab);
        // SAFETY: registers a plain `extern "C"` function; it only takes the lab out of a static and removes it.
        unsafe { libc::atexit(remove_shared_lab) };
    }
    let name = guard.as_ref().unwrap().state.name.clone();
    let mut s = Scenario { guard, name, dir: tempfile::tempdir().unwrap(), pods: Vec::new() };
    s.reset();
    Some(s)
}

impl Scenario {
    pub fn lab(&mut self) -> &mut Lab {
        self.guard.as_mut().unwrap()
    }

    pub fn ip(&mut self, pod: &str) -> String {
        self.lab().pod_ip(pod).unwrap().to_string()
    }

    /// No policy, original labels, no extra pods; waits for the all-connected matrix.
    fn reset(&mut self) {
        let original: Vec<String> =
            NAMESPACES.iter().flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}"))).collect();
        let extra: Vec<String> =
            self.lab().state.pods.iter().map(|p| p.key()).filter(|k| !original.contains(k)).collect();
        for key in extra {
            self.lab().remove_pod(&key).unwrap();
        }
        let record = novanet_lab::objects::load_record(&self.lab().state.dir).unwrap();
        if !record.network_policies.is_empty() {
            let all = novanet_k8s::Manifests { network_policies: record.network_policies, ..Default::default() };
            self.lab().delete(&all).unwrap();
        }
        let mut labels = String::new();
        for ns in NAMESPACES {
            for pod in PODS {
                labels.push_str(&pod_yaml(ns, pod, "n1", &pod_labels(pod)));
            }
        }
        self.apply(&labels);
        self.pods = original;
        self.expect(&Reachability::all(&self.pods, true));
    }

    fn file(&self, yaml: &str) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("m{n}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }

    /// `novanet lab apply -f` of `yaml`; must succeed.
    pub fn apply(&self, yaml: &str) {
        let f = self.file(yaml);
        let out = novanet(&["lab", "apply", "-f", &f, "--name", &self.name]);
        assert!(out.status.success(), "lab apply failed");
    }

    /// `novanet lab delete -f` of `yaml`; must succeed.
    pub fn delete(&self, yaml: &str) {
        let f = self.file(yaml);
        let out = novanet(&["lab", "delete", "-f", &f, "--name", &self.name]);
        assert!(out.status.success(), "lab delete failed");
    }

    /// One probe of every pair, port and protocol of `expected`.
    pub fn probe(&self, expected: &Reachability) -> Vec<Outcome> {
        let ports: Vec<String> = expected.ports.iter().map(u16::to_string).collect();
        let protocols: Vec<&str> = expected.protocols.iter().map(|p| p.as_str()).collect();
        let out = std::process::Command::new(crate::common::cli::NOVANET)
            .args(["lab", "probe", "--name", &self.name, "--json", "--timeout-ms", "500", "--parallel", "400"])
            .args(["--ports", &ports.join(","), "--protocols", &protocols.join(",")])
            .output()
            .unwrap();
        assert!(out.status.success(), "lab probe failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Probes until the matrix is `expected` or [`ENFORCEMENT_WAIT`] passes; then fails with both matrices.
    pub fn expect(&self, expected: &Reachability) {
        let deadline = Instant::now() + ENFORCEMENT_WAIT;
        loop {
            let got = self.probe(expected);
            let wrong = expected.mismatches(&got);
            if wrong.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "after {ENFORCEMENT_WAIT:?} the probe still differs in {} entries:\n{}\nexpected:\n{}\ngot:\n{}",
                    wrong.len(),
                    wrong.join("\n"),
                    expected.render(&expected.to_outcomes()),
                    expected.render(&got)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One connection of the matrix, as an expectation closure sees it.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub port: u16,
    pub protocol: Protocol,
}

impl Conn<'_> {
    pub fn src_ns(&self) -> &str {
        self.from.split('/').next().unwrap_or("")
    }
    pub fn dst_ns(&self) -> &str {
        self.to.split('/').next().unwrap_or("")
    }
    pub fn src_pod(&self) -> &str {
        self.from.split('/').nth(1).unwrap_or("")
    }
    pub fn dst_pod(&self) -> &str {
        self.to.split('/').nth(1).unwrap_or("")
    }
    pub fn tcp(&self) -> bool {
        self.protocol == Protocol::Tcp
    }
}

/// The expected matrix: `Some(connected)` per (from, to, port, protocol), `None` where the scenario does not
/// care. A pod always reaches itself (loopback, as upstream's `AllowLoopback`).
#[derive(Debug, Clone)]
pub struct Reachability {
    pub pods: Vec<String>,
    pub ports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    expected: BTreeMap<(Protocol, u16, String, String), Option<bool>>,
}

impl Reachability {
    /// Every connection `connected`.
    pub fn all(pods: &[String], connected: bool) -> Self {
        Self::on(pods, &PORTS, &PROTOCOLS, |_| Some(connected))
    }

    /// Expectations from a closure, on the lab's ports and protocols.
    pub fn with(pods: &[String], f: impl Fn(Conn) -> bool) -> Self {
        Self::on(pods, &PORTS, &PROTOCOLS, |c| Some(f(c)))
    }

    /// Expectations from a closure that may not care (`None`), on chosen ports and protocols.
    pub fn on(pods: &[String], ports: &[u16], protocols: &[Protocol], f: impl Fn(Conn) -> Option<bool>) -> Self {
        let mut expected = BTreeMap::new();
        for protocol in protocols {
            for port in ports {
                for from in pods {
                    for to in pods {
                        let c = Conn { from, to, port: *port, protocol: *protocol };
                        let e = if from == to { Some(true) } else { f(c) };
                        expected.insert((*protocol, *port, from.clone(), to.clone()), e);
                    }
                }
            }
        }
        Reachability { pods: pods.to_vec(), ports: ports.to_vec(), protocols: protocols.to_vec(), expected }
    }

    /// Entries of `got` that contradict the expectation, and expected entries missing from `got`.
    pub fn mismatches(&self, got: &[Outcome]) -> Vec<String> {
        let mut seen = BTreeMap::new();
        for o in got {
            seen.insert((o.protocol, o.port, o.from.clone(), o.to.clone()), o.connected);
        }
        let mut out = Vec::new();
        for ((protocol, port, from, to), e) in &self.expected {
            match (e, seen.get(&(*protocol, *port, from.clone(), to.clone()))) {
                (_, None) => out.push(format!("{} {port} {from} -> {to}: not probed", protocol.as_str())),
                (Some(want), Some(got)) if want != got => out.push(format!(
                    "{} {port} {from} -> {to}: expected {}, got {}",
                    protocol.as_str(),
                    if *want { "connected" } else { "blocked" },
                    if *got { "connected" } else { "blocked" }
                )),
                _ => {}
            }
        }
        out
    }

    /// The expectation as outcomes (don't-care entries as connected), for printing.
    pub fn to_outcomes(&self) -> Vec<Outcome> {
        self.expected
            .iter()
            .map(|((protocol, port, from, to), e)| Outcome {
                from: from.clone(),
                to: to.clone(),
                port: *port,
                protocol: *protocol,
                connected: e.unwrap_or(true),
            })
            .collect()
    }

    pub fn render(&self, outcomes: &[Outcome]) -> String {
        let mut out = String::new();
        for protocol in &self.protocols {
            for port in &self.ports {
                out.push_str(&novanet_lab::connectivity::matrix(outcomes, *port, *protocol));
            }
        }
        out
    }
}
