//! The NovaNet CNI plugin (spec 1.0/1.1: ADD, DEL, CHECK, STATUS, GC, VERSION).
//!
//! It wires a pod's veth and asks the agent (gRPC on a unix socket) for the address and the eBPF
//! endpoint; everything else about the pod's networking is the agent's.
//!
//! Invariants:
//! - stdout carries exactly one thing: the CNI result or the CNI error structure. Logs go to stderr
//!   or the config's `logFile`.
//! - The plugin never changes namespace on its own threads: pod-namespace netlink sockets are made on
//!   short-lived dedicated threads (`netns.rs`).
//! - A failed ADD leaves no veth, route or agent endpoint behind; DEL is idempotent.

mod agent;
mod commands;
mod config;
mod dispatch;
mod env;
mod error;
mod logging;
mod naming;
mod netlink;
mod netns;
mod result;
mod version;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let getenv = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let outcome = dispatch::dispatch(&getenv, &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(text) => {
            if let Some(text) = text {
                let _ = writeln!(stdout, "{text}");
            }
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let _ = writeln!(stdout, "{}", failure.error.to_json(failure.cni_version));
            let _ = stdout.flush();
            ExitCode::FAILURE
        }
    }
}
