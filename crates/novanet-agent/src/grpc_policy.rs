//! The policy calls of the agent API (`Identities`, `Policy`, `PolicyTrace`), answered from the policy
//! subsystem's last compile as JSON; `novanetctl` prints tables from it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use novanet_model::policy::{PodView, Protocol};
use serde_json::{Value, json};
use tonic::Status;

use crate::subsystems::policy::{Shared, View};

fn view(policy: Option<&Arc<Shared>>) -> Result<(Arc<Shared>, Arc<View>), Status> {
    let shared = policy.ok_or_else(|| Status::failed_precondition("policy is inactive on this node (see `novanetctl status`)"))?;
    let view = shared.view().ok_or_else(|| Status::unavailable("policy has not compiled yet (waiting for the object stores)"))?;
    Ok((shared.clone(), view))
}

/// Every identity in use with its labels and pods.
pub fn identities(policy: Option<&Arc<Shared>>) -> Result<Value, Status> {
    let (_, view) = view(policy)?;
    let mut pods: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in &view.pods {
        pods.entry(p.identity).or_default().push(p.key());
    }
    let rows: Vec<Value> = view
        .identities
        .iter()
        .map(|(number, labels)| {
            let names = pods.get(number).cloned().unwrap_or_default();
            json!({
                "identity": number, "namespace": labels.namespace, "labels": labels.pod,
                "namespaceLabels": labels.namespace_labels, "podCount": names.len(), "pods": names,
            })
        })
        .collect();
    Ok(Value::Array(rows))
}

fn find_pod<'a>(view: &'a View, what: &str) -> Option<&'a PodView> {
    match what.parse::<Ipv4Addr>() {
        Ok(ip) => view.pods.iter().find(|p| p.ip == ip),
        Err(_) => {
            let (ns, name) = what.split_once('/').unwrap_or(("default", what));
            view.pods.iter().find(|p| p.namespace == ns && p.name == name)
        }
    }
}

/// The compiled policy of the local endpoints (or of one), with the rules' sources and the counters.
pub fn policy(policy: Option<&Arc<Shared>>, endpoint: &str) -> Result<Value, Status> {
    let (shared, view) = view(policy)?;
    let wanted: Option<Ipv4Addr> = if endpoint.is_empty() {
        None
    } else {
        Some(match endpoint.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => find_pod(&view, endpoint).map(|p| p.ip).ok_or_else(|| Status::not_found(format!("no pod {endpoint}")))?,
        })
    };
    let mut rows = Vec::new();
    for (ip, ep) in &view.compiled.endpoints {
        if wanted.is_some_and(|w| w != *ip) {
            continue;
        }
        let pod = view.pods.iter().find(|p| p.ip == *ip);
        let [ingress, egress] = shared.verdicts(*ip);
        let rules = |allows: &[novanet_model::policy::Allow]| -> Vec<Value> {
            allows
                .iter()
                .map(|a| {
                    let rule = view.compiled.rules.get(&a.rule);
                    json!({
                        "peer": a.peer, "ports": a.ports, "rule": a.rule,
                        "policy": rule.map(|r| r.policy.clone()), "description": rule.map(|r| r.description.clone()),
                    })
                })
                .collect()
        };
        rows.push(json!({
            "endpoint": pod.map(PodView::key).or_else(|| ep.pod.clone()), "ip": ip.to_string(),
            "identity": pod.map(|p| p.identity),
            "ingress": {"isolated": ep.ingress.isolated, "selectedBy": ep.ingress.selected_by, "rules": rules(&ep.ingress.allows),
                        "allowedPackets": ingress.0, "deniedPackets": ingress.1},
            "egress": {"isolated": ep.egress.isolated, "selectedBy": ep.egress.selected_by, "rules": rules(&ep.egress.allows),
                       "allowedPackets": egress.0, "deniedPackets": egress.1},
        }));
    }
    if wanted.is_some() && rows.is_empty() {
        return Err(Status::not_found(format!("{endpoint} is not an endpoint of this node")));
    }
    Ok(json!({ "endpoints": rows, "notices": view.compiled.notices.iter().map(crate::subsystems::policy::notice_text).collect::<Vec<_>>(),
               "compiledIn": format!("{:?}", view.took) }))
}

/// The address of a trace end: a pod's (`namespace/name`) or one given.
fn end(view: &View, what: &str) -> Result<Ipv4Addr, Status> {
    if let Some(pod) = find_pod(view, what) {
        return Ok(pod.ip);
    }
    what.parse::<Ipv4Addr>().map_err(|_| Status::not_found(format!("no pod {what} (give namespace/name or an address)")))
}

/// The verdict of `from` -> `to`:`port`/`protocol`, both directions, with the deciding rules.
pub fn trace(policy: Option<&Arc<Shared>>, from: &str, to: &str, port: u32, protocol: &str) -> Result<Value, Status> {
    let (_, view) = view(policy)?;
    let protocol = if protocol.is_empty() { "TCP" } else { protocol };
    let protocol = Protocol::parse(protocol).ok_or_else(|| Status::invalid_argument(format!("unknown protocol {protocol}")))?;
    let port = u16::try_from(port).map_err(|_| Status::invalid_argument(format!("port {port} is out of range")))?;
    let (from, to) = (end(&view, from)?, end(&view, to)?);
    let trace = novanet_model::policy::trace(&view.input(), from, to, port, protocol);
    serde_json::to_value(&trace).map_err(|e| Status::internal(format!("encoding the trace: {e}")))
}
