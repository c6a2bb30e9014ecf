//! The agent's gRPC API: generated protobuf types and tonic client/server, plus the unix-socket
//! connector every client uses.
//!
//! Invariant: this is the only wire contract between `novanet-cni`/`novanetctl` and the agent; fields are
//! only ever added (protobuf numbering), so an upgraded agent keeps serving an older plugin.

pub mod v1 {
    tonic::include_proto!("novanet.v1");
}

mod connect;
mod error_chain;

pub use connect::{DEFAULT_SOCKET, connect_unix};
pub use error_chain::error_chain;
