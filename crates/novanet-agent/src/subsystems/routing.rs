//! Native routing: route exchange with the fabric through the FRR sidecar (BGP/OSPF, BFD). The routing
//! issue fills this in; until then it is inactive and says whether it was asked for.

use super::Inactive;
use crate::config::{AgentConfig, RoutingMode};

pub fn start(cfg: &AgentConfig) -> Inactive {
    let reason = if cfg.routing.enabled || cfg.routing_mode == RoutingMode::Native {
        "native routing with FRR is not in this build (routing settings are accepted but not applied)"
    } else {
        "routing.enabled is false: no routes are exchanged"
    };
    Inactive::new("routing", reason)
}
