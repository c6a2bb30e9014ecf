//! The agent's gRPC service on its unix socket: endpoint lifecycle for the CNI plugin, status and listings
//! for the CLI. Handlers hold the endpoint lock only on a blocking thread, never on a tokio worker.

use std::path::Path;
use std::sync::{Arc, Mutex};

use novanet_api::v1::agent_server::{Agent, AgentServer};
use novanet_api::error_chain;
use novanet_api::v1::{self as api};
use novanet_model::{AttachmentId, Endpoint, NewEndpoint, PodRef, format_mac};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::endpoint_manager::{EndpointError, EndpointManager};
use crate::subsystems::{State, Subsystems};

/// Facts about the node that the status call reports.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_name: String,
    pub source: String,
    pub mtu: u32,
    pub notices: Vec<String>,
}

#[derive(Clone)]
pub struct AgentService {
    manager: Arc<Mutex<EndpointManager>>,
    node: Arc<NodeInfo>,
    subsystems: Subsystems,
    policy: Option<Arc<crate::subsystems::policy::Shared>>,
    reaper: Arc<crate::veth_reaper::VethReaper>,
}

impl AgentService {
    pub fn new(
        manager: Arc<Mutex<EndpointManager>>,
        node: NodeInfo,
        subsystems: Subsystems,
        policy: Option<Arc<crate::subsystems::policy::Shared>>,
        reaper: Arc<crate::veth_reaper::VethReaper>,
    ) -> Self {
        AgentService { manager, node: Arc::new(node), subsystems, policy, reaper }
    }

    /// Runs `f` with the endpoint manager on a blocking thread.
    async fn with_manager<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut EndpointManager) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = manager.lock().map_err(|_| Status::internal("endpoint state lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| Status::internal(format!("endpoint task failed: {e}")))?
    }
}

fn attachment(a: Option<api::Attachment>) -> Result<AttachmentId, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("attachment is required"))?;
    if a.container_id.is_empty() || a.ifname.is_empty() {
        return Err(Status::invalid_argument("attachment needs container_id and ifname"));
    }
    Ok(AttachmentId { container_id: a.container_id, ifname: a.ifname })
}

fn mac(bytes: &[u8], what: &str) -> Result<[u8; 6], Status> {
    bytes.try_into().map_err(|_| Status::invalid_argument(format!("{what} must be 6 bytes, got {}", bytes.len())))
}

/// gRPC codes by cause: RESOURCE_EXHAUSTED when the node has no room for another endpoint (pool or map
/// full: it clears as pods leave), FAILED_PRECONDITION for requests the table refuses, INTERNAL for
/// datapath and disk failures.
fn to_status(e: EndpointError) -> Status {
    let msg = error_chain(&e);
    if e.is_resource_exhausted() {
        return Status::resource_exhausted(msg);
    }
    match e {
        EndpointError::Table(_) => Status::failed_precondition(msg),
        EndpointError::Datapath { .. } | EndpointError::Persist(_) => Status::internal(msg),
    }
}

fn json_reply(value: serde_json::Value) -> Result<Response<api::JsonReply>, Status> {
    Ok(Response::new(api::JsonReply { json: value.to_string() }))
}

fn to_api(ep: &Endpoint) -> api::Endpoint {
    api::Endpoint {
        attachment: Some(api::Attachment {
            container_id: ep.attachment.container_id.clone(),
            ifname: ep.attachment.ifname.clone(),
        }),
        pod: Some(api::PodRef { name: ep.pod.name.clone(), namespace: ep.pod.namespace.clone(), uid: ep.pod.uid.clone() }),
        ip: ep.ip.to_string(),
        host_ifname: ep.host_ifname.clone(),
        pod_mac: format_mac(&ep.pod_mac),
        host_ifindex: novanet_dataplane::ifindex(&ep.host_ifname).unwrap_or(0),
        netns: ep.netns.clone(),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn add_endpoint(&self, req: Request<api::AddEndpointRequest>) -> Result<Response<api::AddEndpointResponse>, Status> {
        let req = req.into_inner();
        let pod = req.pod.unwrap_or_default();
        if req.host_ifname.is_empty() {
            return Err(Status::invalid_argument("host_ifname is required"));
        }
        let new = NewEndpoint {
            attachment: attachment(req.attachment)?,
            pod: PodRef { namespace: pod.namespace, name: pod.name, uid: pod.uid },
            netns: req.netns,
            host_ifname: req.host_ifname,
            host_mac: mac(&req.host_mac, "host_mac")?,
            pod_mac: mac(&req.pod_mac, "pod_mac")?,
        };
        let mtu = self.node.mtu;
        let (ep, prefix_len) = self
            .with_manager(move |m| {
                let prefix = m.table().ipam().cidr().prefix_len();
                m.add(new).map(|ep| (ep, prefix)).map_err(to_status)
            })
            .await?;
        // The pod's first packet must meet its policy: wait for the compile that judges it.
        if let Some(policy) = &self.policy
            && !policy.wait_judged(&ep, crate::subsystems::policy::JUDGED_WAIT).await
        {
            tracing::warn!(
                pod = %format!("{}/{}", ep.pod.namespace, ep.pod.name),
                ip = %ep.ip,
                "the pod is not in the stores yet: until it is, it is isolated both ways if its namespace has NetworkPolicies"
            );
        }
        let gw = novanet_common::GATEWAY_V4;
        Ok(Response::new(api::AddEndpointResponse {
            ip: ep.ip.to_string(),
            prefix_len: u32::from(prefix_len),
            gateway: std::net::Ipv4Addr::from(gw).to_string(),
            mtu,
        }))
    }

    async fn del_endpoint(&self, req: Request<api::DelEndpointRequest>) -> Result<Response<api::DelEndpointResponse>, Status> {
        let id = attachment(req.into_inner().attachment)?;
        let removed = self.with_manager(move |m| m.remove(&id).map_err(to_status)).await?;
        // The kernel's slow veth unregistration happens after the answer (see `veth_reaper`).
        let host_veth_deleting = removed.as_ref().is_some_and(|ep| self.reaper.delete(&ep.host_ifname));
        Ok(Response::new(api::DelEndpointResponse {
            released: removed.is_some(),
            host_ifname: removed.map(|ep| ep.host_ifname).unwrap_or_default(),
            host_veth_deleting,
        }))
    }

    async fn check_endpoint(&self, req: Request<api::CheckEndpointRequest>) -> Result<Response<api::CheckEndpointResponse>, Status> {
        let id = attachment(req.into_inner().attachment)?;
        self.with_manager(move |m| {
            Ok(Response::new(match m.table().get(&id).cloned() {
                Some(ep) => api::CheckEndpointResponse {
                    present: true,
                    ip: ep.ip.to_string(),
                    host_ifname: ep.host_ifname.clone(),
                    datapath_ok: m.datapath_ok(&ep),
                },
                None => api::CheckEndpointResponse::default(),
            }))
        })
        .await
    }

    async fn garbage_collect(&self, req: Request<api::GarbageCollectRequest>) -> Result<Response<api::GarbageCollectResponse>, Status> {
        let valid = req
            .into_inner()
            .valid
            .into_iter()
            .map(|a| attachment(Some(a)))
            .collect::<Result<Vec<_>, _>>()?;
        let released = self
            .with_manager(move |m| {
                let removal = m.garbage_collect(&valid);
                match removal.failed.into_iter().next() {
                    // The others were released; the runtime's next GC retries the rest.
                    Some((id, e)) => {
                        let status = to_status(e);
                        Err(Status::new(status.code(), format!("releasing {id}: {}", status.message())))
                    }
                    None => Ok(removal.released),
                }
            })
            .await?;
        Ok(Response::new(api::GarbageCollectResponse { released: released.iter().map(to_api).collect() }))
    }

    async fn status(&self, _req: Request<api::StatusRequest>) -> Result<Response<api::StatusResponse>, Status> {
        let node = self.node.clone();
        let report = self.subsystems.report();
        let mut notices = node.notices.clone();
        // What is not inactive but worth knowing: unsynced or degraded sources, unrestored endpoints.
        for (_, health) in report.subsystems.iter().filter(|(_, h)| h.state != State::Inactive) {
            notices.extend(health.reasons.iter().cloned());
        }
        let subsystems = report
            .subsystems
            .iter()
            .map(|(name, h)| api::SubsystemStatus {
                name: name.to_string(),
                state: h.state.as_str().to_string(),
                reasons: h.reasons.clone(),
            })
            .collect();
        let readiness = report.readiness;
        self.with_manager(move |m| {
            let ipam = m.table().ipam();
            let counters = m
                .dataplane()
                .counters()
                .map_err(|e| Status::internal(format!("reading counters: {e}")))?
                .into_iter()
                .map(|(c, v)| api::Counter { name: c.name().to_string(), packets: v.packets, bytes: v.bytes })
                .collect();
            Ok(Response::new(api::StatusResponse {
                ready: readiness.ready,
                node_name: node.node_name.clone(),
                pod_cidr: ipam.cidr().to_string(),
                endpoints: m.table().len() as u32,
                pool_size: ipam.size(),
                pool_used: ipam.used(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                counters,
                pin_dir: m.dataplane().pin_dir().display().to_string(),
                source: node.source.clone(),
                notices,
                not_ready_reasons: readiness.reasons,
                subsystems,
            }))
        })
        .await
    }

    async fn list_endpoints(&self, _req: Request<api::ListEndpointsRequest>) -> Result<Response<api::ListEndpointsResponse>, Status> {
        self.with_manager(|m| Ok(Response::new(api::ListEndpointsResponse { endpoints: m.table().iter().map(to_api).collect() })))
            .await
    }

    async fn identities(&self, _req: Request<api::IdentitiesRequest>) -> Result<Response<api::JsonReply>, Status> {
        json_reply(crate::grpc_policy::identities(self.policy.as_ref())?)
    }

    async fn policy(&self, req: Request<api::PolicyRequest>) -> Result<Response<api::JsonReply>, Status> {
        json_reply(crate::grpc_policy::policy(self.policy.as_ref(), &req.into_inner().endpoint)?)
    }

    async fn policy_trace(&self, req: Request<api::PolicyTraceRequest>) -> Result<Response<api::JsonReply>, Status> {
        let r = req.into_inner();
        json_reply(crate::grpc_policy::trace(self.policy.as_ref(), &r.from, &r.to, r.port, &r.protocol)?)
    }
}

/// Binds the unix socket, replacing a stale one left by a previous agent.
pub fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale socket {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "serving the agent API");
    Ok(listener)
}

/// Serves on `listener` until `shutdown`.
pub async fn serve_on(
    service: AgentService,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("agent API server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use novanet_dataplane::DataplaneError;
    use novanet_model::{IpamError, TableError};

    use super::*;

    #[test]
    fn a_full_node_is_resource_exhausted_with_the_cause_and_the_rest_keep_their_codes() {
        let map_full = EndpointError::Datapath {
            operation: "adding to the endpoint map",
            target: "10.244.1.9".into(),
            source: DataplaneError::MapFull { map: "NOVANET_ENDPOINTS", max_entries: 65_536 },
        };
        let status = to_status(map_full);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("NOVANET_ENDPOINTS is full"), "{}", status.message());
        let pool = EndpointError::Table(TableError::Ipam(IpamError::Exhausted {
            cidr: "10.244.1.0/30".parse().unwrap(),
            used: 1,
            size: 1,
        }));
        assert_eq!(to_status(pool).code(), tonic::Code::ResourceExhausted);
        let attach = EndpointError::Datapath {
            operation: "attaching to",
            target: "nn1".into(),
            source: DataplaneError::InterfaceNotFound { name: "nn1".into() },
        };
        let status = to_status(attach);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("interface nn1 not found"), "the source is kept: {}", status.message());
    }
}
