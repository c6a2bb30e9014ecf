//! Who restarts a light lab's agents. On a real cluster the agent is a DaemonSet pod and kubelet restarts
//! it when it dies, with a growing back-off; a light lab started by `novanet lab up` (a command that
//! returns) has a small supervisor process instead (`novanet lab supervise`, recorded in the state file
//! with its PID and start time like a detached cluster's). Each [`Supervision::tick`] looks at every
//! node's recorded agent and starts a dead one again once its back-off has passed.
//!
//! The supervisor is the only writer of the state file while it runs: `lab down` stops it first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{Lab, LabError};

/// kubelet's crash-loop back-off, scaled to a lab: the first restart after [`Backoff::FIRST`], doubling
/// up to [`Backoff::MAX`]; an agent that ran [`Backoff::RESET_AFTER`] starts over from the first delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    /// When the agent was last started (or first seen alive).
    started: Instant,
    /// When the agent was first seen dead since, if it is down.
    down_since: Option<Instant>,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(30);
    pub const RESET_AFTER: Duration = Duration::from_secs(60);

    pub fn new(now: Instant) -> Self {
        Backoff { delay: Self::FIRST, started: now, down_since: None }
    }

    /// The agent was seen dead at `now`: true when it is time to start it again.
    pub fn due(&mut self, now: Instant) -> bool {
        let since = *self.down_since.get_or_insert_with(|| {
            if now.duration_since(self.started) >= Self::RESET_AFTER {
                self.delay = Self::FIRST;
            }
            now
        });
        now.duration_since(since) >= self.delay
    }

    /// A start was attempted at `now`: the next failure waits twice as long.
    pub fn started(&mut self, now: Instant) {
        self.started = now;
        self.down_since = None;
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// The delay before the next restart.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// What one tick did for one node.
#[derive(Debug)]
pub enum Event {
    Restarted { node: String, pid: u32, after: Duration },
    Failed { node: String, error: LabError, next_in: Duration },
}

/// The back-off of every node of one lab.
#[derive(Debug, Default)]
pub struct Supervision {
    nodes: HashMap<String, Backoff>,
}

impl Supervision {
    /// Restarts the dead agents of `lab` whose back-off has passed; returns what it did.
    pub fn tick(&mut self, lab: &mut Lab, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let nodes: Vec<(String, Option<u32>)> =
            lab.state.nodes.iter().map(|n| (n.name.clone(), n.agent_pid)).collect();
        for (name, pid) in nodes {
            let backoff = self.nodes.entry(name.clone()).or_insert_with(|| Backoff::new(now));
            if pid.is_some_and(|p| crate::process::runs(p, "novanet-agent")) {
                continue;
            }
            if !backoff.due(now) {
                continue;
            }
            let after = backoff.down_since.map(|d| now.duration_since(d)).unwrap_or_default();
            let result = lab.revive_agent(&name);
            backoff.started(Instant::now());
            events.push(match result {
                Ok(pid) => Event::Restarted { node: name, pid, after },
                Err(error) => Event::Failed { node: name, error, next_in: backoff.delay() },
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_after_a_long_run() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        assert!(!b.due(t0), "a restart waits the first delay");
        assert!(b.due(t0 + Backoff::FIRST));
        b.started(t0 + Backoff::FIRST);
        assert_eq!(b.delay(), Backoff::FIRST * 2);
        let mut now = t0 + Backoff::FIRST;
        for _ in 0..20 {
            now += Duration::from_secs(1); // dies a second after each start
            assert!(!b.due(now));
            now += b.delay();
            assert!(b.due(now));
            b.started(now);
        }
        assert_eq!(b.delay(), Backoff::MAX);
        // An agent that ran a minute dies: the next restart comes after the first delay again.
        now += Backoff::RESET_AFTER;
        assert!(!b.due(now));
        assert!(b.due(now + Backoff::FIRST));
    }
}
