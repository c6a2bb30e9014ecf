//! Time from a policy change to its enforcement, measured in-process on the lab node's real maps with a
//! 1,000-pod / 1,000-policy model (see `policy_model::Model::scale`).
//!
//! Each change adds or removes the probe policy (UDP [`PROBE_PORT`] client -> server), then does what the
//! agent does: compile, lower, diff against what is written, write the diff to the pinned maps and bump
//! the revision. Meanwhile a sender thread in the client's network namespace sends one UDP datagram every
//! ~100 us, **each from a new socket with a source port never used before in the run**, so every probe
//! is a new flow that the datapath judges against the policy of that moment (conntrack lets an
//! established flow through a change by design); a receiver in the server's namespace notes which
//! arrived. Enforcement happened between the last probe sent with the old verdict and the first probe
//! sent with the new one after which every probe had the new verdict: the latter's send time minus the
//! change's start is the figure (an upper bound, at most one probe interval late).
//!
//! Invariant: the threads only enter the pods' namespaces (a thread's own `setns`), never the root one's
//! addresses; both stop (and are joined) when the probe drops.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use novanet_lab::netns::NetNs;
use novanet_model::policy::Incremental;
use serde::Serialize;

use crate::child::check_interrupted;
use crate::policy_model::{LAST_NAMESPACE, Model, NAMESPACE, PROBE_PORT};
use crate::policy_writer::Writer;
use crate::stats::percentile;
use crate::veth_pair::Endpoints;

const PROBE_EVERY: Duration = Duration::from_micros(100);
/// Probing goes on this long after the write returned (the datapath reads the maps on every packet, so
/// the new verdict applies to the very next new flow).
const AFTER_WRITE: Duration = Duration::from_millis(20);
const BEFORE_CHANGE: Duration = Duration::from_millis(5);
/// Source ports of the probes, each used once.
const FIRST_PORT: u16 = 20_000;
const LAST_PORT: u16 = 60_000;

/// One measured change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSample {
    /// The change allowed the probe (added the policy) or denied it (removed it).
    pub allow: bool,
    /// `Incremental::update`: parse, compile and lower of what the change can affect.
    pub compile_ms: f64,
    pub policies_parsed: usize,
    pub endpoints_compiled: usize,
    pub diff_ms: f64,
    pub write_ms: f64,
    pub operations: usize,
    /// Change start to the send time of the first probe with the new verdict (`None`: not seen).
    pub to_enforcement_ms: Option<f64>,
    /// Change start to the last probe with the old verdict sent after the start (0 if none).
    pub enforcement_after_ms: f64,
    /// Probes sent during the window, and probes before the change that already had the new verdict
    /// (should be 0).
    pub probes: usize,
    pub early_probes: usize,
}

/// The changes of one probe-policy position.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// `first`: the probe policy sorts before every other policy, so adding or removing it renumbers every
    /// later rule and rewrites the `rule` value of nearly every entry (the largest diff one policy can
    /// make); `last`: it sorts last but one, the diff is a few entries.
    pub probe_sorts: &'static str,
    pub samples: Vec<ChangeSample>,
    pub to_enforcement_p50_ms: Option<f64>,
    pub to_enforcement_p95_ms: Option<f64>,
    pub compile_lower_diff_write_p50_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyLatency {
    pub pods: usize,
    pub simulated_endpoints: usize,
    pub policies: usize,
    pub policy_entries: usize,
    pub cidr_entries: usize,
    pub ipcache_entries: usize,
    pub series: Vec<Series>,
}

pub struct Scale {
    pub pods: usize,
    pub policies: usize,
    pub changes: usize,
    pub pod_cidr: ipnet::Ipv4Net,
}

pub fn measure(writer: &mut Writer, ep: &Endpoints, client_ip: Ipv4Addr, s: &Scale) -> anyhow::Result<PolicyLatency> {
    let sim =
        crate::policy_model::simulated_addresses(s.pod_cidr, s.pods.saturating_sub(2), &[client_ip, ep.server_ip])?;
    let probe = Probe::start(ep)?;
    let mut series = Vec::new();
    let mut sizes = (0, 0, 0);
    let mut counts = (0, 0);
    for (probe_sorts, namespace) in [("first", NAMESPACE), ("last", LAST_NAMESPACE)] {
        let mut model = Model::scale(namespace, client_ip, ep.server_ip, &sim, s.policies, false)?;
        let local = model.local();
        let initial = Instant::now();
        // The agent keeps its compiler between compiles: the first update compiles everything.
        let mut compiler = Incremental::new();
        compiler.update(&model.input(), &local);
        writer.apply_entries(&model.ipcache(&local, compiler.entries()), compiler.entries())?;
        writer.set_enforce(true)?;
        sizes = writer.sizes();
        counts = (model.pod_count(), model.policy_count() + 1);
        eprintln!(
            "policy latency, probe policy sorting {probe_sorts}: {} pods ({} simulated), {} policies: {} policy, {} \
             CIDR, {} ipcache entries written in {:.0} ms",
            counts.0,
            sim.len(),
            counts.1,
            sizes.0,
            sizes.1,
            sizes.2,
            ms(initial.elapsed())
        );
        let mut samples = Vec::with_capacity(s.changes);
        for i in 0..s.changes {
            check_interrupted()?;
            let allow = i % 2 == 0;
            let sample = one_change(writer, &mut compiler, &mut model, &local, &probe, allow)?;
            eprintln!(
                "  change {}/{} ({}): compile {:.1} ms ({} policies parsed, {} endpoints compiled), \
                 diff {:.2} ms, write {:.2} ms ({} ops); enforced {} ms after the change (after {:.2} ms), {} probes",
                i + 1,
                s.changes,
                if allow { "allow" } else { "deny" },
                sample.compile_ms,
                sample.policies_parsed,
                sample.endpoints_compiled,
                sample.diff_ms,
                sample.write_ms,
                sample.operations,
                sample.to_enforcement_ms.map(|v| format!("{v:.2}")).unwrap_or("n/a".into()),
                sample.enforcement_after_ms,
                sample.probes
            );
            samples.push(sample);
        }
        let enforced: Vec<f64> = samples.iter().filter_map(|s| s.to_enforcement_ms).collect();
        let pipeline: Vec<f64> = samples.iter().map(|s| s.compile_ms + s.diff_ms + s.write_ms).collect();
        // A change never seen enforced makes the percentiles meaningless: they are absent then.
        let all_seen = enforced.len() == samples.len();
        series.push(Series {
            probe_sorts,
            to_enforcement_p50_ms: all_seen.then(|| percentile(&enforced, 50.0)).flatten(),
            to_enforcement_p95_ms: all_seen.then(|| percentile(&enforced, 95.0)).flatten(),
            compile_lower_diff_write_p50_ms: percentile(&pipeline, 50.0),
            samples,
        });
    }
    drop(probe);
    Ok(PolicyLatency {
        pods: counts.0,
        simulated_endpoints: sim.len(),
        policies: counts.1,
        policy_entries: sizes.0,
        cidr_entries: sizes.1,
        ipcache_entries: sizes.2,
        series,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn one_change(
    writer: &mut Writer,
    compiler: &mut Incremental,
    model: &mut Model,
    local: &[Ipv4Addr],
    probe: &Probe,
    allow: bool,
) -> anyhow::Result<ChangeSample> {
    probe.clear();
    probe.active.store(true, Ordering::SeqCst);
    std::thread::sleep(BEFORE_CHANGE);
    let t0 = Instant::now();
    model.set_probe(allow)?;
    let stats = compiler.update(&model.input(), local);
    let t_compiled = Instant::now();
    let ipcache = model.ipcache(local, compiler.entries());
    let written = writer.apply_entries(&ipcache, compiler.entries())?;
    std::thread::sleep(AFTER_WRITE);
    probe.active.store(false, Ordering::SeqCst);
    std::thread::sleep(AFTER_WRITE); // the last probes arrive
    let (sent, received) = probe.take();
    let verdicts = Verdicts::of(&sent, &received, t0, allow);
    Ok(ChangeSample {
        allow,
        compile_ms: ms(t_compiled - t0),
        policies_parsed: stats.policies_parsed,
        endpoints_compiled: stats.endpoints_compiled,
        diff_ms: ms(written.diff),
        write_ms: ms(written.write),
        operations: written.operations,
        to_enforcement_ms: verdicts.first_new.map(ms),
        enforcement_after_ms: ms(verdicts.last_old),
        probes: sent.len(),
        early_probes: verdicts.early,
    })
}

/// Where the verdict of the probes turned, relative to the change's start.
#[derive(Debug, PartialEq)]
struct Verdicts {
    first_new: Option<Duration>,
    last_old: Duration,
    early: usize,
}

impl Verdicts {
    /// `sent` in send order; a probe has the new verdict iff (it arrived) == `allow`.
    fn of(sent: &[(u64, Instant)], received: &BTreeSet<u64>, t0: Instant, allow: bool) -> Verdicts {
        let new = |seq: &u64| received.contains(seq) == allow;
        let early = sent.iter().filter(|(seq, at)| *at < t0 && new(seq)).count();
        // The first probe after t0 from which on every probe has the new verdict.
        let tail = sent.iter().rposition(|(seq, _)| !new(seq)).map_or(0, |i| i + 1);
        let first = sent[tail..].iter().find(|(_, at)| *at >= t0);
        let last_old = sent[..tail].iter().rev().find(|(_, at)| *at >= t0).map_or(Duration::ZERO, |(_, at)| *at - t0);
        Verdicts { first_new: first.map(|(_, at)| *at - t0), last_old, early }
    }
}

type Log = Arc<Mutex<Vec<(u64, Instant)>>>;

/// The sender and receiver threads.
struct Probe {
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Log,
    received: Log,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

fn enter(netns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(NetNs::existing(netns).path()).with_context(|| format!("opening netns {netns}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {netns}"))
}

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<(u64, Instant)>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Probe {
    fn start(ep: &Endpoints) -> anyhow::Result<Probe> {
        let mut p = Probe {
            active: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            sent: Log::default(),
            received: Log::default(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, received, ns, ip) = (p.stop.clone(), p.received.clone(), ep.server_ns.clone(), ep.server_ip);
        p.threads.push(std::thread::spawn(move || {
            let bound = enter(&ns).and_then(|()| {
                let sock = UdpSocket::bind(SocketAddrV4::new(ip, PROBE_PORT)).context("binding the probe receiver")?;
                sock.set_read_timeout(Some(Duration::from_millis(10)))?;
                Ok(sock)
            });
            let sock = match bound {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, _)) = sock.recv_from(&mut buf)
                    && n >= 8
                {
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&buf[..8]);
                    lock(&received).push((u64::from_be_bytes(seq), Instant::now()));
                }
            }
            Ok(())
        }));
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("probe receiver: {e}"),
            Err(_) => bail!("probe receiver did not start"),
        }
        let (stop, active, sent, ns) = (p.stop.clone(), p.active.clone(), p.sent.clone(), ep.client_ns.clone());
        let to = SocketAddrV4::new(ep.server_ip, PROBE_PORT);
        p.threads.push(std::thread::spawn(move || {
            enter(&ns)?;
            let port = AtomicU16::new(FIRST_PORT);
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if !active.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let p = port.fetch_add(1, Ordering::SeqCst);
                if p > LAST_PORT {
                    bail!("probe source ports exhausted (more than {} probes)", LAST_PORT - FIRST_PORT);
                }
                // A port some other socket holds is skipped (it is never reused either way).
                if let Ok(sock) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p)) {
                    seq += 1;
                    let at = Instant::now();
                    if sock.send_to(&seq.to_be_bytes(), to).is_ok() {
                        lock(&sent).push((seq, at));
                    }
                }
                std::thread::sleep(PROBE_EVERY);
            }
            Ok(())
        }));
        Ok(p)
    }

    fn clear(&self) {
        lock(&self.sent).clear();
        lock(&self.received).clear();
    }

    /// (sent in order, the set received).
    fn take(&self) -> (Vec<(u64, Instant)>, BTreeSet<u64>) {
        let sent = std::mem::take(&mut *lock(&self.sent));
        let received = std::mem::take(&mut *lock(&self.received)).into_iter().map(|(s, _)| s).collect();
        (sent, received)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("bench: policy probe thread: {e:#}"),
                Err(_) => eprintln!("bench: policy probe thread panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: i64) -> Instant {
        if ms >= 0 { t0 + Duration::from_millis(ms as u64) } else { t0 - Duration::from_millis((-ms) as u64) }
    }

    #[test]
    fn an_allow_is_enforced_at_the_first_probe_that_arrives_for_good() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let sent: Vec<(u64, Instant)> = (1..=6).map(|s| (s, at(t0, s as i64 - 3))).collect(); // -2..=3 ms
        let received: BTreeSet<u64> = [4, 5, 6].into();
        let v = Verdicts::of(&sent, &received, t0, true);
        assert_eq!(v, Verdicts { first_new: Some(Duration::from_millis(1)), last_old: Duration::ZERO, early: 0 });
        let late: BTreeSet<u64> = [6].into();
        let v = Verdicts::of(&sent, &late, t0, true);
        assert_eq!((v.first_new, v.last_old), (Some(Duration::from_millis(3)), Duration::from_millis(2)));
    }

    #[test]
    fn a_deny_is_the_first_probe_lost_for_good_and_early_or_missing_verdicts_show() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let sent: Vec<(u64, Instant)> = (1..=6).map(|s| (s, at(t0, s as i64 - 3))).collect();
        // 2 lost before the change (early), 4 arrived after it, 5 and 6 lost.
        let received: BTreeSet<u64> = [1, 3, 4].into();
        let v = Verdicts::of(&sent, &received, t0, false);
        assert_eq!(
            v,
            Verdicts { first_new: Some(Duration::from_millis(2)), last_old: Duration::from_millis(1), early: 1 }
        );
        let all: BTreeSet<u64> = (1..=6).collect();
        assert_eq!(Verdicts::of(&sent, &all, t0, false).first_new, None, "never denied");
    }
}
