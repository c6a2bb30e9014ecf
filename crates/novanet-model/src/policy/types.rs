//! The compiler's inputs and its small shared types.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use novanet_common::{DIRECTION_EGRESS, DIRECTION_INGRESS};
use serde::{Deserialize, Serialize};

use crate::identity::IdentityLabels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The map value (`DIRECTION_*`).
    pub fn raw(self) -> u8 {
        match self {
            Direction::Ingress => DIRECTION_INGRESS,
            Direction::Egress => DIRECTION_EGRESS,
        }
    }
}

/// The protocols a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Kubernetes' spelling (`TCP`, `UDP`, `SCTP`); case-sensitive like the API.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod with an address, as the compiler needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub identity: u32,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

impl PodView {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The number of the container port `name` with `protocol`, if the pod has one.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports.iter().find(|p| p.name == name && p.protocol == protocol).map(|p| p.port)
    }
}

/// Everything the compiler reads.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub policies: &'a [NetworkPolicy],
    /// Namespace name -> its labels (`kubernetes.io/metadata.name` is implied).
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Every pod of the cluster with an address.
    pub pods: &'a [PodView],
    /// Every identity in use.
    pub identities: &'a BTreeMap<u32, IdentityLabels>,
    /// Every local pod is isolated both ways; policies only add allows.
    pub default_deny: bool,
}
