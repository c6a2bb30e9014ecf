//! Lists the tc filters on an interface's clsact ingress or egress hook, over rtnetlink.
//!
//! aya can add clsact and attach/replace/detach filters but cannot list them; `is_attached` and the
//! create-or-replace decision in `tc.rs` need that. Messages are built and parsed by
//! `netlink-packet-route` (the crate the CNI's `rtnetlink` is built on); the socket is `netlink-sys`'s
//! plain blocking one, so this stays synchronous: callers are not async, and some run on threads inside
//! a tokio runtime, where a nested runtime would panic. Requests go to the calling thread's network
//! namespace.

use std::io;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: the clsact ingress hook.
pub(crate) const CLSACT_INGRESS_PARENT: u32 = 0xFFFF_FFF2;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`: the clsact egress hook.
pub(crate) const CLSACT_EGRESS_PARENT: u32 = 0xFFFF_FFF3;

/// Room for one dump datagram: the kernel fills at most 32 KiB per datagram.
const RECV_BUFFER: usize = 64 * 1024;

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

/// A clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    Ingress,
    #[allow(dead_code, reason = "NovaNet attaches on ingress only so far; egress programs will list here")]
    Egress,
}

impl Hook {
    /// The hook's tc parent handle.
    pub(crate) const fn parent(self) -> u32 {
        match self {
            Hook::Ingress => CLSACT_INGRESS_PARENT,
            Hook::Egress => CLSACT_EGRESS_PARENT,
        }
    }
}

/// Lists the filters on the clsact ingress hook of `ifindex` (empty if there is no clsact qdisc).
#[cfg(test)]
pub(crate) fn ingress_filters(ifindex: u32) -> io::Result<Vec<TcFilter>> {
    filters(ifindex, Hook::Ingress)
}

/// Lists the filters on the clsact `hook` of `ifindex` (empty if there is no clsact qdisc, or no such
/// interface: the kernel answers both with an empty dump).
pub(crate) fn filters(ifindex: u32, hook: Hook) -> io::Result<Vec<TcFilter>> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    let seq = 1;
    let request = dump_request(ifindex, hook, seq)?;
    let sent = socket.send(&request, 0)?;
    if sent != request.len() {
        return Err(io::Error::other(format!("netlink: sent {sent} of {} bytes", request.len())));
    }
    let mut filters = Vec::new();
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    loop {
        buf.clear();
        let n = match socket.recv(&mut buf, libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n > buf.len() {
            return Err(invalid(format!("datagram of {n} bytes truncated to {}", buf.len())));
        }
        if parse_dump(&buf, seq, &mut filters)? == Dump::Done {
            return Ok(filters);
        }
    }
}

/// `RTM_GETTFILTER` dump request for every filter on one interface's `hook`.
pub(crate) fn dump_request(ifindex: u32, hook: Hook, seq: u32) -> io::Result<Vec<u8>> {
    let mut tc = TcMessage::with_index(i32::try_from(ifindex).map_err(|_| invalid(format!("ifindex {ifindex}")))?);
    tc.header.parent = TcHandle::from(hook.parent());
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(tc));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    Ok(buf)
}

/// Whether a dump goes on after the datagram just parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dump {
    More,
    Done,
}

/// Parses one datagram of a dump reply, appending the filters it holds. Messages of other sequence
/// numbers are skipped; a kernel error ends the dump with its errno.
pub(crate) fn parse_dump(mut buf: &[u8], seq: u32, out: &mut Vec<TcFilter>) -> io::Result<Dump> {
    while !buf.is_empty() {
        // The crate parses one message from the front of a buffer; its length says where the next starts.
        let len = NetlinkBuffer::new_checked(buf).map_err(|e| invalid(e.to_string()))?.length() as usize;
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf).map_err(|e| invalid(e.to_string()))?;
        buf = buf.get(align4(len)..).unwrap_or_default();
        if msg.header.sequence_number != seq {
            continue;
        }
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(Dump::Done),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(tc)) => out.push(filter_from(&tc)),
            _ => {}
        }
    }
    Ok(Dump::More)
}

fn filter_from(tc: &TcMessage) -> TcFilter {
    let mut filter =
        TcFilter { priority: (tc.header.info >> 16) as u16, handle: tc.header.handle.into(), ..TcFilter::default() };
    for attr in &tc.attributes {
        match attr {
            TcAttribute::Kind(kind) => filter.kind.clone_from(kind),
            TcAttribute::Options(options) => {
                for option in options {
                    match option {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => filter.bpf_name = Some(name.clone()),
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.bpf_prog_id = Some(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    filter
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

// Test support shared with the integration tests. Declared here, outside `mod tests`, because a
// `#[path]` inside an inline module would be relative to a `src/netlink/` directory that does not exist.
#[cfg(test)]
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used, reason = "tests; not every test uses every helper")]
#[path = "../tests/support/netns.rs"]
mod test_netns;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::ffi::CString;
    use std::num::NonZeroI32;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkHeader};
    use netlink_packet_route::tc::TcBpfFlags;

    use super::*;
    use super::test_netns as netns;

    fn emit(seq: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn done(seq: u32) -> Vec<u8> {
        emit(seq, NetlinkPayload::Done(DoneMessage::default()))
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// The datagrams a 6.18 kernel sent for `lists_the_filters_of_each_hook_of_a_real_veth` (ifindex 3):
    /// on ingress an eBPF program (id 7) that tc attached from a pin at pref 1 handle 1, and a u32
    /// filter at pref 20; on egress classic BPF at pref 7 handle 3, and u32 at pref 9.
    const REAL_INGRESS_DUMP: [&str; 9] = [
        "340000002c00020001000000520b0000000000000300000000000000f2ffffff00030100080001006270660008000b00",
        "00000000740000002c00020001000000520b0000000000000300000001000000f2ffffff000301000800010062706600",
        "08000b000000000040000200180007006e6e5f6e6c5f746573743a5b2a66736f626a5d0008000b00070000000c000a00",
        "59f4a931744dcdc608000800010000000800090008000000340000002c00020001000000520b00000000000003000000",
        "00000000f2ffffff08001400080001007533320008000b0000000000400000002c00020001000000520b000000000000",
        "0300000000000080f2ffffff08001400080001007533320008000b00000000000c000200080004000100000074000000",
        "2c00020001000000520b0000000000000300000000080080f2ffffff08001400080001007533320008000b0000000000",
        "400002002400050001000100000000000000000000000000ffffffff0a00000110000000000000000800020000000080",
        "080001000100010008000b0008000000",
    ];
    const REAL_EGRESS_DUMP: [&str; 8] = [
        "340000002c00020001000000520b0000000000000300000000000000f3ffffff00030700080001006270660008000b00",
        "00000000540000002c00020001000000520b0000000000000300000003000000f3ffffff000307000800010062706600",
        "08000b00000000002000020006000400010000000c00050006000000000000000800090008000000340000002c000200",
        "01000000520b0000000000000300000000000000f3ffffff08000900080001007533320008000b000000000040000000",
        "2c00020001000000520b0000000000000300000000001080f3ffffff08000900080001007533320008000b0000000000",
        "0c0002000800040001000000740000002c00020001000000520b0000000000000300000000081080f3ffffff08000900",
        "080001007533320008000b0000000000400002002400050001000100000000000000000000000000ffffffff0a000002",
        "10000000000000000800020000001080080001000100010008000b0008000000",
    ];

    fn filter(priority: u16, handle: u32, kind: &str) -> TcFilter {
        TcFilter { priority, handle, kind: kind.into(), ..TcFilter::default() }
    }

    #[test]
    fn parse_dump_reads_real_dumps_of_both_hooks() {
        let mut ingress = Vec::new();
        assert_eq!(parse_dump(&hex(&REAL_INGRESS_DUMP.concat()), 1, &mut ingress).unwrap(), Dump::More);
        let ours = TcFilter {
            bpf_name: Some("nn_nl_test:[*fsobj]".into()),
            bpf_prog_id: Some(7),
            ..filter(1, 1, "bpf")
        };
        let u32_at = |pref, table: u32| [filter(pref, 0, "u32"), filter(pref, table, "u32"), filter(pref, table | 0x800, "u32")];
        assert_eq!(ingress, [[filter(1, 0, "bpf"), ours].as_slice(), &u32_at(20, 0x8000_0000)].concat());

        let mut egress = Vec::new();
        assert_eq!(parse_dump(&hex(&REAL_EGRESS_DUMP.concat()), 1, &mut egress).unwrap(), Dump::More);
        assert_eq!(egress, [[filter(7, 0, "bpf"), filter(7, 3, "bpf")].as_slice(), &u32_at(9, 0x8010_0000)].concat());

        // The same datagram answered another request: nothing of it is ours.
        let mut other = Vec::new();
        assert_eq!(parse_dump(&hex(&REAL_INGRESS_DUMP.concat()), 2, &mut other).unwrap(), Dump::More);
        assert!(other.is_empty());
    }

    #[test]
    fn dump_request_asks_for_every_filter_of_the_hook() {
        for (hook, parent) in [(Hook::Ingress, 0xFFFF_FFF2u32), (Hook::Egress, 0xFFFF_FFF3)] {
            let req = dump_request(7, hook, 9).unwrap();
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&req).unwrap();
            assert_eq!(usize::try_from(msg.header.length).unwrap(), req.len());
            assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(msg.header.sequence_number, 9);
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetTrafficFilter(tc)) = msg.payload else {
                panic!("not RTM_GETTFILTER: {:?}", msg.payload);
            };
            assert_eq!(tc.header.index, 7);
            assert_eq!(u32::from(tc.header.parent), parent);
            assert_eq!((u32::from(tc.header.handle), tc.header.info), (0, 0), "all handles, all priorities");
        }
    }

    #[test]
    fn parse_dump_stops_at_done_and_surfaces_errors() {
        let mut out = Vec::new();
        assert_eq!(parse_dump(&done(1), 1, &mut out).unwrap(), Dump::Done);
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::ENODEV);
        let err = parse_dump(&emit(1, NetlinkPayload::Error(error)), 1, &mut out).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        // An ACK (error code 0) is not an error.
        assert_eq!(parse_dump(&emit(1, NetlinkPayload::Error(ErrorMessage::default())), 1, &mut out).unwrap(), Dump::More);
        assert!(out.is_empty());
    }

    #[test]
    fn parse_dump_ignores_other_sequences_and_rejects_bad_lengths() {
        let mut out = Vec::new();
        assert_eq!(parse_dump(&done(5), 1, &mut out).unwrap(), Dump::More);
        let mut bad = done(1);
        bad[0] = 200; // longer than the datagram
        assert_eq!(parse_dump(&bad, 1, &mut out).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(parse_dump(&[0; 7], 1, &mut out).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// Loads `mov r0, 0; exit` as a tc classifier; returns its descriptor and kernel id.
    fn load_test_program() -> (OwnedFd, u32) {
        #[repr(C)]
        struct ProgLoad {
            prog_type: u32,
            insn_cnt: u32,
            insns: u64,
            license: u64,
            rest: [u8; 96], // log, kernel version, flags, name, ...: all zero
        }
        #[repr(C)]
        struct InfoByFd {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
        const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
        let bpf = |cmd: libc::c_long, attr: *const libc::c_void, size: usize| {
            // SAFETY: `attr` points to a live, fully initialised attribute struct of `size` bytes.
            let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
            assert!(rc >= 0, "bpf({cmd}): {}", io::Error::last_os_error());
            rc
        };
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = c"GPL";
        let load = ProgLoad {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            rest: [0; 96],
        };
        let raw = bpf(BPF_PROG_LOAD, (&raw const load).cast(), size_of::<ProgLoad>());
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(raw).unwrap()) };
        let mut info = [0u8; 256]; // struct bpf_prog_info: type, then id
        let by_fd = InfoByFd { bpf_fd: fd.as_raw_fd() as u32, info_len: 256, info: info.as_mut_ptr() as u64 };
        bpf(BPF_OBJ_GET_INFO_BY_FD, (&raw const by_fd).cast(), size_of::<InfoByFd>());
        (fd, u32::from_ne_bytes(info[4..8].try_into().unwrap()))
    }

    /// What `tc filter add dev <ifindex> ingress pref 1 handle 1 bpf da fd <prog> name <name>` would
    /// send, were there such a command (the filter keeps its own reference to the program).
    fn attach_ingress_bpf(ifindex: u32, prog: &OwnedFd, name: &str) {
        let mut tc = TcMessage::with_index(i32::try_from(ifindex).unwrap());
        tc.header.parent = TcHandle::from(CLSACT_INGRESS_PARENT);
        tc.header.handle = TcHandle::from(1);
        tc.header.info = (1 << 16) | u32::from(u16::to_be(libc::ETH_P_ALL as u16));
        tc.attributes = vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]),
        ];
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(tc));
        msg.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
        msg.header.sequence_number = 1;
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        msg.serialize(&mut req);
        let socket = Socket::new(NETLINK_ROUTE).unwrap();
        socket.send(&req, 0).unwrap();
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        socket.recv(&mut buf, 0).unwrap();
        let ack = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        let NetlinkPayload::Error(e) = ack.payload else { panic!("no ACK: {ack:?}") };
        assert_eq!(e.code, None, "adding the filter: {}", e.to_io());
    }

    fn ifindex(name: &str) -> u32 {
        let name = CString::new(name).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "no interface {name:?}");
        index
    }

    /// `(priority, kind)` of each filter, header entries (handle 0) left out.
    fn summary(filters: &[TcFilter]) -> Vec<(u16, &str)> {
        filters.iter().filter(|f| f.handle != 0).map(|f| (f.priority, f.kind.as_str())).collect()
    }

    /// Needs root, iproute2 (`ip`, `tc`) and nsenter. The namespace goes away on drop, and the program
    /// with the filter that holds it.
    #[test]
    fn lists_the_filters_of_each_hook_of_a_real_veth() {
        let ns = netns::NetNs::create(&format!("{}-nl", netns::unique_prefix()));
        ns.ok(&["ip", "link", "add", "nl0", "type", "veth", "peer", "name", "nl1"]);
        let index = ns.in_ns(|| ifindex("nl0"));
        let no_clsact = ns.in_ns(move || (filters(index, Hook::Ingress).unwrap(), filters(index, Hook::Egress).unwrap()));
        assert_eq!(no_clsact, (vec![], vec![]), "no clsact qdisc: nothing, and no error");

        let (prog, prog_id) = load_test_program();
        ns.ok(&["tc", "qdisc", "add", "dev", "nl0", "clsact"]);
        ns.in_ns(|| attach_ingress_bpf(index, &prog, "nn_nl_test"));
        drop(prog);
        // u32 and bpf are the classifiers every kernel here has; u32 adds a hash-table entry per filter.
        let u32_to = |hook: &str, pref: &str, ip: &str| {
            ns.ok(&["tc", "filter", "add", "dev", "nl0", hook, "pref", pref, "protocol", "ip", "u32", "match", "ip", "dst", ip, "classid", "1:1"]);
        };
        u32_to("ingress", "20", "10.0.0.1/32");
        ns.ok(&["tc", "filter", "add", "dev", "nl0", "egress", "pref", "7", "handle", "3", "bpf", "bytecode", "1,6 0 0 0,"]);
        u32_to("egress", "9", "10.0.0.2/32");

        let (ingress, egress, wrapper) = ns.in_ns(move || {
            (filters(index, Hook::Ingress).unwrap(), filters(index, Hook::Egress).unwrap(), ingress_filters(index).unwrap())
        });
        assert_eq!(wrapper, ingress);
        // A u32 filter comes with the hash table that holds it.
        assert_eq!(summary(&ingress), [(1, "bpf"), (20, "u32"), (20, "u32")], "{ingress:?}");
        let ours = ingress.iter().find(|f| f.priority == 1 && f.handle == 1).unwrap();
        assert_eq!(ours.bpf_prog_id, Some(prog_id), "{ours:?}");
        assert_eq!(ours.bpf_name.as_deref(), Some("nn_nl_test"), "{ours:?}");
        assert_eq!(summary(&egress), [(7, "bpf"), (9, "u32"), (9, "u32")], "{egress:?}");
        let classic = egress.iter().find(|f| f.priority == 7 && f.handle == 3).unwrap();
        assert_eq!(classic.kind, "bpf");
        assert_eq!((classic.bpf_prog_id, classic.bpf_name.as_deref()), (None, None), "classic BPF has no program id");
    }

    /// A dump larger than one datagram: every filter arrives, each once.
    #[test]
    fn a_dump_spanning_several_datagrams_is_read_to_the_end() {
        let ns = netns::NetNs::create(&format!("{}-nlm", netns::unique_prefix()));
        ns.ok(&["ip", "link", "add", "nl0", "type", "veth", "peer", "name", "nl1"]);
        ns.ok(&["tc", "qdisc", "add", "dev", "nl0", "clsact"]);
        let batch: String =
            (100..500).map(|pref| format!("filter add dev nl0 egress pref {pref} handle 1 bpf bytecode \"1,6 0 0 0,\"\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("batch");
        std::fs::write(&file, batch).unwrap();
        ns.ok(&["tc", "-batch", file.to_str().unwrap()]);
        let index = ns.in_ns(|| ifindex("nl0"));
        let egress = ns.in_ns(move || filters(index, Hook::Egress).unwrap());
        let prefs: Vec<u16> = egress.iter().filter(|f| f.handle != 0).map(|f| f.priority).collect();
        assert_eq!(prefs, (100..500).collect::<Vec<u16>>());
    }
}
