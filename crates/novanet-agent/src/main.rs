//! `novanet-agent`: the NovaNet node daemon.
//!
//! The agent is a set of subsystems (`subsystems/`), started in this order, each needing the ones
//! before it, and stopped in reverse on SIGTERM/SIGINT (or when a later one fails to start):
//!
//! 1. configuration, and the persisted endpoint table (`state_file.rs`; a newer format is refused);
//! 2. `kubernetes`: the apiserver client, the node's pod CIDR (static, the Node object, or a cluster-pool
//!    block; the persisted CIDR on a restart), the object stores, the watch on the agent's own DaemonSet;
//! 3. `endpoints`: load (or re-adopt) the pinned datapath, restore the endpoint table, reconcile the
//!    datapath against it, the orphan sweep;
//! 4. `policy`, `tunnels`, `services`, `flows`, `routing`: inactive in this build, with the reason;
//! 5. `api`: the gRPC socket, last, so an agent that answers has everything behind it.
//!
//! Ready (`status`, the DaemonSet's readiness probe) when every subsystem is ready or inactive. The
//! pinned programs and maps keep forwarding while the agent is down or restarting; the agent never
//! unpins on exit, except when its DaemonSet was deleted (`helm uninstall`): then it removes NovaNet
//! from the node as it exits (`uninstall.rs`), after every subsystem has stopped.

mod bpffs;
mod config;
mod endpoint_datapath;
mod endpoint_manager;
mod flow_sweep;
#[cfg(test)]
mod fake_datapath;
mod grpc;
mod grpc_policy;
mod install_cni;
mod kubernetes;
mod policy;
mod state_file;
mod subsystems;
mod uninstall;
mod veth_reaper;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::config::{AgentConfig, PodCidrSource};
use crate::endpoint_manager::EndpointManager;
use crate::grpc::{AgentService, NodeInfo};
use crate::state_file::StateFile;
use crate::subsystems::Subsystems;

#[derive(Parser)]
#[command(name = "novanet-agent", version, about = "NovaNet node agent")]
struct Cli {
    /// Agent configuration file (YAML, camelCase keys).
    #[arg(long, env = "NOVANET_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the file.
#[derive(clap::Args, Default)]
struct Overrides {
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Static pod CIDR (implies podCIDRSource static).
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    #[arg(long)]
    socket: Option<PathBuf>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    bpffs_root: Option<PathBuf>,
    /// The node's underlay address to publish on its Node (the chart passes `status.hostIP`).
    #[arg(long, env = "NOVANET_UNDERLAY_IP")]
    underlay_ip: Option<std::net::Ipv4Addr>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node daemon (the default).
    Run,
    /// Install the CNI plugin binary and its conflist (the DaemonSet's init container).
    InstallCni {
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The plugin binary to install; defaults to `novanet-cni` next to this executable.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// CNI log file to put in the conflist.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// The reference `portmap` plugin to install as `novanet-portmap` and chain (pods' hostPorts).
        #[arg(long)]
        portmap: Option<PathBuf>,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut cfg = match &cli.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::from_yaml("{}")?,
    };
    let o = &cli.overrides;
    if let Some(n) = &o.node_name {
        cfg.node_name = Some(n.clone());
    }
    if let Some(c) = o.pod_cidr {
        cfg.pod_cidr = Some(c);
        cfg.pod_cidr_source = PodCidrSource::Static;
    }
    if let Some(s) = &o.socket {
        cfg.socket_path = s.clone();
    }
    if let Some(s) = &o.state_dir {
        cfg.state_dir = s.clone();
    }
    if let Some(b) = &o.bpffs_root {
        cfg.bpffs_root = b.clone();
    }
    if let Some(ip) = o.underlay_ip {
        cfg.underlay_ip = Some(ip);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn node_name(cfg: &AgentConfig) -> String {
    cfg.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    })
}

/// How long the shutdown read of the agent's DaemonSet may take.
const SHUTDOWN_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the running agent needs at shutdown.
struct Running {
    manager: Arc<Mutex<EndpointManager>>,
    reaper: Arc<veth_reaper::VethReaper>,
    release: Option<novanet_k8s::ReleaseWatch>,
    api_exited: subsystems::api::Exited,
}

/// Starts the subsystems in order, registering each with `subsystems` once it runs (see the module doc
/// for why this order).
async fn start(cfg: &AgentConfig, node: &str, subsystems: &Subsystems) -> anyhow::Result<Running> {
    let state = StateFile::new(cfg.state_file());
    let persisted = state.load()?;
    let persisted_cidr = persisted.as_ref().map(|p| p.pod_cidr);

    let kubernetes = subsystems::sources::Sources::start(cfg, node, persisted_cidr).await?;
    let (pod_cidr, objects, release, client) =
        (kubernetes.pod_cidr, kubernetes.objects, kubernetes.release, kubernetes.client);
    subsystems.started(Box::new(kubernetes.sources));

    let endpoints = subsystems::endpoints::Endpoints::start(cfg, node, pod_cidr, state, persisted, objects.as_ref())?;
    let manager = endpoints.manager();
    subsystems.started(Box::new(endpoints));

    let policy = subsystems::policy::start(cfg, node, objects.clone(), client, manager.clone())?;
    let policy_view = policy.shared();
    subsystems.started(policy.boxed());
    subsystems.started(Box::new(subsystems::tunnels::start(cfg)));
    subsystems.started(Box::new(subsystems::services::start(cfg)));
    subsystems.started(Box::new(subsystems::flows::start()));
    subsystems.started(Box::new(subsystems::routing::start(cfg)));

    let source = match (&objects, &cfg.objects_file) {
        (Some(_), Some(_)) => "objects-file",
        (Some(_), None) => "kubernetes",
        (None, _) => "static",
    };
    let node_info =
        NodeInfo { node_name: node.to_string(), source: source.into(), mtu: cfg.mtu, notices: cfg.inactive_settings() };
    let reaper = veth_reaper::VethReaper::start()?;
    let service = AgentService::new(manager.clone(), node_info, subsystems.clone(), policy_view, reaper.clone());
    let (api, api_exited) = subsystems::api::Api::start(service, &cfg.socket_path)?;
    subsystems.started(Box::new(api));
    Ok(Running { manager, reaper, release, api_exited })
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let node = node_name(&cfg);
    for notice in cfg.inactive_settings() {
        warn!("{notice}");
    }
    let subsystems = Subsystems::default();
    let running = match start(&cfg, &node, &subsystems).await {
        Ok(running) => running,
        Err(e) => {
            subsystems.stop_all().await;
            return Err(e);
        }
    };
    let served = tokio::select! {
        () = shutdown_signal() => Ok(()),
        exited = running.api_exited => exited.unwrap_or(Ok(())),
    };
    subsystems.stop_all().await;
    let reaper = running.reaper.clone();
    let _ = tokio::task::spawn_blocking(move || reaper.stop()).await;
    served?;
    if let Some(release) = running.release
        && release.confirm_removed(SHUTDOWN_READ_TIMEOUT).await
    {
        info!("the agent's DaemonSet was deleted: removing NovaNet from this node");
        let manager = running.manager.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let host_ifnames: Vec<String> = manager.table().iter().map(|ep| ep.host_ifname.clone()).collect();
        let removed = uninstall::remove_from_node(&cfg, &host_ifnames);
        anyhow::ensure!(removed.errors.is_empty(), "uninstall cleanup failed: {}", removed.errors.join("; "));
        return Ok(());
    }
    info!("agent stopped; pinned datapath left running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run(cfg)),
        Command::InstallCni { bin_dir, conf_dir, plugin, log_file, portmap } => {
            let plugin_source = match plugin {
                Some(p) => p.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("executable has no directory")?
                    .join(install_cni::PLUGIN_NAME),
            };
            install_cni::InstallCni {
                plugin_source,
                bin_dir: bin_dir.clone(),
                conf_dir: conf_dir.clone(),
                socket: cfg.socket_path.clone(),
                mtu: cfg.mtu,
                log_file: log_file.clone(),
                portmap_source: portmap.clone(),
            }
            .run()
        }
    }
}
