//! CHECK: the attachment is still as ADD left it.
//!
//! Checked, failing with code 101 at the first difference: the agent has the endpoint and its datapath
//! is in place; the `prevResult` addresses for our interface match the agent's; in the pod's namespace
//! the interface exists, is up, has the address as /32 (and the MAC `prevResult` lists), the default
//! route goes via the gateway and the gateway has a permanent neighbour entry with the host veth's MAC;
//! on the node the host veth exists and the pod's /32 route points at it.

use std::net::Ipv4Addr;

use novanet_common::GATEWAY_V4;
use novanet_model::format_mac;
use tracing::{Instrument, info, info_span};

use super::add::parse_v4;
use super::{host_netlink, netlink_failed, pod_netlink};
use crate::agent::{self, Agent};
use crate::config::NetConf;
use crate::env::AttachmentEnv;
use crate::error::{CniError, ErrorCode};
use crate::naming;
use crate::netns::Netns;

pub async fn check(env: &AttachmentEnv, conf: &NetConf) -> Result<(), CniError> {
    let netns_path = env.netns.as_deref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "required env variables [CNI_NETNS] missing",
        )
    })?;
    let span = info_span!("check", container_id = %env.container_id, ifname = %env.ifname);
    async move {
        let netns = Netns::open(netns_path)?;
        let sandbox = netns_path.display().to_string();

        let mut agent = Agent::connect(&conf.agent_socket, conf.agent_timeout).await?;
        let ep = agent.check_endpoint(agent::attachment(&env.container_id, &env.ifname)).await?;
        if !ep.present {
            return Err(CniError::check_failed("the agent has no endpoint for this attachment"));
        }
        if !ep.datapath_ok {
            return Err(CniError::check_failed("the agent reports the endpoint's datapath is not in place"));
        }
        let ip = parse_v4(&ep.ip, "address")?;

        // What ADD reported (the runtime's cached result).
        let mut gateway = Ipv4Addr::from(GATEWAY_V4);
        let mut expected_mac = None;
        if let Some(prev) = &conf.prev_result {
            for entry in prev.ips_of(&env.ifname, &sandbox) {
                let listed = parse_v4(&entry.address, "prevResult address")?;
                if listed != ip {
                    return Err(CniError::check_failed(format!(
                        "prevResult lists {} for {} but the agent has {ip}",
                        entry.address, env.ifname
                    )));
                }
                if let Some(gw) = entry.gateway.as_deref() {
                    gateway = parse_v4(gw, "prevResult gateway")?;
                }
            }
            expected_mac = prev.interface_in(&env.ifname, &sandbox).map(|i| i.mac.to_ascii_lowercase());
        }

        let host_ifname =
            if ep.host_ifname.is_empty() { naming::host_ifname(&env.container_id, &env.ifname) } else { ep.host_ifname.clone() };
        let host = host_netlink()?;
        let host_link = host
            .link_by_name(&host_ifname)
            .await
            .map_err(netlink_failed)?
            .ok_or_else(|| CniError::check_failed(format!("host veth {host_ifname} is missing")))?;
        let host_route_ok = host
            .routes()
            .await
            .map_err(netlink_failed)?
            .iter()
            .any(|r| r.dst == ip && r.prefix_len == 32 && r.oif == Some(host_link.index));
        if !host_route_ok {
            return Err(CniError::check_failed(format!("node route {ip}/32 dev {host_ifname} is missing")));
        }

        let pod = pod_netlink(&netns)?;
        let pod_link = pod.link_by_name(&env.ifname).await.map_err(netlink_failed)?.ok_or_else(|| {
            CniError::check_failed(format!("interface {} is missing in {sandbox}", env.ifname))
        })?;
        if !pod_link.up {
            return Err(CniError::check_failed(format!("interface {} is down", env.ifname)));
        }
        if let Some(mac) = expected_mac.filter(|m| !m.is_empty() && *m != format_mac(&pod_link.mac)) {
            return Err(CniError::check_failed(format!(
                "interface {} has MAC {} but prevResult lists {mac}",
                env.ifname,
                format_mac(&pod_link.mac)
            )));
        }
        let addresses = pod.addresses(pod_link.index).await.map_err(netlink_failed)?;
        if !addresses.contains(&(ip, 32)) {
            return Err(CniError::check_failed(format!("interface {} lacks address {ip}/32", env.ifname)));
        }
        let default_ok = pod.routes().await.map_err(netlink_failed)?.iter().any(|r| {
            r.prefix_len == 0 && r.gateway == Some(gateway) && r.oif == Some(pod_link.index)
        });
        if !default_ok {
            return Err(CniError::check_failed(format!("default route via {gateway} dev {} is missing", env.ifname)));
        }
        match pod.neighbour(pod_link.index, gateway).await.map_err(netlink_failed)? {
            Some((mac, true)) if mac == host_link.mac => {}
            Some((mac, permanent)) => {
                return Err(CniError::check_failed(format!(
                    "gateway neighbour {gateway} is {} (permanent: {permanent}), expected {} permanent",
                    format_mac(&mac),
                    format_mac(&host_link.mac)
                )));
            }
            None => return Err(CniError::check_failed(format!("gateway neighbour {gateway} is missing"))),
        }
        info!("CHECK passed");
        Ok(())
    }
    .instrument(span)
    .await
}
