//! Per-run cost of an eBPF program from the kernel's own accounting: `kernel.bpf_stats_enabled=1` makes
//! the kernel add up `run_time_ns` and `run_cnt` per program; `bpftool -j prog show` reads them.
//!
//! The sysctl is machine-wide: the guard restores the value it found, also on error or panic.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// While alive, `kernel.bpf_stats_enabled` is 1; dropping it writes back the previous value.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<StatsEnabled> {
        let previous = std::fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        let previous = previous.trim().to_string();
        if previous != "1" {
            std::fs::write(SYSCTL, "1").with_context(|| format!("writing 1 to {SYSCTL}"))?;
        }
        Ok(StatsEnabled { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if self.previous != "1"
            && let Err(e) = std::fs::write(SYSCTL, &self.previous)
        {
            eprintln!("bench: could not restore {SYSCTL} to {}: {e}", self.previous);
        }
    }
}

/// The kernel's counters of one program.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProgStats {
    pub id: u64,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Counters added up over an interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RunCost {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl RunCost {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }

    pub fn add(&mut self, other: RunCost) {
        self.run_time_ns += other.run_time_ns;
        self.run_cnt += other.run_cnt;
    }
}

impl ProgStats {
    /// What ran between `before` and `self`; an error if the program was replaced in between.
    pub fn since(&self, before: &ProgStats) -> anyhow::Result<RunCost> {
        if self.id != before.id {
            bail!("program replaced during the measurement (id {} -> {})", before.id, self.id);
        }
        Ok(RunCost {
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
        })
    }
}

/// Reads the pinned program at `pin` (the node's own `novanet_pod_ingress`, which every pod veth of the
/// node runs; other labs' programs of the same name are not counted).
pub fn read_pinned(pin: &Path) -> anyhow::Result<ProgStats> {
    let out =
        Command::new("bpftool").args(["-j", "prog", "show", "pinned"]).arg(pin).output().context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool prog show pinned {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse(&out.stdout)
}

pub fn parse(json: &[u8]) -> anyhow::Result<ProgStats> {
    let v: serde_json::Value = serde_json::from_slice(json).context("bpftool output is not JSON")?;
    let name = v["name"].as_str().unwrap_or_default();
    // The kernel keeps 15 characters of a program name.
    if !name.starts_with("novanet_pod_ing") {
        bail!("pinned program is {name:?}, not novanet_pod_ingress");
    }
    Ok(ProgStats {
        id: v["id"].as_u64().context("no program id")?,
        // bpftool omits both counters while they are zero.
        run_time_ns: v["run_time_ns"].as_u64().unwrap_or(0),
        run_cnt: v["run_cnt"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_missing_ones_are_zero() {
        let with = parse(br#"{"id":7,"type":"sched_cls","name":"novanet_pod_ingress","run_time_ns":500,"run_cnt":2}"#);
        let s = with.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.id, s.run_time_ns, s.run_cnt), (7, 500, 2));
        let without =
            parse(br#"{"id":7,"type":"sched_cls","name":"novanet_pod_ing"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((without.run_time_ns, without.run_cnt), (0, 0));
    }

    #[test]
    fn another_program_is_refused() {
        assert!(parse(br#"{"id":7,"name":"cil_from_container"}"#).is_err());
    }

    #[test]
    fn cost_is_the_difference_and_a_replaced_program_is_an_error() {
        let a = ProgStats { id: 1, run_time_ns: 100, run_cnt: 1 };
        let b = ProgStats { id: 1, run_time_ns: 1100, run_cnt: 5 };
        assert_eq!(b.since(&a).ok().and_then(|c| c.ns_per_run()), Some(250.0));
        assert!(ProgStats { id: 2, ..b }.since(&a).is_err());
        assert_eq!(RunCost::default().ns_per_run(), None);
    }
}
