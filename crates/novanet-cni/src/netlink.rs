//! The netlink operations the plugin performs, over rtnetlink (no iproute2 needed on the node).
//!
//! A [`Netlink`] is bound to one namespace: the plugin's own ([`Netlink::current`]) or a pod's
//! ([`Netlink::in_netns`]). Every call here is one rtnetlink request; errors keep the kernel's errno.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use nix::libc;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteScope};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::netns::{NetlinkParts, Netns};

/// A failed netlink request: what was attempted, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    pub op: String,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The kernel's errno, when the failure is a netlink error message.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
        )
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

fn op_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError { op, source }
}

/// What the plugin needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub is_veth: bool,
}

/// An IPv4 route of the main table, reduced to what CHECK compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// A connection in the plugin's own (the node's) namespace. Needs a tokio runtime.
    pub fn current() -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(Self::from_parts((connection, handle)))
    }

    /// A connection whose socket lives in `netns`. Needs a tokio runtime.
    pub fn in_netns(netns: &Netns) -> std::io::Result<Self> {
        Ok(Self::from_parts(netns.netlink_connection()?))
    }

    fn from_parts((connection, handle): NetlinkParts) -> Self {
        Self {
            handle,
            connection: tokio::spawn(connection),
        }
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_from(&msg))),
            Ok(None) => Ok(None),
            Err(source) => {
                let err = NetlinkError {
                    op: format!("get link {name}"),
                    source,
                };
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `ip link add <host> mtu <mtu> type veth peer name <peer> mtu <mtu> netns <peer_ns>`: one atomic
    /// request, so the pod-side name is only ever checked and created inside the pod's namespace.
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_ns: &Netns,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .setns_by_fd(peer_ns.raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(op_err(format!(
                "create veth {host} <-> {peer} in {}",
                peer_ns.path().display()
            )))
    }

    /// `ip link set <index> [mtu <mtu>] up`.
    pub async fn set_up(&self, index: u32, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let mut builder = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(op_err(format!("set link {index} up")))
    }

    /// `ip link del <index>`; a link already gone is success.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(op_err(format!("delete link {index}")))
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// `ip addr add <ip>/<prefix_len> dev <index>`.
    pub async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
            .map_err(op_err(format!(
                "add address {ip}/{prefix_len} to link {index}"
            )))
    }

    /// The IPv4 addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op_err(format!("list addresses of link {index}")))?
        {
            if msg.header.index != index {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    out.push((*ip, msg.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// `ip route replace <dst>/<prefix_len> [via <gateway>] dev <oif> [scope link]` in the main table.
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> Result<(), NetlinkError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(oif);
        if prefix_len > 0 {
            builder = builder.destination_prefix(dst, prefix_len);
        }
        builder = match gateway {
            Some(gw) => builder.gateway(gw),
            None => builder.scope(RouteScope::Link),
        };
        let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        self.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(op_err(format!(
                "replace route {dst}/{prefix_len}{via} dev {oif}"
            )))
    }

    /// The IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<RouteV4>, NetlinkError> {
        let mut stream = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(op_err("list routes"))? {
            let mut table = u32::from(msg.header.table);
            let mut route = RouteV4 {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: msg.header.destination_prefix_length,
                gateway: None,
                oif: None,
            };
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::Oif(oif) => route.oif = Some(*oif),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`.
    pub async fn replace_permanent_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: &[u8],
    ) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(op_err(format!(
                "add permanent neighbour {ip} on link {index}"
            )))
    }

    /// The neighbour entry for `ip` on link `index`: its MAC and whether it is permanent.
    pub async fn neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
    ) -> Result<Option<(Vec<u8>, bool)>, NetlinkError> {
        let mut stream = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(msg) = stream.try_next().await.map_err(op_err("list neighbours"))? {
            if msg.header.ifindex != index {
                continue;
            }
            let dst_matches = msg
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip));
            if !dst_matches {
                continue;
            }
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(mac) => Some(mac.clone()),
                _ => None,
            });
            return Ok(Some((
                mac.unwrap_or_default(),
                msg.header.state == NeighbourState::Permanent,
            )));
        }
        Ok(None)
    }
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        is_veth: false,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                link.is_veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn kernel_said(errno: i32) -> NetlinkError {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        NetlinkError {
            op: "test".into(),
            source: rtnetlink::Error::NetlinkError(msg),
        }
    }

    #[test]
    fn errno_is_the_kernels_and_tells_gone_from_exists() {
        assert_eq!(kernel_said(libc::EEXIST).errno(), Some(libc::EEXIST));
        assert!(kernel_said(libc::EEXIST).is_exists());
        for gone in [libc::ENODEV, libc::ENOENT, libc::ESRCH] {
            assert!(kernel_said(gone).is_not_found(), "{gone}");
            assert!(!kernel_said(gone).is_exists(), "{gone}");
        }
        assert!(!kernel_said(libc::EPERM).is_not_found());
        let other = NetlinkError {
            op: "test".into(),
            source: rtnetlink::Error::RequestFailed,
        };
        assert_eq!(other.errno(), None);
    }
}
