//! Same-node pod-to-pod delivery through real namespaces: a node namespace and two pod namespaces joined by
//! veth pairs (host sides in the node, no bridge, no pod routes in the node), pods configured exactly as
//! the CNI does (/32 address, default route via 169.254.1.1, permanent neighbour = host veth MAC).
//!
//! Needs root, iproute2 and ping. Every namespace and pin is removed on drop, even on panic.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "support/bpffs.rs"]
mod bpffs;
#[allow(dead_code, reason = "shared test support; not every test uses every helper")]
#[path = "support/netns.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use bpffs::TestBpffs;
use netns::{ChildGuard, NetNs, unique_prefix};
use novanet_dataplane::layout::{Carry, MAPS, MapShape, MapSpec, PastLayout};
use novanet_dataplane::{Counter, Dataplane, DataplaneError, EndpointInfo};
#[allow(unused_imports, reason = "support/bpffs.rs uses it as crate::is_bpffs")]
use novanet_dataplane::is_bpffs;
use novanet_model::format_mac;

/// One pod: its namespace, host-side veth name, address and MACs.
struct Pod {
    ns: NetNs,
    host_if: String,
    ip: Ipv4Addr,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
}

/// A node namespace with two pods. Field order = drop order: pods go first, then the node.
struct Lab {
    a: Pod,
    b: Pod,
    node: NetNs,
}

impl Lab {
    fn new() -> Self {
        let p = unique_prefix();
        let node = NetNs::create(&format!("{p}-node"));
        let a = Pod::create(&node, &p, 'a', Ipv4Addr::new(10, 244, 0, 10));
        let b = Pod::create(&node, &p, 'b', Ipv4Addr::new(10, 244, 0, 11));
        Lab { a, b, node }
    }

    fn ping(&self, from: &Pod, to: &Pod, count: u32) -> bool {
        let out = from.ns.run(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", &to.ip.to_string()]);
        out.status.success()
    }
}

impl Pod {
    fn create(node: &NetNs, prefix: &str, tag: char, ip: Ipv4Addr) -> Self {
        let ns = NetNs::create(&format!("{prefix}-{tag}"));
        let host_if = format!("{prefix}h{tag}");
        let last = ip.octets()[3];
        let pod_mac = [0x02, 0x00, 0x0a, 0xf4, 0x00, last];
        let host_mac = [0x02, 0x00, 0x0a, 0xf4, 0x01, last];
        let ns_path = ns.path();
        node.ok(&[
            "ip",
            "link",
            "add",
            &host_if,
            "address",
            &format_mac(&host_mac),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &format_mac(&pod_mac),
            "netns",
            ns_path.to_str().unwrap(),
        ]);
        node.ok(&["ip", "link", "set", &host_if, "up"]);
        let gw = "169.254.1.1";
        ns.ok(&["ip", "link", "set", "eth0", "up"]);
        ns.ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.ok(&["ip", "route", "add", gw, "dev", "eth0", "scope", "link"]);
        ns.ok(&["ip", "route", "add", "default", "via", gw, "dev", "eth0"]);
        ns.ok(&["ip", "neigh", "add", gw, "lladdr", &format_mac(&host_mac), "dev", "eth0", "nud", "permanent"]);
        Pod { ns, host_if, ip, pod_mac, host_mac }
    }

    fn endpoint(&self, host_ifindex: u32) -> EndpointInfo {
        EndpointInfo { host_ifindex, identity: 0, pod_mac: self.pod_mac, host_mac: self.host_mac, flags: 0, _pad: 0 }
    }
}

fn packets(dp: &Dataplane, which: Counter) -> u64 {
    dp.counters().unwrap().into_iter().find(|(c, _)| *c == which).unwrap().1.packets
}

/// `id` of the program in NovaNet's filter on tc ingress of `ifname`, from tc(8).
fn filter_prog_ids(node: &NetNs, ifname: &str) -> Vec<u32> {
    let out = node.ok(&["tc", "filter", "show", "dev", ifname, "ingress"]);
    out.lines()
        .filter(|l| l.contains("novanet_pod_ingress"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "id")?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// Loads a dataplane (from a thread in the node namespace), attaches both pods and upserts both endpoints.
fn load_and_wire(lab: &Lab, bpffs: &TestBpffs) -> Dataplane {
    load_and_wire_with(lab, bpffs, &MAPS)
}

fn load_and_wire_with(lab: &Lab, bpffs: &TestBpffs, maps: &[MapSpec]) -> Dataplane {
    lab.node.in_ns(|| {
        let mut dp = Dataplane::load_with(bpffs.path(), maps).unwrap();
        for pod in [&lab.a, &lab.b] {
            let index = dp.attach_endpoint(&pod.host_if).unwrap();
            dp.upsert_endpoint(pod.ip, &pod.endpoint(index)).unwrap();
        }
        dp
    })
}

#[test]
fn ping_between_local_pods_is_redirected_and_survives_agent_restart() {
    let bpffs = TestBpffs::new();
    let lab = Lab::new();
    assert!(!lab.ping(&lab.a, &lab.b, 1), "without NovaNet the node has no route between the pods");

    let dp = load_and_wire(&lab, &bpffs);
    let before = packets(&dp, Counter::RedirectLocal);
    assert!(lab.ping(&lab.a, &lab.b, 3), "pod A pings pod B through bpf_redirect_peer");
    let redirected = packets(&dp, Counter::RedirectLocal) - before;
    assert!(redirected >= 6, "3 requests and 3 replies redirected, got {redirected}");
    let entries = dp.endpoints().unwrap();

    // Agent restart under load: a fast ping runs while the old agent goes away and a new one loads from
    // the same pins and re-attaches (replacing the filters' program in place). No reply may be lost.
    let ids_before = filter_prog_ids(&lab.node, &lab.a.host_if);
    let flood = lab.a.ns.command(&["ping", "-c", "100", "-i", "0.02", "-W", "1", &lab.b.ip.to_string()]);
    let mut flood = ChildGuard(flood_spawn(flood));
    std::thread::sleep(Duration::from_millis(400));
    drop(dp);
    assert!(lab.ping(&lab.b, &lab.a, 1), "filters keep running with no agent at all");
    let mut dp = lab.node.in_ns(|| {
        let mut dp = Dataplane::load(bpffs.path()).unwrap();
        for pod in [&lab.a, &lab.b] {
            dp.attach_endpoint(&pod.host_if).unwrap();
            assert!(dp.is_attached(&pod.host_if).unwrap());
        }
        dp
    });
    let out = wait_output(&mut flood);
    assert!(out.contains("100 packets transmitted, 100 received"), "no loss across the restart:\n{out}");
    let ids_after = filter_prog_ids(&lab.node, &lab.a.host_if);
    assert_eq!(ids_before.len(), 1, "one NovaNet filter before: {ids_before:?}");
    assert_eq!(ids_after.len(), 1, "one NovaNet filter after: {ids_after:?}");
    assert_ne!(ids_before, ids_after, "re-attach swapped in the new program");
    assert_eq!(dp.endpoints().unwrap(), entries, "the map entries survive the restart");
    assert!(lab.ping(&lab.a, &lab.b, 2));

    // Removing B's endpoint: frames to B go to the node's stack, which has no route for them.
    assert!(dp.remove_endpoint(lab.b.ip).unwrap());
    assert!(!dp.remove_endpoint(lab.b.ip).unwrap());
    let to_stack = packets(&dp, Counter::PassToStack);
    assert!(!lab.ping(&lab.a, &lab.b, 2), "no delivery once the endpoint is gone");
    assert!(packets(&dp, Counter::PassToStack) >= to_stack + 2);
}

fn flood_spawn(mut cmd: std::process::Command) -> std::process::Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning ping")
}

fn wait_output(child: &mut ChildGuard) -> String {
    use std::io::Read;
    let mut out = String::new();
    child.0.wait().expect("waiting for ping");
    if let Some(stdout) = child.0.stdout.as_mut() {
        stdout.read_to_string(&mut out).expect("reading ping output");
    }
    out
}

#[test]
fn attach_is_idempotent_detach_removes_it_and_the_filter_vanishes_with_the_veth() {
    let bpffs = TestBpffs::new();
    let lab = Lab::new();
    lab.node.in_ns(|| {
        let mut dp = Dataplane::load(bpffs.path()).unwrap();
        assert!(!dp.is_attached(&lab.a.host_if).unwrap());
        let first = dp.attach_endpoint(&lab.a.host_if).unwrap();
        assert_eq!(dp.attach_endpoint(&lab.a.host_if).unwrap(), first);
        assert_eq!(novanet_dataplane::ifindex(&lab.a.host_if).unwrap(), first);
        assert!(dp.is_attached(&lab.a.host_if).unwrap());
        assert_eq!(filter_prog_ids(&lab.node, &lab.a.host_if).len(), 1, "re-attaching adds no second filter");
        assert!(!dp.is_attached("lo").unwrap(), "an interface without clsact has no filter");

        // Uninstall: detaching removes only our filter; a second detach and a missing interface are no-ops.
        assert!(Dataplane::detach_endpoint(&lab.a.host_if).unwrap());
        assert!(!dp.is_attached(&lab.a.host_if).unwrap());
        assert!(filter_prog_ids(&lab.node, &lab.a.host_if).is_empty());
        assert!(!Dataplane::detach_endpoint(&lab.a.host_if).unwrap());
        assert!(!Dataplane::detach_endpoint("nosuchif0").unwrap());
        dp.attach_endpoint(&lab.a.host_if).unwrap();

        lab.node.ok(&["ip", "link", "del", &lab.a.host_if]);
        let err = dp.is_attached(&lab.a.host_if).unwrap_err();
        assert!(matches!(err, DataplaneError::InterfaceNotFound { .. }), "{err:?}");
        let err = dp.attach_endpoint("nosuchif0").unwrap_err();
        assert!(matches!(err, DataplaneError::InterfaceNotFound { .. }), "{err:?}");
    });
}

/// A build whose endpoint map has another layout (here: another size, as version 2) takes over from the
/// running one while a fast ping runs: the new map is filled from the old before the new programs replace
/// the old ones on the filters, so not one reply is lost; the old pin goes once all are replaced.
#[test]
fn an_upgrade_to_a_changed_map_layout_takes_over_without_losing_a_ping() {
    const SMALL: u32 = 1024;
    let endpoints = MAPS[0];
    assert_eq!(endpoints.name, "NOVANET_ENDPOINTS");
    let mut old = MAPS;
    old[0] = MapSpec { version: 1, shape: MapShape { max_entries: SMALL, ..endpoints.shape }, past: &[], ..endpoints };
    const PAST: [PastLayout; 1] = [PastLayout {
        version: 1,
        shape: MapShape { max_entries: SMALL, ..MAPS[0].shape },
        carry: Carry::Entries,
    }];
    let mut new = MAPS;
    new[0] = MapSpec { version: 2, past: &PAST, ..endpoints };

    let bpffs = TestBpffs::new();
    let lab = Lab::new();
    let dp = load_and_wire_with(&lab, &bpffs, &old);
    assert!(lab.ping(&lab.a, &lab.b, 1));
    let flood = lab.a.ns.command(&["ping", "-c", "100", "-i", "0.02", "-W", "1", &lab.b.ip.to_string()]);
    let mut flood = ChildGuard(flood_spawn(flood));
    std::thread::sleep(Duration::from_millis(400));
    drop(dp);
    let mut dp = lab.node.in_ns(|| {
        let mut dp = Dataplane::load_with(bpffs.path(), &new).unwrap();
        assert_eq!(dp.superseded().len(), 1, "{:?}", dp.superseded());
        for pod in [&lab.a, &lab.b] {
            dp.attach_endpoint(&pod.host_if).unwrap();
        }
        dp
    });
    assert_eq!(dp.endpoints().unwrap().len(), 2, "the entries were carried into the new layout");
    let removed = dp.finish_upgrade().unwrap();
    assert_eq!(removed.len(), 1);
    assert!(!removed[0].path.exists(), "the old pin is gone");
    assert!(bpffs.path().join("novanet/NOVANET_ENDPOINTS_v2").exists());
    let out = wait_output(&mut flood);
    assert!(out.contains("100 packets transmitted, 100 received"), "no loss across the upgrade:\n{out}");
    assert!(lab.ping(&lab.b, &lab.a, 2), "the new programs forward with the new map");
}

/// A pod that sends with an address that is not its own (another pod's, or one it added itself) gets
/// nothing through; the drops are counted with their reason.
#[test]
fn a_pod_forging_its_source_address_is_dropped() {
    let bpffs = TestBpffs::new();
    let lab = Lab::new();
    let dp = load_and_wire(&lab, &bpffs);
    assert!(lab.ping(&lab.a, &lab.b, 1));
    let b = lab.b.ip.to_string();
    // An address of its own choosing, to pod B; pod B's own address, to elsewhere (pod A would answer
    // itself if it pinged pod B with pod B's address).
    for (forged, to) in [("10.244.0.99", b.as_str()), ("10.244.0.11", "10.244.0.50")] {
        lab.a.ns.ok(&["ip", "addr", "add", &format!("{forged}/32"), "dev", "eth0"]);
        let before = packets(&dp, Counter::DropSpoofedSource);
        let out = lab.a.ns.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", forged, to]);
        assert!(!out.status.success(), "a ping from forged source {forged} got an answer");
        assert!(packets(&dp, Counter::DropSpoofedSource) >= before + 2, "drops of {forged} are counted");
        lab.a.ns.ok(&["ip", "addr", "del", &format!("{forged}/32"), "dev", "eth0"]);
    }
    assert!(lab.ping(&lab.a, &lab.b, 1), "its own address still works");
}
