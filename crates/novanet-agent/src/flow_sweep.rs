//! The NAT-flow sweep: frees flows that idled out and flows of removed endpoints from the datapath's
//! NAT-flow map, on a thread of its own with handles of its own, so neither CNI DEL nor the endpoint
//! manager's lock ever waits for a walk of the map.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use novanet_dataplane::{NatFlows, monotonic_now_ns};
use tracing::{debug, warn};

/// How often the map is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A running sweep; stopped (and joined) by [`FlowSweep::stop`] or on drop.
pub struct FlowSweep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FlowSweep {
    pub fn start(mut flows: NatFlows, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("nat-flow-sweep".into()).spawn(move || {
            loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                match flows.sweep(monotonic_now_ns()) {
                    Ok(0) => {}
                    Ok(removed) => debug!(removed, "NAT flows swept"),
                    Err(e) => warn!(error = %e, "sweeping the NAT-flow map"),
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }

    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FlowSweep {
    fn drop(&mut self) {
        self.stop();
    }
}
