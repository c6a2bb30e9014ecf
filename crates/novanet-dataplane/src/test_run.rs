//! Packet-level tests of `novanet_pod_ingress` through `BPF_PROG_TEST_RUN`, plus load/pin behaviour.
//! They need root. Each test pins under its own bpffs root (`tests/support/bpffs.rs`), removed on drop even
//! when the test panics.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::Ipv4Addr;
use std::path::Path;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use novanet_common::{COUNTERS_MAP, ENDPOINTS_MAP, MAX_ENDPOINTS, NAT_FLOWS_MAP, PIN_DIR};

use super::*;

#[path = "../tests/support/bpffs.rs"]
mod bpffs;
use bpffs::TestBpffs as PinRoot;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const POD_A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const HOST_A_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x0a];
const POD_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const HOST_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x0b];
const POD_A: [u8; 4] = [10, 244, 0, 10];
const POD_B: [u8; 4] = [10, 244, 0, 11];

fn frame(ether_type: [u8; 2], ip_version: u8, dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&HOST_A_MAC); // pods send to their gateway MAC = their host veth
    f.extend_from_slice(&POD_A_MAC);
    f.extend_from_slice(&ether_type);
    f.extend_from_slice(&[ip_version << 4 | 5, 0, 0, 28, 0, 1, 0x40, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&POD_A);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]); // ICMP echo request header
    f
}

fn ipv4_to(dst: [u8; 4]) -> Vec<u8> {
    frame([0x08, 0x00], 4, dst)
}

fn endpoint(host_ifindex: u32, pod_mac: [u8; 6], host_mac: [u8; 6], flags: u32) -> EndpointInfo {
    EndpointInfo { host_ifindex, identity: 0, pod_mac, host_mac, flags, _pad: 0 }
}

/// Runs the program once over `data`; returns the verdict and the frame as the program left it.
fn run(dp: &Dataplane, data: &[u8]) -> (u32, Vec<u8>) {
    let prog: &SchedClassifier = dp.ebpf.program(POD_INGRESS_PROG).unwrap().try_into().unwrap();
    let mut out = vec![0u8; data.len() + 256];
    let result = prog
        .test_run(TestRunOptions { data_in: Some(data), data_out: Some(&mut out), ..TestRunOptions::new() })
        .unwrap();
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn counter(dp: &Dataplane, which: Counter) -> CounterValue {
    dp.counters().unwrap().into_iter().find(|(c, _)| *c == which).unwrap().1
}

fn load(root: &PinRoot) -> Dataplane {
    Dataplane::load(root.path()).unwrap()
}

#[test]
fn non_ipv4_frame_passes_and_counts_pass_non_ipv4() {
    let root = PinRoot::new();
    let dp = load(&root);
    let arp = frame([0x08, 0x06], 0, POD_B);
    let (verdict, out) = run(&dp, &arp);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, arp, "frames that are passed are left untouched");
    assert_eq!(counter(&dp, Counter::PassNonIpv4), CounterValue { packets: 1, bytes: arp.len() as u64 });
    assert_eq!(counter(&dp, Counter::PassToStack).packets, 0);
}

#[test]
fn ip_version_other_than_4_passes_as_non_ipv4() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(7, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    let (verdict, _) = run(&dp, &frame([0x08, 0x00], 6, POD_B));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(counter(&dp, Counter::PassNonIpv4).packets, 1);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 0);
}

#[test]
fn unknown_destination_passes_to_stack() {
    let root = PinRoot::new();
    let dp = load(&root);
    let (verdict, out) = run(&dp, &ipv4_to([10, 244, 9, 9]));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, ipv4_to([10, 244, 9, 9]));
    assert_eq!(counter(&dp, Counter::PassToStack).packets, 1);
}

#[test]
fn local_destination_is_redirected_with_rewritten_macs() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(4242, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    let input = ipv4_to(POD_B);
    let (verdict, out) = run(&dp, &input);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[0..6], POD_B_MAC, "destination MAC is the pod's");
    assert_eq!(out[6..12], HOST_B_MAC, "source MAC is the pod's gateway (its host veth)");
    assert_eq!(out[12..], input[12..], "nothing after the Ethernet addresses changes");
    assert_eq!(counter(&dp, Counter::RedirectLocal), CounterValue { packets: 1, bytes: input.len() as u64 });
    assert_eq!(counter(&dp, Counter::PassToStack).packets, 0);
}

/// An IPv4 frame from `src`:`sport` to `dst`:`dport` of `proto` (6 TCP with a 20-byte header carrying
/// `tcp_flags`, 17 UDP with an 8-byte header), `frag_off` as it sits in the header (big endian value) and
/// `options` extra bytes of IP options.
#[allow(clippy::too_many_arguments, reason = "a packet builder")]
fn l4_frame(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, frag_off: u16, options: usize, tcp_flags: u8) -> Vec<u8> {
    let ihl = 5 + options / 4;
    let l4_len = if proto == 6 { 20 } else { 8 };
    let total = (ihl * 4 + l4_len) as u16;
    let mut f = Vec::new();
    f.extend_from_slice(&HOST_A_MAC);
    f.extend_from_slice(&POD_A_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x40 | ihl as u8, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&frag_off.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend(std::iter::repeat_n(1u8, options)); // NOP options
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0, 8, 0, 0]);
    }
    f
}

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

const SERVICE_IP: [u8; 4] = [10, 96, 0, 10];

#[test]
fn replies_to_flows_the_stack_may_translate_go_via_the_stack_and_direct_traffic_stays_fast() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_A), &endpoint(4241, POD_A_MAC, HOST_A_MAC, 0)).unwrap();
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(4242, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    for proto in [17u8, 6] {
        // Pod A to a Service address: passed to the stack (kube-proxy DNATs it, here to pod B), remembered.
        let request = l4_frame(proto, POD_A, 40000, SERVICE_IP, 53, 0, 0, SYN);
        let (verdict, out) = run(&dp, &request);
        assert_eq!((verdict, out), (TC_ACT_OK, request));
        assert!(dp.nat_flows().unwrap().contains(&(Ipv4Addr::from(POD_A), 40000, proto)), "{:?}", dp.nat_flows());
        // Pod B's answer goes through the stack, whose conntrack turns its source back into the Service's.
        let reply = l4_frame(proto, POD_B, 53, POD_A, 40000, 0, 0, SYN_ACK);
        let (verdict, out) = run(&dp, &reply);
        assert_eq!((verdict, out), (TC_ACT_OK, reply), "proto {proto}");
        // Traffic between the two pods on another port is not a translated flow: straight to the pod.
        let direct = l4_frame(proto, POD_B, 53, POD_A, 40001, 0, 0, SYN_ACK);
        assert_eq!(run(&dp, &direct).0, TC_ACT_REDIRECT, "proto {proto}");
    }
    assert_eq!(counter(&dp, Counter::PassLocalViaStack).packets, 2);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 2);
    assert_eq!(counter(&dp, Counter::PassToStack).packets, 2);
    assert_eq!(dp.nat_flows().unwrap().len(), 2, "a repeated packet of a known flow adds nothing");
    run(&dp, &l4_frame(17, POD_A, 40000, SERVICE_IP, 53, 0, 0, 0));
    assert_eq!(dp.nat_flows().unwrap().len(), 2);
    // Removing pod A's endpoint forgets its flows; pod B's (none) and other state are untouched.
    assert!(dp.remove_endpoint(Ipv4Addr::from(POD_A)).unwrap());
    assert!(dp.nat_flows().unwrap().is_empty());
}

/// A server pod answering a non-local client (kubelet's probes, a pod on another node) must not mark its
/// listening port: local clients' connections to it would go half through the stack, which kube-proxy's
/// conntrack INVALID drop then breaks.
#[test]
fn only_flows_a_pod_opens_are_remembered() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_A), &endpoint(4241, POD_A_MAC, HOST_A_MAC, 0)).unwrap();
    let node: [u8; 4] = [172, 30, 0, 10];
    // Pod A serves port 8080 to the node: its SYN-ACK and ACKs are answers, not new flows.
    for flags in [SYN_ACK, ACK] {
        assert_eq!(run(&dp, &l4_frame(6, POD_A, 8080, node, 51000, 0, 0, flags)).0, TC_ACT_OK);
    }
    assert!(dp.nat_flows().unwrap().is_empty(), "{:?}", dp.nat_flows());
    // So a local client's connection to pod A's port goes straight to it.
    assert_eq!(run(&dp, &l4_frame(6, POD_B, 40000, POD_A, 8080, 0, 0, SYN)).0, TC_ACT_REDIRECT);
    // A TCP packet too short to show its flags opens nothing either.
    let mut short = l4_frame(6, POD_A, 8081, node, 51000, 0, 0, SYN);
    short.truncate(44);
    assert_eq!(run(&dp, &short).0, TC_ACT_OK);
    assert!(dp.nat_flows().unwrap().is_empty());
    // Its own connection out (a SYN) is remembered.
    run(&dp, &l4_frame(6, POD_A, 40002, node, 443, 0, 0, SYN));
    assert_eq!(dp.nat_flows().unwrap(), vec![(Ipv4Addr::from(POD_A), 40002, 6)]);
}

#[test]
fn fragments_and_ip_options_for_a_local_pod_go_via_the_stack() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(4242, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    let more_fragments = l4_frame(17, POD_A, 1000, POD_B, 2000, 0x2000, 0, 0);
    let later_fragment = l4_frame(17, POD_A, 1000, POD_B, 2000, 0x0010, 0, 0);
    let with_options = l4_frame(6, POD_A, 1000, POD_B, 2000, 0, 4, SYN);
    for frame in [&more_fragments, &later_fragment, &with_options] {
        let (verdict, out) = run(&dp, frame);
        assert_eq!((verdict, &out), (TC_ACT_OK, frame));
    }
    assert_eq!(counter(&dp, Counter::PassLocalViaStack).packets, 3);
    // "Don't fragment" alone is not a fragment.
    assert_eq!(run(&dp, &l4_frame(17, POD_A, 1000, POD_B, 2000, 0x4000, 0, 0)).0, TC_ACT_REDIRECT);
    assert!(dp.nat_flows().unwrap().is_empty(), "only flows to non-local addresses are remembered");
}

#[test]
fn deleting_endpoint_drops() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    let info = endpoint(4242, POD_B_MAC, HOST_B_MAC, EndpointInfo::FLAG_DELETING);
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &info).unwrap();
    let (verdict, _) = run(&dp, &ipv4_to(POD_B));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(counter(&dp, Counter::DropEndpointDeleting).packets, 1);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 0);
}

#[test]
fn truncated_packet_passes_safely() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(4242, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    let full = ipv4_to(POD_B);
    // BPF_PROG_TEST_RUN (6.18) refuses IPv4-typed frames shorter than an IP header with EINVAL, so short
    // frames go in with another ethertype: the program's bounds check runs before it reads the ethertype,
    // so this is the branch a short IPv4 frame takes. 14 bytes is the smallest frame test-run accepts.
    let mut short = full.clone();
    short[12..14].copy_from_slice(&[0x88, 0xb5]); // IEEE local experimental ethertype
    for len in [14, 20, 33] {
        let (verdict, out) = run(&dp, &short[..len]);
        assert_eq!(verdict, TC_ACT_OK, "truncated to {len} bytes");
        assert_eq!(out, short[..len], "truncated to {len} bytes");
    }
    assert_eq!(counter(&dp, Counter::PassNonIpv4).packets, 3);
    // Exactly the headers the program reads (34 bytes) is enough.
    let (verdict, _) = run(&dp, &full[..34]);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 1);
}

#[test]
fn second_load_adopts_pinned_maps_and_replaces_the_program_pin() {
    let root = PinRoot::new();
    let info = endpoint(9, POD_A_MAC, HOST_A_MAC, 0);
    let mut first = load(&root);
    first.upsert_endpoint(Ipv4Addr::from(POD_A), &info).unwrap();
    run(&first, &ipv4_to(POD_A));
    let pin_dir = root.path().join(PIN_DIR);
    assert_eq!(first.pin_dir(), pin_dir);
    for pin in [ENDPOINTS_MAP, COUNTERS_MAP, NAT_FLOWS_MAP, POD_INGRESS_PROG] {
        assert!(pin_dir.join(pin).exists(), "{pin} is pinned");
    }
    let second = load(&root);
    assert_eq!(second.endpoints().unwrap(), vec![(Ipv4Addr::from(POD_A), info)]);
    assert_eq!(counter(&second, Counter::RedirectLocal).packets, 1, "counters survive a reload");
    drop(first);
    // The newest program is the pinned one, and it runs against the adopted maps.
    let (verdict, _) = run(&second, &ipv4_to(POD_A));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(counter(&second, Counter::RedirectLocal).packets, 2);
    assert!(!pin_dir.join(format!("{POD_INGRESS_PROG}_new")).exists(), "no temporary pin left");
}

#[test]
fn remove_endpoint_reports_whether_it_was_present() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    let ip = Ipv4Addr::from(POD_A);
    assert!(!dp.remove_endpoint(ip).unwrap());
    dp.upsert_endpoint(ip, &endpoint(1, POD_A_MAC, HOST_A_MAC, 0)).unwrap();
    assert!(dp.remove_endpoint(ip).unwrap());
    assert!(dp.endpoints().unwrap().is_empty());
    assert!(!dp.remove_endpoint(ip).unwrap());
}

#[test]
fn upsert_into_a_full_map_is_map_full() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    let info = endpoint(1, POD_A_MAC, HOST_A_MAC, 0);
    for i in 0..MAX_ENDPOINTS {
        dp.upsert_endpoint(Ipv4Addr::from(0x0A00_0000 | i), &info).unwrap();
    }
    // Updating an existing entry still works when full.
    dp.upsert_endpoint(Ipv4Addr::from(0x0A00_0000u32), &info).unwrap();
    let err = dp.upsert_endpoint(Ipv4Addr::new(192, 168, 0, 1), &info).unwrap_err();
    assert!(matches!(err, DataplaneError::MapFull { map: ENDPOINTS_MAP, max_entries: MAX_ENDPOINTS }), "{err:?}");
}

#[test]
fn counters_report_every_counter_in_order() {
    let root = PinRoot::new();
    let dp = load(&root);
    let counters: Vec<Counter> = dp.counters().unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(counters, Counter::ALL);
}

#[test]
fn load_refuses_a_directory_that_is_not_bpffs() {
    let dir = std::env::temp_dir();
    let err = Dataplane::load(&dir).unwrap_err();
    assert!(matches!(err, DataplaneError::NotBpffs { .. }), "{err:?}");
}

#[test]
fn load_refuses_a_pinned_map_of_another_shape() {
    let root = PinRoot::new();
    let pin_dir = root.path().join(PIN_DIR);
    std::fs::create_dir_all(&pin_dir).unwrap();
    // A hash map with an 8-byte value where NOVANET_ENDPOINTS has 28.
    pin_raw_hash_map(&pin_dir.join(ENDPOINTS_MAP), 4, 8, 16);
    let err = Dataplane::load(root.path()).unwrap_err();
    match err {
        DataplaneError::IncompatiblePinnedMap { detail, .. } => assert!(detail.contains("value size 8"), "{detail}"),
        other => panic!("expected IncompatiblePinnedMap, got {other:?}"),
    }
}

#[test]
fn unpin_all_removes_the_pin_dir_and_tolerates_absence() {
    let root = PinRoot::new();
    drop(load(&root));
    Dataplane::unpin_all(root.path()).unwrap();
    assert!(!root.path().join(PIN_DIR).exists());
    Dataplane::unpin_all(root.path()).unwrap();
}

#[test]
fn dataplane_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Dataplane>();
}

/// Creates a BPF hash map with raw `bpf(2)` calls and pins it at `path`.
fn pin_raw_hash_map(path: &Path, key_size: u32, value_size: u32, max_entries: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let mut attr = [0u64; 16];
    attr[0] = u64::from(BPF_MAP_TYPE_HASH) | u64::from(key_size) << 32;
    attr[1] = u64::from(value_size) | u64::from(max_entries) << 32;
    // SAFETY: `attr` is a zero-initialised bpf_attr-sized buffer holding a valid BPF_MAP_CREATE request.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), size_of_val(&attr)) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    attr[1] = fd as u64;
    // SAFETY: `attr` holds a valid BPF_OBJ_PIN request whose path outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), size_of_val(&attr)) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is the map descriptor created above and owned by nobody else.
    unsafe { libc::close(fd as i32) };
}
