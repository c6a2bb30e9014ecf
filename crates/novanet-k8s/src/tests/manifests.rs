use crate::{
    ManifestError, ObjectKind, StaticSource, node_pod_cidrs, parse_manifests, pod_command,
    pod_node_name,
};

const LAB: &str = r#"
---
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec:
  nodeName: n1
  containers:
  - name: main
    command: [sh, -c, "nc -l -p 80"]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {nodeName: n2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector: {matchLabels: {app: client}}
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: prod, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
ports: [{port: 80, protocol: TCP}]
---
"#;

#[test]
fn lab_manifest_parses_into_typed_objects() {
    let m = parse_manifests(LAB).unwrap();
    assert_eq!(
        (
            m.nodes.len(),
            m.namespaces.len(),
            m.pods.len(),
            m.network_policies.len(),
            m.services.len(),
            m.endpoint_slices.len()
        ),
        (2, 1, 2, 1, 1, 1)
    );
    assert_eq!(
        node_pod_cidrs(&m.nodes[0]),
        vec!["10.244.1.0/24".parse().unwrap()]
    );
    assert_eq!(
        node_pod_cidrs(&m.nodes[1]),
        vec!["10.244.2.0/24".parse().unwrap()]
    );
    let web = &m.pods[0];
    assert_eq!(pod_node_name(web), Some("n1"));
    assert_eq!(pod_command(web).unwrap(), ["sh", "-c", "nc -l -p 80"]);
    let client = &m.pods[1];
    assert_eq!(
        client.metadata.namespace.as_deref(),
        Some("default"),
        "namespace defaults like the apiserver"
    );
    assert!(
        client.metadata.uid.is_some(),
        "a uid is derived when absent"
    );
    assert_eq!(
        parse_manifests(LAB).unwrap(),
        m,
        "parsing is deterministic (stable uids)"
    );
    assert_eq!(m.endpoint_slices[0].endpoints[0].addresses, ["10.244.1.5"]);
}

#[test]
fn static_source_feeds_the_same_stores_and_reload_diffs() {
    let m = parse_manifests(LAB).unwrap();
    let (objects, mut source) = StaticSource::from_manifests(&m);
    assert!(ObjectKind::ALL.iter().all(|k| objects.is_synced(*k)));
    assert_eq!(objects.pods().len(), 2);
    assert_eq!(objects.present_pod_uids(Some("n1")).unwrap().len(), 1);
    let mut rx = objects.subscribe();
    let mut smaller = m.clone();
    smaller
        .pods
        .retain(|p| p.metadata.name.as_deref() == Some("web"));
    source.load(&smaller);
    let change = rx.try_recv().unwrap();
    assert!(change.deleted && change.key.name == "client" && change.kind == ObjectKind::Pod);
    assert!(
        rx.try_recv().is_err(),
        "unchanged objects are silent on reload"
    );
    let mut add = crate::Manifests::default();
    add.pods.push(m.pods[1].clone());
    source.apply(&add);
    assert_eq!(objects.pods().len(), 2);
    source.delete(&add);
    assert_eq!(objects.pods().len(), 1);
}

#[test]
fn list_kind_is_flattened() {
    let m = parse_manifests(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
    )
    .unwrap();
    assert_eq!(m.namespaces.len(), 2);
}

#[test]
fn unknown_kind_names_the_document() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let err = parse_manifests(text).unwrap_err();
    assert!(
        matches!(&err, ManifestError::UnknownKind { document: 2, kind, .. } if kind == "Deployment"),
        "{err}"
    );
    assert!(err.to_string().contains("document 2"), "{err}");
}

#[test]
fn wrong_api_version_is_unknown_kind() {
    let err = parse_manifests(
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\n",
    )
    .unwrap_err();
    assert!(
        matches!(err, ManifestError::UnknownKind { document: 1, .. }),
        "{err}"
    );
}

#[test]
fn bad_yaml_names_the_document() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\nkind: Pod\nmetadata: {name: [unclosed\n";
    let err = parse_manifests(text).unwrap_err();
    assert!(
        matches!(err, ManifestError::Yaml { document: 3, .. }),
        "{err}"
    );
}

#[test]
fn schema_mismatch_names_document_and_kind() {
    let text =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: [not, a, string]}\n";
    let err = parse_manifests(text).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::InvalidObject {
                document: 1,
                kind: "Pod",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_kind_name_and_duplicates_are_rejected() {
    assert!(matches!(
        parse_manifests("metadata: {name: a}\n"),
        Err(ManifestError::NotAnObject { document: 1 })
    ));
    assert!(matches!(
        parse_manifests("- just\n- a list\n"),
        Err(ManifestError::NotAnObject { document: 1 })
    ));
    assert!(matches!(
        parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n"),
        Err(ManifestError::MissingName {
            document: 1,
            kind: "Pod"
        })
    ));
    let dup = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\n";
    assert!(matches!(
        parse_manifests(dup),
        Err(ManifestError::Duplicate {
            document: 2,
            kind: "Pod",
            ..
        })
    ));
}

#[test]
fn empty_input_is_empty_manifests() {
    assert!(parse_manifests("").unwrap().is_empty());
    assert!(parse_manifests("---\n---\n").unwrap().is_empty());
}
