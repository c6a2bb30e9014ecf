//! A minimal rtnetlink client: dumps the tc filters on an interface's clsact ingress hook.
//!
//! aya can add clsact and attach/replace/detach filters but cannot list them; `is_attached` and the
//! create-or-replace decision in `tc.rs` need that. Requests go to the calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: the clsact ingress hook.
pub(crate) const CLSACT_INGRESS_PARENT: u32 = 0xFFFF_FFF2;

const NLMSG_HDRLEN: usize = 16;
const TCMSG_LEN: usize = 20;
const RTA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
/// Strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3FFF;

/// One tc filter as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcFilter {
    /// `pref` in tc(8): the upper 16 bits of `tcm_info`.
    pub priority: u16,
    /// Filter handle; 0 for the per-priority header entry a dump also returns.
    pub handle: u32,
    /// Classifier kind (`bpf` for ours).
    pub kind: String,
    /// `TCA_BPF_NAME`: the program name given at attach time.
    pub bpf_name: Option<String>,
    /// `TCA_BPF_ID`: the kernel id of the attached program.
    pub bpf_prog_id: Option<u32>,
}

/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`: the clsact egress hook.
pub(crate) const CLSACT_EGRESS_PARENT: u32 = 0xFFFF_FFF3;

/// A clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    Ingress,
    Egress,
}

/// Lists the filters on a clsact hook of `ifindex` (empty if there is no clsact qdisc).
pub(crate) fn filters(ifindex: u32, hook: Hook) -> io::Result<Vec<TcFilter>> {
    let parent = match hook {
        Hook::Ingress => CLSACT_INGRESS_PARENT,
        Hook::Egress => CLSACT_EGRESS_PARENT,
    };
    let sock = open_route_socket()?;
    let seq = 1;
    let req = dump_request(ifindex, parent, seq);
    // SAFETY: `req` is a valid buffer of `req.len()` bytes for the duration of the call.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut filters = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = usize::try_from(n).map_err(io::Error::other)?;
        if parse_dump(buf.get(..n).unwrap_or_default(), seq, &mut filters)? == Dump::Done {
            return Ok(filters);
        }
    }
}

fn open_route_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `RTM_GETTFILTER` dump request for one interface and parent.
pub(crate) fn dump_request(ifindex: u32, parent: u32, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + TCMSG_LEN;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETTFILTER.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    // tcmsg: family AF_UNSPEC, 3 bytes padding, ifindex, handle 0 (all), parent, info 0 (all)
    req.extend_from_slice(&[0u8; 4]);
    req.extend_from_slice(&ifindex.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&parent.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dump {
    More,
    Done,
}

/// Parses one datagram of a dump reply, appending the filters it holds.
pub(crate) fn parse_dump(mut buf: &[u8], seq: u32, out: &mut Vec<TcFilter>) -> io::Result<Dump> {
    let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    while buf.len() >= NLMSG_HDRLEN {
        let len = read_u32(buf, 0).ok_or_else(|| malformed("short header"))? as usize;
        let kind = read_u16(buf, 4).ok_or_else(|| malformed("short header"))?;
        let msg_seq = read_u32(buf, 8).ok_or_else(|| malformed("short header"))?;
        let msg = buf.get(..len).filter(|_| len >= NLMSG_HDRLEN).ok_or_else(|| malformed("bad length"))?;
        let payload = msg.get(NLMSG_HDRLEN..).unwrap_or_default();
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(Dump::Done),
                NLMSG_ERROR => {
                    let errno = read_u32(payload, 0).ok_or_else(|| malformed("short error"))? as i32;
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                RTM_NEWTFILTER => out.push(parse_filter(payload).ok_or_else(|| malformed("short tcmsg"))?),
                _ => {}
            }
        }
        buf = buf.get(align4(len)..).unwrap_or_default();
    }
    Ok(Dump::More)
}

fn parse_filter(payload: &[u8]) -> Option<TcFilter> {
    let handle = read_u32(payload, 8)?;
    let info = read_u32(payload, 16)?;
    let mut filter = TcFilter { priority: (info >> 16) as u16, handle, ..TcFilter::default() };
    for (kind, data) in attrs(payload.get(TCMSG_LEN..)?) {
        match kind {
            TCA_KIND => filter.kind = c_string(data),
            TCA_OPTIONS => {
                for (kind, data) in attrs(data) {
                    match kind {
                        TCA_BPF_NAME => filter.bpf_name = Some(c_string(data)),
                        TCA_BPF_ID => filter.bpf_prog_id = read_u32(data, 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(filter)
}

/// Iterates `(type, payload)` of the rtattrs in `buf`, stopping at the first malformed one.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(read_u16(buf, 0)?);
        let kind = read_u16(buf, 2)? & NLA_TYPE_MASK;
        let data = buf.get(RTA_HDRLEN..len.max(RTA_HDRLEN))?;
        buf = buf.get(align4(len).max(RTA_HDRLEN)..).unwrap_or_default();
        Some((kind, data))
    })
}

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned()
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((RTA_HDRLEN + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
        out
    }

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    fn filter_payload(priority: u16, handle: u32, name: &str, id: u32) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        p.extend_from_slice(&7u32.to_ne_bytes());
        p.extend_from_slice(&handle.to_ne_bytes());
        p.extend_from_slice(&CLSACT_INGRESS_PARENT.to_ne_bytes());
        p.extend_from_slice(&((u32::from(priority) << 16) | 0x0300).to_ne_bytes());
        p.extend(attr(TCA_KIND, b"bpf\0"));
        let mut options = attr(TCA_BPF_NAME, format!("{name}\0").as_bytes());
        options.extend(attr(TCA_BPF_ID, &id.to_ne_bytes()));
        p.extend(attr(TCA_OPTIONS | 0x8000, &options));
        p
    }

    #[test]
    fn dump_request_is_header_plus_tcmsg() {
        let req = dump_request(7, CLSACT_INGRESS_PARENT, 9);
        assert_eq!(req.len(), 36);
        assert_eq!(read_u32(&req, 0), Some(36));
        assert_eq!(read_u16(&req, 4), Some(RTM_GETTFILTER));
        assert_eq!(read_u32(&req, 8), Some(9));
        assert_eq!(read_u32(&req, 20), Some(7));
        assert_eq!(read_u32(&req, 28), Some(CLSACT_INGRESS_PARENT));
    }

    #[test]
    fn parse_dump_reads_bpf_filter_name_priority_handle_and_id() {
        let mut buf = message(RTM_NEWTFILTER, 1, &filter_payload(1, 0, "", 0));
        buf.extend(message(RTM_NEWTFILTER, 1, &filter_payload(1, 1, "novanet_pod_ingress", 42)));
        let mut out = Vec::new();
        assert_eq!(parse_dump(&buf, 1, &mut out).unwrap(), Dump::More);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1],
            TcFilter {
                priority: 1,
                handle: 1,
                kind: "bpf".into(),
                bpf_name: Some("novanet_pod_ingress".into()),
                bpf_prog_id: Some(42),
            }
        );
    }

    #[test]
    fn parse_dump_stops_at_done_and_surfaces_errors() {
        let mut out = Vec::new();
        assert_eq!(parse_dump(&message(NLMSG_DONE, 1, &[0; 4]), 1, &mut out).unwrap(), Dump::Done);
        let err = parse_dump(&message(NLMSG_ERROR, 1, &(-libc::ENODEV).to_ne_bytes()), 1, &mut out).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn parse_dump_ignores_other_sequences_and_rejects_bad_lengths() {
        let mut out = Vec::new();
        assert_eq!(parse_dump(&message(NLMSG_DONE, 5, &[0; 4]), 1, &mut out).unwrap(), Dump::More);
        let mut bad = message(RTM_NEWTFILTER, 1, &filter_payload(1, 1, "x", 1));
        bad[0] = 200;
        assert!(parse_dump(&bad, 1, &mut out).is_err());
    }

    #[test]
    fn attrs_stop_on_truncated_attribute() {
        let mut buf = attr(TCA_KIND, b"bpf\0");
        buf.extend_from_slice(&[50, 0, 1, 0, 1]);
        assert_eq!(attrs(&buf).count(), 1);
    }
}
