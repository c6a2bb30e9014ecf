//! The pod's network namespace: opening and vetting `CNI_NETNS`, and netlink sockets bound inside it.
//!
//! **Invariant**: the plugin's own threads never change namespace. A netlink socket belongs to the
//! namespace of the thread that created it, so [`Netns::netlink_connection`] spawns a fresh OS thread,
//! `setns(CLONE_NEWNET)`s it, creates the socket there and lets the thread exit. Never a tokio worker
//! or blocking-pool thread: those are reused and would stay in the pod's namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::proto::Connection;

use crate::error::{CniError, ErrorCode};

/// A netlink connection (to be spawned) and the handle that sends requests over it.
pub type NetlinkParts = (Connection<RouteNetlinkMessage>, rtnetlink::Handle);

/// An open network namespace file (`/run/netns/<name>` or `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens `path` and checks it is a namespace other than the plugin's own.
    /// Missing path: code 3 (nothing to clean up). Not a namespace, or our own: code 8.
    pub fn open(path: &Path) -> Result<Self, CniError> {
        let file = File::open(path).map_err(|e| {
            let code = if e.kind() == io::ErrorKind::NotFound {
                ErrorCode::UnknownContainer
            } else {
                ErrorCode::InvalidNetns
            };
            CniError::new(
                code,
                format!(
                    "network namespace {} does not exist or cannot be opened",
                    path.display()
                ),
            )
            .with_details(e.to_string())
        })?;
        let fs = fstatfs(&file).map_err(|e| {
            CniError::new(
                ErrorCode::InvalidNetns,
                format!("cannot stat network namespace {}", path.display()),
            )
            .with_details(e.to_string())
        })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(CniError::new(
                ErrorCode::InvalidNetns,
                format!(
                    "{} is not a network namespace (was it deleted?)",
                    path.display()
                ),
            ));
        }
        let ours = std::fs::metadata("/proc/self/ns/net")
            .map_err(|e| CniError::internal("cannot stat the plugin's own network namespace", e))?;
        let theirs = file
            .metadata()
            .map_err(|e| CniError::internal("cannot stat the pod's network namespace", e))?;
        if ours.dev() == theirs.dev() && ours.ino() == theirs.ino() {
            return Err(CniError::new(
                ErrorCode::InvalidNetns,
                format!(
                    "CNI_NETNS {} is the plugin's own network namespace",
                    path.display()
                ),
            ));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// A netlink connection whose socket lives in this namespace (see the module invariant).
    /// Must be called from within a tokio runtime: the socket registers with its reactor.
    pub fn netlink_connection(&self) -> io::Result<NetlinkParts> {
        let runtime = tokio::runtime::Handle::current();
        let fd = self.fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    let _entered = runtime.enter();
                    // Unsolicited messages (the third part) are of no interest.
                    rtnetlink::new_connection().map(|(connection, handle, _)| (connection, handle))
                    // The thread ends here, still in the pod's namespace: nothing else ever runs on it.
                })
                .join()
                .map_err(|_| io::Error::other("netns helper thread panicked"))?
        })
    }
}
