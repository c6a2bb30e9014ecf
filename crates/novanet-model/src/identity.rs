//! Security identities: a number per distinct set of (namespace, pod labels, namespace labels).
//!
//! Invariants:
//! - An identity's labels always carry `kubernetes.io/metadata.name=<namespace>` among its namespace labels
//!   ([`IdentityLabels::new`] adds it), as Kubernetes does for every namespace.
//! - The number of a label set is chosen from [`candidates`], a deterministic sequence over
//!   `IDENTITY_CLUSTER_MIN..=IDENTITY_CLUSTER_MAX` that starts at a stable hash (FNV-1a 64, xor-folded) of
//!   the [canonical text](IdentityLabels::canonical) and then probes linearly (wrapping): every agent
//!   computes the same first choice for the same set, and a collision moves to the next candidate.
//! - Selectors are matched on an identity's labels alone: pod labels for `podSelector`, namespace labels
//!   for `namespaceSelector`, `namespace` for "the policy's own namespace".
//!
//! [`IdentityTable`] is a local allocator (the light lab, unit tests): labels <-> number, with release and
//! garbage collection.

use std::collections::BTreeMap;

use novanet_common::{IDENTITY_CLUSTER_MAX, IDENTITY_CLUSTER_MIN};
use serde::{Deserialize, Serialize};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels an identity stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityLabels {
    pub namespace: String,
    pub pod: BTreeMap<String, String>,
    /// Includes `kubernetes.io/metadata.name=<namespace>`.
    pub namespace_labels: BTreeMap<String, String>,
}

impl IdentityLabels {
    /// Labels of a pod in `namespace`; `kubernetes.io/metadata.name` is set to the namespace's name.
    pub fn new(
        namespace: impl Into<String>,
        pod: BTreeMap<String, String>,
        mut namespace_labels: BTreeMap<String, String>,
    ) -> Self {
        let namespace = namespace.into();
        namespace_labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.clone());
        IdentityLabels { namespace, pod, namespace_labels }
    }

    /// Canonical text: one line per label, `k8s:<key>=<value>` for pod labels and `ns:<key>=<value>` for
    /// namespace labels (always with `ns:kubernetes.io/metadata.name=<namespace>`), sorted, each ending in
    /// `\n`. Label keys and values cannot contain `=` in the key or a newline (Kubernetes' syntax), so the
    /// text is unambiguous.
    pub fn canonical(&self) -> String {
        let mut lines: Vec<String> = self.pod.iter().map(|(k, v)| format!("k8s:{k}={v}")).collect();
        for (k, v) in &self.namespace_labels {
            if k != NAMESPACE_NAME_LABEL {
                lines.push(format!("ns:{k}={v}"));
            }
        }
        lines.push(format!("ns:{NAMESPACE_NAME_LABEL}={}", self.namespace));
        lines.sort();
        let mut text = String::new();
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Number of cluster identities.
const SPAN: u32 = IDENTITY_CLUSTER_MAX - IDENTITY_CLUSTER_MIN + 1;

/// The identity numbers to try for `labels`, in order: every number of the cluster range exactly once,
/// starting at the hash of the canonical text.
pub fn candidates(labels: &IdentityLabels) -> impl Iterator<Item = u32> + use<> {
    let hash = fnv1a64(labels.canonical().as_bytes());
    let folded = (hash as u32) ^ ((hash >> 32) as u32);
    let first = folded % SPAN;
    (0..SPAN).map(move |i| IDENTITY_CLUSTER_MIN + (first + i) % SPAN)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity number is free for {canonical:?}")]
    Exhausted { canonical: String },
}

/// A local identity allocator: labels <-> number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityTable {
    by_number: BTreeMap<u32, IdentityLabels>,
    by_canonical: BTreeMap<String, u32>,
}

impl IdentityTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `labels`: the one it has, or the first candidate neither in this table nor
    /// `is_taken` (numbers used elsewhere, e.g. by another node's allocations).
    pub fn allocate(
        &mut self,
        labels: &IdentityLabels,
        is_taken: impl Fn(u32) -> bool,
    ) -> Result<u32, IdentityError> {
        let canonical = labels.canonical();
        if let Some(number) = self.by_canonical.get(&canonical) {
            return Ok(*number);
        }
        let Some(number) = candidates(labels).find(|n| !self.by_number.contains_key(n) && !is_taken(*n)) else {
            return Err(IdentityError::Exhausted { canonical });
        };
        self.by_number.insert(number, labels.clone());
        self.by_canonical.insert(canonical, number);
        Ok(number)
    }

    /// Forgets `number`; returns its labels if it was allocated.
    pub fn release(&mut self, number: u32) -> Option<IdentityLabels> {
        let labels = self.by_number.remove(&number)?;
        self.by_canonical.remove(&labels.canonical());
        Some(labels)
    }

    /// Releases every identity `in_use` says is not in use; returns the released numbers.
    pub fn gc(&mut self, in_use: impl Fn(u32) -> bool) -> Vec<u32> {
        let stale: Vec<u32> = self.by_number.keys().copied().filter(|n| !in_use(*n)).collect();
        for number in &stale {
            self.release(*number);
        }
        stale
    }

    pub fn get(&self, number: u32) -> Option<&IdentityLabels> {
        self.by_number.get(&number)
    }

    pub fn lookup(&self, labels: &IdentityLabels) -> Option<u32> {
        self.by_canonical.get(&labels.canonical()).copied()
    }

    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }

    /// Every identity, as [`crate::policy::PolicyInput::identities`] takes them.
    pub fn identities(&self) -> &BTreeMap<u32, IdentityLabels> {
        &self.by_number
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn labels(ns: &str, pod: &[(&str, &str)]) -> IdentityLabels {
        let pod = pod.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        IdentityLabels::new(ns, pod, BTreeMap::from([("team".to_string(), format!("t-{ns}"))]))
    }

    #[test]
    fn canonical_text_is_sorted_lines_with_the_namespace_name() {
        let l = labels("x", &[("pod", "a"), ("app", "web")]);
        assert_eq!(l.canonical(), "k8s:app=web\nk8s:pod=a\nns:kubernetes.io/metadata.name=x\nns:team=t-x\n");
    }

    #[test]
    fn the_namespace_name_label_cannot_be_overridden() {
        let mut l = labels("x", &[]);
        l.namespace_labels.insert(NAMESPACE_NAME_LABEL.into(), "y".into());
        assert_eq!(l.canonical(), labels("x", &[]).canonical());
    }

    #[test]
    fn candidates_are_stable_in_range_and_distinct() {
        let l = labels("x", &[("pod", "a")]);
        let first: Vec<u32> = candidates(&l).take(1000).collect();
        assert_eq!(first, candidates(&l.clone()).take(1000).collect::<Vec<_>>());
        assert!(first.iter().all(|n| (IDENTITY_CLUSTER_MIN..=IDENTITY_CLUSTER_MAX).contains(n)));
        assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 1000);
        // Consecutive (wrapping) probing.
        for w in first.windows(2) {
            assert!(w[1] == w[0] + 1 || (w[0] == IDENTITY_CLUSTER_MAX && w[1] == IDENTITY_CLUSTER_MIN));
        }
        // A fixed value: every agent, every build, computes the same number.
        let hash = fnv1a64(l.canonical().as_bytes());
        assert_eq!(first[0], IDENTITY_CLUSTER_MIN + (((hash as u32) ^ ((hash >> 32) as u32)) % SPAN));
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn candidates_cover_the_whole_range_once() {
        let l = labels("x", &[]);
        assert_eq!(candidates(&l).count() as u32, SPAN);
    }

    #[test]
    fn different_sets_get_different_first_candidates() {
        let a = candidates(&labels("x", &[("pod", "a")])).next();
        let b = candidates(&labels("x", &[("pod", "b")])).next();
        let c = candidates(&labels("y", &[("pod", "a")])).next();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_colliding_set_moves_to_the_next_candidate() {
        let l = labels("x", &[("pod", "a")]);
        let first = candidates(&l).next().unwrap();
        let second = candidates(&l).nth(1).unwrap();
        let mut table = IdentityTable::new();
        assert_eq!(table.allocate(&l, |n| n == first).unwrap(), second);
        // Already allocated: the same number, whatever is taken now.
        assert_eq!(table.allocate(&l, |_| true).unwrap(), second);
        // Another set whose first candidate is held by this table moves on too.
        let mut table = IdentityTable::new();
        table.allocate(&l, |_| false).unwrap();
        let other = labels("z", &[("pod", "q")]);
        let other_first = candidates(&other).next().unwrap();
        let got = table.allocate(&other, |n| n != first && n != other_first && n != first + 1).unwrap();
        assert!(got == first || got == other_first || got == first + 1);
        assert_ne!(got, first);
    }

    #[test]
    fn same_labels_same_number_on_two_tables() {
        let l = labels("y", &[("app", "db")]);
        let a = IdentityTable::new().allocate(&l, |_| false).unwrap();
        let b = IdentityTable::new().allocate(&l, |_| false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn release_and_lookup() {
        let mut table = IdentityTable::new();
        let l = labels("x", &[("pod", "a")]);
        let n = table.allocate(&l, |_| false).unwrap();
        assert_eq!(table.lookup(&l), Some(n));
        assert_eq!(table.get(n), Some(&l));
        assert_eq!(table.release(n), Some(l.clone()));
        assert_eq!(table.lookup(&l), None);
        assert!(table.is_empty());
        assert_eq!(table.release(n), None);
    }

    #[test]
    fn gc_after_a_thousand_label_changes_leaves_nothing() {
        let mut table = IdentityTable::new();
        let mut live = None;
        for i in 0..1000 {
            let l = labels("x", &[("pod", "a"), ("rev", &i.to_string())]);
            live = Some(table.allocate(&l, |_| false).unwrap());
        }
        assert_eq!(table.len(), 1000);
        let live = live.unwrap();
        let released = table.gc(|n| n == live);
        assert_eq!(released.len(), 999);
        assert_eq!(table.len(), 1);
        table.gc(|_| false);
        assert!(table.is_empty());
        assert!(table.by_canonical.is_empty());
    }
}
