//! The `api` subsystem: the agent's gRPC service on its unix socket. Started last, so an agent that
//! answers has every other subsystem behind it; stopped first, letting open calls finish for at most
//! [`GRACEFUL_STOP`] so the rest of the shutdown (the uninstall cleanup included) always runs inside the
//! pod's termination grace period.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use super::{Health, Subsystem};
use crate::grpc::{self, AgentService};

/// How long open API calls may delay the exit after the stop signal.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(5);

pub struct Api {
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    serving: Arc<AtomicBool>,
}

/// Resolves when the server ends on its own (an error); `main.rs` then shuts the agent down.
pub type Exited = oneshot::Receiver<anyhow::Result<()>>;

impl Api {
    /// Binds the socket (replacing a stale one) and serves in the background.
    pub fn start(service: AgentService, socket: &Path) -> anyhow::Result<(Self, Exited)> {
        let listener = grpc::bind(socket)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (exited_tx, exited) = oneshot::channel();
        let serving = Arc::new(AtomicBool::new(true));
        let flag = serving.clone();
        let server = tokio::spawn(async move {
            let result = grpc::serve_on(service, listener, async {
                let _ = stopped.await;
            })
            .await;
            flag.store(false, Ordering::Relaxed);
            let _ = exited_tx.send(result);
        });
        Ok((Api { stop: Some(stop), server: Some(server), serving }, exited))
    }
}

#[tonic::async_trait]
impl Subsystem for Api {
    fn name(&self) -> &'static str {
        "api"
    }

    fn health(&self) -> Health {
        if self.serving.load(Ordering::Relaxed) {
            Health::ready()
        } else {
            Health::not_ready("the API server has stopped")
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut server) = self.server.take() else { return };
        if tokio::time::timeout(GRACEFUL_STOP, &mut server).await.is_err() {
            warn!("API calls still open {GRACEFUL_STOP:?} after the stop signal; stopping anyway");
            server.abort();
        }
    }
}
