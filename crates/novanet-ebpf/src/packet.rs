//! Packet parsing. Only what the pod programs need: the Ethernet header and the IPv4 destination.

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
const _: () = assert!(ETH_HLEN == 14 && IPV4_HLEN == 20);

/// An Ethernet frame carrying IPv4, with its first `ETH_HLEN + IPV4_HLEN` bytes checked to be in bounds.
pub struct Ipv4Frame {
    eth: *mut EthHdr,
    /// Destination address in network byte order (as the `EndpointKey` stores it).
    pub daddr: u32,
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
        if start + HEADERS > end {
            // Too short, or the headers are not all in the linear part of the skb: pull them in when the
            // frame is long enough. The helper invalidates packet pointers, so re-read them.
            if ctx.len() < HEADERS as u32 || ctx.pull_data(HEADERS as u32).is_err() {
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
        let (ether_type, version, daddr) = unsafe { ((*eth).ether_type, (*ip).version_ihl >> 4, (*ip).daddr) };
        if ether_type != ETH_P_IP_BE || version != 4 {
            return None;
        }
        Some(Self { eth, daddr: u32::from_ne_bytes(daddr) })
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
