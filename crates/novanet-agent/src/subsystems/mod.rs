//! The agent's parts, each a [`Subsystem`]: started in order by `main.rs`, registered with
//! [`Subsystems`] once started, stopped in reverse order on shutdown (or when a later one fails to
//! start). Each reports its [`Health`]; the agent is ready exactly when every subsystem is ready or
//! inactive and the agent is not stopping ([`readiness`]), which is what `status` answers and the
//! DaemonSet's readiness probe checks.
//!
//! Features that are not in this build have their place here already (`policy`, `tunnels`, `services`,
//! `flows`, `routing`): each reports itself inactive with the reason, and its issue fills it in.

pub mod api;
pub mod endpoints;
pub mod flows;
pub mod policy;
pub mod routing;
pub mod services;
pub mod sources;
pub mod tunnels;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The coarse state of a subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Doing its job.
    Ready,
    /// Started but not (or no longer) able to do its job: holds the agent's readiness back.
    NotReady,
    /// Not in this build or not configured: does nothing and holds nothing back.
    Inactive,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::NotReady => "not-ready",
            State::Inactive => "inactive",
        }
    }
}

/// A subsystem's contribution to readiness and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// Why it is not ready or inactive; for a ready one, what an operator should know (degraded
    /// sources, endpoints that could not be restored).
    pub reasons: Vec<String>,
}

impl Health {
    pub fn ready() -> Self {
        Health { state: State::Ready, reasons: Vec::new() }
    }

    pub fn ready_with(notes: Vec<String>) -> Self {
        Health { state: State::Ready, reasons: notes }
    }

    pub fn not_ready(reason: impl Into<String>) -> Self {
        Health { state: State::NotReady, reasons: vec![reason.into()] }
    }

    pub fn inactive(reason: impl Into<String>) -> Self {
        Health { state: State::Inactive, reasons: vec![reason.into()] }
    }
}

/// One part of the agent. Starting is each subsystem's own constructor (it takes what the earlier ones
/// produced); what the supervisor needs afterwards is here.
#[tonic::async_trait]
pub trait Subsystem: Send + Sync {
    fn name(&self) -> &'static str;
    /// Cheap and non-blocking: the status call reads it.
    fn health(&self) -> Health;
    /// Stops what it runs. Called once, in reverse start order. Never removes the datapath: an agent that
    /// stops leaves the node forwarding (the uninstall is a separate, explicit step).
    async fn stop(&mut self);
}

/// Whether the agent is ready, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reasons: Vec<String>,
}

/// Ready when no subsystem is not-ready, at least one subsystem is ready, and the agent is not stopping.
/// `subsystems` are (name, health) in start order.
pub fn readiness(subsystems: &[(&'static str, Health)], stopping: bool) -> Readiness {
    let mut reasons = Vec::new();
    if stopping {
        reasons.push("the agent is stopping".to_string());
    }
    for (name, health) in subsystems {
        if health.state == State::NotReady {
            if health.reasons.is_empty() {
                reasons.push(format!("{name}: not ready"));
            }
            reasons.extend(health.reasons.iter().map(|r| format!("{name}: {r}")));
        }
    }
    if !subsystems.iter().any(|(_, h)| h.state == State::Ready) {
        reasons.push("no subsystem has started".to_string());
    }
    Readiness { ready: reasons.is_empty(), reasons }
}

/// A snapshot for `status`: every started subsystem's health and the readiness they make.
#[derive(Debug, Clone)]
pub struct Report {
    pub subsystems: Vec<(&'static str, Health)>,
    pub readiness: Readiness,
}

#[derive(Default)]
struct Registry {
    started: RwLock<Vec<Box<dyn Subsystem>>>,
    stopping: AtomicBool,
}

/// The started subsystems, shared by the supervisor (`main.rs`) and the status call.
#[derive(Clone, Default)]
pub struct Subsystems(Arc<Registry>);

impl Subsystems {
    /// Registers a subsystem that has started; it is stopped before every one registered earlier.
    pub fn started(&self, subsystem: Box<dyn Subsystem>) {
        tracing::info!(subsystem = subsystem.name(), state = subsystem.health().state.as_str(), "subsystem started");
        self.0.started.write().unwrap_or_else(PoisonError::into_inner).push(subsystem);
    }

    pub fn report(&self) -> Report {
        let started = self.0.started.read().unwrap_or_else(PoisonError::into_inner);
        let subsystems: Vec<_> = started.iter().map(|s| (s.name(), s.health())).collect();
        let readiness = readiness(&subsystems, self.0.stopping.load(Ordering::Relaxed));
        Report { subsystems, readiness }
    }

    /// Marks the agent stopping (not ready from now on) and stops every subsystem, last started first.
    pub async fn stop_all(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
        loop {
            let next = self.0.started.write().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(mut subsystem) = next else { break };
            tracing::info!(subsystem = subsystem.name(), "stopping subsystem");
            subsystem.stop().await;
        }
    }
}

/// A subsystem whose feature is not in this build: it runs nothing and says why.
pub struct Inactive {
    name: &'static str,
    reason: String,
}

impl Inactive {
    pub fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Inactive { name, reason: reason.into() }
    }
}

#[tonic::async_trait]
impl Subsystem for Inactive {
    fn name(&self) -> &'static str {
        self.name
    }

    fn health(&self) -> Health {
        Health::inactive(self.reason.clone())
    }

    async fn stop(&mut self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn ready_when_every_subsystem_is_ready_or_inactive() {
        let all = [
            ("kubernetes", Health::ready_with(vec!["Pod source degraded".into()])),
            ("endpoints", Health::ready()),
            ("policy", Health::inactive("not in this build")),
            ("api", Health::ready()),
        ];
        let r = readiness(&all, false);
        assert!(r.ready, "{r:?}");
        assert!(r.reasons.is_empty(), "notes of ready subsystems are not reasons: {r:?}");
    }

    #[test]
    fn a_not_ready_subsystem_makes_the_agent_not_ready_with_its_reason() {
        let all = [
            ("kubernetes", Health::not_ready("Pod source: waiting for the first list")),
            ("endpoints", Health::ready()),
            ("api", Health::ready()),
        ];
        let r = readiness(&all, false);
        assert!(!r.ready);
        assert_eq!(r.reasons, vec!["kubernetes: Pod source: waiting for the first list".to_string()]);
    }

    #[test]
    fn stopping_or_nothing_started_is_not_ready() {
        let r = readiness(&[("api", Health::ready())], true);
        assert_eq!((r.ready, r.reasons), (false, vec!["the agent is stopping".to_string()]));
        assert!(!readiness(&[], false).ready);
        assert!(!readiness(&[("policy", Health::inactive("x"))], false).ready, "inactive alone is not a running agent");
    }

    struct Recorder(&'static str, Arc<Mutex<Vec<&'static str>>>);

    #[tonic::async_trait]
    impl Subsystem for Recorder {
        fn name(&self) -> &'static str {
            self.0
        }
        fn health(&self) -> Health {
            Health::ready()
        }
        async fn stop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[tokio::test]
    async fn stop_all_stops_in_reverse_start_order_and_reports_not_ready() {
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let subsystems = Subsystems::default();
        for name in ["kubernetes", "endpoints", "api"] {
            subsystems.started(Box::new(Recorder(name, stopped.clone())));
        }
        assert!(subsystems.report().readiness.ready);
        subsystems.stop_all().await;
        assert_eq!(*stopped.lock().unwrap(), vec!["api", "endpoints", "kubernetes"]);
        let report = subsystems.report();
        assert!(!report.readiness.ready && report.subsystems.is_empty(), "{report:?}");
    }
}
