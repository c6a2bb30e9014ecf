//! `novanet lab cluster --detach` and the lab's supervisor; the light lab's agent supervisor.
//!
//! `--detach` re-executes this command (`lab cluster --supervisor`) in a session of its own, stdin from
//! /dev/null, stdout and stderr appended to `<lab dir>/supervisor.log`. That supervisor runs exactly the
//! foreground flow (up, helm install, wait for SIGINT/SIGTERM, down); it records its PID and start time in
//! the lab state from the state's first write on, and writes `<lab dir>/supervisor.ready` once NovaNet is
//! installed. The parent streams the log until the ready file appears (then prints how to use the cluster
//! and exits 0) or the supervisor exits (then it fails).
//!
//! `novanet lab down` on a lab with a live supervisor sends SIGTERM to that PID only, after checking its
//! start time (PIDs get reused), and waits for it to remove the lab; if it is gone or does not finish, the
//! lab is removed from its state file as for any other lab.
//!
//! A light lab (`novanet lab up`) gets a supervisor too, in the role [`SupervisorRole::Agents`]: `lab up`
//! starts `novanet lab supervise --name <lab>` the same way (own session, `supervisor.log`) and records
//! it; it restarts agents that die ([`novanet_lab::agent_supervision`]). `lab down` stops it first (SIGTERM:
//! it finishes the restart under way and exits), then removes the lab itself.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use novanet_lab::agent_supervision::{Event, Supervision};
use novanet_lab::state::{LabState, StateError, SupervisorRole, SupervisorState, lab_dir};
use novanet_lab::{Lab, LabError};

/// The supervisor's output, in the lab directory.
const LOG: &str = "supervisor.log";
/// Written by the supervisor once NovaNet is installed: a [`Ready`].
const READY: &str = "supervisor.ready";
/// How long `lab down` gives a supervisor to remove its lab.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// What the parent needs to print the usage lines.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
}

/// The supervisor's "NovaNet is installed" (written atomically).
pub fn write_ready(dir: &Path, kubeconfig: &Path, bin_dir: &Path) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&Ready { kubeconfig: kubeconfig.into(), bin_dir: bin_dir.into() })?;
    let path = dir.join(READY);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

/// `novanet lab cluster --detach`: starts the supervisor and waits for it to be ready or to fail. Ctrl-C
/// (or SIGTERM) meanwhile asks the supervisor to remove the cluster, and waits for that.
pub fn detach(file: &Path, name: &str, values: &Path, chart: &Path) -> anyhow::Result<ExitCode> {
    let dir = lab_dir(name);
    anyhow::ensure!(
        !LabState::file(&dir).exists(),
        "lab {name} already exists; run `novanet lab down --name {name}` first"
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(READY));
    let log = dir.join(LOG);
    // Our own handle on the log: still readable after a failed supervisor removed the lab directory.
    let mut reader = File::options().read(true).append(true).create(true).open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    reader.seek(SeekFrom::End(0))?;

    // Blocked before any thread starts; the child gets an empty mask (std resets it before exec).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    let mut cmd = Command::new(std::env::current_exe().context("locating this executable")?);
    cmd.args(["lab", "cluster", "--supervisor", "--name", name])
        .arg("-f")
        .arg(std::path::absolute(file)?)
        .arg("--values")
        .arg(std::path::absolute(values)?)
        .arg("--chart")
        .arg(std::path::absolute(chart)?);
    let pid = novanet_lab::process::spawn_detached(&mut cmd, &log).context("starting the supervisor")?;
    let child = Pid::from_raw(pid as i32);
    println!("lab cluster {name}: supervisor pid {pid}, log {}", log.display());

    // Signalled only while unreaped (the lock orders the kill against the reaping): the PID is ours.
    let reaped = Arc::new(Mutex::new(false));
    let interrupted = Arc::new(Mutex::new(None));
    {
        let (reaped, interrupted) = (reaped.clone(), interrupted.clone());
        std::thread::spawn(move || {
            let Ok(sig) = signals.wait() else { return };
            let reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
            if !*reaped {
                *interrupted.lock().unwrap_or_else(|e| e.into_inner()) = Some(sig);
                let _ = kill(child, Signal::SIGTERM);
            }
        });
    }

    let mut told = false;
    let status = loop {
        copy_new(&mut reader);
        let sig = *interrupted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sig) = sig
            && !told
        {
            println!("{sig:?}: the supervisor removes the cluster once its current step is done");
            told = true;
        }
        if sig.is_none() && dir.join(READY).exists() {
            break None;
        }
        {
            let mut reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(WaitStatus::Exited(_, code)) => {
                    *reaped = true;
                    break Some(format!("exit code {code}"));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    *reaped = true;
                    break Some(format!("killed by {sig:?}"));
                }
                Ok(_) => {} // stopped or continued: still there
                Err(e) => {
                    *reaped = true;
                    break Some(format!("wait: {e}"));
                }
            }
        }
        std::thread::sleep(POLL);
    };
    copy_new(&mut reader);

    let Some(status) = status else {
        let ready: Ready = std::fs::read(dir.join(READY))
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
            .context("reading the supervisor's ready file")?;
        println!("\nlab cluster {name} runs in the background. In any shell:\n");
        crate::print_usage(&ready.kubeconfig, &ready.bin_dir);
        println!("\n  novanet lab status --name {name}");
        println!("  novanet lab down --name {name}     # removes the whole cluster");
        return Ok(ExitCode::SUCCESS);
    };
    if interrupted.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        println!("lab cluster {name}: the supervisor is done ({status})");
        return Ok(ExitCode::from(130));
    }
    eprintln!("novanet lab cluster: the supervisor (pid {pid}) ended before the cluster was ready: {status}");
    if LabState::file(&dir).exists() {
        eprintln!("part of lab {name} is left: `novanet lab down --name {name}` removes it");
    } else {
        // Nothing of a lab was made (or all of it is removed): only our files are left.
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(ExitCode::FAILURE)
}

/// Copies what the supervisor wrote since the last call to stdout.
fn copy_new(reader: &mut File) {
    let mut buf = Vec::new();
    if reader.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}

/// `novanet lab down`: through the lab's supervisor when it runs, else (or when it fails) directly.
pub fn down(name: &str) -> anyhow::Result<()> {
    let state = LabState::load(name)?;
    match state.supervisor {
        Some(sup) if sup.is_running() && sup.role == SupervisorRole::Agents => {
            println!("lab {name}: stopping its agent supervisor (pid {})", sup.pid);
            if !stop(sup) {
                let _ = kill(Pid::from_raw(sup.pid as i32), Signal::SIGKILL);
                wait_gone(sup, Duration::from_secs(10));
            }
        }
        Some(sup) if sup.is_running() => {
            println!("lab {name}: asking its supervisor (pid {}) to remove it", sup.pid);
            if stop(sup) {
                if !LabState::file(&state.dir).exists() {
                    println!("lab {name} removed");
                    return Ok(());
                }
                println!("lab {name}: the supervisor left part of the lab; removing the rest directly");
            } else {
                println!(
                    "lab {name}: the supervisor did not finish within {}s; stopping it and removing the lab directly",
                    STOP_TIMEOUT.as_secs()
                );
                if sup.is_running() {
                    let _ = kill(Pid::from_raw(sup.pid as i32), Signal::SIGKILL);
                }
                wait_gone(sup, Duration::from_secs(10));
            }
        }
        Some(sup) => println!("lab {name}: its supervisor (pid {}) is not running; removing the lab directly", sup.pid),
        None => {}
    }
    match Lab::load(name) {
        Ok(lab) => lab.down()?,
        // Removed meanwhile (a supervisor that finished after all).
        Err(LabError::State(StateError::NoSuchLab { .. })) => {}
        Err(e) => return Err(e.into()),
    }
    println!("lab {name} removed");
    Ok(())
}

/// `novanet lab up`: starts the lab's agent supervisor and records it in the state file (it acts only once
/// it finds itself there, so it never races `lab up` for the file).
pub fn start_agent_supervisor(name: &str) -> anyhow::Result<SupervisorState> {
    let dir = lab_dir(name);
    let log = dir.join(LOG);
    let mut cmd = Command::new(std::env::current_exe().context("locating this executable")?);
    cmd.args(["lab", "supervise", "--name", name]);
    let pid = novanet_lab::process::spawn_detached(&mut cmd, &log).context("starting the agent supervisor")?;
    // Our child, not reaped: its PID cannot have been reused yet.
    let sup = SupervisorState::of(pid, SupervisorRole::Agents).context("the agent supervisor exited at once")?;
    let mut state = LabState::load(name)?;
    state.supervisor = Some(sup);
    state.save()?;
    Ok(sup)
}

/// `novanet lab supervise`: the light lab's agent supervisor (see the module doc). Exits on SIGTERM or
/// SIGINT, when the lab is gone, or when the state file names another supervisor.
pub fn supervise_agents(name: &str) -> anyhow::Result<ExitCode> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    let stopped = Arc::new(Mutex::new(None));
    {
        let stopped = stopped.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = signals.wait() {
                *stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(sig);
            }
        });
    }
    let me = SupervisorState::of(std::process::id(), SupervisorRole::Agents).context("reading /proc/self/stat")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while LabState::load(name).ok().and_then(|s| s.supervisor) != Some(me) {
        anyhow::ensure!(Instant::now() < deadline, "lab {name} did not record this supervisor (pid {})", me.pid);
        std::thread::sleep(POLL);
    }
    println!("supervisor {} of lab {name}: restarting agents that die", me.pid);
    let mut supervision = Supervision::default();
    loop {
        if let Some(sig) = *stopped.lock().unwrap_or_else(|e| e.into_inner()) {
            println!("{sig:?}: no longer supervising lab {name}");
            return Ok(ExitCode::SUCCESS);
        }
        let mut lab = match Lab::load(name) {
            Ok(lab) => lab,
            Err(LabError::State(StateError::NoSuchLab { .. })) => {
                println!("lab {name} is gone");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                println!("reading lab {name}: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if lab.state.supervisor != Some(me) {
            println!("lab {name} has another supervisor now; exiting");
            return Ok(ExitCode::SUCCESS);
        }
        for event in supervision.tick(&mut lab, Instant::now()) {
            match event {
                Event::Restarted { node, pid, after } => {
                    println!("node {node}: agent restarted (pid {pid}), {after:.1?} after it was found dead")
                }
                Event::Failed { node, error, next_in } => {
                    println!("node {node}: restarting the agent failed: {error}; next try in {next_in:?}")
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM to the supervisor (if it is still that process), then waits for it to exit; false on timeout.
fn stop(sup: SupervisorState) -> bool {
    if sup.is_running() {
        let _ = kill(Pid::from_raw(sup.pid as i32), Signal::SIGTERM);
    }
    wait_gone(sup, STOP_TIMEOUT)
}

fn wait_gone(sup: SupervisorState, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while sup.is_running() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// `novanet lab status` of a lab with real Kubernetes nodes.
pub fn cluster_status(lab: &Lab) {
    let st = &lab.state;
    println!(
        "lab {} (prefix {}, underlay {}): real Kubernetes nodes",
        st.name,
        st.prefix,
        st.underlay_cidr.map(|c| c.to_string()).unwrap_or_default()
    );
    match st.supervisor {
        Some(s) if s.is_running() => println!("supervisor: pid {} (log {})", s.pid, st.dir.join(LOG).display()),
        Some(s) => println!("supervisor: pid {} is gone; `novanet lab down --name {}` removes the rest", s.pid, st.name),
        None => println!("supervisor: none (a foreground `novanet lab cluster` runs it)"),
    }
    if let Some(k) = &st.kubeconfig {
        println!("KUBECONFIG={}", k.display());
    }
    println!();
    println!("{:<12} {:<16} {:<16} {:<14} {:<14} NETNS", "NODE", "UNDERLAY IP", "POD CIDR", "CONTAINERD", "KUBELET");
    let daemon = |pid: Option<u32>, needle: &str| match pid {
        Some(p) if novanet_lab::process::runs(p, needle) => format!("pid {p}"),
        Some(p) => format!("gone ({p})"),
        None => "-".to_string(),
    };
    for n in &st.nodes {
        let kube = lab.kube_node(&n.name).map(|k| k.state());
        println!(
            "{:<12} {:<16} {:<16} {:<14} {:<14} {}",
            n.name,
            n.underlay_ip,
            n.pod_cidr.to_string(),
            daemon(kube.and_then(|k| k.containerd_pid), "containerd"),
            daemon(kube.and_then(|k| k.kubelet_pid), "kubelet"),
            n.netns
        );
    }
    // The API's view, through the forwarder of the process that runs the lab (gone with a dead supervisor).
    let forwarder = st.supervisor.is_none_or(|s| s.is_running());
    if let (true, Some(k), Some(bin)) = (forwarder, &st.kubeconfig, novanet_lab::controlplane::locate_bin_dir()) {
        println!();
        let _ = Command::new(bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(k)
            .args(["get", "nodes", "-o", "wide", "--request-timeout=5s"])
            .status();
    }
}
