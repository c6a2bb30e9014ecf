//! Map layouts. Each map has a name constant (the pinned name) and its key/value types.

/// Local endpoints of this node: pod IPv4 -> how to deliver to it.
pub const ENDPOINTS_MAP: &str = "NOVANET_ENDPOINTS";
/// Per-CPU datapath counters, indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "NOVANET_COUNTERS";
/// LRU set of the (pod address, pod port, protocol) of TCP/UDP flows pods sent to non-local addresses,
/// which the node's stack may translate (kube-proxy's Service DNAT). A packet from a local pod answering
/// such a flow goes through the stack too, so conntrack can undo the translation: redirecting it straight
/// to the client pod would deliver a reply from the backend's address, which the client drops.
pub const NAT_FLOWS_MAP: &str = "NOVANET_NAT_FLOWS";

/// Key of [`ENDPOINTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// Pod IPv4 address, network byte order (`u32::from_ne_bytes(ip.octets())`).
    pub ip: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 4);

impl EndpointKey {
    /// The key of an IPv4 address given as its octets (`Ipv4Addr::octets()`), in network byte order.
    pub const fn from_octets(octets: [u8; 4]) -> Self {
        EndpointKey { ip: u32::from_ne_bytes(octets) }
    }

    /// The address octets of this key (`Ipv4Addr::from(key.octets())`).
    pub const fn octets(self) -> [u8; 4] {
        self.ip.to_ne_bytes()
    }
}

/// Key of [`NAT_FLOWS_MAP`]: the pod side of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Pod IPv4 address, network byte order.
    pub ip: u32,
    /// Pod's TCP/UDP port, network byte order (`u16::from_ne_bytes` of the packet bytes).
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Explicit padding; keep zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 8);

/// Value of [`ENDPOINTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// ifindex of the host-side veth of the pod (in the node's network namespace).
    pub host_ifindex: u32,
    /// Numeric security identity (0 until identities exist); the policy program keys on this.
    pub identity: u32,
    /// MAC of the pod's interface (destination MAC of frames delivered to the pod).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (source MAC of frames delivered to the pod: the pod's gateway MAC).
    pub host_mac: [u8; 6],
    /// [`EndpointInfo::FLAG_*`] bits.
    pub flags: u32,
    /// Explicit padding; keep zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 28);

impl EndpointInfo {
    /// The endpoint is being removed: the datapath treats it as absent.
    pub const FLAG_DELETING: u32 = 1;
}

/// Indices of [`COUNTERS_MAP`]. Each counter slot is a [`CounterValue`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets from a pod redirected straight to another local pod.
    RedirectLocal = 0,
    /// Packets from a pod handed to the node's stack (pod to node, pod to outside).
    PassToStack = 1,
    /// Packets that were not IPv4 or were too short to parse, passed unchanged.
    PassNonIpv4 = 2,
    /// Packets dropped because the destination endpoint is being deleted.
    DropEndpointDeleting = 3,
    /// Packets whose redirect failed (the target interface is gone).
    DropRedirectFailed = 4,
    /// Packets for a local pod handed to the node's stack instead of redirected: answers to flows the stack
    /// may have translated (see [`NAT_FLOWS_MAP`]), IP fragments and packets with IP options.
    PassLocalViaStack = 5,
}

impl Counter {
    /// Number of counter slots in [`COUNTERS_MAP`].
    pub const COUNT: u32 = 8;
    /// All counters, for userspace readers.
    pub const ALL: [Counter; 6] = [
        Counter::RedirectLocal,
        Counter::PassToStack,
        Counter::PassNonIpv4,
        Counter::DropEndpointDeleting,
        Counter::DropRedirectFailed,
        Counter::PassLocalViaStack,
    ];

    /// Stable metric-style name.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RedirectLocal => "redirect_local",
            Counter::PassToStack => "pass_to_stack",
            Counter::PassNonIpv4 => "pass_non_ipv4",
            Counter::DropEndpointDeleting => "drop_endpoint_deleting",
            Counter::DropRedirectFailed => "drop_redirect_failed",
            Counter::PassLocalViaStack => "pass_local_via_stack",
        }
    }
}

/// One per-CPU counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<CounterValue>() == 16);

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: all of these are repr(C), Copy, contain only integers and byte arrays, and have explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CounterValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
}
