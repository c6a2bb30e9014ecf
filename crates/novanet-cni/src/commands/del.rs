//! DEL: release the endpoint and delete the veth, idempotently.
//!
//! Decision on an unreachable agent: the veth is still deleted (the pod end goes with it), then the
//! command fails with code 11 so the runtime retries DEL until the agent has released the address.
//! A repeated DEL finds the veth gone and the agent answering "nothing released": success.
//! The pod's namespace is not needed (it may already be gone). An agent that released the endpoint
//! deletes its veth itself after answering (`host_veth_deleting`); the plugin deletes any other.

use tracing::{Instrument, info, info_span, warn};

use super::{delete_host_veth, host_netlink};
use crate::agent::{self, Agent};
use crate::config::NetConf;
use crate::env::AttachmentEnv;
use crate::error::CniError;
use crate::naming;

pub async fn del(env: &AttachmentEnv, conf: &NetConf) -> Result<(), CniError> {
    let host_ifname = naming::host_ifname(&env.container_id, &env.ifname);
    let span = info_span!("del", container_id = %env.container_id, ifname = %env.ifname, host_ifname = %host_ifname);
    async move {
        let agent_answer = match Agent::connect(&conf.agent_socket, conf.agent_timeout).await {
            Ok(mut agent) => {
                agent
                    .del_endpoint(agent::attachment(&env.container_id, &env.ifname))
                    .await
            }
            Err(e) => Err(e),
        };
        let mut names = vec![host_ifname.clone()];
        match &agent_answer {
            Ok(resp) => {
                info!(released = resp.released, "agent released endpoint");
                if !resp.host_ifname.is_empty() && resp.host_ifname != host_ifname {
                    names.push(resp.host_ifname.clone());
                }
                if resp.host_veth_deleting {
                    info!(ifname = %resp.host_ifname, "the agent deletes the veth");
                    names.retain(|n| *n != resp.host_ifname);
                }
            }
            Err(e) => warn!(error = %e, "agent DelEndpoint failed; deleting the veth anyway"),
        }

        if !names.is_empty() {
            let host = host_netlink()?;
            for name in &names {
                if delete_host_veth(&host, name).await? {
                    info!(ifname = %name, "veth deleted");
                }
            }
        }
        agent_answer.map(|_| ())
    }
    .instrument(span)
    .await
}
