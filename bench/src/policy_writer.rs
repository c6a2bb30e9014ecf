//! Writes compiled policy into the lab node's real pinned maps, as the agent's `PolicyEngine::apply` does
//! (the light lab's agent has no object stores, so its policy subsystem is inactive and never touches
//! them): only the difference to what was written before, in the order of `novanet_model::policy::diff`
//! (isolation bits cleared first, stale allows out, CIDR classes by prefix length, new allows in,
//! isolation bits set last), then the policy switch with a bumped revision.
//!
//! Invariants: enforcement is on only between [`Writer::set_enforce`]`(true)` and `(false)`; dropping
//! the writer turns enforcement off first and then removes every entry it wrote, so the rest of the
//! bench (and the CNI latency part) runs on the datapath exactly as the agent left it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use novanet_common::{EndpointKey, IpcacheValue, PolicyConfig};
use novanet_dataplane::{
    EndpointVerdicts, LpmHandle, MapHandle, PolicyMaps, PolicySwitch, endpoint_verdicts, remove_endpoint_verdicts,
};
use serde::Serialize;

use novanet_model::policy::MapEntries;

use crate::policy_model::Desired;

const ISOLATION: u32 = IpcacheValue::FLAG_INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED;

/// What one [`Writer::apply`] wrote.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Written {
    /// Map operations (inserts, replacements, removals), the policy switch excluded.
    pub operations: usize,
    /// `novanet_model::policy::diff` (and the ipcache's).
    pub diff: Duration,
    /// The map writes, the policy switch included.
    pub write: Duration,
}

pub struct Writer {
    maps: PolicyMaps,
    applied: Desired,
    config: PolicyConfig,
}

fn key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey::from_octets(ip.octets())
}

impl Writer {
    /// Opens the maps pinned under `<bpffs_root>/novanet`; enforcement starts off.
    pub fn open(bpffs_root: &Path) -> anyhow::Result<Writer> {
        let maps = PolicyMaps::open_pinned(bpffs_root).context("opening the node's pinned policy maps")?;
        let config = maps.config.get().context("reading the policy switch")?;
        anyhow::ensure!(
            config.flags & PolicyConfig::FLAG_ENFORCE == 0,
            "policy is already enforced on this node (flags {:#x}): another writer owns the maps",
            config.flags
        );
        Ok(Writer { maps, applied: Desired::default(), config })
    }

    /// Writes what differs between the last applied state and `desired`, then bumps the revision.
    pub fn apply(&mut self, desired: &Desired) -> anyhow::Result<Written> {
        self.apply_entries(&desired.ipcache, &desired.entries)
    }

    /// [`Writer::apply`] of a desired state given by parts (the agent's `PolicyEngine::apply_entries`).
    pub fn apply_entries(
        &mut self,
        ipcache: &BTreeMap<Ipv4Addr, IpcacheValue>,
        entries: &MapEntries,
    ) -> anyhow::Result<Written> {
        let start = Instant::now();
        let diff = novanet_model::policy::diff(&self.applied.entries, entries);
        let applied = &mut self.applied;
        let changed: Vec<(Ipv4Addr, IpcacheValue)> = ipcache
            .iter()
            .filter(|(ip, v)| applied.ipcache.get(ip) != Some(v))
            .map(|(i, v)| (*i, *v))
            .collect();
        let diffed = Instant::now();
        let mut ops = 0;
        let m = &mut self.maps;
        // 1. Identities and cleared isolation bits (bits being set wait for the end).
        for (ip, value) in &changed {
            let old = applied.ipcache.get(ip).map_or(0, |v| v.flags & ISOLATION);
            let relaxed =
                IpcacheValue { identity: value.identity, flags: (value.flags & !ISOLATION) | (old & value.flags) };
            if applied.ipcache.get(ip) != Some(&relaxed) {
                m.ipcache.insert(&key(*ip), &relaxed).context("writing an ipcache entry")?;
                applied.ipcache.insert(*ip, relaxed);
                ops += 1;
            }
        }
        // 2-5. Allows.
        for (len, k) in &diff.policy_removals {
            m.policy.remove(*len, k).context("removing a policy entry")?;
            applied.entries.policy.remove(&(*len, *k));
        }
        for ((len, k), v) in &diff.cidr_upserts {
            m.cidr.insert(*len, k, v).context("writing a CIDR entry")?;
            applied.entries.cidrs.insert((*len, *k), *v);
        }
        for (len, k) in &diff.cidr_removals {
            m.cidr.remove(*len, k).context("removing a CIDR entry")?;
            applied.entries.cidrs.remove(&(*len, *k));
        }
        for ((len, k), v) in &diff.policy_upserts {
            m.policy.insert(*len, k, v).context("writing a policy entry")?;
            applied.entries.policy.insert((*len, *k), *v);
        }
        ops +=
            diff.policy_removals.len() + diff.cidr_upserts.len() + diff.cidr_removals.len() + diff.policy_upserts.len();
        // 6. Isolation bits set, then addresses that are gone.
        for (ip, value) in &changed {
            if applied.ipcache.get(ip) != Some(value) {
                m.ipcache.insert(&key(*ip), value).context("writing an ipcache entry")?;
                applied.ipcache.insert(*ip, *value);
                ops += 1;
            }
        }
        let gone: Vec<Ipv4Addr> =
            applied.ipcache.keys().filter(|ip| !ipcache.contains_key(ip)).copied().collect();
        for ip in gone {
            m.ipcache.remove(&key(ip)).context("removing an ipcache entry")?;
            applied.ipcache.remove(&ip);
            ops += 1;
        }
        applied.entries.isolation = entries.isolation.clone();
        self.config.revision = self.config.revision.wrapping_add(1);
        self.maps.config.set(&self.config).context("writing the policy switch")?;
        Ok(Written { operations: ops, diff: diffed - start, write: diffed.elapsed() })
    }

    /// Turns enforcement on or off (the entries stay).
    pub fn set_enforce(&mut self, on: bool) -> anyhow::Result<()> {
        if on {
            self.config.flags |= PolicyConfig::FLAG_ENFORCE;
        } else {
            self.config.flags &= !PolicyConfig::FLAG_ENFORCE;
        }
        self.maps.config.set(&self.config).context("writing the policy switch")
    }

    /// The verdict counters of local endpoint `ip`.
    pub fn verdicts(&self, ip: Ipv4Addr) -> anyhow::Result<EndpointVerdicts> {
        endpoint_verdicts(&self.maps.verdicts, ip).context("reading the verdict counters")
    }

    /// Entries currently written: (policy, CIDR, ipcache).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.applied.entries.policy.len(), self.applied.entries.cidrs.len(), self.applied.ipcache.len())
    }

    /// Enforcement off, then every entry written removed (and the local endpoints' verdict counters).
    pub fn clear(&mut self) -> anyhow::Result<()> {
        self.set_enforce(false)?;
        let local: Vec<Ipv4Addr> = self
            .applied
            .ipcache
            .iter()
            .filter(|(_, v)| v.flags & IpcacheValue::FLAG_LOCAL != 0)
            .map(|(ip, _)| *ip)
            .collect();
        self.apply(&Desired::default())?;
        for ip in local {
            remove_endpoint_verdicts(&mut self.maps.verdicts, ip).context("removing verdict counters")?;
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("bench: could not clear the policy maps: {e:#}");
        }
    }
}

/// The policy arms' two states of the maps: the rules selecting the server, or none of them (the same
/// identities in the ipcache, nobody isolated).
pub struct Arms<'a> {
    pub writer: &'a mut Writer,
    pub rules: Desired,
    pub no_rules: Desired,
}

impl<'a> Arms<'a> {
    pub fn new(writer: &'a mut Writer, rules: Desired) -> Arms<'a> {
        let ipcache = rules.ipcache.iter().map(|(ip, v)| (*ip, IpcacheValue { flags: v.flags & !ISOLATION, ..*v })).collect();
        Arms { writer, rules, no_rules: Desired { ipcache, entries: Default::default() } }
    }
}

impl crate::datapath::Enforcement for Arms<'_> {
    fn set(&mut self, mode: crate::datapath::Enforcing) -> anyhow::Result<()> {
        use crate::datapath::Enforcing;
        match mode {
            Enforcing::Off => return self.writer.set_enforce(false),
            Enforcing::NoRules => self.writer.apply(&self.no_rules)?,
            Enforcing::Rules => self.writer.apply(&self.rules)?,
        };
        self.writer.set_enforce(true)
    }
}
