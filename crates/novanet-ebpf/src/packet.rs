//! Packet parsing. Only what the pod programs need: the Ethernet header, the IPv4 addresses and, for
//! unfragmented TCP/UDP without IP options, the ports.

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
/// Ethernet + IPv4 (no options) + TCP up to its flags byte (offset 13).
const TCP_FLAGS_END: usize = ETH_HLEN + IPV4_HLEN + 14;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const _: () = assert!(ETH_HLEN == 14 && IPV4_HLEN == 20);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
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
            || (len >= TCP_FLAGS_END as u32 && start + TCP_FLAGS_END > end)
        {
            // Too short, or the headers (up to TCP's flags) are not all in the linear part of the skb: pull
            // in what the frame has. The helper invalidates packet pointers, so re-read them.
            let want = if len >= TCP_FLAGS_END as u32 {
                TCP_FLAGS_END
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
        let (ether_type, version_ihl, frag_off, proto, saddr, daddr) = unsafe {
            ((*eth).ether_type, (*ip).version_ihl, (*ip).frag_off, (*ip).protocol, (*ip).saddr, (*ip).daddr)
        };
        if ether_type != ETH_P_IP_BE || version_ihl >> 4 != 4 {
            return None;
        }
        let plain = version_ihl & 0x0f == 5 && u16::from_be_bytes(frag_off) & IP_FRAGMENT_MASK == 0;
        let mut ports = None;
        // A second check on `start` itself: on this path the verifier knows 38 bytes are in bounds.
        if plain && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && start + L4_HEADERS <= end {
            let l4 = (start + HEADERS) as *const [u8; 4];
            // SAFETY: bytes HEADERS..HEADERS + 4 lie within [data, data_end) (checked just above).
            let p = unsafe { *l4 };
            let mut opens = proto == IPPROTO_UDP;
            // A third check on `start`: on this path 48 bytes are in bounds.
            if proto == IPPROTO_TCP && start + TCP_FLAGS_END <= end {
                // SAFETY: byte TCP_FLAGS_END - 1 lies within [data, data_end) (checked just above).
                let flags = unsafe { *((start + TCP_FLAGS_END - 1) as *const u8) };
                opens = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            }
            ports = Some(Ports {
                proto,
                sport: u16::from_ne_bytes([p[0], p[1]]),
                dport: u16::from_ne_bytes([p[2], p[3]]),
                opens,
            });
        }
        Some(Self { eth, saddr: u32::from_ne_bytes(saddr), daddr: u32::from_ne_bytes(daddr), plain, ports })
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
