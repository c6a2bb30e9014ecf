//! The CNI success result: one model for every version, parsed leniently (a `prevResult` of any
//! supported version) and rendered in the version the runtime asked for.
//!
//! Unknown keys of a `prevResult` are kept (`extra`) and passed through, as the spec asks of chained
//! plugins. Rendering adds `ips[].version` before 1.0.0 and drops the 1.1.0-only fields before 1.1.0.

use std::net::Ipv4Addr;

use novanet_model::format_mac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0 and later.
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": present before 1.0.0 only (set on rendering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation, e.g. "10.244.1.5/32".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
            && self.extra.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Overwritten with the negotiated version on rendering.
    #[serde(
        default,
        rename = "cniVersion",
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What NovaNet's ADD created, to be appended to a (possibly empty) previous result.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub host_ifname: String,
    pub host_mac: [u8; 6],
    pub pod_ifname: String,
    pub pod_mac: [u8; 6],
    pub netns: String,
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl CniResult {
    /// Parses a `prevResult` (any supported version). Failure is code 6.
    pub fn from_value(value: Value) -> Result<Self, CniError> {
        serde_json::from_value(value).map_err(|e| {
            CniError::new(ErrorCode::DecodingFailure, "failed to decode prevResult")
                .with_details(e.to_string())
        })
    }

    /// Appends the host veth, the pod interface, its /32 address and the default route.
    pub fn append(&mut self, att: &Attachment) {
        let host_index = self.interfaces.len();
        self.interfaces.push(Interface {
            name: att.host_ifname.clone(),
            mac: format_mac(&att.host_mac),
            mtu: Some(att.mtu),
            ..Interface::default()
        });
        self.interfaces.push(Interface {
            name: att.pod_ifname.clone(),
            mac: format_mac(&att.pod_mac),
            mtu: Some(att.mtu),
            sandbox: att.netns.clone(),
            ..Interface::default()
        });
        let gateway = att.gateway.to_string();
        self.ips.push(IpConfig {
            address: format!("{}/32", att.ip),
            gateway: Some(gateway.clone()),
            interface: Some(host_index + 1),
            ..IpConfig::default()
        });
        let default_route = Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gateway),
            ..Route::default()
        };
        if !self.routes.contains(&default_route) {
            self.routes.push(default_route);
        }
    }

    /// The JSON result in `version`'s format.
    pub fn render(&self, version: CniVersion) -> Value {
        let mut out = self.clone();
        out.cni_version = version.as_str().to_string();
        for ip in &mut out.ips {
            ip.version = version
                .ips_carry_version()
                .then(|| ip_family(&ip.address).to_string());
        }
        if !version.has_v1_1_fields() {
            for iface in &mut out.interfaces {
                iface.mtu = None;
                iface.socket_path = None;
                iface.pci_id = None;
            }
            for route in &mut out.routes {
                route.mtu = None;
                route.advmss = None;
                route.priority = None;
                route.table = None;
                route.scope = None;
            }
        }
        serde_json::to_value(&out).unwrap_or(Value::Null)
    }

    /// The addresses (`ips`) that belong to the interface named `ifname` in `sandbox`.
    pub fn ips_of(&self, ifname: &str, sandbox: &str) -> Vec<&IpConfig> {
        let index = self
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox == sandbox);
        self.ips
            .iter()
            .filter(|ip| index.is_some() && ip.interface == index)
            .collect()
    }

    /// The interface named `ifname` inside `sandbox`, if listed.
    pub fn interface_in(&self, ifname: &str, sandbox: &str) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.name == ifname && i.sandbox == sandbox)
    }
}

fn ip_family(cidr: &str) -> &'static str {
    if cidr.contains(':') { "6" } else { "4" }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;
    use serde_json::json;

    fn attachment() -> Attachment {
        Attachment {
            host_ifname: "nnd72e032fedd9".into(),
            host_mac: [0xee, 0, 0, 0, 0, 1],
            pod_ifname: "eth0".into(),
            pod_mac: [0x0a, 0x58, 0, 0, 0, 2],
            netns: "/run/netns/pod1".into(),
            mtu: 1450,
            ip: Ipv4Addr::new(10, 244, 1, 5),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
        }
    }

    fn fresh() -> CniResult {
        let mut r = CniResult::default();
        r.append(&attachment());
        r
    }

    #[test]
    fn result_1_1_has_mtu_and_no_ip_version() {
        let v = fresh().render(CniVersion::V1_1_0);
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "nnd72e032fedd9", "mac": "ee:00:00:00:00:01", "mtu": 1450},
                    {"name": "eth0", "mac": "0a:58:00:00:00:02", "mtu": 1450, "sandbox": "/run/netns/pod1"}
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn result_1_0_has_no_interface_mtu() {
        let v = fresh().render(CniVersion::V1_0_0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn results_before_1_0_carry_ip_version() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let v = fresh().render(version);
            assert_eq!(v["cniVersion"], version.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][0]["interface"], 1);
            assert!(v["interfaces"][1].get("mtu").is_none());
        }
    }

    #[test]
    fn prev_result_is_kept_and_ours_appended() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth9", "mac": "aa:aa:aa:aa:aa:aa", "sandbox": "/run/netns/pod1"}],
            "ips": [{"address": "192.168.9.2/24", "interface": 0}],
            "routes": [{"dst": "192.168.0.0/16"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "x-vendor": {"kept": true}
        });
        let mut r = CniResult::from_value(prev).unwrap();
        r.append(&attachment());
        let v = r.render(CniVersion::V1_0_0);
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(v["interfaces"][0]["name"], "eth9");
        assert_eq!(v["interfaces"][2]["name"], "eth0");
        assert_eq!(v["ips"][0]["address"], "192.168.9.2/24");
        assert_eq!(v["ips"][1]["address"], "10.244.1.5/32");
        assert_eq!(v["ips"][1]["interface"], 2);
        assert_eq!(v["routes"].as_array().unwrap().len(), 2);
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
        assert_eq!(v["x-vendor"]["kept"], true);
    }

    #[test]
    fn prev_result_0_4_0_round_trips_into_1_1_without_version() {
        let prev = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"}]
        });
        let r = CniResult::from_value(prev).unwrap();
        let v = r.render(CniVersion::V1_1_0);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["ips"][0]["gateway"], "10.1.0.1");
    }

    #[test]
    fn malformed_prev_result_is_code_6() {
        let err = CniResult::from_value(json!({"ips": "not a list"})).unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodingFailure);
    }

    #[test]
    fn ips_of_finds_our_interface() {
        let r = fresh();
        let ips = r.ips_of("eth0", "/run/netns/pod1");
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[0].address, "10.244.1.5/32");
        assert!(r.ips_of("eth1", "/run/netns/pod1").is_empty());
    }
}
