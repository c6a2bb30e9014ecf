//! The endpoint manager's rollback and reconciliation rules, through the in-memory fake datapath with
//! fault injection: no address, map entry or attachment is leaked, and one bad endpoint never stops the
//! others.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use novanet_dataplane::DataplaneError;
use novanet_model::{AttachmentId, EndpointTable, NewEndpoint, PodRef};

use super::*;
use crate::fake_datapath::{Fake, FakeStore, Op};

type Manager = EndpointManager<Fake, FakeStore>;

fn attachment(id: &str) -> AttachmentId {
    AttachmentId { container_id: id.into(), ifname: "eth0".into() }
}

fn new_ep(id: &str, host: &str, mac: u8) -> NewEndpoint {
    NewEndpoint {
        attachment: attachment(id),
        pod: PodRef { namespace: "default".into(), name: id.into(), uid: format!("uid-{id}") },
        netns: format!("/run/netns/{id}"),
        host_ifname: host.into(),
        host_mac: [2, 0, 0, 0, 1, mac],
        pod_mac: [2, 0, 0, 0, 2, mac],
    }
}

fn manager_with(cidr: &str, interfaces: &[&str]) -> (Manager, Fake) {
    let fake = Fake::default();
    for name in interfaces {
        fake.add_interface(name);
    }
    let mut m = EndpointManager::new(EndpointTable::new(cidr.parse().unwrap()).unwrap(), fake.clone(), fake.store());
    m.persist().unwrap();
    (m, fake)
}

fn manager(interfaces: &[&str]) -> (Manager, Fake) {
    manager_with("10.244.1.0/24", interfaces)
}

/// The whole node agrees with the table: every address in use belongs to an endpoint, the map holds
/// exactly the endpoints' entries, filters sit exactly on their interfaces, and the file on disk is the
/// table.
fn assert_consistent(m: &Manager, fake: &Fake, context: &str) {
    let s = fake.state();
    let table = m.table();
    assert_eq!(table.ipam().used() as usize, table.len(), "{context}: addresses in use vs endpoints");
    let table_ips: BTreeSet<Ipv4Addr> = table.iter().map(|e| e.ip).collect();
    let map_ips: BTreeSet<Ipv4Addr> = s.map.keys().copied().collect();
    assert_eq!(map_ips, table_ips, "{context}: map entries vs endpoints");
    for ep in table.iter() {
        let info = s.map[&ep.ip];
        assert_eq!(info.pod_mac, ep.pod_mac, "{context}: map entry of {} is stale", ep.ip);
        assert_eq!(info.host_ifindex, s.interfaces[&ep.host_ifname], "{context}: ifindex of {}", ep.ip);
    }
    let host_ifnames: BTreeSet<String> = table.iter().map(|e| e.host_ifname.clone()).collect();
    assert_eq!(s.attached, host_ifnames, "{context}: attachments vs endpoints");
    // The allocator's cursor may move on a failed ADD; the endpoints and their addresses may not.
    let saved = s.saved.as_ref().map(|t| (&t.pod_cidr, &t.endpoints));
    let persisted = table.persisted();
    assert_eq!(saved, Some((&persisted.pod_cidr, &persisted.endpoints)), "{context}: the state file vs the table");
}

#[test]
fn remove_keeps_the_address_until_the_map_entry_is_gone() {
    let (mut m, fake) = manager(&["nna", "nnb"]);
    let a = m.add(new_ep("a", "nna", 1)).unwrap();
    fake.fail(Op::Remove, 1);
    let err = m.remove(&attachment("a")).unwrap_err();
    assert!(matches!(err, EndpointError::Datapath { .. }), "{err:?}");
    assert!(m.table().ipam().is_used(a.ip), "the address of a still-mapped endpoint was freed");
    assert_eq!(m.table().get(&attachment("a")), Some(&a), "a retried DEL must find it");
    let b = m.add(new_ep("b", "nnb", 2)).unwrap();
    assert_ne!(b.ip, a.ip, "the address went to another pod while its map entry still pointed at the first");
    assert_consistent(&m, &fake, "after the failed DEL");
    assert_eq!(m.remove(&attachment("a")).unwrap(), Some(a));
    fake.remove_interface("nna");
    assert_consistent(&m, &fake, "after the retried DEL");
}

#[test]
fn remove_puts_the_endpoint_back_when_its_state_cannot_be_written() {
    let (mut m, fake) = manager(&["nna"]);
    let a = m.add(new_ep("a", "nna", 1)).unwrap();
    fake.fail(Op::Save, 1);
    let err = m.remove(&attachment("a")).unwrap_err();
    assert!(matches!(err, EndpointError::Persist(_)), "{err:?}");
    assert!(m.table().ipam().is_used(a.ip), "the file still lists the address, so it must stay owned");
    assert_consistent(&m, &fake, "after the failed DEL");
    assert_eq!(m.remove(&attachment("a")).unwrap(), Some(a));
    fake.remove_interface("nna");
    assert_consistent(&m, &fake, "after the retried DEL");
}

#[test]
fn a_failed_repeated_add_restores_the_previous_entry() {
    for fault in [Op::Attach, Op::Upsert, Op::Save] {
        let (mut m, fake) = manager(&["nna"]);
        let before = m.add(new_ep("a", "nna", 1)).unwrap();
        let info_before = fake.state().map[&before.ip];
        fake.fail(fault, 1);
        // The runtime retries ADD with other details (here: a new pod MAC).
        assert!(m.add(new_ep("a", "nna", 9)).is_err(), "{fault:?}");
        assert_eq!(m.table().get(&attachment("a")), Some(&before), "{fault:?}: the table kept the failed change");
        assert_eq!(fake.state().map[&before.ip], info_before, "{fault:?}: the map kept the failed change");
        assert_consistent(&m, &fake, &format!("after the failed repeated ADD ({fault:?})"));
    }
}

#[test]
fn a_failed_add_detaches_the_filter_it_attached_and_only_that() {
    let (mut m, fake) = manager(&["nna", "nnb"]);
    fake.fail(Op::Upsert, 1);
    assert!(m.add(new_ep("a", "nna", 1)).is_err());
    assert!(!fake.state().attached.contains("nna"), "the filter this ADD attached was left behind");
    assert_consistent(&m, &fake, "after the failed ADD");

    // A filter that was there before the ADD (put there by someone else) is not this ADD's to remove.
    fake.state().attached.insert("nnb".into());
    fake.fail(Op::Upsert, 1);
    assert!(m.add(new_ep("b", "nnb", 2)).is_err());
    assert!(fake.state().attached.contains("nnb"), "the rollback removed a filter it did not attach");
}

#[test]
fn a_full_map_is_resource_exhausted_and_leaks_nothing() {
    let (mut m, fake) = manager(&["nna", "nnb"]);
    fake.state().capacity = Some(1);
    m.add(new_ep("a", "nna", 1)).unwrap();
    let err = m.add(new_ep("b", "nnb", 2)).unwrap_err();
    assert!(err.is_resource_exhausted(), "{err:?}");
    assert!(
        matches!(&err, EndpointError::Datapath { source: DataplaneError::MapFull { .. }, .. }),
        "the datapath's own error is kept: {err:?}"
    );
    assert_consistent(&m, &fake, "after the ADD into a full map");
}

#[test]
fn an_exhausted_pool_is_resource_exhausted_and_other_failures_are_not() {
    // A /30 holds one pod address (network, node and broadcast addresses excluded).
    let (mut m, fake) = manager_with("10.244.1.0/30", &["nna", "nnb", "nnc"]);
    let mut added = 0;
    let err = loop {
        match m.add(new_ep(&format!("p{added}"), ["nna", "nnb", "nnc"][added], added as u8)) {
            Ok(_) => added += 1,
            Err(e) => break e,
        }
        assert!(added < 3, "a /30 cannot hold three pods");
    };
    assert!(err.is_resource_exhausted(), "{err:?}");
    assert_consistent(&m, &fake, "after the ADD into a full pool");
    fake.fail(Op::Remove, 1);
    let other = m.remove(&attachment("p0")).unwrap_err();
    assert!(!other.is_resource_exhausted(), "{other:?}");
}

#[test]
fn reconcile_carries_on_past_a_failing_endpoint_and_delete_still_works() {
    let (mut first, fake) = manager(&["nna", "nnb", "nnc", "nnd"]);
    for (id, host) in [("a", "nna"), ("b", "nnb"), ("c", "nnc")] {
        first.add(new_ep(id, host, 1)).unwrap();
    }
    let persisted = fake.state().saved.clone().unwrap();
    // A stale map entry (an endpoint the table does not have) and a restart.
    let any_entry = fake.state().map.values().next().copied().unwrap();
    fake.state().map.insert(Ipv4Addr::new(10, 244, 1, 200), any_entry);
    let (table, _) = EndpointTable::restore(persisted, "10.244.1.0/24".parse().unwrap()).unwrap();
    let mut m = EndpointManager::new(table, fake.clone(), fake.store());
    fake.fail(Op::Attach, 2);
    let report = m.reconcile();
    assert_eq!(report.restored, 2, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].contains("b/eth0"), "{report:?}");
    assert_eq!(report.stale_map_entries_removed, 1, "the sweep ran after the failure: {report:?}");
    // The failed endpoint is still known, so CNI DEL releases it.
    let b = m.remove(&attachment("b")).unwrap().expect("the failed endpoint stays for DEL");
    assert!(!m.table().ipam().is_used(b.ip));
    assert!(!fake.state().map.contains_key(&b.ip));
}

#[test]
fn bulk_removal_carries_on_past_a_failing_endpoint() {
    let (mut m, fake) = manager(&["nna", "nnb", "nnc"]);
    for (id, host) in [("a", "nna"), ("b", "nnb"), ("c", "nnc")] {
        m.add(new_ep(id, host, 1)).unwrap();
    }
    fake.fail(Op::Remove, 1);
    let removal = m.garbage_collect(&[]);
    assert_eq!(removal.released.len(), 2, "{removal:?}");
    assert_eq!(removal.failed.len(), 1, "{removal:?}");
    assert_eq!(removal.failed[0].0, attachment("a"));
    assert_eq!(m.table().len(), 1);
    // The file still holds the released ones' removal; the kept endpoint is intact.
    let s = fake.state();
    assert_eq!(s.saved.as_ref().unwrap().endpoints.len(), 1);
}

/// Every operation of a pod's life, with each of its datapath and disk calls failing in turn: after
/// each failure the node is exactly as the table and the file say, and the operation succeeds when
/// retried.
#[test]
fn any_single_fault_leaves_the_node_consistent() {
    type Step = fn(&mut Manager, &Fake) -> Result<(), EndpointError>;
    let steps: [(&str, Step); 4] = [
        ("add a", |m, _| m.add(new_ep("a", "nna", 1)).map(|_| ())),
        ("add b", |m, _| m.add(new_ep("b", "nnb", 2)).map(|_| ())),
        ("re-add a", |m, _| m.add(new_ep("a", "nna", 3)).map(|_| ())),
        // The runtime deletes the veth once DEL succeeded.
        ("del a", |m, fake| m.remove(&attachment("a")).map(|_| fake.remove_interface("nna"))),
    ];
    let mut failures = 0;
    for (at, (name, step)) in steps.iter().enumerate() {
        for op in Op::ALL {
            for nth in 1..=3 {
                let (mut m, fake) = manager(&["nna", "nnb"]);
                for (_, earlier) in &steps[..at] {
                    earlier(&mut m, &fake).unwrap();
                }
                fake.fail(op, nth);
                let result = step(&mut m, &fake);
                let context = format!("{name} with {op:?} #{nth} failing");
                if fake.faults_pending() {
                    // The operation makes fewer such calls (detach, for one, only runs in rollbacks).
                    fake.clear_faults();
                    result.unwrap_or_else(|e| panic!("{context}: failed without a fault: {e}"));
                    assert_consistent(&m, &fake, &context);
                    continue;
                }
                assert!(result.is_err(), "{context}: the fault was swallowed");
                failures += 1;
                assert_consistent(&m, &fake, &context);
                step(&mut m, &fake).unwrap_or_else(|e| panic!("{context}: the retry failed: {e}"));
                assert_consistent(&m, &fake, &format!("{context}, retried"));
            }
        }
    }
    assert!(failures >= 10, "the faults did not reach the manager ({failures})");
}
