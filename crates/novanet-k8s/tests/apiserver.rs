//! `novanet-k8s` against a GENUINE kube-apiserver (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler v1.34 from `tools/build.sh`, run by `novanet_lab::controlplane` in a network
//! namespace of its own, reached through its 127.0.0.1 forwarder).
//!
//! Needs root (network namespaces). When the Kubernetes binaries are not built, each test skips
//! (`novanet_testkit::skip`: a failure under CI) and returns; any other problem fails the test.
//! The tests take a process-wide lock so only one control plane runs at a time (2-core machines).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, Pod, PodSpec, Service, ServiceAccount, ServicePort,
    ServiceSpec,
};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use novanet_k8s::{
    CidrPool, ClusterObjects, Error, KindState, KubeSource, ObjectKind, allocate_node_cidr,
    cidr_pool, client_from_kubeconfig, find_pod, node_annotated_pod_cidr, node_underlay_ip,
    pod_labels, pod_uid, publish_node_address, wait_for_pod_cidr, ReleaseState, ReleaseWatch,
};
use novanet_lab::controlplane::{
    CONTROL_PLANE_BINARIES, ControlPlane, ControlPlaneConfig, bins_or_skip,
};
use novanet_lab::netns::{NetNs, unique_prefix};
use novanet_testkit::say;

const CP_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const NS: &str = "nn-k8s-test";
static ONE_CONTROL_PLANE: Mutex<()> = Mutex::new(());

/// A namespace, a started control plane in it, and a tokio runtime. Processes die with this thread.
struct Lab {
    cp: ControlPlane,
    _ns: NetNs,
    _tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

fn start_lab(bins: PathBuf) -> Lab {
    let ns = NetNs::create(&format!("{}k8s", unique_prefix())).unwrap();
    ns.ip(&["addr", "add", &format!("{CP_ADDRESS}/32"), "dev", "lo"])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ControlPlaneConfig::new(bins, tmp.path().join("cp"), ns.name(), CP_ADDRESS);
    let started = Instant::now();
    let cp = ControlPlane::start(cfg).unwrap();
    say(&format!("control plane ready in {:?}", started.elapsed()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Lab {
        cp,
        _ns: ns,
        _tmp: tmp,
        rt,
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

async fn create_node(client: &Client, name: &str) {
    let node = Node {
        metadata: meta(None, name, &[("novanet.io/test", "k8s")]),
        ..Node::default()
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// A pod bound to `node` at creation (no scheduler, no kubelet: it stays Pending).
fn pod(name: &str, node: &str, app: &str) -> Pod {
    Pod {
        metadata: meta(Some(NS), name, &[("app", app)]),
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

async fn create_pod(client: &Client, pod: &Pod) {
    // The ServiceAccount admission plugin rejects pods until the controller-manager made the
    // namespace's `default` ServiceAccount; the caller waited for it.
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), pod)
        .await
        .unwrap();
}

async fn delete_pod_now(client: &Client, name: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(name, &dp)
        .await
        .unwrap();
}

async fn create_namespace_with_default_sa(client: &Client) {
    let ns = Namespace {
        metadata: meta(None, NS, &[("team", "net")]),
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), NS);
    eventually(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || {
            let sas = sas.clone();
            async move { matches!(sas.get_opt("default").await, Ok(Some(_))) }
        },
    )
    .await;
}

fn uid_of(objects: &ClusterObjects, name: &str) -> Option<String> {
    find_pod(objects.pods(), NS, name).and_then(|p| pod_uid(&p).map(str::to_owned))
}

#[test]
fn kube_source_follows_changes_and_keeps_stores_through_apiserver_outage() {
    let test = "kube_source_follows_changes_and_keeps_stores_through_apiserver_outage";
    let _serial = ONE_CONTROL_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bins) = bins_or_skip(test, &CONTROL_PLANE_BINARIES) else {
        return;
    };
    let Lab {
        mut cp,
        _ns,
        _tmp,
        rt,
    } = start_lab(bins);
    let kubeconfig = cp.local_kubeconfig().to_path_buf();
    rt.block_on(async {
        let client = client_from_kubeconfig(&kubeconfig).await.unwrap();
        create_node(&client, "n1").await;
        create_node(&client, "n2").await;
        create_namespace_with_default_sa(&client).await;

        let (objects, source) = KubeSource::start(client.clone(), "n1");
        tokio::time::timeout(Duration::from_secs(60), objects.wait_synced())
            .await
            .unwrap()
            .unwrap();
        let mut changes = objects.subscribe();
        assert!(
            objects
                .health_all()
                .iter()
                .all(|h| h.state(SystemTime::now()) == KindState::Healthy)
        );

        // Create: pods on both nodes (every pod of the cluster is watched: policy needs them), a Service (its EndpointSlice comes from the
        // controller-manager).
        create_pod(&client, &pod("web-1", "n1", "web")).await;
        create_pod(&client, &pod("web-2", "n2", "web")).await;
        let svc = Service {
            metadata: meta(Some(NS), "web", &[]),
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        Api::<Service>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
        eventually(
            "pod, namespace, nodes, service and endpointslice in the stores",
            Duration::from_secs(30),
            || async {
                find_pod(objects.pods(), NS, "web-1").is_some()
                    && objects
                        .namespaces()
                        .state()
                        .iter()
                        .any(|n| n.metadata.name.as_deref() == Some(NS))
                    && objects.nodes().len() >= 2
                    && objects
                        .services()
                        .state()
                        .iter()
                        .any(|s| s.metadata.name.as_deref() == Some("web"))
                    && objects.endpoint_slices().state().iter().any(|e| {
                        e.metadata.namespace.as_deref() == Some(NS)
                            && e.metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("kubernetes.io/service-name"))
                                .map(String::as_str)
                                == Some("web")
                    })
            },
        )
        .await;
        eventually("the other node's pod in the store too", Duration::from_secs(30), || async {
            find_pod(objects.pods(), NS, "web-2").is_some()
        })
        .await;
        let web1_uid = uid_of(&objects, "web-1").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let c = changes.recv().await.unwrap();
                if c.kind == ObjectKind::Pod && c.key.name == "web-1" {
                    return c;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            (change.uid.as_deref(), change.deleted),
            (Some(web1_uid.as_str()), false)
        );

        // Update.
        let relabel = serde_json::json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        Api::<Pod>::namespaced(client.clone(), NS)
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&relabel))
            .await
            .unwrap();
        eventually("the label update", Duration::from_secs(30), || async {
            find_pod(objects.pods(), NS, "web-1")
                .is_some_and(|p| pod_labels(&p).get("tier").map(String::as_str) == Some("front"))
        })
        .await;

        // Delete.
        create_pod(&client, &pod("doomed", "n1", "web")).await;
        eventually("pod doomed appears", Duration::from_secs(30), || async {
            find_pod(objects.pods(), NS, "doomed").is_some()
        })
        .await;
        delete_pod_now(&client, "doomed").await;
        eventually("pod doomed disappears", Duration::from_secs(30), || async {
            find_pod(objects.pods(), NS, "doomed").is_none()
        })
        .await;

        // Outage: the stores keep everything and health says so.
        let before = (
            objects.pods().len(),
            objects.namespaces().len(),
            objects.nodes().len(),
            objects.services().len(),
            objects.endpoint_slices().len(),
        );
        let errors_before = objects.health(ObjectKind::Pod).errors_total;
        let stopping = Instant::now();
        cp.stop_apiserver();
        say(&format!("apiserver stopped in {:?}", stopping.elapsed()));
        eventually(
            "health reports the outage for every kind",
            Duration::from_secs(30),
            || async {
                objects
                    .health_all()
                    .iter()
                    .all(|h| h.state(SystemTime::now()) == KindState::Degraded)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await; // several failed retries
        let h = objects.health(ObjectKind::Pod);
        say(&format!("during the outage: {h:?}"));
        assert!(
            h.errors_total > errors_before && h.consecutive_errors > 0 && h.last_error.is_some()
        );
        let during = (
            objects.pods().len(),
            objects.namespaces().len(),
            objects.nodes().len(),
            objects.services().len(),
            objects.endpoint_slices().len(),
        );
        assert_eq!(during, before, "a store lost objects during the outage");
        assert!(
            objects
                .present_pod_uids(Some("n1"))
                .unwrap()
                .contains(&web1_uid)
        );

        let restart = Instant::now();
        cp.start_apiserver().unwrap();
        say(&format!("apiserver ready again in {:?}", restart.elapsed()));

        // Changes after the outage reach the stores.
        create_pod(&client, &pod("web-3", "n1", "web")).await;
        delete_pod_now(&client, "web-1").await;
        let caught_up = Instant::now();
        eventually(
            "stores catch up after the outage",
            Duration::from_secs(90),
            || async {
                find_pod(objects.pods(), NS, "web-3").is_some()
                    && find_pod(objects.pods(), NS, "web-1").is_none()
            },
        )
        .await;
        say(&format!(
            "caught up {:?} after the restart",
            caught_up.elapsed()
        ));
        let h = objects.health(ObjectKind::Pod);
        assert_eq!(h.state(SystemTime::now()), KindState::Healthy, "{h:?}");
        say(&format!("after recovery: {h:?}"));
        let uids = objects.present_pod_uids(Some("n1")).unwrap();
        assert!(!uids.contains(&web1_uid) && uids.contains(&uid_of(&objects, "web-3").unwrap()));
        drop(source);
    });
    drop(rt);
    drop(cp);
}

#[test]
fn node_helpers_and_cluster_pool_against_real_apiserver() {
    let test = "node_helpers_and_cluster_pool_against_real_apiserver";
    let _serial = ONE_CONTROL_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bins) = bins_or_skip(test, &CONTROL_PLANE_BINARIES) else {
        return;
    };
    let Lab { cp, _ns, _tmp, rt } = start_lab(bins);
    let cluster_cidr: IpNet = IpNet::V4(cp.config().cluster_cidr);
    let kubeconfig = cp.local_kubeconfig().to_path_buf();
    rt.block_on(async {
        let client = client_from_kubeconfig(&kubeconfig).await.unwrap();
        let nodes = Api::<Node>::all(client.clone());

        // The controller-manager's podCIDR (--allocate-node-cidrs).
        create_node(&client, "cm-node").await;
        let cidrs = wait_for_pod_cidr(&client, "cm-node", Duration::from_secs(60))
            .await
            .unwrap();
        say(&format!(
            "cm-node got {cidrs:?} from the controller-manager"
        ));
        assert_eq!(cidrs.len(), 1);
        assert!(
            cluster_cidr.contains(&cidrs[0]) && cidrs[0].prefix_len() == 24,
            "{cidrs:?}"
        );
        let err = wait_for_pod_cidr(&client, "no-such-node", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");

        // The underlay address annotation.
        let ip: IpAddr = "10.99.7.7".parse().unwrap();
        publish_node_address(&client, "cm-node", ip).await.unwrap();
        assert_eq!(
            node_underlay_ip(&nodes.get("cm-node").await.unwrap()),
            Some(ip)
        );
        let err = publish_node_address(&client, "no-such-node", ip)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NodeNotFound { .. }), "{err}");

        // Cluster-pool mode: four nodes claim at once from one pool; no two blocks overlap.
        let pool = CidrPool::new("10.128.0.0/16".parse().unwrap(), 24).unwrap();
        let names = ["pool-a", "pool-b", "pool-c", "pool-d"];
        for n in names {
            create_node(&client, n).await;
        }
        let claims: Vec<_> = names
            .iter()
            .map(|n| {
                let (client, pool, n) = (client.clone(), pool.clone(), (*n).to_owned());
                tokio::spawn(async move { allocate_node_cidr(&client, &pool, &n).await })
            })
            .collect();
        let mut got = Vec::new();
        for c in claims {
            got.push(c.await.unwrap().unwrap());
        }
        say(&format!("concurrent pool claims: {got:?}"));
        for (i, a) in got.iter().enumerate() {
            assert!(pool.is_block(a), "{a} is not a /24 of the pool");
            for b in &got[i + 1..] {
                assert!(!cidr_pool::overlaps(a, b), "{a} overlaps {b}");
            }
        }
        for (n, c) in names.iter().zip(&got) {
            assert_eq!(
                node_annotated_pod_cidr(&nodes.get(n).await.unwrap()),
                Some(*c),
                "annotation of {n}"
            );
            // Idempotent: asking again returns the same block.
            assert_eq!(allocate_node_cidr(&client, &pool, n).await.unwrap(), *c);
        }
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get("novanet-pod-cidrs")
            .await
            .unwrap();
        assert_eq!(cm.data.unwrap_or_default().len(), names.len());

        // Exhaustion is reported, not papered over.
        let tiny = CidrPool {
            config_map: "novanet-tiny-pool".into(),
            ..CidrPool::new("10.129.0.0/23".parse().unwrap(), 24).unwrap()
        };
        allocate_node_cidr(&client, &tiny, "pool-a").await.unwrap();
        allocate_node_cidr(&client, &tiny, "pool-b").await.unwrap();
        let err = allocate_node_cidr(&client, &tiny, "pool-c")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::CidrPool(novanet_k8s::CidrPoolError::Exhausted { .. })
            ),
            "{err}"
        );

        release_watch_sees_its_daemonset_deleted(&client).await;
    });
    drop(rt);
    drop(cp);
}

/// The uninstall trigger: a DaemonSet seen and then deleted is "removed"; one never seen never is.
async fn release_watch_sees_its_daemonset_deleted(client: &Client) {
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "novanet"},
        "spec": {
            "selector": {"matchLabels": {"app": "novanet"}},
            "template": {
                "metadata": {"labels": {"app": "novanet"}},
                // No node matches: the DaemonSet runs no pod.
                "spec": {"nodeSelector": {"none": "none"}, "containers": [{"name": "a", "image": "pause"}]}
            }
        }
    }))
    .unwrap();
    let created = daemonsets.create(&PostParams::default(), &ds).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    let watch = ReleaseWatch::start(client.clone(), "default", "novanet");
    let wrong_name = ReleaseWatch::start(client.clone(), "default", "not-novanet");
    eventually("the watch to see the DaemonSet", Duration::from_secs(30), || {
        let present = watch.state() == ReleaseState::Present { uid: uid.clone() };
        async move { present }
    })
    .await;
    assert!(!watch.confirm_removed(Duration::from_secs(3)).await, "present is not removed");

    daemonsets.delete("novanet", &DeleteParams::default()).await.unwrap();
    eventually("the watch to see the deletion", Duration::from_secs(30), || {
        let removed = watch.state().is_removed();
        async move { removed }
    })
    .await;
    assert!(watch.confirm_removed(Duration::from_secs(3)).await);
    assert_eq!(wrong_name.state(), ReleaseState::Unknown);
    assert!(
        !wrong_name.confirm_removed(Duration::from_secs(3)).await,
        "a DaemonSet never seen (wrong name, missing RBAC) must never count as removed"
    );
    say("release watch: present -> removed on delete; a never-seen name stays unknown");
}
