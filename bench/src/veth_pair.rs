//! The baseline: two network namespaces of the bench's own joined by one direct veth pair, no eBPF, no
//! routing, no bridge: the physical limit of a same-node path. Both namespaces (and with them the veth)
//! are deleted when the guard drops, also on error or panic. Nothing is touched in the root namespace.

use std::net::Ipv4Addr;

use anyhow::Context;
use novanet_lab::netns::{NetNs, unique_prefix};

/// Client and server ends of a measured path, as namespace names plus the server's address.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: Ipv4Addr,
}

/// A direct veth pair between two namespaces; `10.250.<subnet>.1` (client) and `.2` (server), /24, both
/// inside the bench's namespaces only.
pub struct VethPair {
    client: Option<NetNs>,
    server: Option<NetNs>,
    server_ip: Ipv4Addr,
}

impl VethPair {
    pub fn create(tag: &str, subnet: u8, mtu: u32) -> anyhow::Result<VethPair> {
        let prefix = unique_prefix();
        let client = NetNs::create(&format!("{prefix}-{tag}c")).context("creating the baseline client netns")?;
        // From here on the guard owns what exists, so an error below still removes it.
        let mut pair = VethPair { client: Some(client), server: None, server_ip: Ipv4Addr::new(10, 250, subnet, 2) };
        pair.server = Some(NetNs::create(&format!("{prefix}-{tag}s")).context("creating the baseline server netns")?);
        pair.wire(subnet, mtu).with_context(|| format!("wiring the direct veth pair {tag}"))?;
        Ok(pair)
    }

    fn wire(&self, subnet: u8, mtu: u32) -> anyhow::Result<()> {
        let (Some(c), Some(s)) = (&self.client, &self.server) else { anyhow::bail!("namespaces missing") };
        let mtu = mtu.to_string();
        c.ip(&[
            "link",
            "add",
            "veth0",
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "mtu",
            &mtu,
            "netns",
            s.name(),
        ])?;
        c.ip(&["addr", "add", &format!("10.250.{subnet}.1/24"), "dev", "veth0"])?;
        s.ip(&["addr", "add", &format!("10.250.{subnet}.2/24"), "dev", "veth0"])?;
        c.ip(&["link", "set", "veth0", "up"])?;
        s.ip(&["link", "set", "veth0", "up"])?;
        Ok(())
    }

    pub fn endpoints(&self) -> Endpoints {
        let name = |ns: &Option<NetNs>| ns.as_ref().map(|n| n.name().to_string()).unwrap_or_default();
        Endpoints { client_ns: name(&self.client), server_ns: name(&self.server), server_ip: self.server_ip }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [self.client.take(), self.server.take()].into_iter().flatten() {
            if let Err(e) = NetNs::delete(ns.name()) {
                eprintln!("bench: could not delete netns {}: {e}", ns.name());
            }
        }
    }
}

/// The MTU of `ifname` inside `netns` (the baseline takes the pods' MTU).
pub fn link_mtu(netns: &str, ifname: &str) -> anyhow::Result<u32> {
    let out = NetNs::existing(netns).ip(&["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing `ip -j link`")?;
    v[0]["mtu"].as_u64().map(|m| m as u32).with_context(|| format!("no mtu for {ifname} in {netns}"))
}
