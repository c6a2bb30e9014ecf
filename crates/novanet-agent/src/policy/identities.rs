//! Numbers for label sets. With the Kubernetes API, identities are cluster-wide `NovaNetIdentity`
//! objects claimed with create-if-absent (see `novanet_k8s::identities`): every agent walks the same
//! candidate numbers of a set (`novanet_model::identity::candidates`), so all nodes agree, and a restart
//! finds the same numbers again. Without an API (the light lab), every agent computes the numbers
//! locally from the same candidates: the lab's objects are the same on every node, so they agree too
//! unless two sets collide (then the order in which a node first saw them decides; reported).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use novanet_k8s::{Claim, IdentityApi};
use novanet_model::identity::{IdentityLabels, candidates};
use tracing::{info, warn};

/// How many candidates a claim walks before giving up (collisions are rare in a 24-bit space).
const MAX_PROBES: usize = 64;
/// An unused identity object is deleted once it is this old (a pod being created may need it soon).
pub const GC_MIN_AGE_SECS: i64 = 60;

/// The label map stored in an identity object: `k8s:<pod label>` and `ns:<namespace label>`.
pub fn stored_labels(labels: &IdentityLabels) -> BTreeMap<String, String> {
    labels
        .pod
        .iter()
        .map(|(k, v)| (format!("k8s:{k}"), v.clone()))
        .chain(labels.namespace_labels.iter().map(|(k, v)| (format!("ns:{k}"), v.clone())))
        .collect()
}

pub enum Allocator {
    Api { api: Box<IdentityApi>, known: HashMap<IdentityLabels, u32> },
    Local { known: HashMap<IdentityLabels, u32> },
}

impl Allocator {
    pub fn api(api: IdentityApi) -> Self {
        Allocator::Api { api: Box::new(api), known: HashMap::new() }
    }

    pub fn local() -> Self {
        Allocator::Local { known: HashMap::new() }
    }

    /// The number of `labels`, claiming one if this agent has not seen the set yet.
    pub async fn number(&mut self, labels: &IdentityLabels) -> anyhow::Result<u32> {
        match self {
            Allocator::Api { api, known } => {
                if let Some(n) = known.get(labels) {
                    return Ok(*n);
                }
                let stored = stored_labels(labels);
                for candidate in candidates(labels).take(MAX_PROBES) {
                    let claim = match api.claim(candidate, &labels.namespace, &stored).await {
                        Ok(claim) => claim,
                        Err(e) => {
                            // No identity objects (the CRD is not installed, RBAC, an outage): the first
                            // candidate is what every agent would claim, so enforcement goes on with it.
                            warn!(error = %e, candidate, "claiming an identity object failed; using the first candidate unclaimed");
                            known.insert(labels.clone(), candidate);
                            return Ok(candidate);
                        }
                    };
                    match claim {
                        Claim::Ours => {
                            known.insert(labels.clone(), candidate);
                            return Ok(candidate);
                        }
                        Claim::Taken => warn!(candidate, namespace = %labels.namespace, "identity number taken by another label set; probing"),
                    }
                }
                anyhow::bail!("no free identity number among {MAX_PROBES} candidates for {stored:?}")
            }
            Allocator::Local { known } => {
                if let Some(n) = known.get(labels) {
                    return Ok(*n);
                }
                let taken: BTreeSet<u32> = known.values().copied().collect();
                let n = candidates(labels)
                    .take(MAX_PROBES)
                    .find(|c| !taken.contains(c))
                    .ok_or_else(|| anyhow::anyhow!("no free identity number for {labels:?}"))?;
                known.insert(labels.clone(), n);
                Ok(n)
            }
        }
    }

    /// Forgets sets no pod uses. With the API, also deletes their objects once old enough (only if
    /// unchanged since listed). Returns how many identities went.
    pub async fn collect_garbage(&mut self, in_use: &BTreeSet<u32>) -> anyhow::Result<usize> {
        match self {
            Allocator::Local { known } => {
                let before = known.len();
                known.retain(|_, n| in_use.contains(n));
                Ok(before - known.len())
            }
            Allocator::Api { api, known } => {
                known.retain(|_, n| in_use.contains(n));
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                let mut deleted = 0;
                for stored in api.list().await? {
                    let old_enough = stored.created_unix.is_some_and(|t| now - t >= GC_MIN_AGE_SECS);
                    if in_use.contains(&stored.number) || !old_enough {
                        continue;
                    }
                    if let Some(rv) = stored.resource_version.as_deref()
                        && api.delete_unchanged(stored.number, rv).await?
                    {
                        info!(identity = stored.number, "unused identity deleted");
                        deleted += 1;
                    }
                }
                Ok(deleted)
            }
        }
    }
}
