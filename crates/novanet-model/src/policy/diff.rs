//! What to write to go from one [`MapEntries`] to another without a transient allow.
//!
//! **Guarantee**: if the agent applies the fields of [`MapDiff`] in their declared order (each list in
//! its order), then at every moment a packet is allowed only if the old or the new state allows it.
//!
//! Why the order: class numbers are reused between states with other meanings, and a prefix's class
//! only holds for addresses with no more specific prefix. So:
//! 1. `isolation_relax`: bits being cleared are cleared first (un-isolating widens to "all", which the
//!    new state allows anyway); the value written is `old & new`, so no bit is set yet.
//! 2. `policy_removals`: the policy map shrinks to the keys both states have (a subset of either).
//! 3. `cidr_upserts`, most specific prefix first, then 4. `cidr_removals`, least specific first: with
//!    this order every address's LPM result is at every step its old prefix with its old class or its
//!    new prefix with its new class, and the policy map only holds entries common to both.
//! 5. `policy_upserts`: every address now sees its new class; adding entries only grows towards new.
//! 6. `isolation_set`: bits being set (or new endpoints) last, after their allows exist, so a newly
//!    isolated endpoint never sees a transient deny of what the new state allows.
//!
//! Changing only a value's `rule` (provenance) is an upsert in step 5; it changes no verdict.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use novanet_common::{CidrKey, CidrValue, PolicyKey, PolicyValue};

use super::lower::MapEntries;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapDiff {
    /// Step 1: endpoints whose isolation loses a bit (value `old & new`) ...
    pub isolation_relax: Vec<(Ipv4Addr, u32)>,
    /// ... and endpoints gone from the new state.
    pub isolation_removals: Vec<Ipv4Addr>,
    /// Step 2.
    pub policy_removals: Vec<(u32, PolicyKey)>,
    /// Step 3: longest prefix first.
    pub cidr_upserts: Vec<((u32, CidrKey), CidrValue)>,
    /// Step 4: shortest prefix first.
    pub cidr_removals: Vec<(u32, CidrKey)>,
    /// Step 5.
    pub policy_upserts: Vec<((u32, PolicyKey), PolicyValue)>,
    /// Step 6: endpoints whose isolation gains a bit or that are new (the new value).
    pub isolation_set: Vec<(Ipv4Addr, u32)>,
}

impl MapDiff {
    pub fn is_empty(&self) -> bool {
        self.isolation_relax.is_empty()
            && self.isolation_removals.is_empty()
            && self.policy_removals.is_empty()
            && self.cidr_upserts.is_empty()
            && self.cidr_removals.is_empty()
            && self.policy_upserts.is_empty()
            && self.isolation_set.is_empty()
    }

    /// Number of map operations.
    pub fn len(&self) -> usize {
        self.isolation_relax.len()
            + self.isolation_removals.len()
            + self.policy_removals.len()
            + self.cidr_upserts.len()
            + self.cidr_removals.len()
            + self.policy_upserts.len()
            + self.isolation_set.len()
    }
}

/// Entries of `new` that `old` lacks or holds with another value.
pub fn upserts<K: Ord + Copy, V: PartialEq + Copy>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<(K, V)> {
    new.iter().filter(|(k, v)| old.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect()
}

/// Keys of `old` that `new` lacks.
pub fn removals<K: Ord + Copy, V>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<K> {
    old.keys().filter(|k| !new.contains_key(k)).copied().collect()
}

pub fn diff(old: &MapEntries, new: &MapEntries) -> MapDiff {
    let mut d = MapDiff {
        policy_removals: removals(&old.policy, &new.policy),
        cidr_upserts: upserts(&old.cidrs, &new.cidrs),
        cidr_removals: removals(&old.cidrs, &new.cidrs),
        policy_upserts: upserts(&old.policy, &new.policy),
        isolation_removals: removals(&old.isolation, &new.isolation),
        ..Default::default()
    };
    // Stable sorts: by prefix length only, the key order inside one length is kept.
    d.cidr_upserts.sort_by_key(|((len, _), _)| std::cmp::Reverse(*len));
    d.cidr_removals.sort_by_key(|(len, _)| *len);
    for (ip, bits) in &new.isolation {
        match old.isolation.get(ip) {
            None => d.isolation_set.push((*ip, *bits)),
            Some(old_bits) if old_bits == bits => {}
            Some(old_bits) => {
                if old_bits & !bits != 0 {
                    d.isolation_relax.push((*ip, old_bits & bits));
                }
                if bits & !old_bits != 0 {
                    d.isolation_set.push((*ip, *bits));
                }
            }
        }
    }
    d
}

impl MapEntries {
    /// Applies `diff` step by step, calling `each` after every single map operation (tests use it to
    /// check the guarantee at each intermediate state).
    pub fn apply_with(&mut self, diff: &MapDiff, mut each: impl FnMut(&MapEntries)) {
        for (ip, bits) in &diff.isolation_relax {
            self.isolation.insert(*ip, *bits);
            each(self);
        }
        for ip in &diff.isolation_removals {
            self.isolation.remove(ip);
            each(self);
        }
        for k in &diff.policy_removals {
            self.policy.remove(k);
            each(self);
        }
        for (k, v) in &diff.cidr_upserts {
            self.cidrs.insert(*k, *v);
            each(self);
        }
        for k in &diff.cidr_removals {
            self.cidrs.remove(k);
            each(self);
        }
        for (k, v) in &diff.policy_upserts {
            self.policy.insert(*k, *v);
            each(self);
        }
        for (ip, bits) in &diff.isolation_set {
            self.isolation.insert(*ip, *bits);
            each(self);
        }
    }

    pub fn apply(&mut self, diff: &MapDiff) {
        self.apply_with(diff, |_| {});
    }
}
