//! Policy and connection-tracking map layouts: the IP -> identity cache, the per-endpoint policy LPM
//! tries, the conntrack table, the policy switch and the per-endpoint verdict counters.
//!
//! How the datapath decides (see `docs/architecture.md`, "Policy"):
//! 1. A packet whose flow is in [`CT_MAP`] (either direction, not expired) passes without a policy
//!    lookup; a TCP SYN on an entry that closed re-opens it as a new connection.
//! 2. A new flow is judged per direction of each *local* end that is isolated in that direction
//!    ([`IpcacheValue::FLAG_INGRESS_ISOLATED`], [`IpcacheValue::FLAG_EGRESS_ISOLATED`]): the local end
//!    `endpoint`, the other end's identity (from [`IPCACHE_MAP`], [`IDENTITY_WORLD`] when absent) and its
//!    CIDR class (from [`POLICY_CIDR_MAP`], if any) are looked up in [`POLICY_MAP`] as three keys: the
//!    identity, the CIDR class, and [`PEER_ANY`]. Any hit allows. The local end's own identity is never
//!    taken from the packet's source address alone: a pod's source was checked against the interface it
//!    came from.
//! 3. Traffic from the node itself ([`IDENTITY_HOST`]) is always allowed (kubelet probes).
//!
//! All addresses and ports in network byte order, as in the packet, except where a field says otherwise.

/// IPv4 address -> security identity of every address the node must judge: every pod of the cluster
/// (local ones carry their isolation flags), the nodes, Service addresses. Owned by the policy subsystem.
pub const IPCACHE_MAP: &str = "NOVANET_IPCACHE";
/// Per-endpoint allowed (peer, protocol, port range, direction): LPM trie of [`PolicyKey`] -> [`PolicyValue`].
pub const POLICY_MAP: &str = "NOVANET_POLICY";
/// Per-endpoint CIDR peers (`ipBlock`): LPM trie of [`CidrKey`] -> [`CidrValue`], the most specific
/// prefix giving the class the [`POLICY_MAP`] is keyed on.
pub const POLICY_CIDR_MAP: &str = "NOVANET_POLICY_CIDR";
/// Connection tracking: LRU hash of [`CtKey`] (the flow as its first packet had it) -> [`CtEntry`].
pub const CT_MAP: &str = "NOVANET_CT";
/// One-slot array: [`PolicyConfig`] (enforcement on/off, default deny, revision).
pub const POLICY_CONFIG_MAP: &str = "NOVANET_POLICY_CONFIG";
/// Per local endpoint and direction: verdict counters of new flows ([`VerdictKey`] -> [`VerdictValue`]).
pub const VERDICTS_MAP: &str = "NOVANET_VERDICTS";

pub const IPCACHE_MAP_VERSION: u32 = 1;
pub const POLICY_MAP_VERSION: u32 = 1;
pub const POLICY_CIDR_MAP_VERSION: u32 = 1;
pub const CT_MAP_VERSION: u32 = 1;
pub const POLICY_CONFIG_MAP_VERSION: u32 = 1;
pub const VERDICTS_MAP_VERSION: u32 = 1;

pub const MAX_IPCACHE: u32 = 262_144;
pub const MAX_POLICY_ENTRIES: u32 = 262_144;
pub const MAX_POLICY_CIDRS: u32 = 65_536;
pub const MAX_CT: u32 = 131_072;
pub const MAX_VERDICTS: u32 = 4 * 65_536;

/// Reserved identities (below [`IDENTITY_CLUSTER_MIN`]). 0 is [`crate::IDENTITY_UNKNOWN`].
/// The node's own addresses (and its pod gateway): traffic from it to its pods is always allowed.
pub const IDENTITY_HOST: u32 = 1;
/// Any address the cache does not know: outside the cluster.
pub const IDENTITY_WORLD: u32 = 2;
/// A pod the agent manages no labels for (no Pod object yet).
pub const IDENTITY_UNMANAGED: u32 = 3;
/// Another node's addresses.
pub const IDENTITY_REMOTE_NODE: u32 = 4;
/// The kube-apiserver's addresses.
pub const IDENTITY_KUBE_APISERVER: u32 = 5;
/// A Service address the node's stack translates (kube-proxy): a pod's egress towards it is judged after
/// the translation, where the flow leaves the node or reaches the backend pod.
pub const IDENTITY_SERVICE: u32 = 6;
/// Identities allocated from label sets: `IDENTITY_CLUSTER_MIN..=IDENTITY_CLUSTER_MAX` (24 bits, so an
/// identity fits a VXLAN VNI).
pub const IDENTITY_CLUSTER_MIN: u32 = 256;
pub const IDENTITY_CLUSTER_MAX: u32 = 0x00ff_ffff;

/// Peer value of a [`PolicyKey`] that matches every peer (a rule with an empty `from`/`to`).
pub const PEER_ANY: u32 = u32::MAX;
/// Peer values of CIDR classes: `PEER_CIDR_CLASS | class`, class from [`CidrValue`].
pub const PEER_CIDR_CLASS: u32 = 0x8000_0000;

/// [`PolicyKey::direction`] / [`CidrKey::direction`] / [`VerdictKey::direction`].
pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

/// Value of [`IPCACHE_MAP`] (key: [`crate::EndpointKey`], the address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: u32,
    /// `FLAG_*` bits; the isolation flags are set on this node's own endpoints only.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<IpcacheValue>() == 8);

impl IpcacheValue {
    /// A local endpoint selected by an ingress policy (or default deny): new inbound flows need a rule.
    pub const FLAG_INGRESS_ISOLATED: u32 = 1;
    /// A local endpoint selected by an egress policy (or default deny): new outbound flows need a rule.
    pub const FLAG_EGRESS_ISOLATED: u32 = 2;
    /// The address is an endpoint of this node.
    pub const FLAG_LOCAL: u32 = 4;
}

/// Data of a [`POLICY_MAP`] key (the LPM trie key is `(prefix_len: u32, PolicyKey)`, aya's
/// `lpm_trie::Key`): the prefix length counts bits of these fields in order. `endpoint`, `peer` and
/// `direction` are always matched whole ([`PolicyKey::FIXED_BITS`]); `proto` adds 8 (absent: any protocol,
/// any port), `dport` up to 16 more (a port range is a few prefixes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The local endpoint's address (network byte order).
    pub endpoint: u32,
    /// Peer: an identity, [`PEER_ANY`], or `PEER_CIDR_CLASS | class`. **Big-endian** (LPM compares bytes).
    pub peer: [u8; 4],
    pub direction: u8,
    pub proto: u8,
    /// Destination port, big endian (as in the packet). For ingress, the local endpoint's port; for
    /// egress, the peer's.
    pub dport: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

impl PolicyKey {
    /// Bits of `endpoint`, `peer` and `direction`: always matched.
    pub const FIXED_BITS: u32 = 72;
    /// All bits: a single port of one protocol.
    pub const FULL_BITS: u32 = 96;
}

/// Value of [`POLICY_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    /// Which compiled rule allowed it (an index the agent maps back to policy names; flows and trace).
    pub rule: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);

/// Data of a [`POLICY_CIDR_MAP`] key (LPM, as for [`PolicyKey`]): prefix length = 64 + the CIDR's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidrKey {
    /// The local endpoint's address (network byte order).
    pub endpoint: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
    /// The peer address (network byte order).
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<CidrKey>() == 12);

impl CidrKey {
    /// Bits of `endpoint`, `direction` and padding: always matched.
    pub const FIXED_BITS: u32 = 64;
}

/// Value of [`POLICY_CIDR_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidrValue {
    /// The class (below `PEER_CIDR_CLASS`); the policy map's peer is `PEER_CIDR_CLASS | class`.
    pub class: u32,
}
const _: () = assert!(core::mem::size_of::<CidrValue>() == 4);

/// Key of [`CT_MAP`]: the flow as its first packet had it. ICMP echo uses the identifier as both ports,
/// so a reply's reversed tuple is the request's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

/// Value of [`CT_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` of the last packet (refreshed at most every [`CtEntry::REFRESH_NS`]).
    pub last_seen_ns: u64,
    pub created_ns: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// [`PolicyConfig::revision`] when the flow was judged.
    pub revision: u32,
    /// TCP flags seen in each direction (original, reply), OR-ed.
    pub tcp_flags_orig: u8,
    pub tcp_flags_reply: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<CtEntry>() == 32);

impl CtEntry {
    /// A TCP FIN or RST was seen: the entry expires after [`CtEntry::TCP_CLOSING_NS`] and a new SYN on
    /// it is a new connection.
    pub const FLAG_CLOSING: u32 = 1;
    /// The reply direction has been seen (TCP: SYN-ACK; UDP/ICMP: any answer).
    pub const FLAG_SEEN_REPLY: u32 = 2;
    /// Judged before the stack's translation (a Service address): the egress check happens where the
    /// translated flow leaves the node or reaches a local pod.
    pub const FLAG_DEFERRED: u32 = 4;

    pub const TCP_ESTABLISHED_NS: u64 = 6 * 3600 * 1_000_000_000;
    /// Until the reply is seen, and after FIN/RST.
    pub const TCP_SYN_NS: u64 = 60 * 1_000_000_000;
    pub const TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
    pub const UDP_NS: u64 = 60 * 1_000_000_000;
    pub const ICMP_NS: u64 = 30 * 1_000_000_000;
    pub const OTHER_NS: u64 = 60 * 1_000_000_000;
    pub const REFRESH_NS: u64 = 1_000_000_000;

    /// How long an entry of IP protocol `proto` with `flags` lives after its last packet.
    pub const fn lifetime_ns(proto: u8, flags: u32) -> u64 {
        match proto {
            6 => {
                if flags & Self::FLAG_CLOSING != 0 {
                    Self::TCP_CLOSING_NS
                } else if flags & Self::FLAG_SEEN_REPLY != 0 {
                    Self::TCP_ESTABLISHED_NS
                } else {
                    Self::TCP_SYN_NS
                }
            }
            17 | 132 => Self::UDP_NS,
            1 => Self::ICMP_NS,
            _ => Self::OTHER_NS,
        }
    }
}

/// The one value of [`POLICY_CONFIG_MAP`] (index 0). All zero (the state before any agent with policy ran):
/// no enforcement.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bumped on every policy change the agent applies.
    pub revision: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyConfig>() == 8);

impl PolicyConfig {
    /// Policy is enforced (the agent has written the caches and the policy maps at least once).
    pub const FLAG_ENFORCE: u32 = 1;
    /// Default deny: a local endpoint without an ipcache entry is isolated both ways.
    pub const FLAG_DEFAULT_DENY: u32 = 2;
}

/// Key of [`VERDICTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerdictKey {
    /// The local endpoint's address (network byte order).
    pub endpoint: u32,
    pub direction: u8,
    /// [`VerdictKey::ALLOWED`] or [`VerdictKey::DENIED`].
    pub verdict: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<VerdictKey>() == 8);

impl VerdictKey {
    pub const ALLOWED: u8 = 0;
    pub const DENIED: u8 = 1;
}

/// Value of [`VERDICTS_MAP`]: packets that needed a policy decision (no conntrack entry yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<VerdictValue>() == 16);

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: all of these are repr(C), Copy, contain only integers and byte arrays, and have explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::IpcacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CidrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CidrValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VerdictKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VerdictValue {}
}
