//! Packet-level tests of the pod programs through `BPF_PROG_TEST_RUN`, plus load/pin/upgrade behaviour.
//! They need root. Each test pins under its own bpffs root (`tests/support/bpffs.rs`), removed on drop even
//! when the test panics.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::Ipv4Addr;
use std::path::Path;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use novanet_common::{
    COUNTERS_MAP, ENDPOINTS_MAP, MAX_ENDPOINTS, MAX_NAT_FLOWS, NAT_FLOWS_MAP, NatFlowKey, NatFlowSeen, PIN_DIR,
    POD_EGRESS_PROG, POD_INGRESS_PROG,
};

use super::*;
use crate::layout::Carry;

#[path = "test_run_policy.rs"]
mod policy;

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
/// `BPF_PROG_TEST_RUN` runs a tc program on the loopback device: a sender pod's endpoint has its
/// ifindex, or the anti-spoofing check drops what it sends.
const LO: u32 = 1;

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

/// Runs the pod ingress program (frames a pod sends) once over `data`; returns the verdict and the frame as
/// the program left it.
fn run(dp: &Dataplane, data: &[u8]) -> (u32, Vec<u8>) {
    run_prog(dp, POD_INGRESS_PROG, data)
}

/// Runs the pod egress program (frames the stack delivers to a pod) once over `data`.
fn deliver(dp: &Dataplane, data: &[u8]) -> (u32, Vec<u8>) {
    run_prog(dp, POD_EGRESS_PROG, data)
}

fn run_prog(dp: &Dataplane, name: &str, data: &[u8]) -> (u32, Vec<u8>) {
    let prog: &SchedClassifier = dp.ebpf.program(name).unwrap().try_into().unwrap();
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

/// Loads, with pods A and B as local endpoints that may send (see [`LO`]).
fn load_with_pods(root: &PinRoot) -> Dataplane {
    let mut dp = load(root);
    dp.upsert_endpoint(Ipv4Addr::from(POD_A), &endpoint(LO, POD_A_MAC, HOST_A_MAC, 0)).unwrap();
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(LO, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    dp
}

fn flows(dp: &Dataplane) -> Vec<NatFlow> {
    dp.nat_flows().unwrap().list().unwrap()
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
    let dp = load_with_pods(&root);
    let (verdict, out) = run(&dp, &ipv4_to([10, 244, 9, 9]));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, ipv4_to([10, 244, 9, 9]));
    assert_eq!(counter(&dp, Counter::PassToStack).packets, 1);
}

#[test]
fn local_destination_is_redirected_with_rewritten_macs() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
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

/// The defect this replaces: the flow map once keyed on the client's end only, so after a pod reused a
/// source port of a Service flow for a direct connection to a local pod, the direct answers went to the
/// stack, whose conntrack never saw the redirected SYN and dropped them as INVALID.
#[test]
fn answers_to_flows_the_stack_delivered_go_via_the_stack_and_direct_flows_stay_fast() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
    for proto in [17u8, 6] {
        // Pod A opened a flow to a Service address, which the stack DNATed to pod B: the stack hands pod B
        // A's request, and the egress program records the whole flow.
        let request = l4_frame(proto, POD_A, 40000, POD_B, 53, 0, 0, SYN);
        let (verdict, out) = deliver(&dp, &request);
        assert_eq!((verdict, out), (TC_ACT_OK, request), "delivered frames are never changed");
        assert!(flows(&dp).contains(&(Ipv4Addr::from(POD_A), 40000, Ipv4Addr::from(POD_B), 53, proto)));
        // Pod B's answer goes through the stack, whose conntrack turns its source back into the Service's.
        let reply = l4_frame(proto, POD_B, 53, POD_A, 40000, 0, 0, SYN_ACK);
        let (verdict, out) = run(&dp, &reply);
        assert_eq!((verdict, out), (TC_ACT_OK, reply), "proto {proto}");
        // Another flow between the same pods (another client port) is direct: straight to the pod.
        let other = l4_frame(proto, POD_B, 53, POD_A, 40001, 0, 0, SYN_ACK);
        assert_eq!(run(&dp, &other).0, TC_ACT_REDIRECT, "proto {proto}");
    }
    assert_eq!(counter(&dp, Counter::PassLocalViaStack).packets, 2);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 2);
    assert_eq!(counter(&dp, Counter::DeliverFromStack).packets, 2);
    deliver(&dp, &l4_frame(17, POD_A, 40000, POD_B, 53, 0, 0, 0));
    assert_eq!(flows(&dp).len(), 2, "a repeated packet of a known flow adds nothing");
    // Pod A reuses port 40000 for a direct connection to pod B's port 53: that ends the delivered flow, so
    // pod B's answers take the fast path like the request did.
    for proto in [6u8, 17] {
        assert_eq!(run(&dp, &l4_frame(proto, POD_A, 40000, POD_B, 53, 0, 0, SYN)).0, TC_ACT_REDIRECT);
        assert_eq!(run(&dp, &l4_frame(proto, POD_B, 53, POD_A, 40000, 0, 0, SYN_ACK)).0, TC_ACT_REDIRECT);
    }
    assert!(flows(&dp).is_empty(), "{:?}", flows(&dp));
    assert_eq!(counter(&dp, Counter::PassLocalViaStack).packets, 2);
}

/// A server pod answering a non-local client (kubelet's probes, a pod on another node) must not mark
/// anything: only flows the stack delivers from one local pod to another, and only their opening packets.
#[test]
fn only_flows_opened_by_a_local_pod_through_the_stack_are_recorded() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
    let node: [u8; 4] = [172, 30, 0, 10];
    // The node (or a remote pod) connects to pod A: nothing to record, the answers leave the node anyway.
    deliver(&dp, &l4_frame(6, node, 51000, POD_A, 8080, 0, 0, SYN));
    deliver(&dp, &l4_frame(17, node, 51000, POD_A, 8080, 0, 0, 0));
    // Answers and later segments from a local pod are not openings.
    for flags in [SYN_ACK, ACK] {
        deliver(&dp, &l4_frame(6, POD_B, 8080, POD_A, 51000, 0, 0, flags));
    }
    // A TCP packet too short to show its flags opens nothing either.
    let mut short = l4_frame(6, POD_B, 8081, POD_A, 51000, 0, 0, SYN);
    short.truncate(44);
    deliver(&dp, &short);
    assert!(flows(&dp).is_empty(), "{:?}", flows(&dp));
    // And what pods send is never recorded, whatever the destination.
    run(&dp, &l4_frame(6, POD_A, 40002, node, 443, 0, 0, SYN));
    run(&dp, &l4_frame(6, POD_A, 40003, POD_B, 443, 0, 0, SYN));
    assert!(flows(&dp).is_empty(), "{:?}", flows(&dp));
    assert_eq!(counter(&dp, Counter::DeliverFromStack).packets, 5);
}

#[test]
fn idle_flows_expire_in_the_datapath_and_in_the_sweep() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
    let mut map: BpfHashMap<NatFlowKey, NatFlowSeen> =
        BpfHashMap::open_pinned(NAT_FLOWS_MAP, MAX_NAT_FLOWS, &dp.nat_flows_pin, true).unwrap();
    let key = |client_port: u16, proto: u8| NatFlowKey {
        client_ip: u32::from_ne_bytes(POD_A),
        server_ip: u32::from_ne_bytes(POD_B),
        client_port: client_port.to_be(),
        server_port: 53u16.to_be(),
        proto,
        _pad: [0; 3],
    };
    let now = monotonic_now_ns();
    let stale_udp = now
        .checked_sub(NatFlowSeen::UDP_IDLE_NS + 1_000_000_000)
        .expect("the monotonic clock must be past the UDP idle time (300 s): a freshly booted machine is not");
    map.insert(&key(1000, 17), &NatFlowSeen { last_seen_ns: stale_udp }).unwrap();
    map.insert(&key(1001, 17), &NatFlowSeen { last_seen_ns: now }).unwrap();
    // As old as the stale UDP flow, but TCP flows may idle much longer.
    map.insert(&key(1002, 6), &NatFlowSeen { last_seen_ns: stale_udp }).unwrap();
    // The datapath treats the expired flow as absent (and removes it); the live ones still hold.
    assert_eq!(run(&dp, &l4_frame(17, POD_B, 53, POD_A, 1000, 0, 0, 0)).0, TC_ACT_REDIRECT);
    assert_eq!(map.get(&key(1000, 17)).unwrap(), None);
    assert_eq!(run(&dp, &l4_frame(17, POD_B, 53, POD_A, 1001, 0, 0, 0)).0, TC_ACT_OK);
    assert_eq!(run(&dp, &l4_frame(6, POD_B, 53, POD_A, 1002, 0, 0, ACK)).0, TC_ACT_OK);
    // A hit refreshes the time stamp (at most once a second).
    assert!(map.get(&key(1002, 6)).unwrap().unwrap().last_seen_ns >= now);
    // The sweep frees what expired without traffic, and the flows of pods that are gone.
    map.insert(&key(1003, 17), &NatFlowSeen { last_seen_ns: stale_udp }).unwrap();
    let gone = NatFlowKey { server_ip: u32::from_ne_bytes([10, 244, 0, 99]), ..key(1004, 6) };
    map.insert(&gone, &NatFlowSeen { last_seen_ns: now }).unwrap();
    let mut sweep = dp.nat_flows().unwrap();
    assert_eq!(sweep.sweep(monotonic_now_ns()).unwrap(), 2);
    let ports: Vec<u16> = sweep.list().unwrap().iter().map(|f| f.1).collect();
    assert_eq!(ports, vec![1001, 1002]);
    let mut dp = dp;
    dp.remove_endpoint(Ipv4Addr::from(POD_B)).unwrap();
    assert_eq!(flows(&dp).len(), 2, "CNI DEL does not walk the flow map");
    assert_eq!(sweep.sweep(monotonic_now_ns()).unwrap(), 2);
    assert!(flows(&dp).is_empty());
}

#[test]
fn a_pod_sending_with_another_source_address_is_dropped() {
    let root = PinRoot::new();
    let mut dp = load(&root);
    // Pod A's veth is the one the frames arrive on; pod B lives behind another veth.
    dp.upsert_endpoint(Ipv4Addr::from(POD_A), &endpoint(LO, POD_A_MAC, HOST_A_MAC, 0)).unwrap();
    dp.upsert_endpoint(Ipv4Addr::from(POD_B), &endpoint(4242, POD_B_MAC, HOST_B_MAC, 0)).unwrap();
    let node: [u8; 4] = [172, 30, 0, 10];
    // Forging another local pod's address, or any other, to a local pod or elsewhere.
    for (src, dst) in [(POD_B, POD_A), (node, POD_B), ([10, 244, 0, 99], node), ([0, 0, 0, 0], POD_B)] {
        let forged = l4_frame(6, src, 40000, dst, 80, 0, 0, SYN);
        assert_eq!(run(&dp, &forged).0, TC_ACT_SHOT, "{src:?} -> {dst:?}");
    }
    assert_eq!(counter(&dp, Counter::DropSpoofedSource).packets, 4);
    assert!(flows(&dp).is_empty());
    // Its own address passes.
    assert_eq!(run(&dp, &l4_frame(6, POD_A, 40000, POD_B, 80, 0, 0, SYN)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&dp, &l4_frame(6, POD_A, 40000, node, 80, 0, 0, SYN)).0, TC_ACT_OK);
    // Once pod A is being deleted it may still send (its entry is still its own).
    dp.upsert_endpoint(Ipv4Addr::from(POD_A), &endpoint(LO, POD_A_MAC, HOST_A_MAC, EndpointInfo::FLAG_DELETING))
        .unwrap();
    assert_eq!(run(&dp, &l4_frame(6, POD_A, 40000, node, 80, 0, 0, SYN)).0, TC_ACT_OK);
    assert_eq!(counter(&dp, Counter::DropSpoofedSource).packets, 4);
}

#[test]
fn fragments_and_ip_options_for_a_local_pod_go_via_the_stack() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
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
    assert!(flows(&dp).is_empty(), "what pods send is never recorded");
}

#[test]
fn deleting_endpoint_drops() {
    let root = PinRoot::new();
    let mut dp = load_with_pods(&root);
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
    let dp = load_with_pods(&root);
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
    let info = endpoint(LO, POD_A_MAC, HOST_A_MAC, 0);
    let mut first = load(&root);
    first.upsert_endpoint(Ipv4Addr::from(POD_A), &info).unwrap();
    run(&first, &ipv4_to(POD_A));
    let pin_dir = root.path().join(PIN_DIR);
    assert_eq!(first.pin_dir(), pin_dir);
    for pin in [
        "NOVANET_ENDPOINTS",
        "NOVANET_COUNTERS_v2",
        "NOVANET_NAT_FLOWS_v2",
        "NOVANET_IPCACHE",
        "NOVANET_POLICY",
        "NOVANET_POLICY_CIDR",
        "NOVANET_CT",
        "NOVANET_POLICY_CONFIG",
        "NOVANET_VERDICTS",
        POD_INGRESS_PROG,
        POD_EGRESS_PROG,
        novanet_common::NODE_EGRESS_PROG,
    ] {
        assert!(pin_dir.join(pin).exists(), "{pin} is pinned");
    }
    assert!(first.superseded().is_empty());
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
    let names: Vec<&str> = dp.counters().unwrap().into_iter().map(|(c, _)| c.name()).collect();
    assert_eq!(
        names,
        [
            "redirect_local",
            "pass_to_stack",
            "pass_non_ipv4",
            "drop_endpoint_deleting",
            "drop_redirect_failed",
            "pass_local_via_stack",
            "drop_spoofed_source",
            "deliver_from_stack",
            "drop_policy_ingress",
            "drop_policy_egress",
            "ct_new",
            "ct_established",
            "ct_reply",
            "ct_related",
            "ct_insert_failed",
        ]
    );
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
    pin_raw_map(&pin_dir.join(ENDPOINTS_MAP), BPF_MAP_TYPE_HASH, 4, 8, 16);
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

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// The foundation's agent (map layout version 1 everywhere) left its pins; this build changed the layout of
/// the counters (8 -> 32 slots, carried over) and of the NAT flows (another key, not carried): loading
/// adopts what is unchanged, creates the new versions beside the old, and the old pins go on finish.
#[test]
fn upgrade_from_the_first_layout_carries_the_counters_and_supersedes_the_old_pins() {
    let root = PinRoot::new();
    let pin_dir = root.path().join(PIN_DIR);
    std::fs::create_dir_all(&pin_dir).unwrap();
    pin_raw_map(&pin_dir.join(COUNTERS_MAP), BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 8);
    pin_raw_map(&pin_dir.join(NAT_FLOWS_MAP), BPF_MAP_TYPE_LRU_HASH, 8, 4, MAX_NAT_FLOWS);
    {
        let data = MapData::from_pin(pin_dir.join(COUNTERS_MAP)).unwrap();
        let mut old: PerCpuArray<MapData, CounterValue> = PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        let values = vec![CounterValue { packets: 3, bytes: 300 }; cpus];
        old.set(Counter::RedirectLocal as u32, aya::maps::PerCpuValues::try_from(values).unwrap(), 0).unwrap();
    }
    let mut dp = load_with_pods(&root);
    let superseded: Vec<(&str, u32, Carry)> = dp.superseded().iter().map(|s| (s.map, s.version, s.carry)).collect();
    assert_eq!(superseded.len(), 2, "{superseded:?}");
    assert_eq!((superseded[0].0, superseded[0].1, superseded[0].2), (COUNTERS_MAP, 1, Carry::Entries));
    assert!(matches!(superseded[1], (NAT_FLOWS_MAP, 1, Carry::Nothing(_))), "{superseded:?}");
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    assert_eq!(counter(&dp, Counter::RedirectLocal), CounterValue { packets: 3 * cpus, bytes: 300 * cpus });
    // The new programs run on the new maps.
    assert_eq!(run(&dp, &ipv4_to(POD_B)).0, TC_ACT_REDIRECT);
    assert_eq!(counter(&dp, Counter::RedirectLocal).packets, 3 * cpus + 1);
    // Until finished, the old pins stay (old programs may still use them); a reload in between carries
    // nothing again (its maps are not new) and finds the same.
    let again = load(&root);
    assert_eq!(again.superseded().len(), 2);
    assert_eq!(counter(&again, Counter::RedirectLocal).packets, 3 * cpus + 1);
    drop(again);
    assert_eq!(dp.finish_upgrade().unwrap().len(), 2);
    assert!(!pin_dir.join(COUNTERS_MAP).exists() && !pin_dir.join(NAT_FLOWS_MAP).exists());
    assert!(load(&root).superseded().is_empty());
}

/// Creates a BPF map with raw `bpf(2)` calls and pins it at `path`.
fn pin_raw_map(path: &Path, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let mut attr = [0u64; 16];
    attr[0] = u64::from(map_type) | u64::from(key_size) << 32;
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
