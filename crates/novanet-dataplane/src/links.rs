//! Deletes an interface by index over rtnetlink (blocking, in the calling thread's namespace).
//!
//! By index, never by name: a name can be taken again by a newer interface between the moment a caller
//! decided to delete it and the deletion, an index is not reused while the kernel's counter runs.

use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

/// Deletes interface `ifindex` (with its veth peer, wherever that is). `Ok(false)` when there was no
/// such interface (already gone: a namespace deletion took it, or an earlier delete).
pub fn delete_link(ifindex: u32) -> io::Result<bool> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut request = vec![0; msg.buffer_len()];
    msg.serialize(&mut request);
    socket.send(&request, 0)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        match socket.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).map_err(|e| io::Error::other(e.to_string()))?;
        if reply.header.sequence_number != 1 {
            continue;
        }
        return match reply.payload {
            NetlinkPayload::Error(e) if e.code.is_none() => Ok(true),
            NetlinkPayload::Error(e) if e.to_io().raw_os_error() == Some(libc::ENODEV) => Ok(false),
            NetlinkPayload::Error(e) => Err(e.to_io()),
            other => Err(io::Error::other(format!("unexpected netlink reply {other:?}"))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a scratch namespace of its own (a thread that unshares), so nothing outside it changes.
    #[test]
    fn deletes_a_veth_by_index_and_reports_a_missing_one() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            novanet_testkit::skip("needs root to create a scratch namespace and a veth");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this (fresh, single-purpose) thread to a new namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", io::Error::last_os_error());
            let ok = std::process::Command::new("ip")
                .args(["link", "add", "nnlinktest0", "type", "veth", "peer", "name", "nnlinktest1"])
                .status()
                .unwrap();
            assert!(ok.success());
            let index = crate::ifindex("nnlinktest0").unwrap();
            assert!(delete_link(index).unwrap(), "deleted");
            assert!(crate::ifindex("nnlinktest0").is_err(), "gone");
            assert!(crate::ifindex("nnlinktest1").is_err(), "its peer too");
            assert!(!delete_link(index).unwrap(), "a second delete finds nothing");
        })
        .join()
        .unwrap();
    }
}
