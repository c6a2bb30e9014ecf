//! Map layouts. Each map has a name constant (the pinned name) and its key/value types.

/// Local endpoints of this node: pod IPv4 -> how to deliver to it.
pub const ENDPOINTS_MAP: &str = "NOVANET_ENDPOINTS";
/// Per-CPU datapath counters, indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "NOVANET_COUNTERS";
/// LRU map of the TCP/UDP flows between two local pods that the node's stack delivered (kube-proxy's
/// Service DNAT to a pod of the same node, a hostPort): the tc egress program of the server pod's host veth
/// records the whole flow (both ends, as the stack delivered it) when the stack hands it a packet that
/// opens a flow. The server's answers must then go through the stack too, so conntrack can undo the
/// translation: redirecting them straight to the client would deliver a reply from the backend's own
/// address, which the client drops. A packet that opens the same flow directly (a direct connection reusing
/// the ports) removes the entry; entries expire after [`NatFlowSeen`]'s idle timeouts.
pub const NAT_FLOWS_MAP: &str = "NOVANET_NAT_FLOWS";

/// Layout versions of the pinned maps. Bump a map's version whenever its type, key, value or size changes:
/// the agent pins version 1 under the map's name and version N > 1 under `<name>_v<N>`, so an upgraded
/// agent never adopts a map of another layout; it creates the new version beside the old, migrates what
/// can be migrated before its programs replace the old ones, and unpins the old version afterwards.
pub const ENDPOINTS_MAP_VERSION: u32 = 1;
/// v1: 8 slots. v2: 32 slots (room for the drop reasons of policy, tunnels and services).
pub const COUNTERS_MAP_VERSION: u32 = 2;
/// v1: (pod address, pod port, protocol) -> u32, recorded at the client's ingress. v2: [`NatFlowKey`] ->
/// [`NatFlowSeen`], recorded at the server's egress (whole flow, with expiry).
pub const NAT_FLOWS_MAP_VERSION: u32 = 2;

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

/// Key of [`NAT_FLOWS_MAP`]: a flow between two local pods as the stack delivered it to the server pod
/// (after any DNAT). Addresses and ports in network byte order, as they sit in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatFlowKey {
    /// The pod that opened the flow.
    pub client_ip: u32,
    /// The pod the stack delivered it to.
    pub server_ip: u32,
    pub client_port: u16,
    pub server_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Explicit padding; keep zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<NatFlowKey>() == 16);

/// Value of [`NAT_FLOWS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatFlowSeen {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the flow was last seen, refreshed at most every
    /// [`NatFlowSeen::REFRESH_NS`].
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<NatFlowSeen>() == 8);

impl NatFlowSeen {
    /// A TCP flow idle this long is forgotten (conntrack keeps established flows for days; a stale entry
    /// is harmless because a direct connection reusing the ports removes it).
    pub const TCP_IDLE_NS: u64 = 24 * 3600 * 1_000_000_000;
    /// A UDP flow idle this long is forgotten (conntrack's UDP stream timeout is 120 s).
    pub const UDP_IDLE_NS: u64 = 300 * 1_000_000_000;
    /// The datapath rewrites `last_seen_ns` at most this often per flow.
    pub const REFRESH_NS: u64 = 1_000_000_000;

    /// The idle timeout of a flow of IP protocol `proto`.
    pub const fn idle_ns(proto: u8) -> u64 {
        if proto == 6 { Self::TCP_IDLE_NS } else { Self::UDP_IDLE_NS }
    }
}

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
    /// Packets a pod sent with a source address that is not its own (the endpoint of the interface it came
    /// from), dropped.
    DropSpoofedSource = 6,
    /// Packets the node's stack delivered to a local pod (tc egress of its host veth).
    DeliverFromStack = 7,
    /// New flows to a local pod that no policy rule of the pod allows (the pod is ingress-isolated).
    DropPolicyIngress = 8,
    /// New flows from a local pod that no policy rule of the pod allows (the pod is egress-isolated).
    DropPolicyEgress = 9,
    /// New flows that policy allowed and conntrack now tracks.
    CtNew = 10,
    /// Packets of a tracked flow, in its original direction.
    CtEstablished = 11,
    /// Packets of a tracked flow, in its reply direction.
    CtReply = 12,
    /// ICMP errors about a tracked flow.
    CtRelated = 13,
    /// New flows allowed but not tracked because the conntrack insert failed (map pressure).
    CtInsertFailed = 14,
}

impl Counter {
    /// Number of counter slots in [`COUNTERS_MAP`] (more than there are counters: room to add some
    /// without a new map layout).
    pub const COUNT: u32 = 32;
    /// All counters, for userspace readers, in slot order.
    pub const ALL: [Counter; 15] = [
        Counter::RedirectLocal,
        Counter::PassToStack,
        Counter::PassNonIpv4,
        Counter::DropEndpointDeleting,
        Counter::DropRedirectFailed,
        Counter::PassLocalViaStack,
        Counter::DropSpoofedSource,
        Counter::DeliverFromStack,
        Counter::DropPolicyIngress,
        Counter::DropPolicyEgress,
        Counter::CtNew,
        Counter::CtEstablished,
        Counter::CtReply,
        Counter::CtRelated,
        Counter::CtInsertFailed,
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
            Counter::DropSpoofedSource => "drop_spoofed_source",
            Counter::DeliverFromStack => "deliver_from_stack",
            Counter::DropPolicyIngress => "drop_policy_ingress",
            Counter::DropPolicyEgress => "drop_policy_egress",
            Counter::CtNew => "ct_new",
            Counter::CtEstablished => "ct_established",
            Counter::CtReply => "ct_reply",
            Counter::CtRelated => "ct_related",
            Counter::CtInsertFailed => "ct_insert_failed",
        }
    }
}

// `ALL` lists every slot in order, once, and fits the map.
const _: () = {
    assert!(Counter::ALL.len() as u32 <= Counter::COUNT);
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as u32 == i as u32);
        i += 1;
    }
};

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
    unsafe impl aya::Pod for super::NatFlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatFlowSeen {}
}
