//! The agent's gRPC API as the plugin uses it, with failures mapped to CNI error codes:
//! unreachable or transiently failing agent -> 11 (try again later), anything else -> 100.
//!
//! A node with no room for another pod (the agent answers RESOURCE_EXHAUSTED: its pod CIDR or its
//! endpoint map is full) is also 11, with its own message ("no room for another pod on this node"): the
//! condition clears as pods leave the node, which is what the spec's "try again later" describes, and a
//! runtime that retries on 11 then succeeds without anyone's help. The message, not a new code, tells it
//! apart from an agent that is down: a plugin-specific code (100+) would tell runtimes to give up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use novanet_api::error_chain;
use novanet_api::v1::agent_client::AgentClient;
use novanet_api::v1::{
    AddEndpointRequest, AddEndpointResponse, Attachment, CheckEndpointRequest,
    CheckEndpointResponse, DelEndpointRequest, DelEndpointResponse, GarbageCollectRequest,
    GarbageCollectResponse, PodRef, StatusRequest, StatusResponse,
};
use tonic::transport::Channel;

use crate::error::{CniError, ErrorCode};

pub struct Agent {
    client: AgentClient<Channel>,
    socket: PathBuf,
}

impl Agent {
    /// Connects to the agent's socket; a missing socket or refused connection is code 11.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, CniError> {
        let client = novanet_api::connect_unix(socket, timeout)
            .await
            .map_err(|e| {
                CniError::new(
                    ErrorCode::TryAgainLater,
                    format!("NovaNet agent is not reachable at {}", socket.display()),
                )
                .with_details(error_chain(&e))
            })?;
        Ok(Self {
            client,
            socket: socket.to_path_buf(),
        })
    }

    pub async fn add_endpoint(
        &mut self,
        req: AddEndpointRequest,
    ) -> Result<AddEndpointResponse, CniError> {
        let res = self.client.add_endpoint(req).await;
        self.answer("AddEndpoint", res)
    }

    pub async fn del_endpoint(
        &mut self,
        attachment: Attachment,
    ) -> Result<DelEndpointResponse, CniError> {
        let res = self
            .client
            .del_endpoint(DelEndpointRequest {
                attachment: Some(attachment),
            })
            .await;
        self.answer("DelEndpoint", res)
    }

    pub async fn check_endpoint(
        &mut self,
        attachment: Attachment,
    ) -> Result<CheckEndpointResponse, CniError> {
        let res = self
            .client
            .check_endpoint(CheckEndpointRequest {
                attachment: Some(attachment),
            })
            .await;
        self.answer("CheckEndpoint", res)
    }

    pub async fn garbage_collect(
        &mut self,
        valid: Vec<Attachment>,
    ) -> Result<GarbageCollectResponse, CniError> {
        let res = self
            .client
            .garbage_collect(GarbageCollectRequest { valid })
            .await;
        self.answer("GarbageCollect", res)
    }

    pub async fn status(&mut self) -> Result<StatusResponse, CniError> {
        let res = self.client.status(StatusRequest {}).await;
        self.answer("Status", res)
    }

    fn answer<T>(
        &self,
        rpc: &str,
        res: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, CniError> {
        res.map(tonic::Response::into_inner)
            .map_err(|status| status_to_error(rpc, &self.socket, &status))
    }
}

pub fn attachment(container_id: &str, ifname: &str) -> Attachment {
    Attachment {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
    }
}

pub fn pod_ref(pod: &crate::env::PodArgs) -> PodRef {
    PodRef {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
    }
}

/// gRPC codes that describe a passing condition (agent starting, overloaded, pool momentarily full)
/// become 11 so the runtime retries; the rest are the agent refusing the request (100).
fn status_to_error(rpc: &str, socket: &Path, status: &tonic::Status) -> CniError {
    use tonic::Code;
    let transient = matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::FailedPrecondition
    );
    let code = if transient {
        ErrorCode::TryAgainLater
    } else {
        ErrorCode::AgentRejected
    };
    let msg = if status.code() == Code::ResourceExhausted {
        format!("no room for another pod on this node: {}", status.message())
    } else {
        format!("agent {rpc} failed: {}", status.message())
    };
    CniError::new(code, msg).with_details(format!(
        "grpc code {:?} from agent at {}",
        status.code(),
        socket.display()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn transient_grpc_codes_mean_try_again_later() {
        let socket = Path::new("/run/novanet/novanet.sock");
        for status in [
            tonic::Status::unavailable("starting"),
            tonic::Status::resource_exhausted("pool full"),
            tonic::Status::failed_precondition("not ready"),
            tonic::Status::deadline_exceeded("slow"),
        ] {
            assert_eq!(
                status_to_error("AddEndpoint", socket, &status).code,
                ErrorCode::TryAgainLater
            );
        }
        let full = status_to_error(
            "AddEndpoint",
            socket,
            &tonic::Status::resource_exhausted("pod CIDR 10.244.1.0/24 is exhausted"),
        );
        assert_eq!(full.code, ErrorCode::TryAgainLater);
        assert!(
            full.msg.starts_with("no room for another pod on this node")
                && full.msg.contains("10.244.1.0/24"),
            "{full:?}"
        );
        for status in [
            tonic::Status::invalid_argument("bad"),
            tonic::Status::internal("bug"),
        ] {
            let err = status_to_error("AddEndpoint", socket, &status);
            assert_eq!(err.code, ErrorCode::AgentRejected);
            assert!(err.msg.contains("AddEndpoint"));
        }
    }

    #[tokio::test]
    async fn missing_socket_is_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let err = Agent::connect(&dir.path().join("nope.sock"), Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::TryAgainLater);
        assert!(err.msg.contains("nope.sock"));
    }
}
