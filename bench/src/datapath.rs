//! The datapath comparison: the same throughput and request/response samples on three paths, in an
//! order balanced within each round so a slow drift of the machine's load hits every path alike.
//!
//! Arms: `baseline` (A, a direct veth pair), `control` (A', a second identical direct pair: the A/A
//! control that shows how far two identical paths differ), `subject` (B, two pods through NovaNet, policy
//! off), `policy0` (P0, the same two pods with policy enforced and no rules: conntrack on, as a cluster
//! without NetworkPolicies runs), `policy` (P, enforced with the 10,000 rules selecting the server).
//! Enforcement, and the rules for P, are switched on for P0's and P's slots only.
//! Each round runs V W X Y Z Z Y X W V, with V W X Y Z a rotation of A B P0 P A' that moves by one every
//! round. `kernel.bpf_stats_enabled` is on during NovaNet slots (B, P0, P) only, and the program's
//! counters are read around each of their samples.

use std::path::Path;

use serde::Serialize;

use crate::bpf_stats::{self, RunCost, StatsEnabled};
use crate::child::check_interrupted;
use crate::rr::{self, RrSample};
use crate::throughput::{self, ThroughputSample};
use crate::veth_pair::Endpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Baseline,
    Control,
    Subject,
    #[serde(rename = "policy0")]
    PolicyNoRules,
    Policy,
}

impl Arm {
    pub const ALL: [Arm; 5] = [Arm::Baseline, Arm::Subject, Arm::PolicyNoRules, Arm::Policy, Arm::Control];

    pub fn name(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Control => "control",
            Arm::Subject => "subject",
            Arm::PolicyNoRules => "policy0",
            Arm::Policy => "policy",
        }
    }

    /// Through NovaNet (its program's cost is read).
    pub fn is_novanet(self) -> bool {
        matches!(self, Arm::Subject | Arm::PolicyNoRules | Arm::Policy)
    }

    /// What the policy maps hold during the arm's slots.
    pub fn enforcing(self) -> Enforcing {
        match self {
            Arm::PolicyNoRules => Enforcing::NoRules,
            Arm::Policy => Enforcing::Rules,
            Arm::Baseline | Arm::Control | Arm::Subject => Enforcing::Off,
        }
    }
}

/// The slots of `rounds` rounds: (round, arm) in measurement order.
pub fn schedule(rounds: usize) -> Vec<(usize, Arm)> {
    let mut slots = Vec::new();
    for round in 0..rounds {
        let mut half: Vec<Arm> = Arm::ALL.to_vec();
        half.rotate_left(round % Arm::ALL.len());
        let mirrored = half.iter().rev().copied();
        slots.extend(half.iter().copied().chain(mirrored).map(|arm| (round, arm)));
    }
    slots
}

/// One slot's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub round: usize,
    pub arm: Arm,
    pub throughput: ThroughputSample,
    pub rr: RrSample,
    /// Subject and policy slots only: what `novanet_pod_ingress` ran during each of the two samples.
    pub prog_during_throughput: Option<RunCost>,
    pub prog_during_rr: Option<RunCost>,
}

pub struct Paths<'a> {
    pub baseline: &'a Endpoints,
    pub control: &'a Endpoints,
    pub subject: &'a Endpoints,
}

pub struct Settings<'a> {
    pub rounds: usize,
    pub seconds: u32,
    pub cpus: (usize, usize),
    /// The node's pinned `novanet_pod_ingress`.
    pub prog_pin: &'a Path,
}

/// Policy in the maps during a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcing {
    /// Not enforced: the datapath never touches conntrack.
    Off,
    /// Enforced, no rule selects the pods (conntrack on).
    NoRules,
    /// Enforced with the rules selecting the server.
    Rules,
}

/// Sets what the policy arms' slots enforce, and switches enforcement off after each.
pub trait Enforcement {
    fn set(&mut self, mode: Enforcing) -> anyhow::Result<()>;
}

pub fn run(paths: &Paths, s: &Settings, enforcement: &mut dyn Enforcement) -> anyhow::Result<Vec<Slot>> {
    let plan = schedule(s.rounds);
    let mut slots = Vec::with_capacity(plan.len());
    for (i, &(round, arm)) in plan.iter().enumerate() {
        check_interrupted()?;
        let ep = match arm {
            Arm::Baseline => paths.baseline,
            Arm::Control => paths.control,
            Arm::Subject | Arm::PolicyNoRules | Arm::Policy => paths.subject,
        };
        let slot = if arm.is_novanet() {
            let mode = arm.enforcing();
            let _enforced = if mode == Enforcing::Off { None } else { Some(Enforced::on(&mut *enforcement, mode)?) };
            let _stats = StatsEnabled::enable()?;
            let t0 = bpf_stats::read_pinned(s.prog_pin)?;
            let tp = throughput::sample(ep, s.cpus, s.seconds)?;
            let t1 = bpf_stats::read_pinned(s.prog_pin)?;
            let rr = rr::sample(ep, s.cpus, s.seconds)?;
            let t2 = bpf_stats::read_pinned(s.prog_pin)?;
            Slot {
                round,
                arm,
                throughput: tp,
                rr,
                prog_during_throughput: Some(t1.since(&t0)?),
                prog_during_rr: Some(t2.since(&t1)?),
            }
        } else {
            let tp = throughput::sample(ep, s.cpus, s.seconds)?;
            let rr = rr::sample(ep, s.cpus, s.seconds)?;
            Slot { round, arm, throughput: tp, rr, prog_during_throughput: None, prog_during_rr: None }
        };
        eprintln!("{}", progress_line(i + 1, plan.len(), &slot));
        slots.push(slot);
    }
    Ok(slots)
}

/// While alive, policy is enforced; dropping it switches enforcement off again (also on error).
struct Enforced<'a, 'b> {
    enforcement: &'a mut (dyn Enforcement + 'b),
}

impl<'a, 'b> Enforced<'a, 'b> {
    fn on(enforcement: &'a mut (dyn Enforcement + 'b), mode: Enforcing) -> anyhow::Result<Enforced<'a, 'b>> {
        enforcement.set(mode)?;
        Ok(Enforced { enforcement })
    }
}

impl Drop for Enforced<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.enforcement.set(Enforcing::Off) {
            eprintln!("bench: could not switch policy enforcement off: {e:#}");
        }
    }
}

fn progress_line(n: usize, of: usize, slot: &Slot) -> String {
    let ns = |c: &Option<RunCost>| c.and_then(|c| c.ns_per_run()).map(|v| format!("{v:.0}")).unwrap_or("-".into());
    let mut line = format!(
        "[{n:>2}/{of}] round {} {:<8}  tcp {:6.2} Gbit/s (retr {:>5})  rr {:>8.0} tps  p50 {:6.2} us",
        slot.round + 1,
        slot.arm.name(),
        slot.throughput.gbit_per_s,
        slot.throughput.retransmits,
        slot.rr.transactions_per_s,
        slot.rr.p50_half_rtt_us,
    );
    if slot.arm.is_novanet() {
        line.push_str(&format!(
            "  prog {} ns/run (tcp), {} ns/run (rr)",
            ns(&slot.prog_during_throughput),
            ns(&slot.prog_during_rr)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm_runs_twice_per_round_at_the_same_mean_position() {
        let plan = schedule(5);
        assert_eq!(plan.len(), 50);
        for round in 0..5 {
            let slots: Vec<Arm> = plan.iter().filter(|(r, _)| *r == round).map(|(_, a)| *a).collect();
            for arm in Arm::ALL {
                let positions: Vec<usize> = (0..10).filter(|&i| slots[i] == arm).collect();
                assert_eq!(positions.len(), 2, "round {round}: {slots:?}");
                assert_eq!(positions[0] + positions[1], 9, "unbalanced round {round}: {slots:?}");
            }
        }
    }

    #[test]
    fn first_round_is_a_b_p0_p_a_prime_mirrored_and_rounds_rotate() {
        let plan: Vec<Arm> = schedule(2).into_iter().map(|(_, a)| a).collect();
        use Arm::*;
        let p0 = PolicyNoRules;
        assert_eq!(&plan[..10], &[Baseline, Subject, p0, Policy, Control, Control, Policy, p0, Subject, Baseline]);
        assert_eq!(&plan[10..], &[Subject, p0, Policy, Control, Baseline, Baseline, Control, Policy, p0, Subject]);
    }
}
