//! The overlay: VXLAN/Geneve tunnels to the other nodes. The overlay issue fills this in; until then it
//! is inactive and says what carries traffic between nodes instead.

use super::Inactive;
use crate::config::{AgentConfig, RoutingMode, TunnelProtocol};

pub fn start(cfg: &AgentConfig) -> Inactive {
    let reason = match cfg.routing_mode {
        RoutingMode::Overlay => {
            let protocol = match cfg.tunnel_protocol {
                TunnelProtocol::Vxlan => "VXLAN",
                TunnelProtocol::Geneve => "Geneve",
            };
            format!("the {protocol} overlay is not in this build: other nodes' pod CIDRs must be routed by the underlay")
        }
        RoutingMode::Native => "routingMode native: no tunnels".to_string(),
    };
    Inactive::new("tunnels", reason)
}
