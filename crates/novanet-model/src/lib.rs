//! Pure node-local logic with no IO: address management, the endpoint table, security identities
//! ([`identity`]) and the NetworkPolicy compiler ([`policy`]). Service tables join here later, with the
//! same rule.
//!
//! Architecture invariant: nothing in this crate touches the network, files, clocks or the kernel. The
//! agent persists [`EndpointTable`] through its serde form and mirrors it into eBPF maps; tests here
//! exercise every rule without either.

pub mod endpoints;
pub mod identity;
pub mod ipam;
mod mac;
pub mod policy;

pub use identity::{IdentityLabels, IdentityTable};
pub use endpoints::{Added, AttachmentId, PersistedTable, Endpoint, EndpointTable, NewEndpoint, PodRef, TableError};
pub use ipam::{Ipam, IpamError};
pub use mac::format_mac;
