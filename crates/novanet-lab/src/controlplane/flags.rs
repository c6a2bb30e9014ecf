//! Command lines of the control-plane components. Ports are fixed: everything but the apiserver listens
//! on the loopback of the control plane's own namespace.

use std::ffi::OsString;
use std::path::Path;

use super::ControlPlaneConfig;
use super::kubeconfig::CLUSTER_NAME;
use super::pki::{CertPair, Pki};

/// etcd's client and peer ports, on the namespace's loopback.
pub(crate) const ETCD_CLIENT_PORT: u16 = 2379;
pub(crate) const ETCD_PEER_PORT: u16 = 2380;
/// Secure ports of the controller-manager and scheduler (their defaults), bound to loopback.
pub(crate) const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub(crate) const SCHEDULER_PORT: u16 = 10259;

fn args<I: IntoIterator<Item = String>>(items: I) -> Vec<OsString> {
    items.into_iter().map(OsString::from).collect()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn etcd_args(work: &Path) -> Vec<OsString> {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    args([
        "--name=novanet-lab".to_string(),
        format!("--data-dir={}", p(&work.join("etcd"))),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=novanet-lab={peer}"),
        "--initial-cluster-state=new".to_string(),
        // A throwaway lab store on a shared disk: fsync stalls would only make the apiserver time out.
        "--unsafe-no-fsync=true".to_string(),
        "--log-level=warn".to_string(),
    ])
}

pub(crate) fn apiserver_args(
    cfg: &ControlPlaneConfig,
    pki: &Pki,
    serving: &CertPair,
    kubelet_client: &CertPair,
) -> Vec<OsString> {
    args([
        format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        format!("--advertise-address={}", cfg.address),
        format!("--bind-address={}", cfg.address),
        format!("--secure-port={}", cfg.secure_port),
        format!("--tls-cert-file={}", p(&serving.cert)),
        format!("--tls-private-key-file={}", p(&serving.key)),
        format!("--client-ca-file={}", p(&pki.ca.cert)),
        format!("--kubelet-client-certificate={}", p(&kubelet_client.cert)),
        format!("--kubelet-client-key={}", p(&kubelet_client.key)),
        "--kubelet-preferred-address-types=InternalIP".to_string(),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
        format!("--service-cluster-ip-range={}", cfg.service_cidr),
        "--authorization-mode=Node,RBAC".to_string(),
        "--enable-admission-plugins=NodeRestriction".to_string(),
        "--allow-privileged=true".to_string(),
        format!("--cert-dir={}", p(&cfg.work_dir.join("pki"))),
        "--v=1".to_string(),
    ])
}

pub(crate) fn controller_manager_args(
    cfg: &ControlPlaneConfig,
    pki: &Pki,
    kubeconfig: &Path,
) -> Vec<OsString> {
    let kc = p(kubeconfig);
    args([
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
        "--leader-elect=false".to_string(),
        "--allocate-node-cidrs=true".to_string(),
        format!("--cluster-cidr={}", cfg.cluster_cidr),
        format!("--node-cidr-mask-size={}", cfg.node_cidr_mask),
        format!("--service-cluster-ip-range={}", cfg.service_cidr),
        format!("--cluster-name={CLUSTER_NAME}"),
        "--use-service-account-credentials=true".to_string(),
        format!("--root-ca-file={}", p(&pki.ca.cert)),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)),
        format!("--cluster-signing-key-file={}", p(&pki.ca.key)),
        "--v=1".to_string(),
    ])
}

pub(crate) fn scheduler_args(kubeconfig: &Path) -> Vec<OsString> {
    let kc = p(kubeconfig);
    args([
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={SCHEDULER_PORT}"),
        "--leader-elect=false".to_string(),
        "--v=1".to_string(),
    ])
}
