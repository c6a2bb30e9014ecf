//! Connecting a tonic client to the agent's unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::v1::agent_client::AgentClient;

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/novanet/novanet.sock";

/// Opens a client to the agent listening on `socket`. Fails fast (within `timeout`) when no agent listens.
pub async fn connect_unix(
    socket: &Path,
    timeout: Duration,
) -> Result<AgentClient<Channel>, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is required by tonic but ignored: the connector below always dials the socket.
    let channel = Endpoint::from_static("http://novanet.agent")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(AgentClient::new(channel))
}
