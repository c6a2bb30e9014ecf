//! `novanet`: the NovaNet command for local labs.
//!
//! `novanet lab up -f examples/quickstart.yaml` builds a cluster of network namespaces with a real agent
//! per node and pods wired by the real CNI plugin; `status`, `exec`, `probe` and `down` work on it.

mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use novanet_lab::state::LabState;
use novanet_lab::{Lab, LabSpec};

#[derive(Parser)]
#[command(name = "novanet", version, about = "NovaNet: eBPF networking for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Local clusters made of network namespaces.
    #[command(subcommand)]
    Lab(LabCmd),
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build a lab from a YAML file of Kubernetes objects (Nodes with pod CIDRs, Pods with nodeName).
    Up {
        #[arg(short = 'f', long, default_value = "examples/quickstart.yaml")]
        file: PathBuf,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Nodes, agents and pods of a lab.
    Status {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Run a command inside a pod's network namespace.
    Exec {
        #[arg(long, default_value = "default")]
        name: String,
        /// `name` or `namespace/name`.
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Connect from every pod to every pod on each port and protocol (servers are started in the target pods
    /// for the probe's duration) and print a matrix per port/protocol (`.` connected, `X` not), or JSON lines.
    /// On a real lab cluster the attempts are `kubectl exec ... /agnhost connect` from pods with an agnhost
    /// container, to pods that serve the ports themselves. Exits 0 whatever the matrix says; non-zero only
    /// when the probe could not run.
    Probe {
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long, value_delimiter = ',', default_value = "80")]
        ports: Vec<u16>,
        #[arg(long, value_delimiter = ',', default_value = "tcp")]
        protocols: Vec<novanet_lab::connectivity::Protocol>,
        /// Source pods (`ns/pod`, a pod name, or `ns/*`); repeatable; all when absent.
        #[arg(long)]
        from: Vec<String>,
        /// Target pods, as --from.
        #[arg(long)]
        to: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Attempts at once.
        #[arg(long, default_value_t = 96)]
        parallel: usize,
        /// One JSON object per attempt: {"from","to","port","protocol","connected"}.
        #[arg(long)]
        json: bool,
        /// The old probe: ping every pod from every pod (exit 1 when one fails).
        #[arg(long, conflicts_with = "json")]
        ping: bool,
    },
    /// Add or update NetworkPolicies, Namespaces (Services, EndpointSlices) and the labels of the lab's pods
    /// from a YAML file; the agents see the change within a fraction of a second (light labs).
    Apply {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Remove the NetworkPolicies, Namespaces, Services and EndpointSlices named in a YAML file (light labs).
    Delete {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Remove every namespace, process, pin and file of the lab (a detached cluster: through its supervisor).
    Down {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List labs on this machine.
    List,
    /// Internal: a light lab's agent supervisor (started by `lab up`, stopped by `lab down`).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        name: String,
    },
    /// A real two-node Kubernetes cluster (control plane, containerd + kubelet + kube-proxy per node,
    /// images from the lab's registry) with NovaNet installed by its Helm chart. Runs until Ctrl-C,
    /// then removes everything; with --detach, runs in the background until `novanet lab down`.
    Cluster {
        #[arg(short = 'f', long, default_value = "examples/lab-cluster.yaml")]
        file: PathBuf,
        #[arg(long, default_value = "cluster")]
        name: String,
        /// Helm values for the install.
        #[arg(long, default_value = "examples/helm-values-lab.yaml")]
        values: PathBuf,
        #[arg(long, default_value = "deploy/helm/novanet")]
        chart: PathBuf,
        /// Return once NovaNet is installed, leaving a supervisor process that runs the cluster until
        /// `novanet lab down --name <name>` (its log: /run/novanet-lab/<name>/supervisor.log).
        #[arg(long)]
        detach: bool,
        /// Internal: be that supervisor (started by --detach).
        #[arg(long, hide = true, conflicts_with = "detach")]
        supervisor: bool,
    },
}

fn status(lab: &Lab) {
    if !lab.kube_nodes().is_empty() {
        return supervisor::cluster_status(lab);
    }
    println!("lab {} (prefix {}, underlay {})", lab.state.name, lab.state.prefix,
        lab.state.underlay_cidr.map(|c| c.to_string()).unwrap_or_default());
    match lab.state.supervisor {
        Some(s) if s.is_running() => println!("agent supervisor: pid {} (restarts agents that die)", s.pid),
        Some(s) => println!("agent supervisor: pid {} is gone; dead agents stay down", s.pid),
        None => println!("agent supervisor: none (a lab made in-process: agents that die stay down)"),
    }
    println!("{:<12} {:<16} {:<16} {:<8} {:<10} PIN DIR", "NODE", "UNDERLAY IP", "POD CIDR", "AGENT", "ENDPOINTS");
    for n in &lab.state.nodes {
        let (agent, endpoints, pins) = match novanet_lab::node::agent_status(&n.socket()) {
            Ok(s) => ("ready".to_string(), s.endpoints.to_string(), s.pin_dir),
            Err(e) => (format!("down ({e})"), "-".into(), "-".into()),
        };
        println!("{:<12} {:<16} {:<16} {:<8} {:<10} {}", n.name, n.underlay_ip, n.pod_cidr.to_string(), agent, endpoints, pins);
    }
    println!();
    println!("{:<28} {:<12} {:<16} NETNS", "POD", "NODE", "IP");
    for p in &lab.state.pods {
        println!("{:<28} {:<12} {:<16} {}", p.key(), p.node, p.ip.map(|i| i.to_string()).unwrap_or("-".into()), p.netns);
    }
}

fn connectivity(lab: &Lab, options: &novanet_lab::connectivity::ProbeOptions, json: bool) -> anyhow::Result<()> {
    let outcomes = if lab.kube_nodes().is_empty() {
        novanet_lab::connectivity::probe(&lab.state.pods, options).context("probing")?
    } else {
        let kubeconfig = lab.state.kubeconfig.as_ref().context("the lab cluster has no kubeconfig")?;
        let bins = novanet_lab::controlplane::locate_bin_dir().context("the Kubernetes binaries (kubectl) are not built")?;
        novanet_lab::cluster_probe::probe(&bins.join("kubectl"), kubeconfig, options).context("probing the cluster")?
    };
    if json {
        for o in &outcomes {
            println!("{}", serde_json::to_string(o)?);
        }
        return Ok(());
    }
    for protocol in &options.protocols {
        for port in &options.ports {
            println!("{}", novanet_lab::connectivity::matrix(&outcomes, *port, *protocol));
        }
    }
    Ok(())
}

fn probe(lab: &Lab) -> anyhow::Result<bool> {
    let pods = &lab.state.pods;
    let mut ok = true;
    println!("ping matrix (row pings column):");
    print!("{:<16}", "");
    for p in pods {
        print!(" {:<14}", p.name);
    }
    println!();
    for from in pods {
        print!("{:<16}", from.name);
        for to in pods {
            let Some(ip) = to.ip else { continue };
            let reached = lab
                .pod_command(&from.key(), "ping")?
                .args(["-c", "1", "-W", "2", &ip.to_string()])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            ok &= reached;
            print!(" {:<14}", if reached { "ok" } else { "FAIL" });
        }
        println!();
    }
    Ok(ok)
}

/// `novanet lab cluster`: up, helm install, print how to use it, wait for Ctrl-C or SIGTERM, tear down.
/// The supervisor of `--detach` runs exactly this, recording itself in the lab state and writing the ready
/// file its parent waits for.
fn cluster(file: &Path, name: &str, values: &Path, chart: &Path, supervised: bool) -> anyhow::Result<ExitCode> {
    use nix::sys::signal::{SigSet, Signal};
    // Block the signals before any thread starts, so every thread inherits the mask and only the
    // sigwait below receives them: the lab is always torn down by its drop guard.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    let bin_dir = novanet_lab::controlplane::locate_bin_dir()
        .context("no Kubernetes binaries: run scripts/setup.sh --k8s")?;
    let spec = LabSpec::load(file).with_context(|| format!("reading {}", file.display()))?;
    let started = std::time::Instant::now();
    let options = novanet_lab::LabOptions { kubernetes: Some(bin_dir.clone()), real_nodes: true, ..Default::default() };
    let lab = if supervised {
        let me = novanet_lab::state::SupervisorState::current().context("reading /proc/self/stat")?;
        Lab::guard_supervised(name, &spec, &options, me)
    } else {
        Lab::guard_with(name, &spec, &options)
    }
    .with_context(|| format!("bringing up lab cluster {name}"))?;
    let kubeconfig = lab.state.kubeconfig.clone().context("the lab has no kubeconfig")?;
    println!("cluster up in {:.1?}; installing NovaNet with Helm", started.elapsed());
    let helm = std::process::Command::new(bin_dir.join("helm"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["install", "novanet"])
        .arg(chart)
        .args(["-n", "novanet-system", "--create-namespace", "-f"])
        .arg(values)
        .args(["--wait", "--timeout", "5m"])
        .status()
        .context("running helm")?;
    anyhow::ensure!(helm.success(), "helm install failed");
    if supervised {
        // `--detach` prints the usage lines once it sees the ready file.
        println!("\nNovaNet installed; the cluster is ready after {:.1?}.", started.elapsed());
        supervisor::write_ready(&lab.state.dir, &kubeconfig, &bin_dir)?;
        println!("supervisor {}: SIGTERM (novanet lab down --name {name}) removes the whole cluster", std::process::id());
    } else {
        println!("\nNovaNet installed; the cluster is ready after {:.1?}. In another shell:\n", started.elapsed());
        print_usage(&kubeconfig, &bin_dir);
        println!("\nCtrl-C removes the whole cluster.");
    }
    let sig = signals.wait().context("waiting for a signal")?;
    println!("{sig:?}: removing the cluster");
    lab.down()?;
    println!("lab cluster {name} removed");
    Ok(ExitCode::SUCCESS)
}

/// How to use a ready lab cluster (printed by the foreground command and by `--detach`).
fn print_usage(kubeconfig: &Path, bin_dir: &Path) {
    println!("  export KUBECONFIG={} PATH={}:$PATH", kubeconfig.display(), bin_dir.display());
    println!("  kubectl get pods -n novanet-system -o wide");
    println!("  kubectl exec -n novanet-system ds/novanet -c agent -- novanetctl status");
    println!("  kubectl run test-a --image=busybox -- sleep 3600; kubectl run test-b --image=busybox -- sleep 3600");
    println!("  kubectl exec test-a -- ping -c 3 $(kubectl get pod test-b -o jsonpath='{{.status.podIP}}')");
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
    ).init();
    let Top::Lab(cmd) = Cli::parse().command;
    match cmd {
        LabCmd::Up { file, name } => {
            let spec = LabSpec::load(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut lab = Lab::up(&name, &spec).with_context(|| format!("bringing up lab {name}"))?;
            // Agents that die come back, as a DaemonSet's do (kubelet restarts them).
            let sup = supervisor::start_agent_supervisor(&name).with_context(|| {
                format!("lab {name} is up, but its agent supervisor did not start; `novanet lab down --name {name}` removes it")
            })?;
            lab.state.supervisor = Some(sup);
            status(&lab);
            println!();
            let ok = probe(&lab)?;
            println!("\nlab {name} is up. Try: novanet lab exec --name {name} <pod> -- ping <ip>; novanet lab down --name {name}");
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        LabCmd::Status { name } => status(&Lab::load(&name)?),
        LabCmd::Exec { name, pod, command } => {
            let lab = Lab::load(&name)?;
            let (program, args) = command.split_first().context("a command is required")?;
            let st = lab.pod_command(&pod, program)?.args(args).status().context("running the command")?;
            return Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8));
        }
        LabCmd::Probe { name, ping: true, .. } => {
            let ok = probe(&Lab::load(&name)?)?;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        LabCmd::Probe { name, ports, protocols, from, to, timeout_ms, parallel, json, ping: false } => {
            let options = novanet_lab::connectivity::ProbeOptions {
                ports,
                protocols,
                from,
                to,
                timeout: std::time::Duration::from_millis(timeout_ms),
                parallel,
            };
            connectivity(&Lab::load(&name)?, &options, json)?;
        }
        LabCmd::Apply { file, name } => {
            let changes = novanet_k8s::load_manifests(&file).with_context(|| format!("reading {}", file.display()))?;
            for line in Lab::load(&name)?.apply(&changes).with_context(|| format!("applying {}", file.display()))? {
                println!("{line}");
            }
        }
        LabCmd::Delete { file, name } => {
            let changes = novanet_k8s::load_manifests(&file).with_context(|| format!("reading {}", file.display()))?;
            for line in Lab::load(&name)?.delete(&changes).with_context(|| format!("deleting {}", file.display()))? {
                println!("{line}");
            }
        }
        LabCmd::Down { name } => supervisor::down(&name)?,
        LabCmd::Cluster { file, name, values, chart, detach: true, .. } => {
            return supervisor::detach(&file, &name, &values, &chart);
        }
        LabCmd::Cluster { file, name, values, chart, supervisor: supervised, .. } => {
            return cluster(&file, &name, &values, &chart, supervised);
        }
        LabCmd::Supervise { name } => return supervisor::supervise_agents(&name),
        LabCmd::List => {
            for name in LabState::list() {
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
