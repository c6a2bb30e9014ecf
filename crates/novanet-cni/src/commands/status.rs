//! STATUS: ready when the agent answers `Status` with `ready` and has addresses left; otherwise 50.

use crate::agent::Agent;
use crate::config::NetConf;
use crate::error::{CniError, ErrorCode};

pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    let not_available = |msg: String, details: String| {
        CniError::new(ErrorCode::PluginNotAvailable, msg).with_details(details)
    };
    let mut agent = Agent::connect(&conf.agent_socket, conf.agent_timeout)
        .await
        .map_err(|e| not_available(e.msg, e.details))?;
    let status = agent
        .status()
        .await
        .map_err(|e| not_available(e.msg, e.details))?;
    if !status.ready {
        return Err(not_available(
            "NovaNet agent is not ready".into(),
            format!(
                "node {:?}, source {:?}: {}",
                status.node_name,
                status.source,
                status.not_ready_reasons.join("; ")
            ),
        ));
    }
    if status.pool_size > 0 && status.pool_used >= status.pool_size {
        return Err(not_available(
            "NovaNet agent has no pod addresses left".into(),
            format!(
                "pod CIDR {} uses {}/{}",
                status.pod_cidr, status.pool_used, status.pool_size
            ),
        ));
    }
    Ok(())
}
