//! Policy engine: object stores -> identities -> compiled policy (`novanet_model::policy`) -> a diff of
//! map updates. The subsystem (`subsystems/policy.rs`) runs it on every store change; the endpoint
//! manager calls [`PolicyEngine::endpoint_added`]/[`PolicyEngine::endpoint_removed`] synchronously, so a
//! new pod is never judged with a previous owner's state of its address.
//!
//! Invariants:
//! - **Only diffs are written**: the engine remembers what it applied and writes what changed.
//! - **Order of a diff**: new and changed allow entries first, then the ipcache (identities and isolation
//!   flags), then removals. A packet judged mid-update sees at most the union of the old and the new
//!   allows, never an allow of neither (CIDR classes aside, see `docs/architecture.md`).
//! - **Fail closed**: an endpoint is isolated as soon as a policy selects it even when its allow entries
//!   could not all be written (a full map): missing entries deny; the error is reported in `status`.
//! - A local endpoint's ipcache entry is written before its CNI ADD returns and removed (with its policy
//!   entries) before its DEL returns. Until a compile judges it (its Pod is in the stores), it is
//!   isolated both ways unless its namespace has no policies ([`unknown_pod_isolation`]); while the Pod
//!   source is healthy the ADD waits (bounded) for that compile, so a pod's first packet already meets
//!   its policy.

pub mod datapath;
pub mod identities;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use novanet_common::{
    GATEWAY_V4, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_SERVICE, IDENTITY_UNMANAGED, IpcacheValue, PolicyConfig,
};
use novanet_model::policy::MapEntries;

pub use datapath::PolicyDatapath;
#[cfg(test)]
pub use datapath::MemPolicyMaps;

const BOTH_ISOLATED: u32 = IpcacheValue::FLAG_INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED;

/// Everything the maps should hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub ipcache: BTreeMap<Ipv4Addr, IpcacheValue>,
    pub entries: MapEntries,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub upserts: usize,
    pub removals: usize,
    /// Map errors (e.g. a full policy map): the affected endpoints fail closed.
    pub errors: Vec<String>,
}

/// Inputs of the ipcache besides the compiled isolation.
pub struct AddressBook<'a> {
    /// Every pod address with its identity (local and remote).
    pub pods: &'a BTreeMap<Ipv4Addr, u32>,
    /// This node's endpoints.
    pub local: &'a BTreeSet<Ipv4Addr>,
    /// Isolation flags of local endpoints, from the compiled policy.
    pub isolation: &'a BTreeMap<Ipv4Addr, u32>,
    /// Isolation flags of local endpoints whose Pod the stores do not know (no labels, no identity yet):
    /// see [`unknown_pod_isolation`]. Absent means isolated both ways.
    pub unknown: &'a BTreeMap<Ipv4Addr, u32>,
    pub own_node_ips: &'a [Ipv4Addr],
    pub other_node_ips: &'a [Ipv4Addr],
    pub service_ips: &'a [Ipv4Addr],
    pub default_deny: bool,
}

/// The ipcache the maps should hold. Local endpoints win over any other claim on their address.
pub fn desired_ipcache(book: &AddressBook<'_>) -> BTreeMap<Ipv4Addr, IpcacheValue> {
    let mut out = BTreeMap::new();
    for ip in book.service_ips {
        out.insert(*ip, IpcacheValue { identity: IDENTITY_SERVICE, flags: 0 });
    }
    for ip in book.other_node_ips {
        out.insert(*ip, IpcacheValue { identity: IDENTITY_REMOTE_NODE, flags: 0 });
    }
    for ip in book.own_node_ips.iter().chain(std::iter::once(&Ipv4Addr::from(GATEWAY_V4))) {
        out.insert(*ip, IpcacheValue { identity: IDENTITY_HOST, flags: 0 });
    }
    for (ip, identity) in book.pods {
        out.insert(*ip, IpcacheValue { identity: *identity, flags: 0 });
    }
    for ip in book.local {
        let (identity, isolation) = match (book.pods.get(ip), book.isolation.get(ip)) {
            (None, _) => (IDENTITY_UNMANAGED, book.unknown.get(ip).copied().unwrap_or(BOTH_ISOLATED)),
            (Some(identity), Some(flags)) => (*identity, *flags),
            (Some(identity), None) if book.default_deny => (*identity, BOTH_ISOLATED),
            (Some(identity), None) => (*identity, 0),
        };
        out.insert(*ip, IpcacheValue { identity, flags: IpcacheValue::FLAG_LOCAL | isolation });
    }
    out
}

/// The isolation of a local endpoint whose Pod the stores do not know yet (the watch lags behind the
/// ADD, or the apiserver is away), in `namespace`: a NetworkPolicy selects only pods of its own
/// namespace, so a pod in a namespace without policies is not isolated whatever its labels; anywhere
/// else (or under default deny) it might be, so it is isolated both ways until its labels are known. Its identity stays `IDENTITY_UNMANAGED` meanwhile, which no
/// other pod's allow names.
pub fn unknown_pod_isolation(namespace_has_policies: bool, default_deny: bool) -> u32 {
    if namespace_has_policies || default_deny { BOTH_ISOLATED } else { 0 }
}

pub struct PolicyEngine<P: PolicyDatapath> {
    maps: P,
    applied: Desired,
    config: PolicyConfig,
}

impl<P: PolicyDatapath> PolicyEngine<P> {
    pub fn new(maps: P, default_deny: bool) -> Self {
        let flags = if default_deny { PolicyConfig::FLAG_DEFAULT_DENY } else { 0 };
        PolicyEngine { maps, applied: Desired::default(), config: PolicyConfig { flags, revision: 0 } }
    }

    pub fn maps(&self) -> &P {
        &self.maps
    }

    /// [`PolicyEngine::apply_entries`] of a whole [`Desired`].
    #[cfg(test)]
    pub fn apply(&mut self, desired: &Desired) -> ApplyReport {
        self.apply_entries(&desired.ipcache, &desired.entries)
    }

    /// Writes what differs between the applied state and the desired one (`ipcache`, `entries`) in the order of
    /// `novanet_model::policy::diff` (isolation relaxed first, allows replaced, isolation set last, so a
    /// packet never sees an allow neither state has), then turns enforcement on (the first time) and
    /// bumps the revision.
    pub fn apply_entries(&mut self, ipcache: &BTreeMap<Ipv4Addr, IpcacheValue>, entries: &MapEntries) -> ApplyReport {
        let mut report = ApplyReport::default();
        let diff = novanet_model::policy::diff(&self.applied.entries, entries);
        let (ipc_up, ipc_rm) = (
            novanet_model::policy::upserts(&self.applied.ipcache, ipcache),
            novanet_model::policy::removals(&self.applied.ipcache, ipcache),
        );
        let mut errors = Vec::new();
        let mut ok = |what: &str, r: Result<(), novanet_dataplane::DataplaneError>| match r {
            Ok(()) => true,
            Err(e) => {
                errors.push(format!("{what}: {e}"));
                false
            }
        };
        let applied = &mut self.applied;
        // 1. Identities and cleared isolation bits; isolation bits being set wait for step 6.
        for (ip, value) in &ipc_up {
            let old = applied.ipcache.get(ip).map_or(0, |v| v.flags & BOTH_ISOLATED);
            let relaxed = IpcacheValue { identity: value.identity, flags: (value.flags & !BOTH_ISOLATED) | (old & value.flags) };
            if applied.ipcache.get(ip) != Some(&relaxed) && ok("ipcache entry", self.maps.set_ipcache(*ip, relaxed)) {
                applied.ipcache.insert(*ip, relaxed);
            }
        }
        // 2-5. Allows: stale policy entries out, CIDR classes swapped by prefix length, new allows in.
        for (len, key) in &diff.policy_removals {
            if ok("policy entry removal", self.maps.remove_policy(*len, *key)) {
                applied.entries.policy.remove(&(*len, *key));
            }
        }
        for ((len, key), value) in &diff.cidr_upserts {
            if ok("CIDR entry", self.maps.set_cidr(*len, *key, *value)) {
                applied.entries.cidrs.insert((*len, *key), *value);
            }
        }
        for (len, key) in &diff.cidr_removals {
            if ok("CIDR entry removal", self.maps.remove_cidr(*len, *key)) {
                applied.entries.cidrs.remove(&(*len, *key));
            }
        }
        for ((len, key), value) in &diff.policy_upserts {
            if ok("policy entry", self.maps.set_policy(*len, *key, *value)) {
                applied.entries.policy.insert((*len, *key), *value);
            }
        }
        // 6. Isolation bits set, after their allows exist (set even when some allows failed: fail closed);
        // then addresses that are gone.
        for (ip, value) in &ipc_up {
            if applied.ipcache.get(ip) != Some(value) && ok("ipcache entry", self.maps.set_ipcache(*ip, *value)) {
                applied.ipcache.insert(*ip, *value);
            }
        }
        for ip in &ipc_rm {
            if ok("ipcache removal", self.maps.remove_ipcache(*ip)) {
                applied.ipcache.remove(ip);
            }
        }
        applied.entries.isolation = entries.isolation.clone();
        report.upserts = diff.cidr_upserts.len() + diff.policy_upserts.len() + ipc_up.len();
        report.removals = diff.policy_removals.len() + diff.cidr_removals.len() + ipc_rm.len();
        report.errors = errors;
        self.config.flags |= PolicyConfig::FLAG_ENFORCE;
        self.config.revision = self.config.revision.wrapping_add(1);
        if let Err(e) = self.maps.set_config(self.config) {
            report.errors.push(format!("policy switch: {e}"));
        }
        report
    }

    /// A new local endpoint: its address gets `identity` and, until the next compile judges it, is
    /// isolated both ways (fail closed; traffic from the node still passes). Any policy entries another
    /// endpoint left at this address are removed first.
    pub fn endpoint_added(&mut self, ip: Ipv4Addr, identity: u32) -> Result<(), novanet_dataplane::DataplaneError> {
        self.forget_endpoint_entries(ip)?;
        let value = IpcacheValue { identity, flags: IpcacheValue::FLAG_LOCAL | BOTH_ISOLATED };
        self.maps.set_ipcache(ip, value)?;
        self.applied.ipcache.insert(ip, value);
        Ok(())
    }

    /// A local endpoint is gone: its address, policy entries and counters leave the maps now.
    pub fn endpoint_removed(&mut self, ip: Ipv4Addr) -> Result<(), novanet_dataplane::DataplaneError> {
        self.forget_endpoint_entries(ip)?;
        self.maps.remove_ipcache(ip)?;
        self.applied.ipcache.remove(&ip);
        self.maps.remove_verdicts(ip)?;
        Ok(())
    }

    fn forget_endpoint_entries(&mut self, ip: Ipv4Addr) -> Result<(), novanet_dataplane::DataplaneError> {
        let endpoint = u32::from_ne_bytes(ip.octets());
        let policy: Vec<_> = self.applied.entries.policy.keys().filter(|(_, k)| k.endpoint == endpoint).copied().collect();
        for (len, key) in policy {
            self.maps.remove_policy(len, key)?;
            self.applied.entries.policy.remove(&(len, key));
        }
        let cidrs: Vec<_> = self.applied.entries.cidrs.keys().filter(|(_, k)| k.endpoint == endpoint).copied().collect();
        for (len, key) in cidrs {
            self.maps.remove_cidr(len, key)?;
            self.applied.entries.cidrs.remove(&(len, key));
        }
        self.applied.entries.isolation.remove(&ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
