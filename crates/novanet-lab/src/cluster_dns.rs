//! Cluster DNS of a real lab cluster: CoreDNS (the Go-built binary, image `coredns` of
//! `tools/images/build.sh`) as the `kube-dns` Service at the kubelets' `clusterDNS` address, as kubeadm
//! installs it. Its pods stay Pending until a CNI is installed, like on any fresh cluster.
//!
//! Lab rule: CoreDNS answers the cluster domain and the reverse zones only; it has no `forward`, so no query
//! ever leaves the lab for an outside resolver. Other names get SERVFAIL.

use std::net::Ipv4Addr;

/// The cluster domain of lab clusters (the kubelets' `clusterDomain`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The DNS Service's address: the tenth address of the Service CIDR (10.96.0.10 of 10.96.0.0/12), as
/// kubeadm picks it; the kubelets' `clusterDNS`.
pub fn service_ip(service_cidr: ipnet::Ipv4Net) -> Ipv4Addr {
    service_cidr.hosts().nth(9).unwrap_or(Ipv4Addr::new(10, 96, 0, 10))
}

/// The CoreDNS image the lab's registry serves (the pinned Go module's version).
pub const IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.12.4";

/// The CoreDNS objects: ServiceAccount, RBAC, Corefile, Deployment and the `kube-dns` Service at `service_ip`.
pub fn manifest(service_ip: Ipv4Addr, cluster_domain: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health {{
            lameduck 5s
        }}
        ready
        kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        loop
        reload
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations:
        - {{key: CriticalAddonsOnly, operator: Exists}}
        - {{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}
      containers:
        - name: coredns
          image: {IMAGE}
          imagePullPolicy: IfNotPresent
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {{name: dns, containerPort: 53, protocol: UDP}}
            - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
            readOnlyRootFilesystem: true
          livenessProbe:
            httpGet: {{path: /health, port: 8080}}
            initialDelaySeconds: 10
            periodSeconds: 10
          readinessProbe:
            httpGet: {{path: /ready, port: 8181}}
            periodSeconds: 2
          resources:
            requests: {{cpu: 50m, memory: 32Mi}}
            limits: {{memory: 128Mi}}
          volumeMounts:
            - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
        - name: config
          configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/name: CoreDNS}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {service_ip}
  ports:
    - {{name: dns, port: 53, protocol: UDP}}
    - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;

    #[test]
    fn manifest_is_six_objects_without_an_outside_resolver() {
        let m = manifest(Ipv4Addr::new(10, 96, 0, 10), "cluster.local");
        let docs: Vec<serde_yaml::Value> =
            serde_yaml::Deserializer::from_str(&m).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"]);
        assert_eq!(docs[5]["spec"]["clusterIP"].as_str(), Some("10.96.0.10"));
        let corefile = docs[3]["data"]["Corefile"].as_str().unwrap();
        assert!(corefile.contains("kubernetes cluster.local in-addr.arpa ip6.arpa {"), "{corefile}");
        assert!(!corefile.contains("forward"), "the lab's DNS must never forward outside: {corefile}");
        assert_eq!(docs[4]["spec"]["template"]["spec"]["containers"][0]["image"].as_str(), Some(IMAGE));
        assert_eq!(service_ip("10.96.0.0/12".parse().unwrap()), Ipv4Addr::new(10, 96, 0, 10));
    }
}
