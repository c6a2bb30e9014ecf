//! The built plugin against bad input, without an agent: every failure is a spec error structure on
//! stdout with the right code and a non-zero exit; nothing is created.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;

use common::{TestNetns, attachment_env, can_make_netns, config, run_plugin};
use serde_json::json;

const NO_AGENT: &str = "/nonexistent/novanet-test/novanet.sock";

#[test]
fn version_lists_supported_versions() {
    let run = run_plugin(
        None,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(run.success, "{run:?}");
    let v = run.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn version_with_empty_stdin_answers_latest() {
    let run = run_plugin(None, &[("CNI_COMMAND", "VERSION")], "");
    assert!(run.success, "{run:?}");
    assert_eq!(run.json()["cniVersion"], "1.1.0");
}

#[test]
fn malformed_json_is_code_6() {
    let env = attachment_env("ADD", "c1", "/run/netns/whatever", "eth0");
    let run = run_plugin(None, &env, "{\"cniVersion\": \"1.1.0\", \"name\": ");
    assert_eq!(run.error_code(), 6);
    let v = run.json();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert!(v["msg"].as_str().unwrap().contains("decoding"));
}

#[test]
fn missing_command_is_code_4() {
    let run = run_plugin(None, &[], &config("1.1.0", Path::new(NO_AGENT), json!({})));
    assert_eq!(run.error_code(), 4);
    assert!(run.json()["msg"].as_str().unwrap().contains("CNI_COMMAND"));
}

#[test]
fn missing_attachment_env_is_code_4_naming_the_variables() {
    let run = run_plugin(
        None,
        &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
        &config("1.0.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.error_code(), 4);
    let v = run.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("CNI_CONTAINERID") && msg.contains("CNI_NETNS"),
        "{msg}"
    );
}

#[test]
fn unknown_cni_version_is_code_1() {
    let env = attachment_env("ADD", "c1", "/run/netns/whatever", "eth0");
    let run = run_plugin(None, &env, &config("0.2.0", Path::new(NO_AGENT), json!({})));
    assert_eq!(run.error_code(), 1);
    assert_eq!(run.json()["cniVersion"], "1.1.0");
}

#[test]
fn status_without_agent_is_code_50() {
    let run = run_plugin(
        None,
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
        &config("1.1.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.error_code(), 50);
    assert!(run.json()["msg"].as_str().unwrap().contains(NO_AGENT));
}

#[test]
fn gc_without_agent_is_code_11() {
    let conf = config(
        "1.1.0",
        Path::new(NO_AGENT),
        json!({"cni.dev/valid-attachments": []}),
    );
    let run = run_plugin(
        None,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf,
    );
    assert_eq!(run.error_code(), 11);
}

#[test]
fn logs_never_reach_stdout() {
    // logLevel debug, failing run: stdout must hold the error structure and nothing else.
    let run = run_plugin(
        None,
        &[("CNI_COMMAND", "STATUS")],
        &config("1.1.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.stdout.trim().lines().count(), 1, "{run:?}");
    assert_eq!(run.error_code(), 50);
    assert!(!run.stderr.is_empty(), "debug logs go to stderr");
}

#[test]
fn add_into_missing_netns_is_code_3_and_creates_nothing() {
    let missing = format!("/run/netns/nncni-missing-{}", std::process::id());
    let env = attachment_env("ADD", "c-missing", &missing, "eth0");
    let conf = config("1.1.0", Path::new(NO_AGENT), json!({}));
    if !can_make_netns() {
        // Without root, still check the answer (the plugin fails before touching any interface).
        let run = run_plugin(None, &env, &conf);
        assert_eq!(run.error_code(), 3);
        return;
    }
    let node = TestNetns::new("node");
    let before = node.link_names();
    let run = run_plugin(Some(&node), &env, &conf);
    assert_eq!(run.error_code(), 3);
    assert!(
        run.json()["msg"].as_str().unwrap().contains(&missing),
        "{run:?}"
    );
    assert_eq!(node.link_names(), before, "no interface may be left behind");
}

#[test]
fn add_with_own_netns_is_refused() {
    if !can_make_netns() {
        return;
    }
    let node = TestNetns::new("node");
    let env = attachment_env("ADD", "c-self", node.path_str(), "eth0");
    let run = run_plugin(
        Some(&node),
        &env,
        &config("1.1.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.error_code(), 8);
    assert_eq!(node.link_names(), vec!["lo".to_string()]);
}

#[test]
fn add_without_agent_is_code_11_and_leaves_nothing() {
    if !can_make_netns() {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let env = attachment_env("ADD", "c-noagent", pod.path_str(), "eth0");
    let run = run_plugin(
        Some(&node),
        &env,
        &config("1.1.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.error_code(), 11);
    assert!(
        node.novanet_links().is_empty(),
        "host veth left: {:?}",
        node.link_names()
    );
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
}

#[test]
fn del_without_agent_or_netns_is_code_11_but_idempotent_on_interfaces() {
    if !can_make_netns() {
        return;
    }
    let node = TestNetns::new("node");
    let env = vec![
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c-gone"),
        ("CNI_IFNAME", "eth0"),
    ];
    let run = run_plugin(
        Some(&node),
        &env,
        &config("1.1.0", Path::new(NO_AGENT), json!({})),
    );
    assert_eq!(run.error_code(), 11);
    assert_eq!(node.link_names(), vec!["lo".to_string()]);
}
