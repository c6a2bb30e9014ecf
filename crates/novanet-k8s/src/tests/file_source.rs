//! [`FileSource`] against a real file: first load syncs, changes arrive within ~200 ms, deletions are
//! applied, a bad file keeps the last good contents and degrades every kind.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::{ClusterObjects, FileSource, KindState, ObjectKind};

const NS_AND_POLICY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.244.1.5}
";

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn policy_names(objects: &ClusterObjects) -> Vec<String> {
    let mut names: Vec<String> = objects
        .network_policies()
        .state()
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_good_file_is_synced_at_start_and_changes_reach_the_stores_within_200ms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.yaml");
    write_atomic(&path, NS_AND_POLICY);
    let (objects, _source) = FileSource::start(&path);
    assert!(
        ObjectKind::ALL.iter().all(|k| objects.is_synced(*k)),
        "synced before start returns"
    );
    assert_eq!(policy_names(&objects), ["deny"]);
    let pod = objects.pods().state().first().cloned().unwrap();
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.244.1.5")
    );

    // An update and an addition.
    let more = format!(
        "{NS_AND_POLICY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow, namespace: x}}\nspec: {{podSelector: {{}}}}\n"
    )
    .replace("pod: a", "pod: b");
    write_atomic(&path, &more);
    let took = until("the new policy", || {
        policy_names(&objects) == ["allow", "deny"]
    })
    .await;
    assert!(took < Duration::from_millis(200), "took {took:?}");
    until("the relabelled pod", || {
        objects.pods().state().first().is_some_and(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod"))
                .map(String::as_str)
                == Some("b")
        })
    })
    .await;

    // Objects missing from the new file are deleted.
    write_atomic(
        &path,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    );
    until("the deletions", || {
        objects.network_policies().is_empty() && objects.pods().is_empty()
    })
    .await;
    assert_eq!(objects.namespaces().len(), 1);
    let now = SystemTime::now();
    assert!(
        objects
            .health_all()
            .iter()
            .all(|h| h.state(now) == KindState::Healthy)
    );
}

#[tokio::test]
async fn a_file_that_does_not_parse_keeps_the_last_good_contents_and_degrades_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.yaml");
    write_atomic(&path, NS_AND_POLICY);
    let (objects, _source) = FileSource::start(&path);
    write_atomic(
        &path,
        "apiVersion: v1\nkind: Nonsense\nmetadata: {name: q}\n",
    );
    until("the error", || {
        objects.health(ObjectKind::NetworkPolicy).errors_total > 0
    })
    .await;
    assert_eq!(policy_names(&objects), ["deny"], "last good contents kept");
    let now = SystemTime::now();
    for h in objects.health_all() {
        assert_eq!(h.state(now), KindState::Degraded, "{h:?}");
        assert!(
            h.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Nonsense")),
            "{h:?}"
        );
    }
    // Reported once, not every poll.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(objects.health(ObjectKind::Pod).errors_total, 1);
    // Fixed: healthy again, contents from the new file.
    write_atomic(&path, &NS_AND_POLICY.replace("name: deny", "name: deny2"));
    until("the fixed file", || policy_names(&objects) == ["deny2"]).await;
    assert_eq!(
        objects.health(ObjectKind::Pod).state(SystemTime::now()),
        KindState::Healthy
    );
}

#[tokio::test]
async fn a_missing_file_leaves_the_stores_syncing_with_the_error_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.yaml");
    let (objects, _source) = FileSource::start(&path);
    let h = objects.health(ObjectKind::Pod);
    assert_eq!(h.state(SystemTime::now()), KindState::Syncing);
    assert!(h.last_error.is_some(), "{h:?}");
    write_atomic(&path, NS_AND_POLICY);
    until("the first list", || {
        ObjectKind::ALL.iter().all(|k| objects.is_synced(*k))
    })
    .await;
    assert_eq!(objects.pods().len(), 1);
}
