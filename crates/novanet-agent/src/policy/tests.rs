use super::*;
use novanet_common::{DIRECTION_INGRESS, IDENTITY_CLUSTER_MIN, PolicyKey, PolicyValue};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

fn key(endpoint: Ipv4Addr, peer: u32) -> (u32, PolicyKey) {
    let k = PolicyKey {
        endpoint: u32::from_ne_bytes(endpoint.octets()),
        peer: peer.to_be_bytes(),
        direction: DIRECTION_INGRESS,
        proto: 6,
        dport: 80u16.to_be_bytes(),
    };
    (PolicyKey::FULL_BITS, k)
}

fn desired(entries: &[((u32, PolicyKey), PolicyValue)], ipcache: &[(Ipv4Addr, IpcacheValue)]) -> Desired {
    let mut d = Desired::default();
    d.entries.policy = entries.iter().copied().collect();
    d.ipcache = ipcache.iter().copied().collect();
    d
}

const WEB: u32 = IDENTITY_CLUSTER_MIN + 1;
const ISOLATED_IN: IpcacheValue =
    IpcacheValue { identity: WEB, flags: IpcacheValue::FLAG_LOCAL | IpcacheValue::FLAG_INGRESS_ISOLATED };

#[test]
fn ipcache_marks_local_endpoints_nodes_and_services() {
    let pods = BTreeMap::from([(ip(2), WEB), (ip(3), WEB + 1), (Ipv4Addr::new(10, 244, 2, 2), WEB)]);
    let local = BTreeSet::from([ip(2), ip(3), ip(4)]);
    let isolation = BTreeMap::from([(ip(2), IpcacheValue::FLAG_INGRESS_ISOLATED)]);
    let own = [Ipv4Addr::new(172, 30, 0, 10)];
    let others = [Ipv4Addr::new(172, 30, 0, 11)];
    let services = [Ipv4Addr::new(10, 96, 0, 10)];
    let unknown = BTreeMap::new();
    let book = |default_deny| AddressBook {
        pods: &pods,
        local: &local,
        isolation: &isolation,
        unknown: &unknown,
        own_node_ips: &own,
        other_node_ips: &others,
        service_ips: &services,
        default_deny,
    };
    let cache = desired_ipcache(&book(false));
    assert_eq!(cache[&ip(2)], ISOLATED_IN);
    assert_eq!(cache[&ip(3)], IpcacheValue { identity: WEB + 1, flags: IpcacheValue::FLAG_LOCAL });
    assert_eq!(
        cache[&ip(4)],
        IpcacheValue { identity: IDENTITY_UNMANAGED, flags: IpcacheValue::FLAG_LOCAL | BOTH_ISOLATED },
        "no Pod object yet: not judged, so isolated (fail closed)"
    );
    let open_namespace = BTreeMap::from([(ip(4), unknown_pod_isolation(false, false))]);
    let cache = desired_ipcache(&AddressBook { unknown: &open_namespace, ..book(false) });
    assert_eq!(cache[&ip(4)].flags, IpcacheValue::FLAG_LOCAL, "no Pod object, in a namespace without policies: open");
    assert_eq!(unknown_pod_isolation(true, false), BOTH_ISOLATED, "its namespace has policies: isolated");
    assert_eq!(unknown_pod_isolation(false, true), BOTH_ISOLATED, "default deny: isolated");
    assert_eq!(cache[&Ipv4Addr::new(10, 244, 2, 2)], IpcacheValue { identity: WEB, flags: 0 }, "remote pods: no flags");
    assert_eq!(cache[&own[0]].identity, IDENTITY_HOST);
    assert_eq!(cache[&Ipv4Addr::from(GATEWAY_V4)].identity, IDENTITY_HOST);
    assert_eq!(cache[&others[0]].identity, IDENTITY_REMOTE_NODE);
    assert_eq!(cache[&services[0]].identity, IDENTITY_SERVICE);
    let deny = desired_ipcache(&book(true));
    assert_eq!(deny[&ip(3)].flags, IpcacheValue::FLAG_LOCAL | BOTH_ISOLATED, "default deny isolates the unselected");
}

#[test]
fn apply_writes_only_the_difference_and_turns_enforcement_on() {
    let mut engine = PolicyEngine::new(MemPolicyMaps::default(), false);
    let allow = (key(ip(2), WEB + 1), PolicyValue { rule: 0, _pad: 0 });
    let first = desired(&[allow], &[(ip(2), ISOLATED_IN)]);
    let r = engine.apply(&first);
    assert_eq!((r.upserts, r.removals, r.errors.len()), (2, 0, 0));
    assert_ne!(engine.maps().config.flags & PolicyConfig::FLAG_ENFORCE, 0);
    let again = engine.apply(&first);
    assert_eq!((again.upserts, again.removals), (0, 0), "nothing changed, nothing written");
    assert_eq!(engine.maps().config.revision, 2);
    let second = desired(&[(key(ip(2), WEB + 2), PolicyValue { rule: 1, _pad: 0 })], &[(ip(2), ISOLATED_IN)]);
    let r = engine.apply(&second);
    assert_eq!((r.upserts, r.removals), (1, 1));
    assert_eq!(engine.maps().policy.keys().copied().collect::<Vec<_>>(), vec![key(ip(2), WEB + 2)]);
}

#[test]
fn an_address_reused_by_a_new_endpoint_never_keeps_the_old_allows() {
    let mut engine = PolicyEngine::new(MemPolicyMaps::default(), false);
    let allow = (key(ip(2), WEB + 1), PolicyValue { rule: 0, _pad: 0 });
    engine.apply(&desired(&[allow], &[(ip(2), ISOLATED_IN)]));
    engine.endpoint_removed(ip(2)).unwrap();
    assert!(engine.maps().policy.is_empty() && engine.maps().ipcache.is_empty(), "DEL removes the state at once");
    engine.apply(&desired(&[allow], &[(ip(2), ISOLATED_IN)]));
    engine.endpoint_added(ip(2), WEB + 7).unwrap();
    assert!(engine.maps().policy.is_empty(), "the previous owner's allows are gone before the new pod runs");
    assert_eq!(engine.maps().ipcache[&ip(2)], IpcacheValue { identity: WEB + 7, flags: IpcacheValue::FLAG_LOCAL | BOTH_ISOLATED });
}

#[test]
fn a_full_policy_map_is_reported_and_the_endpoint_stays_isolated() {
    let maps = MemPolicyMaps { policy_capacity: Some(1), ..MemPolicyMaps::default() };
    let mut engine = PolicyEngine::new(maps, false);
    let a = (key(ip(2), WEB + 1), PolicyValue { rule: 0, _pad: 0 });
    let b = (key(ip(2), WEB + 2), PolicyValue { rule: 1, _pad: 0 });
    let r = engine.apply(&desired(&[a, b], &[(ip(2), ISOLATED_IN)]));
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].contains("full"), "{r:?}");
    assert_eq!(engine.maps().ipcache[&ip(2)], ISOLATED_IN, "isolated: what is missing denies");
    assert_eq!(engine.maps().policy.len(), 1);
    // Room again: the next apply writes what is missing.
    let r = {
        let mut engine2 = engine;
        let maps = &mut engine2.maps;
        maps.policy_capacity = None;
        engine2.apply(&desired(&[a, b], &[(ip(2), ISOLATED_IN)]))
    };
    assert!(r.errors.is_empty() && r.upserts == 1, "{r:?}");
}
