//! `novanetctl`: talks to the node's agent over its unix socket.
//!
//! Exit status: 1 when the agent does not answer (so `novanetctl status` is the DaemonSet's liveness
//! probe), and with `status --ready`, 2 when it answers but is not ready (the readiness probe: the reasons
//! go to stderr, which kubelet shows in the probe's event).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use novanet_api::v1::{ListEndpointsRequest, StatusRequest};

mod policy_cmds;

#[derive(Parser)]
#[command(name = "novanetctl", version, about = "NovaNet CLI")]
struct Cli {
    /// The agent's API socket.
    #[arg(long, env = "NOVANET_SOCKET", default_value = novanet_api::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, short = 'o', global = true, value_parser = ["table", "json"], default_value = "table")]
    output: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Node status: readiness, subsystems, pod CIDR, pool usage, datapath counters.
    Status {
        /// Exit with status 2 unless the agent is ready (datapath loaded, sources synced, API serving).
        #[arg(long)]
        ready: bool,
    },
    /// Local endpoints.
    Endpoints,
    /// Security identities in use: number, namespace, labels, pod count.
    Identity,
    /// The compiled NetworkPolicy of local endpoints with the policies its rules come from and the
    /// verdict counters; `policy trace` explains one connection.
    Policy(policy_cmds::PolicyArgs),
}

/// Exit status of `status --ready` when the agent answers but is not ready.
const NOT_READY: i32 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut client = novanet_api::connect_unix(&cli.socket, Duration::from_secs(5))
        .await
        .with_context(|| format!("no agent answers on {}", cli.socket.display()))?;
    let json = cli.output == "json";
    match cli.command {
        Command::Status { ready } => {
            let s = client.status(StatusRequest {}).await.context("status")?.into_inner();
            if json {
                let counters: serde_json::Map<_, _> = s
                    .counters
                    .iter()
                    .map(|c| (c.name.clone(), serde_json::json!({"packets": c.packets, "bytes": c.bytes})))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "ready": s.ready, "node": s.node_name, "podCIDR": s.pod_cidr, "endpoints": s.endpoints,
                        "poolSize": s.pool_size, "poolUsed": s.pool_used, "version": s.version,
                        "pinDir": s.pin_dir, "source": s.source, "counters": counters, "notices": s.notices,
                        "notReadyReasons": s.not_ready_reasons,
                        "subsystems": s.subsystems.iter().map(|sub| serde_json::json!({
                            "name": sub.name, "state": sub.state, "reasons": sub.reasons,
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!("node:       {}", s.node_name);
                println!("ready:      {}", s.ready);
                for r in &s.not_ready_reasons {
                    println!("  not ready: {r}");
                }
                println!("version:    {}", s.version);
                println!("source:     {}", s.source);
                println!("pod CIDR:   {} ({} of {} addresses used)", s.pod_cidr, s.pool_used, s.pool_size);
                println!("endpoints:  {}", s.endpoints);
                println!("pin dir:    {}", s.pin_dir);
                println!("subsystems:");
                for sub in &s.subsystems {
                    let why = sub.reasons.join("; ");
                    println!("  {:<12} {:<10} {why}", sub.name, sub.state);
                }
                println!("datapath counters:");
                for c in &s.counters {
                    println!("  {:<24} {:>12} packets {:>14} bytes", c.name, c.packets, c.bytes);
                }
                for n in &s.notices {
                    println!("notice: {n}");
                }
            }
            if ready && !s.ready {
                eprintln!("novanetctl: the agent is not ready: {}", s.not_ready_reasons.join("; "));
                std::process::exit(NOT_READY);
            }
        }
        Command::Identity => policy_cmds::identity(&mut client, json).await?,
        Command::Policy(args) => policy_cmds::policy(&mut client, args, json).await?,
        Command::Endpoints => {
            let eps = client.list_endpoints(ListEndpointsRequest {}).await.context("endpoints")?.into_inner();
            if json {
                let rows: Vec<_> = eps
                    .endpoints
                    .iter()
                    .map(|e| {
                        let pod = e.pod.clone().unwrap_or_default();
                        let a = e.attachment.clone().unwrap_or_default();
                        serde_json::json!({
                            "ip": e.ip, "namespace": pod.namespace, "pod": pod.name, "podUID": pod.uid,
                            "containerID": a.container_id, "ifname": a.ifname, "hostInterface": e.host_ifname,
                            "hostIfindex": e.host_ifindex, "podMAC": e.pod_mac, "netns": e.netns,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<16} {:<32} {:<16} {:<18} CONTAINER", "IP", "POD", "HOST IFACE", "POD MAC");
                for e in &eps.endpoints {
                    let pod = e.pod.clone().unwrap_or_default();
                    let a = e.attachment.clone().unwrap_or_default();
                    let id: String = a.container_id.chars().take(12).collect();
                    println!(
                        "{:<16} {:<32} {:<16} {:<18} {}",
                        e.ip,
                        format!("{}/{}", pod.namespace, pod.name),
                        e.host_ifname,
                        e.pod_mac,
                        id
                    );
                }
            }
        }
    }
    Ok(())
}
