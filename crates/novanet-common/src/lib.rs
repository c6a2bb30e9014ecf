//! Map keys, map values and constants shared by NovaNet's eBPF programs and its userspace.
//!
//! Invariants:
//! - Every type here is `#[repr(C)]`, has explicit padding fields, and a `const` size assert: the eBPF
//!   object and the agent must agree byte for byte, and a pinned map outlives any one agent binary.
//!   **Do not change the offset of an existing field**; add fields only at the end, into padding, or
//!   in a new map version.
//! - Addresses are stored in network byte order (as they sit in the packet), so the datapath never swaps.
//! - `no_std`, no allocation: this crate is compiled for `bpfel-unknown-none` too.
#![no_std]

pub mod maps;
pub mod policy;

pub use maps::*;
pub use policy::*;

/// Directory under the bpffs root where NovaNet pins its maps and programs.
pub const PIN_DIR: &str = "novanet";

/// Name of the tc program on the host side of each pod's veth (ingress = frames from the pod). It is also
/// the name of its pin under [`PIN_DIR`] and of its tc filter.
pub const POD_INGRESS_PROG: &str = "novanet_pod_ingress";

/// Name of the tc program on tc egress of each pod's host-side veth (frames the node's stack delivers to
/// the pod); also its pin and tc filter name.
pub const POD_EGRESS_PROG: &str = "novanet_pod_egress";

/// Name of the tc program on tc egress of the node's own interfaces towards other nodes (the underlay):
/// judges pods' egress for flows the node's stack translated (Service addresses) before they leave.
pub const NODE_EGRESS_PROG: &str = "novanet_node_egress";

/// The link-local gateway every pod routes through. Each pod has a permanent neighbour entry for it that
/// points at the MAC of its host-side veth, so pods never ARP for their gateway.
pub const GATEWAY_V4: [u8; 4] = [169, 254, 1, 1];

/// Maximum number of local endpoints one node can hold in its eBPF maps.
pub const MAX_ENDPOINTS: u32 = 65_536;

/// Size of [`NAT_FLOWS_MAP`] (LRU: the least recently used flows are forgotten first when it is full).
pub const MAX_NAT_FLOWS: u32 = 65_536;

/// Security identity of an endpoint that has not been given one yet.
pub const IDENTITY_UNKNOWN: u32 = 0;
