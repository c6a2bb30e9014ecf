use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kube::api::ObjectMeta;
use kube::runtime::watcher::Event;
use tokio::sync::broadcast::error::TryRecvError;

use crate::{ClusterObjects, KindState, ObjectChange, ObjectKey, ObjectKind, find_pod};

fn pod(ns: &str, name: &str, uid: &str, node: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<ObjectChange>) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(c) => out.push(c),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

fn applied(ns: &str, name: &str, uid: &str) -> ObjectChange {
    ObjectChange {
        kind: ObjectKind::Pod,
        key: ObjectKey::namespaced(ns, name),
        uid: Some(uid.into()),
        deleted: false,
    }
}

fn deleted(ns: &str, name: &str, uid: &str) -> ObjectChange {
    ObjectChange {
        deleted: true,
        ..applied(ns, name, uid)
    }
}

#[test]
fn initial_list_fills_store_and_announces_each_object_at_init_done() {
    let (objects, mut w) = ClusterObjects::new();
    let mut rx = objects.subscribe();
    let gen0 = *objects.generation().borrow();
    w.pods.apply(&Event::Init);
    w.pods
        .apply(&Event::InitApply(pod("default", "a", "u-a", "n1", "web")));
    w.pods
        .apply(&Event::InitApply(pod("default", "b", "u-b", "n1", "db")));
    // Nothing visible before InitDone: the list is buffered.
    assert_eq!(objects.pods().len(), 0);
    assert!(drain(&mut rx).is_empty());
    assert!(!objects.is_synced(ObjectKind::Pod));
    assert_eq!(
        objects.present_pod_uids(None),
        None,
        "unsynced store must not answer orphan sweeps"
    );
    w.pods.apply(&Event::InitDone);
    assert_eq!(objects.pods().len(), 2);
    assert_eq!(
        drain(&mut rx),
        vec![
            applied("default", "a", "u-a"),
            applied("default", "b", "u-b")
        ]
    );
    assert!(*objects.generation().borrow() > gen0);
    assert!(objects.is_synced(ObjectKind::Pod));
    let uids = objects.present_pod_uids(Some("n1")).unwrap();
    assert_eq!(uids.len(), 2);
    assert!(objects.present_pod_uids(Some("n2")).unwrap().is_empty());
}

#[test]
fn apply_updates_and_delete_removes_with_notifications() {
    let (objects, mut w) = ClusterObjects::new();
    w.pods.apply(&Event::Init);
    w.pods.apply(&Event::InitDone);
    let mut rx = objects.subscribe();
    w.pods
        .apply(&Event::Apply(pod("ns", "a", "u-a", "n1", "web")));
    w.pods
        .apply(&Event::Apply(pod("ns", "a", "u-a", "n1", "web"))); // identical: silent
    w.pods
        .apply(&Event::Apply(pod("ns", "a", "u-a", "n1", "api"))); // label change
    let p = find_pod(objects.pods(), "ns", "a").unwrap();
    assert_eq!(
        crate::pod_labels(&p).get("app").map(String::as_str),
        Some("api")
    );
    w.pods
        .apply(&Event::Delete(pod("ns", "a", "u-a", "n1", "api")));
    assert!(find_pod(objects.pods(), "ns", "a").is_none());
    assert_eq!(
        drain(&mut rx),
        vec![
            applied("ns", "a", "u-a"),
            applied("ns", "a", "u-a"),
            deleted("ns", "a", "u-a")
        ]
    );
}

#[test]
fn relist_replaces_atomically_and_announces_only_the_difference() {
    let (objects, mut w) = ClusterObjects::new();
    w.pods.apply(&Event::Init);
    for (n, u) in [("keep", "u1"), ("change", "u2"), ("gone", "u3")] {
        w.pods.apply(&Event::InitApply(pod("ns", n, u, "n1", "v1")));
    }
    w.pods.apply(&Event::InitDone);
    let mut rx = objects.subscribe();
    // A 410 Gone relist: "gone" vanished while we were not watching, "change" changed, "new" appeared.
    w.pods.apply(&Event::Init);
    w.pods
        .apply(&Event::InitApply(pod("ns", "keep", "u1", "n1", "v1")));
    w.pods
        .apply(&Event::InitApply(pod("ns", "change", "u2", "n1", "v2")));
    w.pods
        .apply(&Event::InitApply(pod("ns", "new", "u4", "n1", "v1")));
    // Until InitDone the old contents are served untouched.
    assert!(find_pod(objects.pods(), "ns", "gone").is_some());
    assert!(drain(&mut rx).is_empty());
    w.pods.apply(&Event::InitDone);
    assert!(find_pod(objects.pods(), "ns", "gone").is_none());
    assert_eq!(objects.pods().len(), 3);
    assert_eq!(
        drain(&mut rx),
        vec![
            applied("ns", "change", "u2"),
            deleted("ns", "gone", "u3"),
            applied("ns", "new", "u4")
        ]
    );
    assert_eq!(objects.health(ObjectKind::Pod).lists_total, 2);
}

#[test]
fn errors_keep_store_contents_and_show_in_health() {
    let (objects, mut w) = ClusterObjects::new();
    w.nodes.apply(&Event::Init);
    w.nodes.apply(&Event::InitApply(Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }));
    w.nodes.apply(&Event::InitDone);
    // An outage: the watcher yields errors, and may restart a list that never completes.
    w.nodes.record_error(&"connection refused");
    w.nodes.apply(&Event::Init);
    w.nodes.record_error(&"connection refused");
    assert_eq!(
        objects.nodes().len(),
        1,
        "an unfinished relist must not empty the store"
    );
    let h = objects.health(ObjectKind::Node);
    // The Init event in between was a success, so only the last error is consecutive.
    assert_eq!((h.errors_total, h.consecutive_errors, h.objects), (2, 1, 1));
    assert_eq!(h.state(std::time::SystemTime::now()), KindState::Degraded);
    assert_eq!(h.last_error.as_deref(), Some("connection refused"));
    // Recovery: the relist completes.
    w.nodes.apply(&Event::Init);
    w.nodes.apply(&Event::InitDone);
    assert_eq!(objects.nodes().len(), 0);
    assert_eq!(
        objects
            .health(ObjectKind::Node)
            .state(std::time::SystemTime::now()),
        KindState::Healthy
    );
}

#[tokio::test]
async fn wait_synced_waits_for_every_kind() {
    let (objects, mut w) = ClusterObjects::new();
    let waiter = tokio::spawn({
        let objects = objects.clone();
        async move { objects.wait_synced().await }
    });
    w.pods.apply(&Event::Init);
    w.pods.apply(&Event::InitDone);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    w.namespaces.apply(&Event::InitDone);
    w.nodes.apply(&Event::InitDone);
    w.network_policies.apply(&Event::InitDone);
    w.services.apply(&Event::InitDone);
    w.endpoint_slices.apply(&Event::InitDone);
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn wait_synced_fails_when_the_source_stops_first() {
    let (objects, w) = ClusterObjects::new();
    drop(w);
    let err = objects.wait_synced().await.unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::SourceStopped {
                kind: ObjectKind::Pod
            }
        ),
        "{err}"
    );
}
