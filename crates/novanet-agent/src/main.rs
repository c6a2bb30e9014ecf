//! `novanet-agent`: the NovaNet node daemon.
//!
//! Start-up order: configuration -> the node's pod CIDR -> load (or re-adopt) the pinned datapath ->
//! restore the endpoint table from disk -> reconcile the datapath against it -> serve the API. The
//! pinned programs and maps keep forwarding while the agent is down or restarting; the agent never
//! unpins on exit, except when its DaemonSet was deleted (`helm uninstall`): then it removes NovaNet
//! from the node as it exits (`uninstall.rs`).

mod bpffs;
mod config;
mod endpoint_manager;
mod flow_sweep;
mod grpc;
mod install_cni;
mod kubernetes;
mod state_file;
mod uninstall;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use novanet_dataplane::Dataplane;
use novanet_model::{EndpointTable, PersistedTable};
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

fn restore_table(persisted: Option<PersistedTable>, cidr: Ipv4Net) -> anyhow::Result<EndpointTable> {
    match persisted {
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
    for notice in cfg.inactive_settings() {
        warn!("{notice}");
    }
    let state = StateFile::new(cfg.state_file());
    let persisted = state.load()?;
    let (cidr, client) = match cfg.pod_cidr_source {
        PodCidrSource::Static => (cfg.pod_cidr.context("podCIDR is required with podCIDRSource static")?, None),
        PodCidrSource::Kubernetes | PodCidrSource::ClusterPool => {
            let client = kubernetes::client(&cfg).await?;
            let cidr = match persisted.as_ref().map(|p| p.pod_cidr) {
                // A restart: running pods use addresses of the persisted CIDR; serve them at once, even
                // when the apiserver is unreachable, and check the API's view in the background.
                Some(cidr) => {
                    verify_pod_cidr(client.clone(), cfg.clone(), node.clone(), cidr);
                    cidr
                }
                None => kubernetes::pod_cidr_from_api(&client, &cfg, &node)
                    .await
                    .with_context(|| format!("getting the pod CIDR of node {node}"))?,
            };
            (cidr, Some(client))
        }
    };
    bpffs::ensure_mounted(&cfg.bpffs_root)?;
    let dataplane = Dataplane::load(&cfg.bpffs_root)
        .with_context(|| format!("loading the datapath under {}", cfg.bpffs_root.display()))?;
    let flows = dataplane.nat_flows().context("opening the NAT-flow map")?;
    let table = restore_table(persisted, cidr)?;
    let mut manager = EndpointManager::new(table, dataplane, state);
    let report = manager.reconcile().context("reconciling the datapath with the endpoint table")?;
    info!(node = %node, %cidr, restored = report.restored, missing = ?report.missing_interfaces,
          stale_removed = report.stale_map_entries_removed, "datapath reconciled");
    // Every filter now runs this build's programs: the pins of superseded map layouts can go.
    for old in manager.finish_upgrade().context("removing superseded map pins")? {
        info!(map = old.map, version = old.version, "superseded map layout unpinned");
    }
    let _sweep = flow_sweep::FlowSweep::start(flows, flow_sweep::SWEEP_EVERY).context("starting the NAT-flow sweep")?;
    let manager = Arc::new(Mutex::new(manager));
    let release = match (&client, &cfg.cleanup_on_uninstall) {
        (Some(client), Some(own)) => Some(novanet_k8s::ReleaseWatch::start(client.clone(), &own.namespace, &own.daemon_set)),
        _ => None,
    };
    let (objects, _source) = match client {
        Some(client) => {
            if let Some(ip) = cfg.underlay_ip {
                kubernetes::publish_underlay(client.clone(), node.clone(), ip.into());
            }
            let interval = std::time::Duration::from_secs(cfg.orphan_sweep_seconds.max(1));
            let (objects, source) = kubernetes::start_sources(client, &node, manager.clone(), interval);
            (Some(objects), Some(source))
        }
        None => (None, None),
    };
    let source = if objects.is_some() { "kubernetes" } else { "static" };
    let service = AgentService::new(
        manager.clone(),
        NodeInfo { node_name: node, source: source.into(), mtu: cfg.mtu, notices: cfg.inactive_settings() },
        objects,
    );
    serve_until_signal(service, &cfg.socket_path).await?;
    if let Some(release) = release
        && release.confirm_removed(SHUTDOWN_READ_TIMEOUT).await
    {
        info!("the agent's DaemonSet was deleted: removing NovaNet from this node");
        let manager = manager.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let host_ifnames: Vec<String> = manager.table().iter().map(|ep| ep.host_ifname.clone()).collect();
        let removed = uninstall::remove_from_node(&cfg, &host_ifnames);
        anyhow::ensure!(removed.errors.is_empty(), "uninstall cleanup failed: {}", removed.errors.join("; "));
        return Ok(());
    }
    info!("agent stopped; pinned datapath left running");
    Ok(())
}

/// How long open API connections may delay the exit after SIGTERM.
const GRACEFUL_STOP: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the shutdown read of the agent's DaemonSet may take.
const SHUTDOWN_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves the API until SIGTERM/SIGINT, then lets open calls finish for at most [`GRACEFUL_STOP`], so the
/// uninstall cleanup always runs inside the pod's termination grace period.
async fn serve_until_signal(service: AgentService, socket: &std::path::Path) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = grpc::serve(service, socket, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown_signal() => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(GRACEFUL_STOP, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            warn!("API calls still open {GRACEFUL_STOP:?} after the stop signal; stopping anyway");
            Ok(())
        }
    }
}

/// Warns when the API now assigns the node another pod CIDR than the persisted one.
fn verify_pod_cidr(client: novanet_k8s::kube::Client, cfg: AgentConfig, node: String, persisted: Ipv4Net) {
    tokio::spawn(async move {
        match kubernetes::pod_cidr_from_api(&client, &cfg, &node).await {
            Ok(api) if api == persisted => info!(%node, cidr = %api, "persisted pod CIDR matches the API"),
            Ok(api) => warn!(%node, %persisted, %api, "the API assigns another pod CIDR; restart the node's pods to move them"),
            Err(e) => warn!(%node, error = %e, "could not read the pod CIDR from the API"),
        }
    });
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
