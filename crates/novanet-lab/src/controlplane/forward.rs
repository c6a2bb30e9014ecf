//! A TCP forwarder from the current (root) namespace into a lab namespace, so tools running outside the
//! lab (kubectl, helm, tests) reach the apiserver at `127.0.0.1:<port>` without any address or route
//! being added to the root namespace.
//!
//! How: the listener lives in the current namespace; upstream sockets are created by one dedicated OS
//! thread that entered the target namespace with `setns(CLONE_NEWNET)` and never leaves it. A socket keeps
//! the namespace it was created in, so the other threads copy bytes over it as usual. No other thread ever
//! switches namespace.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use super::error::{ControlPlaneError, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type ConnectReply = SyncSender<io::Result<TcpStream>>;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Both ends of each open connection, shut down when the forwarder stops.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

/// A running forwarder; dropping it stops accepting and closes every forwarded connection.
pub struct Forwarder {
    local: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
    connect_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Listens on `listen` (port 0 picks a free port) in the current namespace and forwards each
    /// connection to `target` as seen from the namespace `/run/netns/<netns>`.
    pub fn start(listen: SocketAddr, netns: &str, target: SocketAddr) -> Result<Self> {
        let ns_file = File::open(format!("/run/netns/{netns}")).map_err(|_| {
            ControlPlaneError::NoSuchNetns {
                netns: netns.to_string(),
            }
        })?;
        let listener = TcpListener::bind(listen).map_err(|source| ControlPlaneError::Forward {
            action: "listen",
            source,
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| ControlPlaneError::Forward {
                action: "listen",
                source,
            })?;

        let (request_tx, request_rx) = mpsc::channel::<ConnectReply>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let connect_thread = std::thread::Builder::new()
            .name(format!("fwd-connect-{netns}"))
            .spawn(move || connect_loop(ns_file, target, request_rx, ready_tx))
            .map_err(|source| ControlPlaneError::Forward {
                action: "start the connect thread",
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ControlPlaneError::Forward {
                    action: "enter the namespace",
                    source,
                });
            }
            Err(_) => {
                return Err(ControlPlaneError::Forward {
                    action: "enter the namespace",
                    source: io::Error::other("connect thread ended"),
                });
            }
        }

        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name("fwd-accept".to_string())
            .spawn(move || accept_loop(listener, request_tx, accept_shared))
            .map_err(|source| ControlPlaneError::Forward {
                action: "start the accept thread",
                source,
            })?;
        tracing::debug!(%local, netns, %target, "forwarder listening");
        Ok(Forwarder {
            local,
            shared,
            accept_thread: Some(accept_thread),
            connect_thread: Some(connect_thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Blocks for as long as the forwarder runs (it runs until dropped, so: forever).
    pub fn wait(mut self) {
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees the stop flag and returns, dropping the request sender,
        // which ends the connect thread.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Ok(open) = self.shared.open.lock() {
            for (a, b) in open.values() {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.connect_thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a forwarder in the calling thread until the process ends: what a long-lived
/// `novanet lab` helper process calls.
pub fn run_forwarder(listen: SocketAddr, netns: &str, target: SocketAddr) -> Result<()> {
    let fwd = Forwarder::start(listen, netns, target)?;
    tracing::info!(local = %fwd.local_addr(), netns, %target, "forwarding");
    fwd.wait();
    Ok(())
}

/// The only thread that enters the target namespace: it makes every upstream socket.
fn connect_loop(
    ns_file: File,
    target: SocketAddr,
    requests: Receiver<ConnectReply>,
    ready: SyncSender<io::Result<()>>,
) {
    if let Err(e) = setns(&ns_file, CloneFlags::CLONE_NEWNET) {
        let _ = ready.send(Err(io::Error::from(e)));
        return;
    }
    drop(ns_file);
    let _ = ready.send(Ok(()));
    for reply in requests {
        let _ = reply.send(TcpStream::connect_timeout(&target, CONNECT_TIMEOUT));
    }
}

fn accept_loop(listener: TcpListener, connector: Sender<ConnectReply>, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = incoming else { continue };
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        if connector.send(reply_tx).is_err() {
            break;
        }
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("fwd-conn".to_string())
            .spawn(move || match reply_rx.recv() {
                Ok(Ok(upstream)) => pump(client, upstream, &shared),
                Ok(Err(e)) => tracing::debug!(error = %e, "forwarder: upstream connect failed"),
                Err(_) => {}
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "forwarder: could not start a connection thread");
        }
    }
}

/// Copies both ways until both directions end, then forgets the connection.
fn pump(client: TcpStream, upstream: TcpStream, shared: &Shared) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    if let Ok(mut open) = shared.open.lock() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if let (Ok(c3), Ok(u3)) = (client.try_clone(), upstream.try_clone()) {
            open.insert(id, (c3, u3));
        }
    }
    let back = std::thread::Builder::new()
        .name("fwd-copy".to_string())
        .spawn(move || copy_then_close(u2, c2));
    copy_then_close(client, upstream);
    if let Ok(t) = back {
        let _ = t.join();
    }
    if let Ok(mut open) = shared.open.lock() {
        open.remove(&id);
    }
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
