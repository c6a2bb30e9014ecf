//! Kubernetes Services: socket-level L4 load balancing from the Service and EndpointSlice stores. The
//! services issue fills this in; until then it is inactive and Services are left to kube-proxy.

use super::Inactive;
use crate::config::AgentConfig;

pub fn start(cfg: &AgentConfig) -> Inactive {
    let mut reason = "socket load balancing is not in this build: Services are left to kube-proxy".to_string();
    if cfg.l4lb.enabled {
        reason.push_str(" (l4lb.enabled: true has no effect)");
    }
    Inactive::new("services", reason)
}
