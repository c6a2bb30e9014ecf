//! `novanet-bench`: NovaNet's benchmark, each figure printed next to a baseline measured in the same run.
//!
//! 1. Same-node pod-to-pod TCP throughput (iperf3) and request/response (sockperf ping-pong) through
//!    NovaNet, against a direct veth pair (the physical limit) and a second identical pair (A/A control),
//!    in balanced order over several rounds (see `datapath`).
//!    A fourth arm runs the same pods with policy enforced: conntrack and 10,000 NetworkPolicies selecting
//!    the server, compiled by `novanet_model::policy` and written to the node's pinned maps (see
//!    `policy_model`, `policy_writer`).
//! 2. Per-run cost of `novanet_pod_ingress` from the kernel's `bpf_stats` during the NovaNet samples,
//!    with policy off and on.
//! 3. Time from a policy change to enforcement with 1,000 pods and 1,000 policies (see `policy_latency`).
//! 4. CNI ADD/DEL latency of pods added one by one to a lab node (see `cni_latency`).
//!
//! Invariants: all traffic runs inside namespaces the bench creates (a light lab, and two direct pairs),
//! every one of them removed on exit, error, panic or Ctrl-C; the machine-wide `kernel.bpf_stats_enabled`
//! is restored; only processes the bench started are stopped, by PID; the policy maps are cleared and
//! enforcement is off again before the CNI part and on exit. Needs root and the release
//! binaries of the agent and the CNI plugin next to this executable (`bench/run.sh` builds them).

mod bpf_stats;
mod child;
mod cni_latency;
mod datapath;
mod policy_latency;
mod policy_model;
mod policy_writer;
mod report;
mod rr;
mod stats;
mod throughput;
mod veth_pair;

use anyhow::{Context, bail};
use clap::Parser;
use novanet_lab::{Lab, LabSpec, NodeSpec, PodSpec};

use crate::datapath::{Paths, Settings};
use crate::policy_latency::Scale;
use crate::policy_model::Model;
use crate::policy_writer::Writer;
use crate::report::{Environment, PolicySetup, Report};
use crate::veth_pair::{Endpoints, VethPair};

#[derive(Parser)]
#[command(name = "novanet-bench", about = "NovaNet datapath and CNI benchmark against a same-run baseline")]
struct Args {
    /// Rounds of the balanced order (each round: 2 samples per arm).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Seconds per throughput and per request/response sample.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=60))]
    seconds: u32,
    /// Pods to add one by one for the CNI latency (0 skips it).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pods: u32,
    /// NetworkPolicies selecting the server in the policy arm (each allowing one more identity).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    policy_rules: u32,
    /// Pods (2 real, the rest simulated endpoints) in the policy change-to-enforcement model.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=1000))]
    policy_pods: u32,
    /// Policies in the policy change-to-enforcement model.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    policy_policies: u32,
    /// Policy changes timed (alternately allowing and denying the probe; 0 skips this part).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=200))]
    policy_changes: u32,
    /// Core the clients run on.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// Core the servers run on.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// Print the summary as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

const TOOLS: [&str; 6] = ["iperf3", "sockperf", "bpftool", "taskset", "ss", "nsenter"];
const NODE: &str = "n1";
/// A /22 leaves room for the two measured pods and up to 1000 latency pods.
const POD_CIDR: &str = "10.244.0.0/22";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    preflight(&args)?;
    child::install_interrupt_flag()?;
    let loadavg_start = loadavg();

    // CNI latency as installed: the agent's policy subsystem runs (an ADD waits for its pod's policy).
    // Measured first, while this process is small: the lab starts every plugin with a fork, whose cost
    // grows with the parent's memory (the policy parts below hold models of 10,000 policies).
    let cni_name = format!("bench-cni-{}", std::process::id());
    eprintln!("bringing up lab {cni_name}: node {NODE}, agent with its object source");
    let mut cni_lab =
        Lab::guard(&cni_name, &LabSpec { pods: Vec::new(), ..lab_spec()? }).context("bringing up the CNI lab")?;
    let cni = cni_latency::measure(&mut cni_lab, NODE, args.pods as usize)?;
    cni_lab.down().context("tearing the CNI lab down")?;

    let name = format!("bench-{}", std::process::id());
    eprintln!("bringing up lab {name}: node {NODE} with pods client and server (agent without object source)");
    // The policy arm and the change-to-enforcement model write the policy maps themselves: the agent's
    // policy subsystem must stay out of them.
    let options = novanet_lab::LabOptions { no_object_source: true, ..Default::default() };
    let lab = Lab::guard_with(&name, &lab_spec()?, &options).context("bringing up the lab")?;
    let subject = Endpoints {
        client_ns: lab.pod("client")?.netns.clone(),
        server_ns: lab.pod("server")?.netns.clone(),
        server_ip: lab.pod_ip("server")?,
    };
    let mtu = veth_pair::link_mtu(&subject.client_ns, novanet_lab::pod::POD_IFNAME)?;
    let baseline = VethPair::create("ba", 1, mtu)?;
    let control = VethPair::create("bc", 2, mtu)?;
    let (baseline_ep, control_ep) = (baseline.endpoints(), control.endpoints());
    let bpffs = lab.node(NODE)?.bpffs_dir();
    let pin = bpffs.join("novanet").join("novanet_pod_ingress");
    let client_ip = lab.pod_ip("client")?;

    let mut writer = Writer::open(&bpffs)?;
    let rules = args.policy_rules as usize;
    eprintln!("compiling and writing {rules} NetworkPolicies selecting the server (policy arm)");
    let many = Model::many_rules(client_ip, subject.server_ip, rules)?;
    let rule_entries = many.desired(&many.local());
    let written = writer.apply(&rule_entries)?;
    let (policy_entries, _, ipcache_entries) = writer.sizes();
    let verdicts_before = writer.verdicts(subject.server_ip)?;

    let redirect_before = redirect_local(&lab);
    let paths = Paths { baseline: &baseline_ep, control: &control_ep, subject: &subject };
    let cpus = (args.client_cpu, args.server_cpu);
    let settings = Settings { rounds: args.rounds as usize, seconds: args.seconds, cpus, prog_pin: &pin };
    let slots = datapath::run(&paths, &settings, &mut policy_writer::Arms::new(&mut writer, rule_entries))?;
    let redirect = redirect_local(&lab).zip(redirect_before).map(|(after, before)| after.saturating_sub(before));
    let verdicts_after = writer.verdicts(subject.server_ip)?;
    drop(baseline);
    drop(control);
    let policy_setup = PolicySetup {
        rules,
        policy_entries,
        ipcache_entries,
        write_ms: (written.diff + written.write).as_secs_f64() * 1e3,
        server_ingress_allowed: verdicts_after
            .ingress_allowed
            .packets
            .saturating_sub(verdicts_before.ingress_allowed.packets),
        server_ingress_denied: verdicts_after
            .ingress_denied
            .packets
            .saturating_sub(verdicts_before.ingress_denied.packets),
    };

    let policy_latency = if args.policy_changes > 0 {
        let scale = Scale {
            pods: args.policy_pods as usize,
            policies: args.policy_policies as usize,
            changes: args.policy_changes as usize,
            pod_cidr: POD_CIDR.parse()?,
        };
        Some(policy_latency::measure(&mut writer, &subject, client_ip, &scale)?)
    } else {
        None
    };
    writer.clear().context("clearing the policy maps")?;
    drop(writer);

    lab.down().context("tearing the lab down")?;

    let environment = Environment {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        client_cpu: args.client_cpu,
        server_cpu: args.server_cpu,
        loadavg_start,
        loadavg_end: loadavg(),
        mtu,
        rounds: args.rounds as usize,
        seconds_per_sample: args.seconds,
        pods: args.pods as usize,
    };
    let report = Report::new(environment, slots, redirect, cni, policy_setup, policy_latency);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn preflight(args: &Args) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("novanet-bench needs root (namespaces, the agent's eBPF programs, bpf_stats)");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in TOOLS {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            bail!("{tool} not found on PATH; scripts/setup.sh installs the benchmark tools");
        }
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if args.client_cpu.max(args.server_cpu) >= cpus {
        bail!("--client-cpu/--server-cpu must be below the {cpus} CPUs of this machine");
    }
    if args.client_cpu == args.server_cpu {
        eprintln!("warning: client and server share cpu {}", args.client_cpu);
    }
    Ok(())
}

fn lab_spec() -> anyhow::Result<LabSpec> {
    let pod = |name: &str| PodSpec {
        namespace: "bench".into(),
        name: name.into(),
        uid: format!("uid-bench-{name}-{}", std::process::id()),
        node: NODE.into(),
        labels: Default::default(),
        command: None,
    };
    Ok(LabSpec {
        nodes: vec![NodeSpec { name: NODE.into(), pod_cidr: POD_CIDR.parse()? }],
        pods: vec![pod("client"), pod("server")],
        manifests: Default::default(),
    })
}

/// The agent's `redirect_local` packet counter, if the agent answers.
fn redirect_local(lab: &Lab) -> Option<u64> {
    let status = novanet_lab::node::agent_status(&lab.socket(NODE).ok()?).ok()?;
    status.counters.iter().find(|c| c.name == "redirect_local").map(|c| c.packets)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
