//! `BPF_PROG_TEST_RUN` tests of policy and conntrack (a child of `test_run`, whose frame builders and
//! loaders it uses). Pods A and B are local endpoints; C is a pod of another node, SVC a Service address.

use novanet_common::{
    CidrKey, CidrValue, CtEntry, CtKey, DIRECTION_EGRESS, DIRECTION_INGRESS, EndpointKey, IDENTITY_HOST,
    IDENTITY_SERVICE, IpcacheValue, NODE_EGRESS_PROG, PEER_ANY, PEER_CIDR_CLASS, PolicyConfig, PolicyKey, PolicyValue,
    VerdictValue,
};

use super::*;
use crate::{CtFlow, EndpointVerdicts, LpmHandle, PolicySwitch, endpoint_verdicts};

const POD_C: [u8; 4] = [10, 244, 1, 5];
const SVC: [u8; 4] = [10, 96, 0, 10];
const NODE: [u8; 4] = [172, 30, 0, 10];
const ID_A: u32 = 1000;
const ID_B: u32 = 1001;
const ID_C: u32 = 2000;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const FIN_ACK: u8 = 0x11;
const INGRESS_ISOLATED: u32 = IpcacheValue::FLAG_INGRESS_ISOLATED | IpcacheValue::FLAG_LOCAL;
const EGRESS_ISOLATED: u32 = IpcacheValue::FLAG_EGRESS_ISOLATED | IpcacheValue::FLAG_LOCAL;
const LOCAL: u32 = IpcacheValue::FLAG_LOCAL;

fn set_config(dp: &Dataplane, flags: u32) {
    dp.policy_maps().unwrap().config.set(&PolicyConfig { flags, revision: 7 }).unwrap();
}

/// Enforcing, with A, B and C in the ipcache (A and B local with `a_flags`/`b_flags`).
fn enforcing(root: &PinRoot, a_flags: u32, b_flags: u32) -> Dataplane {
    let dp = load_with_pods(root);
    cache(&dp, POD_A, ID_A, a_flags);
    cache(&dp, POD_B, ID_B, b_flags);
    cache(&dp, POD_C, ID_C, 0);
    set_config(&dp, PolicyConfig::FLAG_ENFORCE);
    dp
}

fn cache(dp: &Dataplane, ip: [u8; 4], identity: u32, flags: u32) {
    dp.policy_maps().unwrap().ipcache.insert(&EndpointKey::from_octets(ip), &IpcacheValue { identity, flags }).unwrap();
}

/// Allows `endpoint` the peer in `direction` for `proto` and the ports of `port`'s first `port_bits` bits
/// (16: that port only; no protocol at all when `proto` is 0).
fn allow(dp: &Dataplane, endpoint: [u8; 4], peer: u32, direction: u8, proto: u8, port: u16, port_bits: u32) {
    let key = PolicyKey {
        endpoint: u32::from_ne_bytes(endpoint),
        peer: peer.to_be_bytes(),
        direction,
        proto,
        dport: port.to_be_bytes(),
    };
    let len = if proto == 0 { PolicyKey::FIXED_BITS } else { PolicyKey::FIXED_BITS + 8 + port_bits };
    dp.policy_maps().unwrap().policy.insert(len, &key, &PolicyValue { rule: 1, _pad: 0 }).unwrap();
}

fn cidr_class(dp: &Dataplane, endpoint: [u8; 4], direction: u8, net: [u8; 4], bits: u32, class: u32) {
    let key =
        CidrKey { endpoint: u32::from_ne_bytes(endpoint), direction, _pad: [0; 3], addr: u32::from_ne_bytes(net) };
    dp.policy_maps().unwrap().cidr.insert(CidrKey::FIXED_BITS + bits, &key, &CidrValue { class }).unwrap();
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    l4_frame(TCP, src, sport, dst, dport, 0, 0, flags)
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    l4_frame(UDP, src, sport, dst, dport, 0, 0, 0)
}

/// An ICMP message: `rest` is the second word of the header (echo: identifier and sequence), `payload`
/// what follows (errors: the datagram they are about).
fn icmp(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut f = Vec::new();
    f.extend_from_slice(&HOST_A_MAC);
    f.extend_from_slice(&POD_A_MAC);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, ICMP, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[kind, code, 0, 0]);
    f.extend_from_slice(&rest);
    f.extend_from_slice(payload);
    f
}

fn echo(src: [u8; 4], dst: [u8; 4], kind: u8, id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    icmp(src, dst, kind, 0, [hi, lo, 0, 1], &[0; 8])
}

/// An ICMP port unreachable about the UDP datagram `src`:`sport` -> `dst`:`dport`, sent to `src` by `from`.
fn port_unreachable(from: [u8; 4], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let inner = udp(src, sport, dst, dport);
    icmp(from, src, 3, 3, [0; 4], &inner[14..14 + 28])
}

fn node_egress(dp: &Dataplane, data: &[u8]) -> (u32, Vec<u8>) {
    run_prog(dp, NODE_EGRESS_PROG, data)
}

fn tracked(dp: &Dataplane) -> Vec<(CtFlow, CtEntry)> {
    dp.conntrack().unwrap().list().unwrap()
}

fn flow(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> CtFlow {
    (Ipv4Addr::from(src), sport, Ipv4Addr::from(dst), dport, proto)
}

fn verdicts(dp: &Dataplane, ip: [u8; 4]) -> EndpointVerdicts {
    endpoint_verdicts(&dp.policy_maps().unwrap().verdicts, Ipv4Addr::from(ip)).unwrap()
}

fn packets(dp: &Dataplane, which: Counter) -> u64 {
    counter(dp, which).packets
}

#[test]
fn enforcement_off_keeps_todays_behaviour_and_tracks_nothing() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
    cache(&dp, POD_B, ID_B, INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED);
    // Default deny without enforcement is still no enforcement.
    set_config(&dp, PolicyConfig::FLAG_DEFAULT_DENY);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_REDIRECT);
    assert_eq!(deliver(&dp, &tcp(POD_C, 40000, POD_B, 80, SYN)).0, TC_ACT_OK);
    assert_eq!(node_egress(&dp, &tcp(POD_B, 80, POD_C, 40000, SYN_ACK)).0, TC_ACT_OK);
    assert!(tracked(&dp).is_empty(), "no conntrack without enforcement");
    for c in [Counter::DropPolicyIngress, Counter::DropPolicyEgress, Counter::CtNew, Counter::CtReply] {
        assert_eq!(packets(&dp, c), 0, "{c:?}");
    }
    assert_eq!(verdicts(&dp, POD_B), EndpointVerdicts::default());
    assert_eq!(packets(&dp, Counter::RedirectLocal), 1);
    assert_eq!(packets(&dp, Counter::DeliverFromStack), 1);
}

#[test]
fn ingress_isolated_pod_denies_a_new_syn_without_a_rule_and_allows_one_with_a_rule() {
    let root = PinRoot::new();
    let dp = enforcing(&root, LOCAL, INGRESS_ISOLATED);
    let syn = tcp(POD_A, 40000, POD_B, 80, SYN);
    assert_eq!(run(&dp, &syn).0, TC_ACT_SHOT);
    assert_eq!(counter(&dp, Counter::DropPolicyIngress), CounterValue { packets: 1, bytes: syn.len() as u64 });
    assert_eq!(verdicts(&dp, POD_B).ingress_denied, VerdictValue { packets: 1, bytes: syn.len() as u64 });
    assert!(tracked(&dp).is_empty(), "a denied flow is not tracked");
    // A rule of another port, or another peer, allows nothing.
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, TCP, 81, 16);
    allow(&dp, POD_B, ID_C, DIRECTION_INGRESS, TCP, 80, 16);
    assert_eq!(run(&dp, &syn).0, TC_ACT_SHOT);
    // The exact port for A's identity.
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, TCP, 80, 16);
    assert_eq!(run(&dp, &syn).0, TC_ACT_REDIRECT);
    assert_eq!(tracked(&dp).len(), 1);
    assert_eq!(tracked(&dp)[0].0, flow(POD_A, 40000, POD_B, 80, TCP));
    assert_eq!(tracked(&dp)[0].1.revision, 7, "stamped with the policy revision");
    assert_eq!(packets(&dp, Counter::CtNew), 1);
    // A port range as a prefix: 8080/12 is 8080..=8095.
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, TCP, 8080, 12);
    assert_eq!(run(&dp, &tcp(POD_A, 40001, POD_B, 8095, SYN)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&dp, &tcp(POD_A, 40002, POD_B, 8096, SYN)).0, TC_ACT_SHOT);
    // Any peer, one protocol and port.
    allow(&dp, POD_B, PEER_ANY, DIRECTION_INGRESS, UDP, 53, 16);
    assert_eq!(run(&dp, &udp(POD_A, 5000, POD_B, 53)).0, TC_ACT_REDIRECT);
    assert_eq!(deliver(&dp, &udp(POD_C, 5000, POD_B, 53)).0, TC_ACT_OK);
    assert_eq!(run(&dp, &udp(POD_A, 5000, POD_B, 54)).0, TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::DropPolicyIngress), 4);
    assert_eq!(packets(&dp, Counter::CtNew), 4);
    let v = verdicts(&dp, POD_B);
    assert_eq!((v.ingress_allowed.packets, v.ingress_denied.packets), (4, 4));
    assert_eq!(verdicts(&dp, POD_A), EndpointVerdicts::default(), "A is not isolated: not judged");
}

#[test]
fn cidr_classes_allow_by_prefix_and_an_except_class_allows_nothing() {
    let root = PinRoot::new();
    let dp = enforcing(&root, LOCAL, INGRESS_ISOLATED);
    let from = |src: [u8; 4], sport| deliver(&dp, &tcp(src, sport, POD_B, 443, SYN)).0;
    assert_eq!(from([10, 244, 1, 5], 1), TC_ACT_SHOT);
    // ipBlock 10.244.1.0/24 except 10.244.1.128/25: class 7 has a rule, class 8 (the except) has none.
    cidr_class(&dp, POD_B, DIRECTION_INGRESS, [10, 244, 1, 0], 24, 7);
    cidr_class(&dp, POD_B, DIRECTION_INGRESS, [10, 244, 1, 128], 25, 8);
    allow(&dp, POD_B, PEER_CIDR_CLASS | 7, DIRECTION_INGRESS, TCP, 443, 16);
    assert_eq!(from([10, 244, 1, 5], 2), TC_ACT_OK, "in the block");
    assert_eq!(from([10, 244, 1, 200], 3), TC_ACT_SHOT, "in the except");
    assert_eq!(from([10, 244, 2, 5], 4), TC_ACT_SHOT, "outside the block");
    // Classes are per direction: the same block for egress gives no ingress class.
    cidr_class(&dp, POD_B, DIRECTION_EGRESS, [10, 244, 2, 0], 24, 7);
    assert_eq!(from([10, 244, 2, 6], 5), TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::DropPolicyIngress), 4);
    assert_eq!(packets(&dp, Counter::DeliverFromStack), 1);
}

#[test]
fn the_reply_of_an_allowed_flow_passes_by_conntrack_and_a_closed_entry_is_judged_anew() {
    let root = PinRoot::new();
    // Both isolated for ingress; only B accepts A. Nothing allows B -> A as a new flow.
    let dp = enforcing(&root, INGRESS_ISOLATED, INGRESS_ISOLATED);
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, TCP, 80, 16);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&dp, &tcp(POD_B, 80, POD_A, 40000, SYN_ACK)).0, TC_ACT_REDIRECT, "the reply passes");
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, ACK)).0, TC_ACT_REDIRECT);
    assert_eq!((packets(&dp, Counter::CtReply), packets(&dp, Counter::CtEstablished)), (1, 1));
    let entry = tracked(&dp)[0].1;
    assert!(entry.flags & CtEntry::FLAG_SEEN_REPLY != 0);
    assert_eq!((entry.tcp_flags_orig, entry.tcp_flags_reply), (SYN | ACK, SYN_ACK));
    // B opening a connection of its own to A is a new flow, and A has no rule for it.
    assert_eq!(run(&dp, &tcp(POD_B, 41000, POD_A, 80, SYN)).0, TC_ACT_SHOT);
    // The connection closes; the rule goes. A SYN on the closing entry is a new connection: denied now.
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, FIN_ACK)).0, TC_ACT_REDIRECT);
    assert!(tracked(&dp)[0].1.flags & CtEntry::FLAG_CLOSING != 0);
    let key = PolicyKey {
        endpoint: u32::from_ne_bytes(POD_B),
        peer: ID_A.to_be_bytes(),
        direction: 0,
        proto: TCP,
        dport: 80u16.to_be_bytes(),
    };
    assert!(dp.policy_maps().unwrap().policy.remove(PolicyKey::FULL_BITS, &key).unwrap());
    assert_eq!(run(&dp, &tcp(POD_B, 80, POD_A, 40000, ACK)).0, TC_ACT_REDIRECT, "the close still finishes");
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_SHOT, "re-judged");
    assert!(tracked(&dp).is_empty(), "the closed entry was deleted");
    assert_eq!(packets(&dp, Counter::DropPolicyIngress), 2);
}

#[test]
fn an_established_flow_stays_open_when_policy_changes_and_expired_entries_do_not_count() {
    let root = PinRoot::new();
    let dp = enforcing(&root, LOCAL, INGRESS_ISOLATED);
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, UDP, 53, 16);
    assert_eq!(run(&dp, &udp(POD_A, 5000, POD_B, 53)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&dp, &udp(POD_B, 53, POD_A, 5000)).0, TC_ACT_REDIRECT);
    let mut maps = dp.policy_maps().unwrap();
    let key = PolicyKey {
        endpoint: u32::from_ne_bytes(POD_B),
        peer: ID_A.to_be_bytes(),
        direction: 0,
        proto: UDP,
        dport: 53u16.to_be_bytes(),
    };
    assert!(maps.policy.remove(PolicyKey::FULL_BITS, &key).unwrap());
    assert_eq!(run(&dp, &udp(POD_A, 5000, POD_B, 53)).0, TC_ACT_REDIRECT, "established flows stay open");
    assert_eq!(run(&dp, &udp(POD_A, 5001, POD_B, 53)).0, TC_ACT_SHOT, "new flows are judged");
    // An entry idle past its lifetime counts as absent: the flow is judged again (and denied now).
    let mut ct = BpfHashMap::<CtKey, CtEntry>::open_pinned(
        novanet_common::CT_MAP,
        novanet_common::MAX_CT,
        dp.map_pin(novanet_common::CT_MAP).unwrap(),
        true,
    )
    .unwrap();
    let (k, mut e) = ct.entries().unwrap()[0];
    e.last_seen_ns = monotonic_now_ns() - CtEntry::UDP_NS - 1_000_000_000;
    ct.insert(&k, &e).unwrap();
    assert_eq!(run(&dp, &udp(POD_A, 5000, POD_B, 53)).0, TC_ACT_SHOT);
    assert!(tracked(&dp).is_empty());
    assert_eq!(dp.conntrack().unwrap().count().unwrap(), 0);
}

#[test]
fn icmp_echo_is_tracked_by_identifier_and_icmp_errors_of_tracked_flows_are_related() {
    let root = PinRoot::new();
    let dp = enforcing(&root, INGRESS_ISOLATED, INGRESS_ISOLATED);
    // Echo: B accepts ICMP from A (any type: a protocol without ports).
    allow(&dp, POD_B, ID_A, DIRECTION_INGRESS, ICMP, 0, 0);
    assert_eq!(run(&dp, &echo(POD_A, POD_B, 8, 77)).0, TC_ACT_REDIRECT);
    assert_eq!(tracked(&dp)[0].0, flow(POD_A, 77, POD_B, 77, ICMP));
    assert_eq!(run(&dp, &echo(POD_B, POD_A, 0, 77)).0, TC_ACT_REDIRECT, "the echo reply passes");
    assert_eq!(run(&dp, &echo(POD_B, POD_A, 8, 78)).0, TC_ACT_SHOT, "B pinging A is new and denied");
    assert_eq!(packets(&dp, Counter::CtReply), 1);
    // A tracked UDP flow from A to C (another node); a router answers A with port unreachable.
    assert_eq!(run(&dp, &udp(POD_A, 6000, POD_C, 9999)).0, TC_ACT_OK);
    let router = [10, 244, 1, 1];
    assert_eq!(deliver(&dp, &port_unreachable(router, POD_A, 6000, POD_C, 9999)).0, TC_ACT_OK);
    assert_eq!(packets(&dp, Counter::CtRelated), 1);
    // About a flow that was never tracked: a new (ICMP) flow, judged, and A has no rule for it.
    assert_eq!(deliver(&dp, &port_unreachable(router, POD_A, 6001, POD_C, 9999)).0, TC_ACT_SHOT);
    // About A's flow but sent to someone else: not related (the error must go to the datagram's sender).
    let about_a = udp(POD_A, 6000, POD_C, 9999);
    assert_eq!(deliver(&dp, &icmp(router, POD_B, 3, 3, [0; 4], &about_a[14..14 + 28])).0, TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::CtRelated), 1);
    assert_eq!(packets(&dp, Counter::DropPolicyIngress), 3);
}

#[test]
fn egress_isolated_pod_needs_a_rule_for_new_flows_it_opens() {
    let root = PinRoot::new();
    let dp = enforcing(&root, EGRESS_ISOLATED, LOCAL);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_C, 80, SYN)).0, TC_ACT_SHOT);
    assert_eq!(run(&dp, &tcp(POD_A, 40001, POD_B, 80, SYN)).0, TC_ACT_SHOT);
    assert_eq!(run(&dp, &udp(POD_A, 5000, [8, 8, 8, 8], 53)).0, TC_ACT_SHOT, "the world");
    assert_eq!(packets(&dp, Counter::DropPolicyEgress), 3);
    assert_eq!(verdicts(&dp, POD_A).egress_denied.packets, 3);
    allow(&dp, POD_A, ID_C, DIRECTION_EGRESS, TCP, 80, 16);
    allow(&dp, POD_A, ID_B, DIRECTION_EGRESS, 0, 0, 0); // any protocol
    allow(&dp, POD_A, novanet_common::IDENTITY_WORLD, DIRECTION_EGRESS, UDP, 53, 16);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_C, 80, SYN)).0, TC_ACT_OK);
    assert_eq!(run(&dp, &tcp(POD_A, 40001, POD_B, 80, SYN)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&dp, &udp(POD_A, 5000, [8, 8, 8, 8], 53)).0, TC_ACT_OK);
    // The answers come back through the stack (C, the world) or straight from B.
    assert_eq!(deliver(&dp, &tcp(POD_C, 80, POD_A, 40000, SYN_ACK)).0, TC_ACT_OK);
    assert_eq!(run(&dp, &tcp(POD_B, 80, POD_A, 40001, SYN_ACK)).0, TC_ACT_REDIRECT);
    // And what the node's interface sees of A's judged flows passes by conntrack.
    assert_eq!(node_egress(&dp, &tcp(POD_A, 40000, POD_C, 80, ACK)).0, TC_ACT_OK);
    assert_eq!(verdicts(&dp, POD_A).egress_allowed.packets, 3);
    assert_eq!(packets(&dp, Counter::CtReply), 2);
}

#[test]
fn default_deny_isolates_local_endpoints_without_an_ipcache_entry() {
    let root = PinRoot::new();
    let dp = load_with_pods(&root);
    set_config(&dp, PolicyConfig::FLAG_ENFORCE | PolicyConfig::FLAG_DEFAULT_DENY);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::DropPolicyEgress), 1, "A has no entry: isolated for egress");
    cache(&dp, POD_A, ID_A, LOCAL);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::DropPolicyIngress), 1, "B has no entry: isolated for ingress");
    // Without default deny, an endpoint without an entry is not isolated.
    set_config(&dp, PolicyConfig::FLAG_ENFORCE);
    assert_eq!(run(&dp, &tcp(POD_A, 40000, POD_B, 80, SYN)).0, TC_ACT_REDIRECT);
}

#[test]
fn service_destinations_are_deferred_and_judged_after_the_translation() {
    let root = PinRoot::new();
    let dp = enforcing(&root, EGRESS_ISOLATED | IpcacheValue::FLAG_INGRESS_ISOLATED, LOCAL);
    cache(&dp, SVC, IDENTITY_SERVICE, 0);
    // A -> SVC passes to the stack untouched by A's egress rules, tracked as deferred.
    assert_eq!(run(&dp, &tcp(POD_A, 40000, SVC, 80, SYN)).0, TC_ACT_OK);
    let (f, e) = tracked(&dp)[0];
    assert_eq!(f, flow(POD_A, 40000, SVC, 80, TCP));
    assert!(e.flags & CtEntry::FLAG_DEFERRED != 0);
    assert_eq!(verdicts(&dp, POD_A), EndpointVerdicts::default(), "not judged yet");
    // The stack DNATs it to B on this node: A's egress is judged at B's veth, against B's identity.
    assert_eq!(deliver(&dp, &tcp(POD_A, 40000, POD_B, 8080, SYN)).0, TC_ACT_SHOT);
    assert_eq!(packets(&dp, Counter::DropPolicyEgress), 1);
    allow(&dp, POD_A, ID_B, DIRECTION_EGRESS, TCP, 8080, 16);
    assert_eq!(deliver(&dp, &tcp(POD_A, 40000, POD_B, 8080, SYN)).0, TC_ACT_OK);
    // The un-DNATed reply reaches A (ingress isolated) by the deferred entry.
    assert_eq!(run(&dp, &tcp(POD_B, 8080, POD_A, 40000, SYN_ACK)).0, TC_ACT_OK, "B's answer via the stack");
    assert_eq!(deliver(&dp, &tcp(SVC, 80, POD_A, 40000, SYN_ACK)).0, TC_ACT_OK);
    // DNATed to a pod of another node instead: judged at the node's interface.
    assert_eq!(run(&dp, &tcp(POD_A, 40001, SVC, 80, SYN)).0, TC_ACT_OK);
    assert_eq!(node_egress(&dp, &tcp(POD_A, 40001, POD_C, 8080, SYN)).0, TC_ACT_SHOT);
    allow(&dp, POD_A, ID_C, DIRECTION_EGRESS, TCP, 8080, 16);
    assert_eq!(node_egress(&dp, &tcp(POD_A, 40001, POD_C, 8080, SYN)).0, TC_ACT_OK);
    assert_eq!(deliver(&dp, &tcp(SVC, 80, POD_A, 40001, SYN_ACK)).0, TC_ACT_OK);
    let v = verdicts(&dp, POD_A);
    assert_eq!((v.egress_denied.packets, v.egress_allowed.packets), (2, 2));
    // The node's interface leaves what is not from a local endpoint alone, and counts nothing for it.
    let before = dp.counters().unwrap();
    assert_eq!(node_egress(&dp, &tcp(NODE, 40000, POD_C, 22, SYN)).0, TC_ACT_OK);
    assert_eq!(dp.counters().unwrap(), before);
}

#[test]
fn the_node_itself_is_always_allowed() {
    let root = PinRoot::new();
    let both = INGRESS_ISOLATED | IpcacheValue::FLAG_EGRESS_ISOLATED;
    let dp = enforcing(&root, both, both);
    cache(&dp, NODE, IDENTITY_HOST, 0);
    assert_eq!(deliver(&dp, &tcp(NODE, 50000, POD_B, 8080, SYN)).0, TC_ACT_OK, "kubelet probes");
    assert_eq!(run(&dp, &tcp(POD_B, 8080, NODE, 50000, SYN_ACK)).0, TC_ACT_OK);
    assert_eq!(run(&dp, &udp(POD_A, 5000, NODE, 53)).0, TC_ACT_OK, "a pod to its own node");
    assert_eq!(deliver(&dp, &tcp(POD_C, 50000, POD_B, 8080, SYN)).0, TC_ACT_SHOT, "others are judged");
    assert_eq!(verdicts(&dp, POD_B).ingress_allowed.packets, 1);
    assert_eq!(verdicts(&dp, POD_A).egress_allowed.packets, 1);
}
