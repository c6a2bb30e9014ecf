//! `novanetctl identity`, `novanetctl policy [ENDPOINT]` and `novanetctl policy trace`: JSON from the
//! agent, printed as is with `-o json` or as tables.

use anyhow::Context;
use clap::{Args, Subcommand};
use novanet_api::v1::agent_client::AgentClient;
use novanet_api::v1::{IdentitiesRequest, PolicyRequest, PolicyTraceRequest};
use serde_json::Value;
use tonic::transport::Channel;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: Option<PolicyCmd>,
    /// A local endpoint (`namespace/pod` or its address); all local endpoints when absent.
    pub endpoint: Option<String>,
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// The verdict of a connection and the policies and rules that decide it.
    Trace {
        /// `namespace/pod` or an address.
        #[arg(long)]
        from: String,
        /// `namespace/pod` or an address.
        #[arg(long)]
        to: String,
        /// `PORT[/PROTOCOL]`, e.g. `80/TCP` (protocol TCP when absent).
        #[arg(long)]
        port: String,
    },
}

fn parse(reply: novanet_api::v1::JsonReply) -> anyhow::Result<Value> {
    serde_json::from_str(&reply.json).context("the agent's answer is not JSON")
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn labels(v: &Value) -> String {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(","))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "-".into())
}

pub async fn identity(client: &mut AgentClient<Channel>, json: bool) -> anyhow::Result<()> {
    let v = parse(client.identities(IdentitiesRequest {}).await.context("identities")?.into_inner())?;
    if json {
        println!("{v}");
        return Ok(());
    }
    println!("{:<10} {:<20} {:<6} LABELS", "IDENTITY", "NAMESPACE", "PODS");
    for row in v.as_array().into_iter().flatten() {
        println!("{:<10} {:<20} {:<6} {}", s(&row["identity"]), s(&row["namespace"]), s(&row["podCount"]), labels(&row["labels"]));
    }
    Ok(())
}

pub async fn policy(client: &mut AgentClient<Channel>, args: PolicyArgs, json: bool) -> anyhow::Result<()> {
    if let Some(PolicyCmd::Trace { from, to, port }) = args.command {
        let (port, protocol) = port.split_once('/').unwrap_or((port.as_str(), "TCP"));
        let port: u32 = port.parse().with_context(|| format!("port {port:?} is not a number"))?;
        let req = PolicyTraceRequest { from, to, port, protocol: protocol.to_uppercase() };
        let v = parse(client.policy_trace(req).await.context("policy trace")?.into_inner())?;
        if json {
            println!("{v}");
        } else {
            print_trace(&v);
        }
        return Ok(());
    }
    let req = PolicyRequest { endpoint: args.endpoint.unwrap_or_default() };
    let v = parse(client.policy(req).await.context("policy")?.into_inner())?;
    if json {
        println!("{v}");
        return Ok(());
    }
    for ep in v["endpoints"].as_array().into_iter().flatten() {
        println!("{} ({}), identity {}", s(&ep["endpoint"]), s(&ep["ip"]), s(&ep["identity"]));
        for dir in ["ingress", "egress"] {
            let d = &ep[dir];
            let by: Vec<String> = d["selectedBy"].as_array().into_iter().flatten().map(s).collect();
            let state = if d["isolated"].as_bool() == Some(true) {
                format!("isolated by {}", if by.is_empty() { "defaultDeny".to_string() } else { by.join(", ") })
            } else {
                "not isolated (all allowed)".to_string()
            };
            println!("  {dir}: {state}; new flows allowed {} / denied {} packets", s(&d["allowedPackets"]), s(&d["deniedPackets"]));
            for r in d["rules"].as_array().into_iter().flatten() {
                println!("    allow {:<40} ports {:<24} from {} ({})", compact(&r["peer"]), compact(&r["ports"]), s(&r["policy"]), s(&r["description"]));
            }
        }
    }
    for n in v["notices"].as_array().into_iter().flatten() {
        println!("notice: {}", s(n));
    }
    Ok(())
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => m.iter().map(|(k, v)| format!("{k} {}", compact(v))).collect(),
        other => other.to_string(),
    }
}

fn print_trace(v: &Value) {
    let verdict = if v["allowed"].as_bool() == Some(true) { "ALLOWED" } else { "DENIED" };
    println!("{} -> {} port {}/{}: {verdict}", end_name(&v["from"]), end_name(&v["to"]), s(&v["port"]), s(&v["protocol"]));
    for (dir, at) in [("egress", "from"), ("ingress", "to")] {
        let d = &v[dir];
        println!("  {dir} at {}: {}", end_name(&v[at]), s(&d["explanation"]));
    }
}

fn end_name(end: &Value) -> String {
    match end.get("pod").and_then(Value::as_str) {
        Some(pod) => format!("{pod} ({}, identity {})", s(&end["ip"]), s(&end["identity"])),
        None => format!("{} (identity {})", s(&end["ip"]), s(&end["identity"])),
    }
}
