//! `novanet-agent`: the NovaNet node daemon.
//!
//! Start-up order: configuration -> the node's pod CIDR -> load (or re-adopt) the pinned datapath ->
//! restore the endpoint table from disk -> reconcile the datapath against it -> serve the API. The
//! pinned programs and maps keep forwarding while the agent is down or restarting; the agent never
//! unpins on exit.

mod config;
mod endpoint_manager;
mod grpc;
mod install_cni;
mod state_file;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use novanet_dataplane::Dataplane;
use novanet_model::EndpointTable;
use tracing::{info, warn};

use crate::config::{AgentConfig, PodCidrSource};
use crate::endpoint_manager::EndpointManager;
use crate::grpc::{AgentService, NodeInfo};
use crate::state_file::StateFile;

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
    cfg.validate()?;
    Ok(cfg)
}

fn node_name(cfg: &AgentConfig) -> String {
    cfg.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    })
}

async fn pod_cidr(cfg: &AgentConfig, _node: &str) -> anyhow::Result<Ipv4Net> {
    match cfg.pod_cidr_source {
        PodCidrSource::Static => cfg.pod_cidr.context("podCIDR is required with podCIDRSource static"),
        other => anyhow::bail!("podCIDRSource {other:?} needs the Kubernetes source, which this build lacks"),
    }
}

fn restore_table(state: &StateFile, cidr: Ipv4Net) -> anyhow::Result<EndpointTable> {
    match state.load()? {
        None => Ok(EndpointTable::new(cidr)?),
        Some(persisted) => {
            let (table, foreign) = EndpointTable::restore(persisted, cidr)?;
            for ep in foreign {
                warn!(ip = %ep.ip, attachment = %ep.attachment, %cidr, "endpoint address is outside the node's current pod CIDR");
            }
            Ok(table)
        }
    }
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let node = node_name(&cfg);
    let cidr = pod_cidr(&cfg, &node).await?;
    for notice in cfg.inactive_settings() {
        warn!("{notice}");
    }
    let dataplane = Dataplane::load(&cfg.bpffs_root)
        .with_context(|| format!("loading the datapath under {}", cfg.bpffs_root.display()))?;
    let state = StateFile::new(cfg.state_file());
    let table = restore_table(&state, cidr)?;
    let mut manager = EndpointManager::new(table, dataplane, state);
    let report = manager.reconcile().context("reconciling the datapath with the endpoint table")?;
    info!(node = %node, %cidr, restored = report.restored, missing = ?report.missing_interfaces,
          stale_removed = report.stale_map_entries_removed, "datapath reconciled");
    let service = AgentService::new(
        Arc::new(Mutex::new(manager)),
        NodeInfo { node_name: node, source: "static".into(), mtu: cfg.mtu, notices: cfg.inactive_settings() },
    );
    grpc::serve(service, &cfg.socket_path, shutdown_signal()).await?;
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
        Command::InstallCni { bin_dir, conf_dir, plugin, log_file } => {
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
            }
            .run()
        }
    }
}
