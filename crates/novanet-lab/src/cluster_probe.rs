//! `novanet lab probe` on a real lab cluster (`novanet lab cluster`): connection attempts with
//! `kubectl exec <pod> -- /agnhost connect <ip>:<port> --timeout=..s --protocol=tcp|udp`, as Kubernetes'
//! own netpol suite probes.
//!
//! What the cluster needs: source pods with an agnhost container (`registry.k8s.io/e2e-test-images/agnhost`,
//! the lab registry serves it), and target pods that serve the probed ports, e.g. containers running
//! `/agnhost serve-hostname --tcp --http=false --port 80` and `... --udp --http=false --port 80` (one per
//! port and protocol, like the upstream suite's pods). Pods of `kube-system` and `novanet-system`,
//! hostNetwork pods and pods without an address are left out. Results are the light lab's [`Outcome`]s.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use crate::connectivity::{Outcome, ProbeOptions, filter_matches};

#[derive(Debug, thiserror::Error)]
pub enum ClusterProbeError {
    #[error("kubectl get pods: {0}")]
    List(String),
    #[error("no pod matches {0:?}")]
    NoSuchPod(String),
    #[error("no source pod has an agnhost container (the probe runs /agnhost connect in it)")]
    NoAgnhost,
}

/// A pod of the cluster as the probe sees it.
#[derive(Debug, Clone)]
struct ClusterPod {
    key: String,
    namespace: String,
    name: String,
    ip: String,
    /// The container with agnhost, if any.
    agnhost: Option<String>,
}

const SKIPPED_NAMESPACES: [&str; 2] = ["kube-system", "novanet-system"];

fn pods(kubectl: &Path, kubeconfig: &Path) -> Result<Vec<ClusterPod>, ClusterProbeError> {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "pods", "-A", "-o", "json"])
        .output()
        .map_err(|e| ClusterProbeError::List(e.to_string()))?;
    if !out.status.success() {
        return Err(ClusterProbeError::List(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| ClusterProbeError::List(e.to_string()))?;
    let mut pods: Vec<ClusterPod> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let namespace = p["metadata"]["namespace"].as_str()?.to_string();
            let name = p["metadata"]["name"].as_str()?.to_string();
            let ip = p["status"]["podIP"].as_str()?.to_string();
            if SKIPPED_NAMESPACES.contains(&namespace.as_str())
                || p["spec"]["hostNetwork"].as_bool() == Some(true)
                || p["status"]["phase"].as_str() != Some("Running")
            {
                return None;
            }
            let agnhost = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["image"].as_str().is_some_and(|i| i.contains("agnhost")))
                .and_then(|c| c["name"].as_str().map(str::to_string));
            Some(ClusterPod { key: format!("{namespace}/{name}"), namespace, name, ip, agnhost })
        })
        .collect();
    pods.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pods)
}

fn select<'a>(pods: &'a [ClusterPod], filter: &[String]) -> Result<Vec<&'a ClusterPod>, ClusterProbeError> {
    if filter.is_empty() {
        return Ok(pods.iter().collect());
    }
    let mut out = Vec::new();
    for f in filter {
        let found: Vec<&ClusterPod> = pods.iter().filter(|p| filter_matches(f, &p.namespace, &p.name)).collect();
        if found.is_empty() {
            return Err(ClusterProbeError::NoSuchPod(f.clone()));
        }
        out.extend(found);
    }
    Ok(out)
}

/// Probes every ordered pair (sources with agnhost x targets) on every port and protocol.
pub fn probe(kubectl: &Path, kubeconfig: &Path, options: &ProbeOptions) -> Result<Vec<Outcome>, ClusterProbeError> {
    let all = pods(kubectl, kubeconfig)?;
    let sources: Vec<&ClusterPod> = select(&all, &options.from)?.into_iter().filter(|p| p.agnhost.is_some()).collect();
    if sources.is_empty() {
        return Err(ClusterProbeError::NoAgnhost);
    }
    let targets = select(&all, &options.to)?;
    let mut jobs = Vec::new();
    for protocol in &options.protocols {
        for port in &options.ports {
            for from in &sources {
                for to in &targets {
                    jobs.push((*from, *to, *port, *protocol));
                }
            }
        }
    }
    let timeout_s = options.timeout.as_secs().max(1);
    let queue = Mutex::new(jobs.into_iter());
    let results = Mutex::new(Vec::new());
    // kubectl exec is a process and an apiserver round trip each: a smaller bound than the light lab's.
    let workers = options.parallel.clamp(1, 16);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                    let Some((from, to, port, protocol)) = next else { return };
                    let connected = Command::new(kubectl)
                        .arg("--kubeconfig")
                        .arg(kubeconfig)
                        .args(["exec", "-n", &from.namespace, &from.name, "-c"])
                        .arg(from.agnhost.as_deref().unwrap_or_default())
                        .args(["--", "/agnhost", "connect", &format!("{}:{port}", to.ip)])
                        .arg(format!("--timeout={timeout_s}s"))
                        .arg(format!("--protocol={}", protocol.as_str().to_lowercase()))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    let outcome = Outcome { from: from.key.clone(), to: to.key.clone(), port, protocol, connected };
                    results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(outcome);
                }
            });
        }
    });
    let mut outcomes = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    outcomes.sort_by(|a, b| (a.protocol, a.port, &a.from, &a.to).cmp(&(b.protocol, b.port, &b.from, &b.to)));
    Ok(outcomes)
}
