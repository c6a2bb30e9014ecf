//! GC: the agent releases every endpoint not in `cni.dev/valid-attachments`; the plugin deletes the
//! host veths of the released ones. It goes on past individual failures and reports them together.

use tracing::{Instrument, info, info_span, warn};

use super::{delete_host_veth, host_netlink};
use crate::agent::{self, Agent};
use crate::config::NetConf;
use crate::error::CniError;
use crate::naming;

pub async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let span = info_span!("gc", valid = conf.valid_attachments.len());
    async move {
        let valid = conf
            .valid_attachments
            .iter()
            .map(|a| agent::attachment(&a.container_id, &a.ifname))
            .collect();
        let mut agent = Agent::connect(&conf.agent_socket, conf.agent_timeout).await?;
        let resp = agent.garbage_collect(valid).await?;
        info!(
            released = resp.released.len(),
            "agent released stale endpoints"
        );

        let host = host_netlink()?;
        let mut failures = Vec::new();
        for ep in &resp.released {
            let mut names = Vec::new();
            if let Some(att) = &ep.attachment {
                names.push(naming::host_ifname(&att.container_id, &att.ifname));
            }
            if !ep.host_ifname.is_empty() && !names.contains(&ep.host_ifname) {
                names.push(ep.host_ifname.clone());
            }
            for name in names {
                match delete_host_veth(&host, &name).await {
                    Ok(true) => info!(ifname = %name, "stale veth deleted"),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(ifname = %name, error = %e, "deleting stale veth failed");
                        failures.push(format!("{name}: {e}"));
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal(
                "GC could not delete some stale veths",
                failures.join("; "),
            ))
        }
    }
    .instrument(span)
    .await
}
