//! Background sweeps of the datapath's flow maps (the NAT-flow map: flows that idled out and flows of
//! removed endpoints; conntrack: expired entries), each on a thread of its own with handles of its own, so
//! neither CNI DEL nor a manager's lock ever waits for a walk of a map.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use novanet_dataplane::{DataplaneError, monotonic_now_ns};
use tracing::{debug, warn};

/// How often the map is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A running sweep; stopped (and joined) by [`FlowSweep::stop`] or on drop.
pub struct FlowSweep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FlowSweep {
    /// Calls `sweep(now)` every `every` on a thread named `name` (`now`: CLOCK_MONOTONIC in ns, the
    /// datapath's clock); `sweep` returns how many entries it freed.
    pub fn start(
        name: &'static str,
        every: Duration,
        mut sweep: impl FnMut(u64) -> Result<usize, DataplaneError> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                match sweep(monotonic_now_ns()) {
                    Ok(0) => {}
                    Ok(removed) => debug!(sweep = name, removed, "flows swept"),
                    Err(e) => warn!(sweep = name, error = %e, "sweeping a flow map"),
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
