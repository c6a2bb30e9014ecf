//! Packet parsing. Only what the programs need: the Ethernet header, the IPv4 addresses and, for
//! unfragmented packets without IP options, the conntrack tuple (TCP/UDP/SCTP ports, TCP flags, ICMP
//! type and echo identifier) and, for ICMP errors, the tuple of the datagram they are about.
//!
//! Fragments and packets with IP options keep ports 0 in their tuple (their L4 header is not at a constant
//! offset, or not there at all): policy judges them as port 0 of their protocol.

use aya_ebpf::programs::TcContext;

/// `ETH_P_IP` as it sits in the frame (big endian).
const ETH_P_IP_BE: [u8; 2] = [0x08, 0x00];

/// Ethernet header. Byte arrays only, so it has alignment 1 and can sit at any packet offset.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

/// IPv4 header without options. Byte arrays only (alignment 1): the IP header starts at offset 14.
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

const ETH_HLEN: usize = core::mem::size_of::<EthHdr>();
const IPV4_HLEN: usize = core::mem::size_of::<Ipv4Hdr>();
/// Ethernet + IPv4 (no options) + the two TCP/UDP ports.
const L4_HEADERS: usize = ETH_HLEN + IPV4_HLEN + 4;
/// Ethernet + IPv4 (no options) + the ICMP header up to the echo identifier and sequence.
const ICMP_HDR_END: usize = ETH_HLEN + IPV4_HLEN + 8;
/// Ethernet + IPv4 (no options) + TCP up to its flags byte (offset 13).
const TCP_FLAGS_END: usize = ETH_HLEN + IPV4_HLEN + 14;
/// Ethernet + IPv4 + ICMP error header + the embedded IPv4 header (no options) + 8 bytes of its L4.
const ICMP_INNER_END: usize = ICMP_HDR_END + IPV4_HLEN + 8;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
const _: () = assert!(ETH_HLEN == 14 && IPV4_HLEN == 20 && ICMP_INNER_END == 70);

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// More-fragments flag and fragment offset of `frag_off` (big endian), i.e. "this is a fragment".
const IP_FRAGMENT_MASK: u16 = 0x3fff;

/// The pod-facing fields of a TCP/UDP flow, as they sit in the packet (network byte order).
#[derive(Clone, Copy)]
pub struct Ports {
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Whether the packet may open a flow: UDP always, TCP only for a SYN without ACK (a connection
    /// request, never a server's answer).
    pub opens: bool,
}

/// A flow's 5-tuple as conntrack keys it (network byte order). ICMP echo: the identifier as both ports;
/// other protocols without ports: 0.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    /// The same flow seen from the other end.
    #[inline(always)]
    pub fn reversed(&self) -> Self {
        Tuple { saddr: self.daddr, daddr: self.saddr, sport: self.dport, dport: self.sport, proto: self.proto }
    }
}

/// An Ethernet frame carrying IPv4, with its first `ETH_HLEN + IPV4_HLEN` bytes checked to be in bounds.
pub struct Ipv4Frame {
    eth: *mut EthHdr,
    /// Source address in network byte order.
    pub saddr: u32,
    /// Destination address in network byte order (as the `EndpointKey` stores it).
    pub daddr: u32,
    /// Whether the IPv4 header is 20 bytes and the packet is not a fragment.
    pub plain: bool,
    /// The ports of a plain TCP or UDP packet.
    pub ports: Option<Ports>,
    /// The conntrack tuple.
    pub tuple: Tuple,
    /// TCP flags (0 when not TCP or not readable).
    pub tcp_flags: u8,
    /// The port policy keys on: the tuple's destination port for TCP, UDP and SCTP, else 0.
    pub policy_dport: u16,
    /// For an ICMP error (destination unreachable, time exceeded, parameter problem) sent back to the
    /// sender of a datagram: that datagram's tuple (its source is this packet's destination).
    pub icmp_inner: Option<Tuple>,
}

impl Ipv4Frame {
    /// Parses the frame in `ctx`. `None` for anything that is not a complete IPv4 header after Ethernet
    /// (other ethertypes, VLAN tags, truncated frames, a version field other than 4).
    #[inline(always)]
    pub fn parse(ctx: &TcContext) -> Option<Self> {
        const HEADERS: usize = ETH_HLEN + IPV4_HLEN;
        let mut start = ctx.data();
        let mut end = ctx.data_end();
        // One check on `start` covers both headers: the verifier records a range of 34 on `start` and
        // every pointer below is derived from it with a constant offset inside that range.
        let len = ctx.len();
        if start + HEADERS > end
            || (len >= L4_HEADERS as u32 && start + L4_HEADERS > end)
            || (len >= ICMP_HDR_END as u32 && start + ICMP_HDR_END > end)
            || (len >= TCP_FLAGS_END as u32 && start + TCP_FLAGS_END > end)
            || (len >= ICMP_INNER_END as u32 && start + ICMP_INNER_END > end)
        {
            // Too short, or the headers (up to an ICMP error's inner ports) are not all in the linear part of
            // the skb: pull in what the frame has. The helper invalidates packet pointers, so re-read them.
            let want = if len >= ICMP_INNER_END as u32 {
                ICMP_INNER_END
            } else if len >= TCP_FLAGS_END as u32 {
                TCP_FLAGS_END
            } else if len >= ICMP_HDR_END as u32 {
                ICMP_HDR_END
            } else if len >= L4_HEADERS as u32 {
                L4_HEADERS
            } else {
                HEADERS
            };
            if ctx.len() < HEADERS as u32 || ctx.pull_data(want as u32).is_err() {
                return None;
            }
            start = ctx.data();
            end = ctx.data_end();
            if start + HEADERS > end {
                return None;
            }
        }
        let eth = start as *mut EthHdr;
        let ip = (start + ETH_HLEN) as *const Ipv4Hdr;
        // SAFETY: both headers lie within [data, data_end) (checked above) and have alignment 1.
        let (ether_type, version_ihl, frag_off, proto, saddr, daddr) =
            unsafe { ((*eth).ether_type, (*ip).version_ihl, (*ip).frag_off, (*ip).protocol, (*ip).saddr, (*ip).daddr) };
        if ether_type != ETH_P_IP_BE || version_ihl >> 4 != 4 {
            return None;
        }
        let plain = version_ihl & 0x0f == 5 && u16::from_be_bytes(frag_off) & IP_FRAGMENT_MASK == 0;
        let (saddr, daddr) = (u32::from_ne_bytes(saddr), u32::from_ne_bytes(daddr));
        let mut frame = Self {
            eth,
            saddr,
            daddr,
            plain,
            ports: None,
            tuple: Tuple { saddr, daddr, sport: 0, dport: 0, proto },
            tcp_flags: 0,
            policy_dport: 0,
            icmp_inner: None,
        };
        if !plain {
            return Some(frame);
        }
        let has_ports = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
        // Each further read is guarded by its own constant-offset check on `start` itself, so the verifier
        // knows exactly that many bytes are in bounds on that path.
        if has_ports && start + L4_HEADERS <= end {
            let l4 = (start + HEADERS) as *const [u8; 4];
            // SAFETY: bytes HEADERS..HEADERS + 4 lie within [data, data_end) (checked just above).
            let p = unsafe { *l4 };
            let (sport, dport) = (u16::from_ne_bytes([p[0], p[1]]), u16::from_ne_bytes([p[2], p[3]]));
            frame.tuple.sport = sport;
            frame.tuple.dport = dport;
            frame.policy_dport = dport;
            let mut opens = proto == IPPROTO_UDP;
            if proto == IPPROTO_TCP && start + TCP_FLAGS_END <= end {
                // SAFETY: byte TCP_FLAGS_END - 1 lies within [data, data_end) (checked just above).
                let flags = unsafe { *((start + TCP_FLAGS_END - 1) as *const u8) };
                frame.tcp_flags = flags;
                opens = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            }
            if proto != IPPROTO_SCTP {
                frame.ports = Some(Ports { proto, sport, dport, opens });
            }
        } else if proto == IPPROTO_ICMP && start + ICMP_HDR_END <= end {
            let icmp = (start + HEADERS) as *const [u8; 8];
            // SAFETY: bytes HEADERS..HEADERS + 8 lie within [data, data_end) (checked just above).
            let h = unsafe { *icmp };
            let kind = h[0];
            if kind == ICMP_ECHO_REQUEST || kind == ICMP_ECHO_REPLY {
                let id = u16::from_ne_bytes([h[4], h[5]]);
                frame.tuple.sport = id;
                frame.tuple.dport = id;
            } else if (kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED || kind == ICMP_PARAMETER_PROBLEM)
                && start + ICMP_INNER_END <= end
            {
                let inner = (start + ICMP_HDR_END) as *const [u8; IPV4_HLEN + 8];
                // SAFETY: bytes ICMP_HDR_END..ICMP_INNER_END lie within [data, data_end) (checked just above).
                let b = unsafe { *inner };
                frame.icmp_inner = inner_tuple(&b, daddr);
            }
        }
        Some(frame)
    }
    /// Rewrites the Ethernet addresses.
    ///
    /// Byte-wise volatile stores: a plain array assignment may become a call to a `memcpy` loop in `.text`
    /// (a bpf-to-bpf call taking a packet pointer), which is slower and needs a newer verifier.
    #[inline(always)]
    pub fn set_macs(&mut self, dst: [u8; 6], src: [u8; 6]) {
        let eth = self.eth.cast::<u8>();
        let mut i = 0;
        while i < 6 {
            // SAFETY: `eth` was bounds-checked for 34 bytes in `parse` (we write bytes 0..12) and tc programs
            // may write packet data directly; no helper that could move packet data ran since (map lookups
            // do not). The loop has a constant trip count and is fully unrolled.
            unsafe {
                core::ptr::write_volatile(eth.add(i), dst[i]);
                core::ptr::write_volatile(eth.add(6 + i), src[i]);
            }
            i += 1;
        }
    }
}

/// The tuple of the datagram embedded in an ICMP error (its IPv4 header without options and 8 bytes of its
/// L4 header), if the error goes back to that datagram's sender (`error_daddr`); `None` otherwise.
#[inline(always)]
fn inner_tuple(b: &[u8; IPV4_HLEN + 8], error_daddr: u32) -> Option<Tuple> {
    if b[0] != 0x45 {
        return None;
    }
    let proto = b[9];
    let saddr = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]);
    let daddr = u32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
    if saddr != error_daddr {
        return None;
    }
    let l4 = IPV4_HLEN;
    let (sport, dport) = if proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP {
        (u16::from_ne_bytes([b[l4], b[l4 + 1]]), u16::from_ne_bytes([b[l4 + 2], b[l4 + 3]]))
    } else if proto == IPPROTO_ICMP && (b[l4] == ICMP_ECHO_REQUEST || b[l4] == ICMP_ECHO_REPLY) {
        let id = u16::from_ne_bytes([b[l4 + 4], b[l4 + 5]]);
        (id, id)
    } else {
        (0, 0)
    };
    Some(Tuple { saddr, daddr, sport, dport, proto })
}
