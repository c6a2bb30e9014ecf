//! CNI ADD/DEL latency on one lab node, pods added one by one (so the n-th ADD sees n-1 endpoints).
//!
//! Two passes of `count` pods each:
//! 1. `lab.add_pod` timed whole (netns creation, CNI ADD through the real plugin and agent, the lab's state
//!    file), then `lab.remove_pod` timed whole (CNI DEL, netns deletion, state file).
//! 2. The same work done step by step so the plugin call alone (`novanet_lab::pod::run_cni`) is timed,
//!    apart from creating and deleting the namespace. Every pod is recorded in the lab's state before its
//!    ADD, so the lab guard removes it even if the pass fails half-way.

use std::time::Instant;

use anyhow::Context;
use novanet_lab::netns::NetNs;
use novanet_lab::pod::{self, result_ipv4};
use novanet_lab::state::PodState;
use novanet_lab::{Lab, PodSpec};
use serde::Serialize;

use crate::child::check_interrupted;
use crate::stats::Latency;

/// Milliseconds per operation, in pod order.
#[derive(Debug, Default, Serialize)]
pub struct CniTimings {
    pub lab_add_pod_ms: Vec<f64>,
    pub lab_remove_pod_ms: Vec<f64>,
    pub netns_create_ms: Vec<f64>,
    pub cni_add_ms: Vec<f64>,
    pub cni_del_ms: Vec<f64>,
    pub netns_delete_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct CniSummary {
    pub lab_add_pod: Option<Latency>,
    pub lab_remove_pod: Option<Latency>,
    pub netns_create: Option<Latency>,
    pub cni_add: Option<Latency>,
    pub cni_del: Option<Latency>,
    pub netns_delete: Option<Latency>,
}

impl CniTimings {
    pub fn summary(&self) -> CniSummary {
        CniSummary {
            lab_add_pod: Latency::of(&self.lab_add_pod_ms),
            lab_remove_pod: Latency::of(&self.lab_remove_pod_ms),
            netns_create: Latency::of(&self.netns_create_ms),
            cni_add: Latency::of(&self.cni_add_ms),
            cni_del: Latency::of(&self.cni_del_ms),
            netns_delete: Latency::of(&self.netns_delete_ms),
        }
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn spec(name: &str, node: &str) -> PodSpec {
    PodSpec {
        namespace: "bench".into(),
        name: name.into(),
        uid: format!("uid-{name}-{}", std::process::id()),
        node: node.into(),
        labels: Default::default(),
        command: None,
    }
}

pub fn measure(lab: &mut Lab, node: &str, count: usize) -> anyhow::Result<CniTimings> {
    let mut t = CniTimings::default();
    eprintln!("CNI pass 1: {count} x lab.add_pod, then {count} x lab.remove_pod");
    for i in 0..count {
        check_interrupted()?;
        let start = Instant::now();
        lab.add_pod(&spec(&format!("lat-a{i}"), node)).with_context(|| format!("adding pod lat-a{i}"))?;
        t.lab_add_pod_ms.push(ms_since(start));
    }
    for i in 0..count {
        check_interrupted()?;
        let start = Instant::now();
        lab.remove_pod(&format!("bench/lat-a{i}")).with_context(|| format!("removing pod lat-a{i}"))?;
        t.lab_remove_pod_ms.push(ms_since(start));
    }
    eprintln!("CNI pass 2: {count} x (netns create, CNI ADD), then {count} x (CNI DEL, netns delete), each timed");
    let node_state = lab.node(node)?.clone();
    for i in 0..count {
        check_interrupted()?;
        let s = spec(&format!("lat-c{i}"), node);
        // The agent knows the pod before its ADD, as in a cluster, where the Pod is watched from its binding
        // on, long before kubelet's sandbox: the lab's objects file is polled, so give it two polls.
        lab.record_pod_object(&s)?;
        std::thread::sleep(std::time::Duration::from_millis(250)); // the file is polled every 100 ms
        let mut pod = PodState {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            uid: s.uid.clone(),
            node: s.node.clone(),
            netns: format!("{}-c{i}", lab.state.prefix),
            container_id: pod::new_container_id(),
            ip: None,
            cni_result: None,
            process_pid: None,
            process_program: None,
        };
        let start = Instant::now();
        let ns = NetNs::create(&pod.netns)?;
        t.netns_create_ms.push(ms_since(start));
        lab.state.pods.push(pod.clone());
        lab.state.save()?;
        ns.leak(); // the lab's state owns it now
        let config = pod::plugin_config(&node_state, None)?;
        let start = Instant::now();
        let result = pod::run_cni(&node_state, &pod, "ADD", &config).with_context(|| format!("CNI ADD {}", s.name))?;
        t.cni_add_ms.push(ms_since(start));
        pod.ip = Some(result_ipv4(&result).with_context(|| format!("no IPv4 in the ADD result of {}", s.name))?);
        pod.cni_result = Some(result);
        if let Some(slot) = lab.state.pods.iter_mut().find(|p| p.netns == pod.netns) {
            *slot = pod;
        }
        lab.state.save()?;
    }
    for i in 0..count {
        check_interrupted()?;
        let key = format!("bench/lat-c{i}");
        let pod = lab.pod(&key)?.clone();
        let config = pod::plugin_config(&node_state, pod.cni_result.as_ref())?;
        let start = Instant::now();
        pod::run_cni(&node_state, &pod, "DEL", &config).with_context(|| format!("CNI DEL {key}"))?;
        t.cni_del_ms.push(ms_since(start));
        let start = Instant::now();
        NetNs::delete(&pod.netns)?;
        t.netns_delete_ms.push(ms_since(start));
        lab.state.pods.retain(|p| p.netns != pod.netns);
        lab.state.save()?;
        lab.forget_pod_object(&pod.namespace, &pod.name)?;
    }
    Ok(t)
}
