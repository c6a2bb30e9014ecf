//! One module per CNI command. Each returns the JSON to print on stdout (ADD only) or nothing.

mod add;
mod check;
mod del;
mod gc;
mod status;

use serde_json::Value;

use crate::config::NetConf;
use crate::env::{AttachmentEnv, Command};
use crate::error::CniError;
use crate::netlink::{Netlink, NetlinkError};
use crate::netns::Netns;

/// Runs `command` (not VERSION, which main answers without a config). `attachment` is present for
/// ADD, DEL and CHECK.
pub async fn run(
    command: Command,
    attachment: Option<&AttachmentEnv>,
    conf: &NetConf,
) -> Result<Option<Value>, CniError> {
    match (command, attachment) {
        (Command::Add, Some(att)) => add::add(att, conf).await.map(Some),
        (Command::Del, Some(att)) => del::del(att, conf).await.map(|()| None),
        (Command::Check, Some(att)) => check::check(att, conf).await.map(|()| None),
        (Command::Gc, _) => gc::gc(conf).await.map(|()| None),
        (Command::Status, _) => status::status(conf).await.map(|()| None),
        (command, _) => Err(CniError::internal(
            "command dispatched without its environment",
            command.as_str(),
        )),
    }
}

fn netlink_failed(err: NetlinkError) -> CniError {
    let exists = err.is_exists();
    let e = CniError::internal(&format!("netlink: {}", err.op), &err.source);
    if exists {
        CniError {
            code: crate::error::ErrorCode::InterfaceExists,
            ..e
        }
    } else {
        e
    }
}

fn host_netlink() -> Result<Netlink, CniError> {
    Netlink::current()
        .map_err(|e| CniError::internal("cannot open a netlink socket in the node's namespace", e))
}

fn pod_netlink(netns: &Netns) -> Result<Netlink, CniError> {
    Netlink::in_netns(netns).map_err(|e| {
        CniError::internal(
            &format!("cannot open a netlink socket in {}", netns.path().display()),
            e,
        )
    })
}

/// Deletes the node-side link `name` if it exists and is a veth (never anything else: a name from the
/// agent must not be able to remove, say, the node's uplink). Returns whether a link was deleted.
async fn delete_host_veth(host: &Netlink, name: &str) -> Result<bool, CniError> {
    let Some(link) = host.link_by_name(name).await.map_err(netlink_failed)? else {
        return Ok(false);
    };
    if !link.is_veth {
        tracing::warn!(ifname = name, "not deleting host link: it is not a veth");
        return Ok(false);
    }
    host.delete_link(link.index).await.map_err(netlink_failed)?;
    Ok(true)
}

fn mac6(mac: &[u8], what: &str) -> Result<[u8; 6], CniError> {
    <[u8; 6]>::try_from(mac).map_err(|_| {
        CniError::internal(
            &format!("{what} has no Ethernet address"),
            format!("{mac:?}"),
        )
    })
}
