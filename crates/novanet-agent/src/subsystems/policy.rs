//! NetworkPolicy enforcement: identities for pods, compiled policy in the datapath. The policy issue
//! fills this in (it will read the NetworkPolicy, Pod and Namespace stores of the `kubernetes`
//! subsystem and set `EndpointInfo.identity`); until then it is inactive and says so.

use super::Inactive;
use crate::config::AgentConfig;

pub fn start(cfg: &AgentConfig) -> Inactive {
    let mut reason = "NetworkPolicy enforcement is not in this build: all pod traffic is allowed".to_string();
    if cfg.default_deny {
        reason.push_str(" (defaultDeny: true is not enforced)");
    }
    Inactive::new("policy", reason)
}
