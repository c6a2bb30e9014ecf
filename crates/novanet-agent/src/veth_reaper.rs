//! Deletes the host veths of removed endpoints off the CNI DEL path.
//!
//! The kernel takes tens of milliseconds to unregister a veth pair (RCU grace periods), which used to be
//! most of a DEL. The agent now answers DEL once the endpoint is released and hands the interface here:
//! one thread deletes queued interfaces by index, so a newer interface that took the name meanwhile is
//! never touched. The plugin's ADD of the same name waits for the old one to go.
//!
//! An agent that dies with deletions queued leaves those veths to the runtime's namespace deletion
//! (which takes the pair with the pod's namespace); a graceful stop finishes the queue first.

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use tracing::{debug, warn};

pub struct VethReaper {
    queue: Mutex<Option<mpsc::Sender<(String, u32)>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl VethReaper {
    pub fn start() -> std::io::Result<Arc<VethReaper>> {
        let (tx, rx) = mpsc::channel::<(String, u32)>();
        let worker = std::thread::Builder::new().name("veth-reaper".into()).spawn(move || {
            for (name, index) in rx {
                match novanet_dataplane::delete_link(index) {
                    Ok(true) => debug!(ifname = %name, index, "host veth deleted"),
                    Ok(false) => debug!(ifname = %name, index, "host veth already gone"),
                    Err(e) => warn!(ifname = %name, index, error = %e, "deleting the host veth failed"),
                }
            }
        })?;
        Ok(Arc::new(VethReaper { queue: Mutex::new(Some(tx)), worker: Mutex::new(Some(worker)) }))
    }

    /// Queues `name` (as it is now: its current index) for deletion. `false` when there is nothing to
    /// delete (no such interface) or the reaper has stopped: the caller deletes it, or nothing.
    pub fn delete(&self, name: &str) -> bool {
        let Ok(index) = novanet_dataplane::ifindex(name) else { return false };
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else { return false };
        tx.send((name.to_string(), index)).is_ok()
    }

    /// Takes no more work and finishes what is queued.
    pub fn stop(&self) {
        drop(self.queue.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(worker) = self.worker.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = worker.join();
        }
    }
}
