//! `novanet lab up|status|exec|probe|down` of a light lab, run as a user runs them (the built `novanet`
//! binary, from the repository root): an agent killed with SIGKILL comes back (the lab's agent supervisor
//! restarts it, as kubelet restarts a DaemonSet's pod), pods still reach each other, CNI works again, and
//! `lab down` exits 0 leaving no process, namespace or file of the lab. And the README's lab commands work
//! exactly as written, with `novanet` from PATH (`scripts/install-bins.sh`, run by the quickstart and
//! `scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cli::{DownOnDrop, REPO, novanet};
use common::{namespaces_with_prefix, ok_stdout, sandbox, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use novanet_lab::netns::{NetNs, unique_prefix};
use novanet_lab::process::{is_same_process, runs, start_time};
use novanet_lab::state::{LabState, SupervisorRole, lab_dir};




#[test]
fn a_killed_agent_comes_back_and_down_leaves_nothing() {
    let name = format!("cli-sup-{}", std::process::id());
    let _guard = DownOnDrop(name.clone());
    ok_stdout("lab up", novanet(&["lab", "up", "-f", "examples/two-nodes.yaml", "--name", &name]));
    let state = LabState::load(&name).unwrap();
    let sup = state.supervisor.expect("lab up records its agent supervisor");
    assert_eq!(sup.role, SupervisorRole::Agents);
    assert!(sup.is_running());
    let node = state.nodes[0].clone();
    let old = node.agent_pid.unwrap();
    let old_start = start_time(old).unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();

    // The supervisor starts a new agent, which re-adopts the node's endpoints.
    let mut new = None;
    wait_for("the killed agent to be restarted", Duration::from_secs(30), Duration::from_millis(200), || {
        let Ok(s) = LabState::load(&name) else { return false };
        let pid = s.node(&node.name).and_then(|n| n.agent_pid);
        new = pid.filter(|p| *p != old || !is_same_process(old, old_start));
        new.is_some_and(|p| runs(p, "novanet-agent"))
            && novanet_lab::node::agent_status(&node.socket()).is_ok_and(|s| s.ready)
    });
    let status = ok_stdout("lab status", novanet(&["lab", "status", "--name", &name]));
    assert!(!status.contains("down ("), "every agent is up again:\n{status}");
    assert!(status.contains(&format!("agent supervisor: pid {}", sup.pid)), "{status}");
    ok_stdout("lab probe", novanet(&["lab", "probe", "--name", &name]));

    // CNI works again on that node: ADD, CHECK and DEL of a new sandbox through the restarted agent.
    let netns = NetNs::create(&format!("{}cni", unique_prefix())).unwrap();
    let pod = sandbox("after-restart", &node.name, netns.name().to_string());
    let conf = novanet_lab::pod::plugin_config(&node, None).unwrap();
    let result = novanet_lab::pod::run_cni(&node, &pod, "ADD", &conf).unwrap();
    assert!(novanet_lab::pod::result_ipv4(&result).is_some(), "{result}");
    let conf = novanet_lab::pod::plugin_config(&node, Some(&result)).unwrap();
    novanet_lab::pod::run_cni(&node, &pod, "CHECK", &conf).unwrap();
    novanet_lab::pod::run_cni(&node, &pod, "DEL", &conf).unwrap();
    drop(netns);

    let down = novanet(&["lab", "down", "--name", &name]);
    let text = ok_stdout("lab down", down);
    assert!(!text.contains("left"), "{text}");
    assert!(!sup.is_running(), "the agent supervisor is gone");
    for n in &LabState::load(&name).map(|s| s.nodes).unwrap_or_default() {
        panic!("node {} is still recorded", n.name);
    }
    assert!(!lab_dir(&name).exists(), "the lab directory is left");
    assert_eq!(namespaces_with_prefix(&state.prefix), Vec::<String>::new());
    for pid in [new.unwrap()].into_iter().chain(state.nodes.iter().filter_map(|n| n.agent_pid)) {
        assert!(!runs(pid, "novanet-agent"), "agent {pid} still runs");
    }
}

/// The README's "The lab" commands, run exactly as written, from the repository root, with `novanet`
/// found on PATH as a user's shell finds it (only the lab's name is made unique, so a user's `demo` lab is
/// never touched).
#[test]
fn the_readmes_lab_commands_work_as_written() {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let section = readme.split("\n## The lab\n").nth(1).expect("README has a section `## The lab`");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block in it");
    let name = format!("readme-{}", std::process::id());
    let script = block.replace("--name demo", &format!("--name {name}"));
    assert!(script.lines().all(|l| l.trim().is_empty() || l.contains(&name)), "every command names the lab:\n{script}");
    let _guard = DownOnDrop(name.clone());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-xc", &script])
        .current_dir(REPO)
        .env_remove("NOVANET_BIN_DIR")
        .output()
        .unwrap();
    ok_stdout("the README's lab commands (is `novanet` on PATH? scripts/install-bins.sh)", out);
    assert!(!lab_dir(&name).exists(), "the README's `lab down` left the lab directory");
}
