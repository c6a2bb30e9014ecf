//! Whether the agent's own DaemonSet, and with it NovaNet's install on the cluster, is going away.
//!
//! `helm uninstall` deletes the DaemonSet (then its RBAC); the garbage collector then deletes the agent
//! pods, and each agent gets SIGTERM. At that point the agent's credentials may already be gone, so it
//! cannot reliably ask the API "is my DaemonSet still there?". [`ReleaseWatch`] therefore watches the
//! DaemonSet for the agent's whole life and remembers what it saw; on SIGTERM the agent only reads the
//! verdict ([`ReleaseWatch::confirm_removed`] adds one last direct read for the case where the event
//! has not arrived yet).
//!
//! Invariant: **never "removed" without having seen the DaemonSet.** A wrong name, missing RBAC or an
//! unreachable apiserver leave the verdict at "not removed", because removing NovaNet from a node on
//! every agent restart would break the node. Removed means: the DaemonSet (by UID) was seen, and then a
//! delete event, a deletion timestamp, a relist without it, or a 404 for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What has been seen of the DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReleaseState {
    /// Not seen yet (no list completed, or it does not exist under that name).
    #[default]
    Unknown,
    /// Present, with this UID, not being deleted.
    Present { uid: String },
    /// Seen, then deleted or marked for deletion.
    Removed { uid: String },
}

/// One observation of the DaemonSet, as the watch or a direct read reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The object, with its UID and whether it carries a deletion timestamp.
    Object { uid: String, deleting: bool },
    /// A delete event, a relist without it, or a 404.
    Gone,
}

impl ReleaseState {
    /// The state after `observation` (pure; see the module invariant).
    pub fn after(&self, observation: &Observation) -> ReleaseState {
        match (self, observation) {
            (_, Observation::Object { uid, deleting: true }) => ReleaseState::Removed { uid: uid.clone() },
            // Present again, possibly a new install with a new UID: that one is not being removed.
            (_, Observation::Object { uid, deleting: false }) => ReleaseState::Present { uid: uid.clone() },
            (ReleaseState::Unknown, Observation::Gone) => ReleaseState::Unknown,
            (ReleaseState::Present { uid } | ReleaseState::Removed { uid }, Observation::Gone) => {
                ReleaseState::Removed { uid: uid.clone() }
            }
        }
    }

    pub fn is_removed(&self) -> bool {
        matches!(self, ReleaseState::Removed { .. })
    }
}

/// Watches one DaemonSet; aborts its task when dropped.
#[derive(Debug)]
pub struct ReleaseWatch {
    api: Api<DaemonSet>,
    name: String,
    state: Arc<Mutex<ReleaseState>>,
    task: JoinHandle<()>,
}

impl ReleaseWatch {
    /// Starts watching `namespace/name` (must run inside a tokio runtime). Needs `get`, `list` and
    /// `watch` on that DaemonSet (a Role with `resourceNames` is enough: the watch selects it by name).
    pub fn start(client: Client, namespace: &str, name: &str) -> ReleaseWatch {
        let api = Api::<DaemonSet>::namespaced(client, namespace);
        let state = Arc::new(Mutex::new(ReleaseState::Unknown));
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api.clone(), config).default_backoff();
        let task_state = state.clone();
        let what = format!("{namespace}/{name}");
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            // Whether the current (re)list has shown the DaemonSet.
            let mut listed = false;
            let mut errors = 0u32;
            while let Some(event) = stream.next().await {
                let observation = match event {
                    Ok(watcher::Event::Init) => {
                        listed = false;
                        continue;
                    }
                    Ok(watcher::Event::InitApply(ds)) => {
                        listed = true;
                        observe(&ds)
                    }
                    Ok(watcher::Event::InitDone) if listed => continue,
                    Ok(watcher::Event::InitDone) => Observation::Gone,
                    Ok(watcher::Event::Apply(ds)) => observe(&ds),
                    Ok(watcher::Event::Delete(_)) => Observation::Gone,
                    Err(error) => {
                        errors += 1;
                        // The first error and then every 10th: the backoff retries forever.
                        if errors % 10 == 1 {
                            warn!(daemonset = %what, %error, "cannot watch the agent's DaemonSet; uninstall cleanup waits for it");
                        }
                        continue;
                    }
                };
                errors = 0;
                let Ok(mut state) = task_state.lock() else { return };
                let next = state.after(&observation);
                if next != *state {
                    info!(daemonset = %what, state = ?next, "agent DaemonSet");
                }
                *state = next;
            }
        });
        ReleaseWatch { api, name: name.to_string(), state, task }
    }

    /// What the watch has seen so far.
    pub fn state(&self) -> ReleaseState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The verdict at shutdown: removed when the watch saw it removed, or when it was seen and a direct
    /// read (bounded by `timeout`) now finds it gone or being deleted. Errors of that read (for example
    /// credentials already revoked) leave the watch's verdict unchanged.
    pub async fn confirm_removed(&self, timeout: Duration) -> bool {
        let state = self.state();
        if state.is_removed() {
            return true;
        }
        if state == ReleaseState::Unknown {
            return false;
        }
        let observation = match tokio::time::timeout(timeout, self.api.get_opt(&self.name)).await {
            Ok(Ok(Some(ds))) => observe(&ds),
            Ok(Ok(None)) => Observation::Gone,
            Ok(Err(error)) => {
                warn!(daemonset = %self.name, %error, "cannot read the agent's DaemonSet at shutdown");
                return false;
            }
            Err(_) => return false,
        };
        state.after(&observation).is_removed()
    }
}

impl Drop for ReleaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn observe(ds: &DaemonSet) -> Observation {
    Observation::Object {
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        deleting: ds.metadata.deletion_timestamp.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(uid: &str, deleting: bool) -> Observation {
        Observation::Object { uid: uid.into(), deleting }
    }

    #[test]
    fn gone_without_having_been_seen_is_not_removed() {
        assert_eq!(ReleaseState::Unknown.after(&Observation::Gone), ReleaseState::Unknown);
    }

    #[test]
    fn seen_then_gone_or_deleting_is_removed() {
        let present = ReleaseState::Unknown.after(&object("a", false));
        assert_eq!(present, ReleaseState::Present { uid: "a".into() });
        assert!(present.after(&Observation::Gone).is_removed());
        assert!(present.after(&object("a", true)).is_removed());
        assert!(ReleaseState::Unknown.after(&object("a", true)).is_removed());
    }

    #[test]
    fn a_reinstall_after_removal_is_present_again() {
        let removed = ReleaseState::Present { uid: "a".into() }.after(&Observation::Gone);
        assert_eq!(removed.after(&object("b", false)), ReleaseState::Present { uid: "b".into() });
        assert!(removed.after(&Observation::Gone).is_removed());
    }
}
