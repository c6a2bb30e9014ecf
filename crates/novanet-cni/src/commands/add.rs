//! ADD: veth pair, agent endpoint, pod addressing and routes; rolled back on any failure.
//!
//! Order: vet the netns -> refuse existing names (after waiting a moment for interfaces an earlier DEL
//! left to the agent's deletion) -> create the veth (pod end straight into the pod's
//! namespace; the agent connection is made meanwhile) -> both ends up -> AddEndpoint (agent allocates the address, attaches eBPF) -> pod
//! address, gateway route, default route, permanent gateway neighbour -> node route to the pod.
//! Once the veth exists, a failure deletes it (which removes the pod end too) and, once the agent was
//! asked, releases the endpoint: a failed ADD leaves nothing behind.

use std::net::Ipv4Addr;

use novanet_api::v1::AddEndpointRequest;
use novanet_common::GATEWAY_V4;
use serde_json::Value;
use tracing::{Instrument, info, info_span, warn};

use super::{delete_host_veth, host_netlink, mac6, netlink_failed, pod_netlink};
use crate::agent::{self, Agent};
use crate::config::NetConf;
use crate::env::AttachmentEnv;
use crate::error::{CniError, ErrorCode};
use crate::naming;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::result::{Attachment, CniResult};

pub async fn add(env: &AttachmentEnv, conf: &NetConf) -> Result<Value, CniError> {
    let netns_path = env.netns.as_deref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "required env variables [CNI_NETNS] missing",
        )
    })?;
    let host_ifname = naming::host_ifname(&env.container_id, &env.ifname);
    let span = info_span!(
        "add",
        container_id = %env.container_id,
        ifname = %env.ifname,
        host_ifname = %host_ifname,
        netns = %netns_path.display(),
        pod = %format!("{}/{}", env.pod.namespace, env.pod.name),
    );
    async move {
        let netns = Netns::open(netns_path)?;
        let host = host_netlink()?;
        let pod = pod_netlink(&netns)?;

        // The agent's connection is made while the veth is (both wait on the kernel or the agent).
        let (veth, agent) = tokio::join!(
            make_veth(env, conf, &netns, &host, &pod, &host_ifname),
            Agent::connect(&conf.agent_socket, conf.agent_timeout),
        );
        veth?;

        let mut wiring = Wiring {
            env,
            conf,
            netns: &netns,
            host: &host,
            pod: &pod,
            host_ifname: &host_ifname,
            connected: Some(agent),
            agent: None,
            agent_asked: false,
        };
        match wiring.run().await {
            Ok(result) => Ok(result),
            Err(err) => {
                warn!(error = %err, "ADD failed; rolling back");
                wiring.roll_back().await;
                Err(err)
            }
        }
    }
    .instrument(span)
    .await
}

/// Refuses names still in use (after waiting for a pending delete), then creates the veth pair with its
/// pod end in the pod's namespace. Nothing exists to roll back when this fails.
async fn make_veth(
    env: &AttachmentEnv,
    conf: &NetConf,
    netns: &Netns,
    host: &Netlink,
    pod: &Netlink,
    host_ifname: &str,
) -> Result<(), CniError> {
    // A DEL just before this ADD may have left the old veth to the agent's deletion: give it time.
    if still_exists(pod, &env.ifname).await? {
        return Err(CniError::new(
            ErrorCode::InterfaceExists,
            format!(
                "interface {} already exists in {}",
                env.ifname,
                netns.path().display()
            ),
        ));
    }
    if still_exists(host, host_ifname).await? {
        return Err(CniError::new(
            ErrorCode::InterfaceExists,
            format!("host interface {host_ifname} for this attachment already exists"),
        )
        .with_details("a previous ADD was not cleaned up; DEL the attachment first"));
    }
    host.create_veth(host_ifname, &env.ifname, netns, conf.mtu)
        .await
        .map_err(netlink_failed)?;
    info!("veth created");
    Ok(())
}

/// How long ADD waits for an interface of its name that a DEL handed to the agent's deletion.
const PENDING_DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether an interface `name` still exists after waiting up to [`PENDING_DELETE_WAIT`] for it to go
/// (one lookup when there is none, the common case).
async fn still_exists(netlink: &Netlink, name: &str) -> Result<bool, CniError> {
    let deadline = tokio::time::Instant::now() + PENDING_DELETE_WAIT;
    while netlink.link_by_name(name).await.map_err(netlink_failed)?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(false)
}

/// Everything after the veth exists, with what rollback needs to know.
struct Wiring<'a> {
    env: &'a AttachmentEnv,
    conf: &'a NetConf,
    netns: &'a Netns,
    host: &'a Netlink,
    pod: &'a Netlink,
    host_ifname: &'a str,
    /// The connection made beside the veth, taken by [`Wiring::run`].
    connected: Option<Result<Agent, CniError>>,
    agent: Option<Agent>,
    /// AddEndpoint was sent (even if it failed: it may have allocated before timing out).
    agent_asked: bool,
}

impl Wiring<'_> {
    async fn run(&mut self) -> Result<Value, CniError> {
        let (host, pod, env) = (self.host, self.pod, self.env);
        let host_link = host
            .link_by_name(self.host_ifname)
            .await
            .map_err(netlink_failed)?
            .ok_or_else(|| {
                CniError::internal("host veth vanished after creation", self.host_ifname)
            })?;
        let pod_link = pod
            .link_by_name(&env.ifname)
            .await
            .map_err(netlink_failed)?
            .ok_or_else(|| CniError::internal("pod veth vanished after creation", &env.ifname))?;
        let host_mac = mac6(&host_link.mac, "host veth")?;
        let pod_mac = mac6(&pod_link.mac, "pod veth")?;
        host.set_up(host_link.index, None)
            .await
            .map_err(netlink_failed)?;
        pod.set_up(pod_link.index, None)
            .await
            .map_err(netlink_failed)?;

        let connected = match self.connected.take() {
            Some(connected) => connected,
            None => Agent::connect(&self.conf.agent_socket, self.conf.agent_timeout).await,
        };
        let agent = self.agent.insert(connected?);
        self.agent_asked = true;
        let resp = agent
            .add_endpoint(AddEndpointRequest {
                attachment: Some(agent::attachment(&env.container_id, &env.ifname)),
                pod: Some(agent::pod_ref(&env.pod)),
                netns: self.netns.path().display().to_string(),
                host_ifname: self.host_ifname.to_string(),
                host_mac: host_mac.to_vec(),
                pod_mac: pod_mac.to_vec(),
            })
            .await?;
        let ip = parse_v4(&resp.ip, "address")?;
        let gateway = if resp.gateway.is_empty() {
            Ipv4Addr::from(GATEWAY_V4)
        } else {
            parse_v4(&resp.gateway, "gateway")?
        };
        let mtu = if resp.mtu == 0 {
            self.conf.mtu
        } else {
            resp.mtu
        };
        info!(%ip, %gateway, mtu, "agent allocated endpoint");

        if mtu != self.conf.mtu {
            host.set_up(host_link.index, Some(mtu))
                .await
                .map_err(netlink_failed)?;
            pod.set_up(pod_link.index, Some(mtu))
                .await
                .map_err(netlink_failed)?;
        }
        // Pod side: ip/32, gateway on-link, default via gateway, gateway's MAC pinned to the host veth.
        pod.add_address(pod_link.index, ip, 32)
            .await
            .map_err(netlink_failed)?;
        pod.replace_route(gateway, 32, None, pod_link.index)
            .await
            .map_err(netlink_failed)?;
        pod.replace_route(Ipv4Addr::UNSPECIFIED, 0, Some(gateway), pod_link.index)
            .await
            .map_err(netlink_failed)?;
        pod.replace_permanent_neighbour(pod_link.index, gateway, &host_mac)
            .await
            .map_err(netlink_failed)?;
        // Node side: the pod's /32 through its veth.
        host.replace_route(ip, 32, None, host_link.index)
            .await
            .map_err(netlink_failed)?;

        let mut result = self.conf.prev_result.clone().unwrap_or_default();
        if let (true, Some(dns)) = (result.dns.is_empty(), &self.conf.dns) {
            result.dns = dns.clone();
        }
        result.append(&Attachment {
            host_ifname: self.host_ifname.to_string(),
            host_mac,
            pod_ifname: env.ifname.clone(),
            pod_mac,
            netns: self.netns.path().display().to_string(),
            mtu,
            ip,
            gateway,
        });
        info!("ADD done");
        Ok(CniResult::render(&result, self.conf.cni_version))
    }

    /// Best effort: release the endpoint, delete the veth. Failures are logged, not returned: the
    /// original error is the one the runtime must see.
    async fn roll_back(&mut self) {
        if let (true, Some(agent)) = (self.agent_asked, self.agent.as_mut()) {
            let att = agent::attachment(&self.env.container_id, &self.env.ifname);
            if let Err(e) = agent.del_endpoint(att).await {
                warn!(error = %e, "rollback: DelEndpoint failed");
            }
        }
        if let Err(e) = delete_host_veth(self.host, self.host_ifname).await {
            warn!(error = %e, "rollback: deleting the veth failed");
        }
    }
}

/// An IPv4 address from the agent; a trailing `/len` is tolerated and ignored.
pub(super) fn parse_v4(s: &str, what: &str) -> Result<Ipv4Addr, CniError> {
    let addr = s.split_once('/').map_or(s, |(addr, _)| addr);
    addr.parse::<Ipv4Addr>().map_err(|_| {
        CniError::new(
            ErrorCode::AgentRejected,
            format!("agent returned an invalid IPv4 {what}: {s:?}"),
        )
    })
}
