//! The built plugin against a fake agent (a tonic server on a temporary unix socket), with the node and
//! the pods as network namespaces made by the test: ADD/CHECK/DEL/GC/STATUS wiring, the interfaces,
//! addresses, routes and neighbour entries they leave, and zero leftovers after DEL or a failed ADD.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{TestNetns, attachment_env, can_make_netns, config, run_plugin};
use novanet_api::v1::agent_server::{Agent, AgentServer};
use novanet_api::v1::*;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct AgentState {
    ready: bool,
    /// When set, AddEndpoint fails with this code (after "allocating").
    fail_add: Option<tonic::Code>,
    /// MTU AddEndpoint answers (1450 when unset).
    mtu: Option<u32>,
    endpoints: HashMap<(String, String), (AddEndpointRequest, String)>,
    next_host: u8,
    calls: Vec<String>,
}

#[derive(Clone)]
struct FakeAgent(Arc<Mutex<AgentState>>);

fn key(att: Option<&Attachment>) -> (String, String) {
    att.map(|a| (a.container_id.clone(), a.ifname.clone()))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn add_endpoint(
        &self,
        req: Request<AddEndpointRequest>,
    ) -> Result<Response<AddEndpointResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.0.lock().unwrap();
        s.calls.push("AddEndpoint".into());
        let k = key(req.attachment.as_ref());
        let ip = match s.endpoints.get(&k) {
            Some((_, ip)) => ip.clone(),
            None => {
                s.next_host += 1;
                let ip = format!("10.244.0.{}", s.next_host + 1);
                s.endpoints.insert(k, (req, ip.clone()));
                ip
            }
        };
        if let Some(code) = s.fail_add {
            return Err(Status::new(code, "injected failure"));
        }
        let mtu = s.mtu.unwrap_or(1450);
        Ok(Response::new(AddEndpointResponse {
            ip,
            prefix_len: 24,
            gateway: "169.254.1.1".into(),
            mtu,
        }))
    }

    async fn del_endpoint(
        &self,
        req: Request<DelEndpointRequest>,
    ) -> Result<Response<DelEndpointResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("DelEndpoint".into());
        let removed = s.endpoints.remove(&key(req.get_ref().attachment.as_ref()));
        Ok(Response::new(DelEndpointResponse {
            released: removed.is_some(),
            host_ifname: removed.map(|(r, _)| r.host_ifname).unwrap_or_default(),
            host_veth_deleting: false,
        }))
    }

    async fn check_endpoint(
        &self,
        req: Request<CheckEndpointRequest>,
    ) -> Result<Response<CheckEndpointResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("CheckEndpoint".into());
        let found = s.endpoints.get(&key(req.get_ref().attachment.as_ref()));
        Ok(Response::new(match found {
            Some((r, ip)) => CheckEndpointResponse {
                present: true,
                ip: ip.clone(),
                host_ifname: r.host_ifname.clone(),
                datapath_ok: true,
            },
            None => CheckEndpointResponse::default(),
        }))
    }

    async fn garbage_collect(
        &self,
        req: Request<GarbageCollectRequest>,
    ) -> Result<Response<GarbageCollectResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("GarbageCollect".into());
        let valid: Vec<(String, String)> =
            req.get_ref().valid.iter().map(|a| key(Some(a))).collect();
        let stale: Vec<(String, String)> = s
            .endpoints
            .keys()
            .filter(|k| !valid.contains(k))
            .cloned()
            .collect();
        let mut released = Vec::new();
        for k in stale {
            if let Some((r, ip)) = s.endpoints.remove(&k) {
                released.push(Endpoint {
                    attachment: r.attachment.clone(),
                    ip,
                    host_ifname: r.host_ifname.clone(),
                    ..Endpoint::default()
                });
            }
        }
        Ok(Response::new(GarbageCollectResponse { released }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("Status".into());
        Ok(Response::new(StatusResponse {
            ready: s.ready,
            not_ready_reasons: if s.ready {
                Vec::new()
            } else {
                vec!["kubernetes: Pod source: waiting for the first list".into()]
            },
            pool_size: 254,
            pool_used: s.endpoints.len() as u32,
            ..StatusResponse::default()
        }))
    }

    async fn list_endpoints(
        &self,
        _: Request<ListEndpointsRequest>,
    ) -> Result<Response<ListEndpointsResponse>, Status> {
        Ok(Response::new(ListEndpointsResponse::default()))
    }

    async fn identities(&self, _: Request<novanet_api::v1::IdentitiesRequest>) -> Result<Response<novanet_api::v1::JsonReply>, Status> {
        Err(Status::unimplemented("the fake agent has no policy"))
    }

    async fn policy(&self, _: Request<novanet_api::v1::PolicyRequest>) -> Result<Response<novanet_api::v1::JsonReply>, Status> {
        Err(Status::unimplemented("the fake agent has no policy"))
    }

    async fn policy_trace(&self, _: Request<novanet_api::v1::PolicyTraceRequest>) -> Result<Response<novanet_api::v1::JsonReply>, Status> {
        Err(Status::unimplemented("the fake agent has no policy"))
    }
}

/// A fake agent serving on a socket in a temporary directory, on its own runtime.
struct Harness {
    state: Arc<Mutex<AgentState>>,
    socket: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("novanet.sock");
        let state = Arc::new(Mutex::new(AgentState {
            ready: true,
            ..AgentState::default()
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .unwrap();
        let service = AgentServer::new(FakeAgent(state.clone()));
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
        });
        Self {
            state,
            socket,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// Stops serving and removes the socket, as a crashed agent would leave things.
    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    fn conf(&self, version: &str, extra: Value) -> String {
        config(version, &self.socket, extra)
    }

    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn endpoint(&self, container_id: &str, ifname: &str) -> Option<AddEndpointRequest> {
        let s = self.state.lock().unwrap();
        s.endpoints
            .get(&(container_id.to_string(), ifname.to_string()))
            .map(|(r, _)| r.clone())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mac_of(ns: &TestNetns, ifname: &str) -> String {
    ns.link(ifname).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string()
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == flag)
}

#[test]
fn add_check_del_wires_the_pod_and_leaves_nothing() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let env = attachment_env("ADD", "c-wired", pod.path_str(), "eth0");

    let run = run_plugin(Some(&node), &env, &agent.conf("1.1.0", json!({})));
    assert!(run.success, "{run:?}");
    let result = run.json();

    // The result.
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host_if.starts_with("nn") && host_if.len() == 14, "{result}");
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][0]["mac"], mac_of(&node, &host_if));
    assert!(result["interfaces"][0].get("sandbox").is_none());
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], pod.path_str());
    assert_eq!(result["interfaces"][1]["mac"], mac_of(&pod, "eth0"));
    assert_eq!(result["interfaces"][1]["mtu"], 1450);
    assert_eq!(
        result["ips"],
        json!([{"address": "10.244.0.2/32", "gateway": "169.254.1.1", "interface": 1}])
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
    );
    assert_eq!(result["dns"], json!({}));

    // What the agent was told.
    let req = agent.endpoint("c-wired", "eth0").unwrap();
    assert_eq!(req.host_ifname, host_if);
    assert_eq!(req.netns, pod.path_str());
    let pod_ref = req.pod.unwrap();
    assert_eq!(
        (
            pod_ref.namespace.as_str(),
            pod_ref.name.as_str(),
            pod_ref.uid.as_str()
        ),
        ("default", "web-0", "uid-1")
    );
    assert_eq!(req.host_mac.len(), 6);
    assert_eq!(req.pod_mac.len(), 6);

    // The pod's namespace: up, agent's MTU, /32, gateway on-link, default via gateway, pinned neighbour.
    let eth0 = pod.link("eth0").unwrap();
    assert!(has_flag(&eth0, "UP"), "{eth0}");
    assert_eq!(eth0["mtu"], 1450);
    let addrs = pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let info = &addrs[0]["addr_info"];
    assert_eq!(info.as_array().unwrap().len(), 1, "{addrs}");
    assert_eq!(
        (info[0]["local"].as_str(), info[0]["prefixlen"].as_u64()),
        (Some("10.244.0.2"), Some(32))
    );
    let routes = pod.ip_json(&["-4", "route", "show"]);
    let routes = routes.as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "169.254.1.1" && r["dev"] == "eth0" && r["scope"] == "link"),
        "{routes:?}"
    );
    let neigh = pod.ip_json(&["-4", "neigh", "show", "dev", "eth0"]);
    let gw = neigh
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["dst"] == "169.254.1.1")
        .expect("gateway neighbour");
    assert_eq!(gw["lladdr"], mac_of(&node, &host_if));
    assert_eq!(gw["state"], json!(["PERMANENT"]));

    // The node's namespace: host veth up with the agent's MTU, /32 route to the pod through it.
    let host_link = node.link(&host_if).unwrap();
    assert!(has_flag(&host_link, "UP"));
    assert_eq!(host_link["mtu"], 1450);
    let node_routes = node.ip_json(&["-4", "route", "show"]);
    assert!(
        node_routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "10.244.0.2"
                && r["dev"] == host_if.as_str()
                && r["scope"] == "link"),
        "{node_routes}"
    );

    // CHECK with the cached result passes; after breaking the neighbour entry it fails with 101.
    let check_env = attachment_env("CHECK", "c-wired", pod.path_str(), "eth0");
    let check_conf = agent.conf("1.1.0", json!({"prevResult": result}));
    let run = run_plugin(Some(&node), &check_env, &check_conf);
    assert!(run.success, "{run:?}");
    assert!(run.stdout.trim().is_empty());
    assert!(pod.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]));
    let run = run_plugin(Some(&node), &check_env, &check_conf);
    assert_eq!(run.error_code(), 101, "{run:?}");
    assert!(run.json()["msg"].as_str().unwrap().contains("neighbour"));

    // DEL removes everything; a second DEL, and one without the netns, still succeed.
    let pod_path = pod.path_str().to_string();
    let del_env = attachment_env("DEL", "c-wired", &pod_path, "eth0");
    let run = run_plugin(
        Some(&node),
        &del_env,
        &agent.conf("1.1.0", json!({"prevResult": result})),
    );
    assert!(run.success, "{run:?}");
    assert!(run.stdout.trim().is_empty());
    assert!(node.novanet_links().is_empty(), "{:?}", node.link_names());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
    assert!(agent.endpoint("c-wired", "eth0").is_none());
    let node_routes = node.ip_json(&["-4", "route", "show"]);
    assert_eq!(node_routes, json!([]), "node routes left: {node_routes}");
    let run = run_plugin(Some(&node), &del_env, &agent.conf("1.1.0", json!({})));
    assert!(run.success, "second DEL: {run:?}");
    drop(pod);
    let run = run_plugin(Some(&node), &del_env, &agent.conf("1.1.0", json!({})));
    assert!(run.success, "DEL after netns removal: {run:?}");
    assert_eq!(
        agent.calls().iter().filter(|c| *c == "DelEndpoint").count(),
        3
    );
}

#[test]
fn add_rolls_back_when_the_agent_rejects() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    agent.state.lock().unwrap().fail_add = Some(tonic::Code::InvalidArgument);
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let env = attachment_env("ADD", "c-reject", pod.path_str(), "eth0");
    let run = run_plugin(Some(&node), &env, &agent.conf("1.0.0", json!({})));
    assert_eq!(run.error_code(), 100, "{run:?}");
    assert_eq!(run.json()["cniVersion"], "1.0.0");
    assert!(node.novanet_links().is_empty(), "{:?}", node.link_names());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
    assert_eq!(
        agent.calls(),
        vec!["AddEndpoint", "DelEndpoint"],
        "rollback releases the endpoint"
    );
    assert!(agent.endpoint("c-reject", "eth0").is_none());
}

#[test]
fn add_rolls_back_when_wiring_fails_after_the_agent_allocated() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    // A veth cannot take this MTU: the failure comes after AddEndpoint succeeded.
    agent.state.lock().unwrap().mtu = Some(70_000);
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let run = run_plugin(
        Some(&node),
        &attachment_env("ADD", "c-late", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert_eq!(run.error_code(), 999, "{run:?}");
    assert!(
        run.json()["msg"].as_str().unwrap().contains("netlink"),
        "{run:?}"
    );
    assert!(node.novanet_links().is_empty(), "{:?}", node.link_names());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
    assert_eq!(agent.calls(), vec!["AddEndpoint", "DelEndpoint"]);
    assert!(
        agent.endpoint("c-late", "eth0").is_none(),
        "the allocation was released"
    );
}

#[test]
fn add_with_transient_agent_error_is_try_again_later() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    agent.state.lock().unwrap().fail_add = Some(tonic::Code::Unavailable);
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let run = run_plugin(
        Some(&node),
        &attachment_env("ADD", "c-busy", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert_eq!(run.error_code(), 11, "{run:?}");
    assert!(node.novanet_links().is_empty());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
}

#[test]
fn add_on_a_full_node_is_try_again_later_with_its_own_message() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    agent.state.lock().unwrap().fail_add = Some(tonic::Code::ResourceExhausted);
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let run = run_plugin(
        Some(&node),
        &attachment_env("ADD", "c-full", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert_eq!(run.error_code(), 11, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("no room for another pod on this node"),
        "{msg}"
    );
    assert!(
        run.json()["details"]
            .as_str()
            .unwrap()
            .contains("ResourceExhausted"),
        "{run:?}"
    );
    assert!(node.novanet_links().is_empty(), "{:?}", node.link_names());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
}

#[test]
fn add_refuses_an_existing_pod_interface_and_creates_nothing() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    assert!(pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0"
    ]));
    let run = run_plugin(
        Some(&node),
        &attachment_env("ADD", "c-dup", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert_eq!(run.error_code(), 102, "{run:?}");
    assert!(node.novanet_links().is_empty());
    assert!(agent.calls().is_empty());
}

#[test]
fn chained_add_in_0_4_0_keeps_prev_result_and_tags_ip_versions() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let prev = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "net9", "sandbox": pod.path_str()}],
        "ips": [{"version": "4", "address": "192.168.9.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"nameservers": ["10.96.0.10"]}
    });
    let env = attachment_env("ADD", "c-chain", pod.path_str(), "eth0");
    let run = run_plugin(
        Some(&node),
        &env,
        &agent.conf("0.4.0", json!({"prevResult": prev})),
    );
    assert!(run.success, "{run:?}");
    let v = run.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["interfaces"][0]["name"], "net9");
    assert_eq!(v["interfaces"][2]["name"], "eth0");
    assert!(
        v["interfaces"][2].get("mtu").is_none(),
        "mtu is a 1.1.0 field"
    );
    assert_eq!(v["ips"][0]["address"], "192.168.9.2/24");
    assert_eq!(
        v["ips"][1],
        json!({"version": "4", "address": "10.244.0.2/32", "gateway": "169.254.1.1", "interface": 2})
    );
    assert_eq!(v["routes"].as_array().unwrap().len(), 2);
    assert_eq!(v["dns"]["nameservers"], json!(["10.96.0.10"]));

    let run = run_plugin(
        Some(&node),
        &attachment_env("CHECK", "c-chain", pod.path_str(), "eth0"),
        &agent.conf("0.4.0", json!({"prevResult": v})),
    );
    assert!(run.success, "{run:?}");
    let run = run_plugin(
        Some(&node),
        &attachment_env("DEL", "c-chain", pod.path_str(), "eth0"),
        &agent.conf("0.4.0", json!({})),
    );
    assert!(run.success, "{run:?}");
    assert!(node.novanet_links().is_empty());
}

#[test]
fn del_with_the_agent_down_removes_the_veth_and_asks_for_a_retry() {
    if !can_make_netns() {
        return;
    }
    let mut agent = Harness::start();
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let run = run_plugin(
        Some(&node),
        &attachment_env("ADD", "c-down", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert!(run.success, "{run:?}");
    assert_eq!(node.novanet_links().len(), 1);
    agent.stop();
    let run = run_plugin(
        Some(&node),
        &attachment_env("DEL", "c-down", pod.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert_eq!(run.error_code(), 11, "{run:?}");
    assert!(node.novanet_links().is_empty());
    assert_eq!(pod.link_names(), vec!["lo".to_string()]);
}

#[test]
fn gc_releases_stale_attachments_and_deletes_their_veths() {
    if !can_make_netns() {
        return;
    }
    let agent = Harness::start();
    let node = TestNetns::new("node");
    let pod_a = TestNetns::new("poda");
    let pod_b = TestNetns::new("podb");
    for (id, pod) in [("c-keep", &pod_a), ("c-stale", &pod_b)] {
        let run = run_plugin(
            Some(&node),
            &attachment_env("ADD", id, pod.path_str(), "eth0"),
            &agent.conf("1.1.0", json!({})),
        );
        assert!(run.success, "{run:?}");
    }
    assert_eq!(node.novanet_links().len(), 2);
    let keep_if = agent.endpoint("c-keep", "eth0").unwrap().host_ifname;

    let conf = agent.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "c-keep", "ifname": "eth0"}]}),
    );
    let run = run_plugin(
        Some(&node),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf,
    );
    assert!(run.success, "{run:?}");
    assert_eq!(node.novanet_links(), vec![keep_if]);
    assert!(agent.endpoint("c-stale", "eth0").is_none());
    assert!(agent.endpoint("c-keep", "eth0").is_some());
    assert_eq!(pod_b.link_names(), vec!["lo".to_string()]);

    let run = run_plugin(
        Some(&node),
        &attachment_env("DEL", "c-keep", pod_a.path_str(), "eth0"),
        &agent.conf("1.1.0", json!({})),
    );
    assert!(run.success, "{run:?}");
    assert!(node.novanet_links().is_empty());
}

#[test]
fn status_follows_agent_readiness() {
    let agent = Harness::start();
    let env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    let run = run_plugin(None, &env, &agent.conf("1.1.0", json!({})));
    assert!(run.success, "{run:?}");
    assert!(run.stdout.trim().is_empty());
    agent.state.lock().unwrap().ready = false;
    let run = run_plugin(None, &env, &agent.conf("1.1.0", json!({})));
    assert_eq!(run.error_code(), 50);
    assert!(
        run.json()["details"]
            .as_str()
            .unwrap()
            .contains("waiting for the first list"),
        "the agent's reasons reach the runtime: {run:?}"
    );
    let run = run_plugin(None, &env, &agent.conf("1.0.0", json!({})));
    assert_eq!(run.error_code(), 1, "STATUS needs 1.1.0");
}
