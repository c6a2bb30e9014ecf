//! The final summary: medians per arm with every sample, ratios against the baseline next to the A/A
//! control's ratio, the eBPF per-run cost and the CNI latencies; as plain text or as JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::bpf_stats::RunCost;
use crate::cni_latency::{CniSummary, CniTimings};
use crate::datapath::{Arm, Slot};
use crate::policy_latency::PolicyLatency;
use crate::stats::{Latency, Summary, median};

#[derive(Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub cpus: usize,
    pub client_cpu: usize,
    pub server_cpu: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub mtu: u32,
    pub rounds: usize,
    pub seconds_per_sample: u32,
    pub pods: usize,
}

/// One metric on the four arms, with the ratios of medians.
#[derive(Debug, Serialize)]
pub struct ArmTable {
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub baseline: Option<Summary>,
    pub control: Option<Summary>,
    pub subject: Option<Summary>,
    /// The subject's pods with policy enforced and no rules (conntrack on).
    pub policy0: Option<Summary>,
    /// The subject's pods with policy enforced (conntrack, the 10,000 rules).
    pub policy: Option<Summary>,
    pub subject_over_baseline: Option<f64>,
    pub control_over_baseline: Option<f64>,
    pub policy_over_baseline: Option<f64>,
    /// Policy on against policy off, same pods, same run.
    pub policy_over_subject: Option<f64>,
    /// The 10,000 rules against no rules, both enforced.
    pub policy_over_policy0: Option<f64>,
}

impl ArmTable {
    fn of(slots: &[Slot], unit: &'static str, higher_is_better: bool, metric: impl Fn(&Slot) -> f64) -> ArmTable {
        let arm = |a: Arm| Summary::of(&slots.iter().filter(|s| s.arm == a).map(&metric).collect::<Vec<_>>());
        let (baseline, control, subject) = (arm(Arm::Baseline), arm(Arm::Control), arm(Arm::Subject));
        let (policy0, policy) = (arm(Arm::PolicyNoRules), arm(Arm::Policy));
        let over = |x: &Option<Summary>, y: &Option<Summary>| Some(x.as_ref()?.median / y.as_ref()?.median);
        ArmTable {
            unit,
            higher_is_better,
            subject_over_baseline: over(&subject, &baseline),
            control_over_baseline: over(&control, &baseline),
            policy_over_baseline: over(&policy, &baseline),
            policy_over_subject: over(&policy, &subject),
            policy_over_policy0: over(&policy, &policy0),
            baseline,
            control,
            subject,
            policy0,
            policy,
        }
    }
}

/// `novanet_pod_ingress` cost during one NovaNet arm's samples of one kind.
#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub total: RunCost,
    /// Sum of run time over sum of runs across all subject samples.
    pub ns_per_run: Option<f64>,
    /// ns/run of each subject sample, in order.
    pub per_sample_ns_per_run: Vec<f64>,
    pub median_ns_per_run: Option<f64>,
}

impl ProgramCost {
    fn of(costs: impl Iterator<Item = RunCost>) -> ProgramCost {
        let costs: Vec<RunCost> = costs.collect();
        let mut total = RunCost::default();
        costs.iter().for_each(|c| total.add(*c));
        let per: Vec<f64> = costs.iter().filter_map(RunCost::ns_per_run).collect();
        ProgramCost {
            total,
            ns_per_run: total.ns_per_run(),
            median_ns_per_run: median(&per),
            per_sample_ns_per_run: per,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub tcp_throughput: ArmTable,
    pub rr_transactions: ArmTable,
    pub rr_p50_latency: ArmTable,
    pub prog_during_throughput: ProgramCost,
    pub prog_during_rr: ProgramCost,
    /// The same with policy enforced and no rules (policy0 arm).
    pub policy0_prog_during_throughput: ProgramCost,
    pub policy0_prog_during_rr: ProgramCost,
    /// The same with policy enforced (policy arm).
    pub policy_prog_during_throughput: ProgramCost,
    pub policy_prog_during_rr: ProgramCost,
    /// The 10,000-rule setup of the policy arm and the server's verdict counters over the run.
    pub policy_setup: PolicySetup,
    /// Policy change to enforcement with 1,000 pods and 1,000 policies (absent with `--policy-changes 0`).
    pub policy_latency: Option<PolicyLatency>,
    /// Growth of the agent's `redirect_local` counter over the datapath runs (packets the eBPF program
    /// delivered pod to pod), as evidence the subject went through the fast path.
    pub redirect_local_packets: Option<u64>,
    pub cni: CniSummary,
    pub slots: Vec<Slot>,
    pub cni_samples: CniTimings,
}

/// What the policy arm ran against.
#[derive(Debug, Serialize)]
pub struct PolicySetup {
    pub rules: usize,
    pub policy_entries: usize,
    pub ipcache_entries: usize,
    pub write_ms: f64,
    /// Growth of the server's ingress verdict counters (new flows judged) over the datapath rounds.
    pub server_ingress_allowed: u64,
    pub server_ingress_denied: u64,
}

impl Report {
    pub fn new(
        environment: Environment,
        slots: Vec<Slot>,
        redirect: Option<u64>,
        cni: CniTimings,
        policy_setup: PolicySetup,
        policy_latency: Option<PolicyLatency>,
    ) -> Report {
        let cost = |arm: Arm, rr: bool| {
            ProgramCost::of(
                slots
                    .iter()
                    .filter(|s| s.arm == arm)
                    .filter_map(|s| if rr { s.prog_during_rr } else { s.prog_during_throughput }),
            )
        };
        Report {
            environment,
            tcp_throughput: ArmTable::of(&slots, "Gbit/s", true, |s| s.throughput.gbit_per_s),
            rr_transactions: ArmTable::of(&slots, "transactions/s", true, |s| s.rr.transactions_per_s),
            rr_p50_latency: ArmTable::of(&slots, "us (half RTT)", false, |s| s.rr.p50_half_rtt_us),
            prog_during_throughput: cost(Arm::Subject, false),
            prog_during_rr: cost(Arm::Subject, true),
            policy0_prog_during_throughput: cost(Arm::PolicyNoRules, false),
            policy0_prog_during_rr: cost(Arm::PolicyNoRules, true),
            policy_prog_during_throughput: cost(Arm::Policy, false),
            policy_prog_during_rr: cost(Arm::Policy, true),
            policy_setup,
            policy_latency,
            redirect_local_packets: redirect,
            cni: cni.summary(),
            slots,
            cni_samples: cni,
        }
    }

    pub fn text(&self) -> String {
        let e = &self.environment;
        let mut o = String::new();
        let _ = writeln!(o, "==================== NovaNet bench summary ====================");
        let _ = writeln!(
            o,
            "kernel {}, {} CPUs (client on cpu {}, server on cpu {}), MTU {}\nload average at start: {}   at end: {}",
            e.kernel, e.cpus, e.client_cpu, e.server_cpu, e.mtu, e.loadavg_start, e.loadavg_end
        );
        let _ = writeln!(
            o,
            "{} rounds x 10 slots (A B P0 P A' A' P P0 B A, rotated each round), {} s per sample; medians; samples in run\n\
             order. baseline = direct veth pair, control = a second identical direct veth pair (A/A), subject = two\n\
             pods on one node through NovaNet (real agent + CNI, tc ingress + bpf_redirect_peer), policy0 = the same\n\
             pods with policy enforced and no rules (conntrack on), policy = enforced with {} rules selecting the server",
            e.rounds, e.seconds_per_sample, self.policy_setup.rules
        );
        table(&mut o, "TCP throughput, iperf3 (Gbit/s, higher is better)", &self.tcp_throughput, 2);
        table(
            &mut o,
            "TCP request/response, sockperf ping-pong (transactions/s, higher is better)",
            &self.rr_transactions,
            0,
        );
        table(
            &mut o,
            "TCP request/response p50 latency (us, half round trip; lower is better)",
            &self.rr_p50_latency,
            2,
        );
        let _ =
            writeln!(o, "\neBPF novanet_pod_ingress cost (kernel bpf_stats, on during subject and policy slots only)");
        for (what, c) in [
            ("policy off, iperf3 (GSO skbs)", &self.prog_during_throughput),
            ("policy off, ping-pong", &self.prog_during_rr),
            ("policy on, 0 rules, iperf3", &self.policy0_prog_during_throughput),
            ("policy on, 0 rules, ping-pong", &self.policy0_prog_during_rr),
            ("policy on, rules, iperf3", &self.policy_prog_during_throughput),
            ("policy on, rules, ping-pong", &self.policy_prog_during_rr),
        ] {
            let _ = writeln!(
                o,
                "  {what:<30} {} ns/run over {} runs; per sample: {}",
                fmt_opt(c.ns_per_run, 0),
                c.total.run_cnt,
                join(&c.per_sample_ns_per_run, 0)
            );
        }
        let _ = writeln!(o, "  agent redirect_local counter grew by {} packets", fmt_u(self.redirect_local_packets));
        let p = &self.policy_setup;
        let _ = writeln!(
            o,
            "  policy arm: {} rules -> {} policy entries, {} ipcache entries written in {:.0} ms; server ingress\n  \
             new flows judged over the rounds: {} allowed, {} denied",
            p.rules, p.policy_entries, p.ipcache_entries, p.write_ms, p.server_ingress_allowed, p.server_ingress_denied
        );
        if let Some(l) = &self.policy_latency {
            policy_latency(&mut o, l);
        }
        let _ = writeln!(o, "\nCNI on one node, {} pods added one by one then removed (ms)", e.pods);
        let c = &self.cni;
        for (what, l) in [
            ("lab.add_pod (netns + CNI ADD + state)", &c.lab_add_pod),
            ("  CNI ADD alone (run_cni)", &c.cni_add),
            ("  netns create alone", &c.netns_create),
            ("lab.remove_pod (CNI DEL + netns del + state)", &c.lab_remove_pod),
            ("  CNI DEL alone (run_cni)", &c.cni_del),
            ("  netns delete alone", &c.netns_delete),
        ] {
            let _ = writeln!(o, "  {what:<46} {}", latency(l));
        }
        let _ = writeln!(o, "================================================================");
        o
    }
}

fn policy_latency(o: &mut String, l: &PolicyLatency) {
    let _ = writeln!(
        o,
        "\nPolicy change to enforcement: {} pods ({} simulated endpoints), {} policies, all local to the node;\n  \
         {} policy, {} CIDR, {} ipcache entries; each change adds/removes one policy; UDP probe per new flow",
        l.pods, l.simulated_endpoints, l.policies, l.policy_entries, l.cidr_entries, l.ipcache_entries,
    );
    for s in &l.series {
        let ops = median(&s.samples.iter().map(|c| c.operations as f64).collect::<Vec<_>>());
        let part = |f: fn(&crate::policy_latency::ChangeSample) -> f64| {
            fmt_opt(median(&s.samples.iter().map(f).collect::<Vec<_>>()), 1)
        };
        let _ = writeln!(
            o,
            "  probe policy sorts {:<5} change -> first packet with the new verdict (ms): p50 {}  p95 {}  (goal < 100)",
            s.probe_sorts,
            fmt_opt(s.to_enforcement_p50_ms, 2),
            fmt_opt(s.to_enforcement_p95_ms, 2)
        );
        let _ = writeln!(
            o,
            "    medians (ms): compile {} ({} policies parsed, {} endpoints compiled)  diff {}  write {} ({} map ops); \
             sum p50 {}",
            part(|c| c.compile_ms),
            part(|c| c.policies_parsed as f64),
            part(|c| c.endpoints_compiled as f64),
            part(|c| c.diff_ms),
            part(|c| c.write_ms),
            fmt_opt(ops, 0),
            fmt_opt(s.compile_lower_diff_write_p50_ms, 1)
        );
        let each: Vec<String> = s
            .samples
            .iter()
            .map(|c| {
                let v = c.to_enforcement_ms.map(|v| format!("{v:.1}")).unwrap_or("n/a".into());
                format!("{}{v}", if c.allow { "+" } else { "-" })
            })
            .collect();
        let _ = writeln!(o, "    per change (+ allow, - deny): {}", each.join(" "));
    }
}

fn table(o: &mut String, title: &str, t: &ArmTable, digits: usize) {
    let _ = writeln!(o, "\n{title}");
    for (name, s) in
        [("baseline", &t.baseline), ("control", &t.control), ("subject", &t.subject), ("policy0", &t.policy0), ("policy", &t.policy)]
    {
        match s {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "  {name:<9} median {:>10}  spread {:>5.1}%  samples {}",
                    format!("{:.*}", digits, s.median),
                    s.spread() * 100.0,
                    join(&s.samples, digits)
                );
            }
            None => {
                let _ = writeln!(o, "  {name:<9} no samples");
            }
        }
    }
    let _ = writeln!(
        o,
        "  ratio subject/baseline {}   |   A/A control/baseline {}   ({} is better)",
        fmt_opt(t.subject_over_baseline, 3),
        fmt_opt(t.control_over_baseline, 3),
        if t.higher_is_better { "higher" } else { "lower" }
    );
    let _ = writeln!(
        o,
        "  ratio policy/policy0  {}   |   policy/subject {}   |   policy/baseline {}   (rules vs none, policy on vs off, vs the direct pair)",
        fmt_opt(t.policy_over_policy0, 3),
        fmt_opt(t.policy_over_subject, 3),
        fmt_opt(t.policy_over_baseline, 3),
    );
}

fn join(v: &[f64], digits: usize) -> String {
    v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(" ")
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "n/a".into())
}

fn fmt_u(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "n/a".into())
}

fn latency(l: &Option<Latency>) -> String {
    match l {
        Some(l) => format!("p50 {:7.2}  p99 {:7.2}  max {:7.2}  (n={})", l.p50, l.p99, l.max, l.count),
        None => "n/a".into(),
    }
}
