//! The policy subsystem's port to the datapath: the maps it owns (ipcache, policy and CIDR tries, the
//! policy switch, verdict counters). `novanet_dataplane::PolicyMaps` implements it over the pinned maps;
//! the tests use [`MemPolicyMaps`].

use std::net::Ipv4Addr;

use novanet_common::{CidrKey, CidrValue, EndpointKey, IpcacheValue, PolicyConfig, PolicyKey, PolicyValue};
use novanet_dataplane::{LpmHandle, MapHandle, PolicySwitch};
use novanet_dataplane::DataplaneError;

pub trait PolicyDatapath: Send {
    fn set_ipcache(&mut self, ip: Ipv4Addr, value: IpcacheValue) -> Result<(), DataplaneError>;
    fn remove_ipcache(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError>;
    fn set_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<(), DataplaneError>;
    fn remove_policy(&mut self, prefix_len: u32, key: PolicyKey) -> Result<(), DataplaneError>;
    fn set_cidr(&mut self, prefix_len: u32, key: CidrKey, value: CidrValue) -> Result<(), DataplaneError>;
    fn remove_cidr(&mut self, prefix_len: u32, key: CidrKey) -> Result<(), DataplaneError>;
    fn set_config(&mut self, config: PolicyConfig) -> Result<(), DataplaneError>;
    /// (allowed packets, denied packets) of new flows judged for `endpoint` per direction
    /// (`[ingress, egress]`).
    fn verdicts(&self, endpoint: Ipv4Addr) -> Result<[(u64, u64); 2], DataplaneError>;
    fn remove_verdicts(&mut self, endpoint: Ipv4Addr) -> Result<(), DataplaneError>;
}

/// In-memory maps with capacities (full maps fail like the kernel's), for the agent's tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemPolicyMaps {
    // (BTreeMaps: deterministic order in assertions.)
    pub ipcache: std::collections::BTreeMap<Ipv4Addr, IpcacheValue>,
    pub policy: std::collections::BTreeMap<(u32, PolicyKey), PolicyValue>,
    pub cidrs: std::collections::BTreeMap<(u32, CidrKey), CidrValue>,
    pub config: PolicyConfig,
    pub policy_capacity: Option<usize>,
}

#[cfg(test)]
impl PolicyDatapath for MemPolicyMaps {
    fn set_ipcache(&mut self, ip: Ipv4Addr, value: IpcacheValue) -> Result<(), DataplaneError> {
        self.ipcache.insert(ip, value);
        Ok(())
    }
    fn remove_ipcache(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.ipcache.remove(&ip);
        Ok(())
    }
    fn set_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<(), DataplaneError> {
        if let Some(cap) = self.policy_capacity
            && self.policy.len() >= cap
            && !self.policy.contains_key(&(prefix_len, key))
        {
            return Err(DataplaneError::MapFull { map: novanet_common::POLICY_MAP, max_entries: cap as u32 });
        }
        self.policy.insert((prefix_len, key), value);
        Ok(())
    }
    fn remove_policy(&mut self, prefix_len: u32, key: PolicyKey) -> Result<(), DataplaneError> {
        self.policy.remove(&(prefix_len, key));
        Ok(())
    }
    fn set_cidr(&mut self, prefix_len: u32, key: CidrKey, value: CidrValue) -> Result<(), DataplaneError> {
        self.cidrs.insert((prefix_len, key), value);
        Ok(())
    }
    fn remove_cidr(&mut self, prefix_len: u32, key: CidrKey) -> Result<(), DataplaneError> {
        self.cidrs.remove(&(prefix_len, key));
        Ok(())
    }
    fn set_config(&mut self, config: PolicyConfig) -> Result<(), DataplaneError> {
        self.config = config;
        Ok(())
    }
    fn verdicts(&self, _endpoint: Ipv4Addr) -> Result<[(u64, u64); 2], DataplaneError> {
        Ok([(0, 0); 2])
    }
    fn remove_verdicts(&mut self, _endpoint: Ipv4Addr) -> Result<(), DataplaneError> {
        Ok(())
    }
}

impl PolicyDatapath for Box<dyn PolicyDatapath> {
    fn set_ipcache(&mut self, ip: Ipv4Addr, value: IpcacheValue) -> Result<(), DataplaneError> {
        (**self).set_ipcache(ip, value)
    }
    fn remove_ipcache(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        (**self).remove_ipcache(ip)
    }
    fn set_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<(), DataplaneError> {
        (**self).set_policy(prefix_len, key, value)
    }
    fn remove_policy(&mut self, prefix_len: u32, key: PolicyKey) -> Result<(), DataplaneError> {
        (**self).remove_policy(prefix_len, key)
    }
    fn set_cidr(&mut self, prefix_len: u32, key: CidrKey, value: CidrValue) -> Result<(), DataplaneError> {
        (**self).set_cidr(prefix_len, key, value)
    }
    fn remove_cidr(&mut self, prefix_len: u32, key: CidrKey) -> Result<(), DataplaneError> {
        (**self).remove_cidr(prefix_len, key)
    }
    fn set_config(&mut self, config: PolicyConfig) -> Result<(), DataplaneError> {
        (**self).set_config(config)
    }
    fn verdicts(&self, endpoint: Ipv4Addr) -> Result<[(u64, u64); 2], DataplaneError> {
        (**self).verdicts(endpoint)
    }
    fn remove_verdicts(&mut self, endpoint: Ipv4Addr) -> Result<(), DataplaneError> {
        (**self).remove_verdicts(endpoint)
    }
}

/// The pinned maps.
impl PolicyDatapath for novanet_dataplane::PolicyMaps {
    fn set_ipcache(&mut self, ip: Ipv4Addr, value: IpcacheValue) -> Result<(), DataplaneError> {
        self.ipcache.insert(&EndpointKey::from_octets(ip.octets()), &value)
    }
    fn remove_ipcache(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.ipcache.remove(&EndpointKey::from_octets(ip.octets())).map(|_| ())
    }
    fn set_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<(), DataplaneError> {
        self.policy.insert(prefix_len, &key, &value)
    }
    fn remove_policy(&mut self, prefix_len: u32, key: PolicyKey) -> Result<(), DataplaneError> {
        self.policy.remove(prefix_len, &key).map(|_| ())
    }
    fn set_cidr(&mut self, prefix_len: u32, key: CidrKey, value: CidrValue) -> Result<(), DataplaneError> {
        self.cidr.insert(prefix_len, &key, &value)
    }
    fn remove_cidr(&mut self, prefix_len: u32, key: CidrKey) -> Result<(), DataplaneError> {
        self.cidr.remove(prefix_len, &key).map(|_| ())
    }
    fn set_config(&mut self, config: PolicyConfig) -> Result<(), DataplaneError> {
        self.config.set(&config)
    }
    fn verdicts(&self, endpoint: Ipv4Addr) -> Result<[(u64, u64); 2], DataplaneError> {
        let v = novanet_dataplane::endpoint_verdicts(&self.verdicts, endpoint)?;
        Ok([(v.ingress_allowed.packets, v.ingress_denied.packets), (v.egress_allowed.packets, v.egress_denied.packets)])
    }
    fn remove_verdicts(&mut self, endpoint: Ipv4Addr) -> Result<(), DataplaneError> {
        novanet_dataplane::remove_endpoint_verdicts(&mut self.verdicts, endpoint).map(|_| ())
    }
}
