//! A genuine Kubernetes control plane inside a lab network namespace: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler (the binaries `tools/build.sh` builds), with certificates
//! from `openssl`, admin and component kubeconfigs, and a forwarder so tools in the root namespace reach
//! the apiserver on `127.0.0.1`.
//!
//! ```no_run
//! # use novanet_lab::controlplane::*;
//! # fn main() -> Result<(), ControlPlaneError> {
//! let cfg = ControlPlaneConfig::new("/cache/k8s/bin", "/tmp/cp", "nn-cp", "10.99.0.1".parse().unwrap());
//! let cp = ControlPlane::start(cfg)?;               // returns once /readyz answers and cm+scheduler are healthy
//! let kubeconfig = cp.local_kubeconfig();           // https://127.0.0.1:<port>, for kubectl/helm in the root ns
//! # Ok(()) }
//! ```
//!
//! Layout of `work_dir`: `pki/` (CA, serving and client certificates, service-account keys), `etcd/` (data),
//! `<component>.log`, `admin.kubeconfig` (server `https://<address>:<port>`, for use inside lab namespaces),
//! `local.kubeconfig` (through the forwarder), `controller-manager.kubeconfig`, `scheduler.kubeconfig`.
//!
//! Invariants: every process runs only in the given namespace (`nsenter --net`), etcd listens only on that
//! namespace's loopback, and only the PIDs this value started are ever signalled. Drop stops the scheduler,
//! the controller-manager, the apiserver, then etcd (the apiserver can hang on SIGTERM with etcd gone),
//! each with SIGTERM then SIGKILL after a timeout, and removes `work_dir` unless asked to keep it. A failed
//! [`ControlPlane::start`] stops what it started but keeps `work_dir`, because its error points at a log
//! there. By default the kernel also kills the processes when the thread that started them ends
//! (`die_with_parent`), so a killed test run leaves nothing behind; turn it off for a control plane that
//! must outlive that thread.

mod bins;
mod error;
mod flags;
mod forward;
mod kubeconfig;
mod pki;
mod process;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

pub use bins::{CONTROL_PLANE_BINARIES, bins_or_skip, locate_bin_dir, missing_binaries, require_binaries};
pub use error::ControlPlaneError;
pub use forward::{Forwarder, run_forwarder};
pub use kubeconfig::{CLUSTER_NAME, write_kubeconfig};
pub use pki::{CertPair, Pki, Usage};

use error::{Result, io_err};
use flags::{
    CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, SCHEDULER_PORT, apiserver_args,
    controller_manager_args, etcd_args, scheduler_args,
};
use process::{Component, curl_probe};

/// How long a component gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The apiserver stops listening at once on SIGTERM but then waits (up to a minute) for clients holding
/// HTTP/2 watch streams, such as the controller-manager, to go away; an outage test needs it gone now.
const APISERVER_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What to start and where.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    pub bin_dir: PathBuf,
    /// Created if absent (must be empty otherwise); holds certificates, etcd data, logs and kubeconfigs.
    /// Removed on drop unless `keep_work_dir`.
    pub work_dir: PathBuf,
    /// An existing network namespace (`/run/netns/<netns>`) to run everything in.
    pub netns: String,
    /// The apiserver's bind and advertise address; must already be configured inside `netns`.
    pub address: Ipv4Addr,
    /// The apiserver's secure port (6443).
    pub secure_port: u16,
    /// Pod addresses; the controller-manager carves one `node_cidr_mask` block per Node out of it.
    pub cluster_cidr: Ipv4Net,
    pub node_cidr_mask: u8,
    /// ClusterIP range; its first address is the `kubernetes` Service and is in the serving certificate.
    pub service_cidr: Ipv4Net,
    /// Keep `work_dir` when the control plane is dropped (it is always kept after a failed start).
    pub keep_work_dir: bool,
    /// Have the kernel SIGKILL the processes when the thread that started them ends (so a killed test
    /// leaves nothing behind). Turn off when the control plane must outlive the starting thread.
    pub die_with_parent: bool,
    /// How long each component gets to become ready.
    pub start_timeout: Duration,
}

impl ControlPlaneConfig {
    /// Defaults: port 6443, cluster CIDR 10.244.0.0/16 with /24 per node, services 10.96.0.0/16.
    pub fn new(
        bin_dir: impl Into<PathBuf>,
        work_dir: impl Into<PathBuf>,
        netns: &str,
        address: Ipv4Addr,
    ) -> Self {
        ControlPlaneConfig {
            bin_dir: bin_dir.into(),
            work_dir: work_dir.into(),
            netns: netns.to_string(),
            address,
            secure_port: 6443,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            node_cidr_mask: 24,
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(),
            keep_work_dir: false,
            die_with_parent: true,
            start_timeout: Duration::from_secs(90),
        }
    }

    /// The `kubernetes` Service's ClusterIP: the first host address of the service CIDR.
    pub fn kubernetes_service_ip(&self) -> Result<Ipv4Addr> {
        self.service_cidr
            .hosts()
            .next()
            .ok_or(ControlPlaneError::InvalidConfig {
                reason: "the service CIDR has no host address",
            })
    }

    fn validate(&self) -> Result<()> {
        if self.node_cidr_mask < self.cluster_cidr.prefix_len() || self.node_cidr_mask > 30 {
            return Err(ControlPlaneError::InvalidConfig {
                reason: "node_cidr_mask must be between the cluster CIDR's prefix length and 30",
            });
        }
        if self.cluster_cidr.contains(&self.service_cidr.network())
            || self.service_cidr.contains(&self.cluster_cidr.network())
        {
            return Err(ControlPlaneError::InvalidConfig {
                reason: "the cluster and service CIDRs overlap",
            });
        }
        if !Path::new("/run/netns").join(&self.netns).exists() {
            return Err(ControlPlaneError::NoSuchNetns {
                netns: self.netns.clone(),
            });
        }
        // Drop removes work_dir: never adopt a directory that already holds something else.
        if let Ok(mut entries) = std::fs::read_dir(&self.work_dir)
            && entries.next().is_some()
        {
            return Err(ControlPlaneError::InvalidConfig {
                reason: "work_dir must be absent or empty (it is removed on drop)",
            });
        }
        Ok(())
    }
}

/// A running control plane. See the module documentation for what Drop does.
#[derive(Debug)]
pub struct ControlPlane {
    cfg: ControlPlaneConfig,
    pki: Pki,
    admin: CertPair,
    etcd: Component,
    apiserver: Component,
    controller_manager: Component,
    scheduler: Component,
    admin_kubeconfig: PathBuf,
    local_kubeconfig: PathBuf,
    forwarder: Option<Forwarder>,
    keep_work_dir: bool,
}

impl ControlPlane {
    /// Makes the certificates, starts etcd, the apiserver, the controller-manager and the scheduler
    /// (each only after the one before is ready) and the forwarder. On error everything started is
    /// stopped and `work_dir` kept for its logs.
    pub fn start(cfg: ControlPlaneConfig) -> Result<Self> {
        cfg.validate()?;
        require_binaries(&cfg.bin_dir, &CONTROL_PLANE_BINARIES)?;
        let work = cfg.work_dir.clone();
        std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
        let server = format!("https://{}:{}", cfg.address, cfg.secure_port);
        let service_ip = cfg.kubernetes_service_ip()?;

        let pki = Pki::create(&work.join("pki"))?;
        let serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            &[],
            Usage::Server {
                ips: &[cfg.address, Ipv4Addr::LOCALHOST, service_ip],
                dns: &[
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                    "localhost",
                ],
            },
        )?;
        let kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            Usage::Client,
        )?;
        let admin = pki.issue(
            "admin",
            "kubernetes-admin",
            &["system:masters"],
            Usage::Client,
        )?;
        let cm_cert = pki.issue(
            "controller-manager",
            "system:kube-controller-manager",
            &[],
            Usage::Client,
        )?;
        let sched_cert = pki.issue("scheduler", "system:kube-scheduler", &[], Usage::Client)?;

        let admin_kubeconfig = work.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca.cert,
            "kubernetes-admin",
            &admin,
        )?;
        let cm_kubeconfig = work.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &cm_kubeconfig,
            &server,
            &pki.ca.cert,
            "system:kube-controller-manager",
            &cm_cert,
        )?;
        let sched_kubeconfig = work.join("scheduler.kubeconfig");
        write_kubeconfig(
            &sched_kubeconfig,
            &server,
            &pki.ca.cert,
            "system:kube-scheduler",
            &sched_cert,
        )?;

        let bin = |name: &str| cfg.bin_dir.join(name);
        let ns = cfg.netns.as_str();
        let dwp = cfg.die_with_parent;
        let etcd =
            Component::new("etcd", bin("etcd"), etcd_args(&work), ns, &work).die_with_parent(dwp);
        let apiserver_args = apiserver_args(&cfg, &pki, &serving, &kubelet_client);
        let apiserver = Component::new(
            "kube-apiserver",
            bin("kube-apiserver"),
            apiserver_args,
            ns,
            &work,
        )
        .die_with_parent(dwp);
        let cm_args = controller_manager_args(&cfg, &pki, &cm_kubeconfig);
        let controller_manager = Component::new(
            "kube-controller-manager",
            bin("kube-controller-manager"),
            cm_args,
            ns,
            &work,
        )
        .die_with_parent(dwp);
        let sched_args = scheduler_args(&sched_kubeconfig);
        let scheduler = Component::new(
            "kube-scheduler",
            bin("kube-scheduler"),
            sched_args,
            ns,
            &work,
        )
        .die_with_parent(dwp);

        let mut cp = ControlPlane {
            keep_work_dir: true, // until started: a failed start keeps its logs
            local_kubeconfig: work.join("local.kubeconfig"),
            cfg,
            pki,
            admin,
            etcd,
            apiserver,
            controller_manager,
            scheduler,
            admin_kubeconfig,
            forwarder: None,
        };
        cp.start_all()?;
        cp.keep_work_dir = cp.cfg.keep_work_dir;
        Ok(cp)
    }

    fn start_all(&mut self) -> Result<()> {
        let timeout = self.cfg.start_timeout;
        let ns = self.cfg.netns.clone();
        self.etcd.spawn()?;
        let etcd_health = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}/health");
        self.etcd
            .wait_ready(timeout, || curl_probe(&ns, &etcd_health, &[], false))?;
        self.start_apiserver()?;
        self.controller_manager.spawn()?;
        let cm_health = format!("https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz");
        self.controller_manager
            .wait_ready(timeout, || curl_probe(&ns, &cm_health, &[], true))?;
        self.scheduler.spawn()?;
        let sched_health = format!("https://127.0.0.1:{SCHEDULER_PORT}/healthz");
        self.scheduler
            .wait_ready(timeout, || curl_probe(&ns, &sched_health, &[], true))?;

        let target = SocketAddr::V4(SocketAddrV4::new(self.cfg.address, self.cfg.secure_port));
        let forwarder = Forwarder::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &ns, target)?;
        let local_server = format!("https://{}", forwarder.local_addr());
        write_kubeconfig(
            &self.local_kubeconfig,
            &local_server,
            &self.pki.ca.cert,
            "kubernetes-admin",
            &self.admin,
        )?;
        self.forwarder = Some(forwarder);
        Ok(())
    }

    /// kubeconfig with server `https://<address>:<port>`: for processes inside lab namespaces.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// kubeconfig with server `https://127.0.0.1:<forwarder port>`: for tools in the root namespace.
    pub fn local_kubeconfig(&self) -> &Path {
        &self.local_kubeconfig
    }

    /// Where the forwarder listens (in the namespace that called [`ControlPlane::start`]).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.forwarder.as_ref().map(Forwarder::local_addr)
    }

    /// `https://<address>:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}:{}", self.cfg.address, self.cfg.secure_port)
    }

    pub fn config(&self) -> &ControlPlaneConfig {
        &self.cfg
    }

    /// The CA and service-account keys, e.g. to issue kubelet or kube-proxy client certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Issues a client certificate for `user` in `groups` and writes `<work_dir>/<stem>.kubeconfig`
    /// pointing at `https://<address>:<port>` (e.g. `system:node:<name>` in `system:nodes` for a kubelet).
    pub fn issue_kubeconfig(&self, stem: &str, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let pair = self.pki.issue(stem, user, groups, Usage::Client)?;
        let path = self.cfg.work_dir.join(format!("{stem}.kubeconfig"));
        write_kubeconfig(&path, &self.server_url(), &self.pki.ca.cert, user, &pair)?;
        Ok(path)
    }

    /// Log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`).
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.cfg.work_dir.join(format!("{component}.log"))
    }

    /// Stops the apiserver only, for API-outage tests: SIGTERM, then SIGKILL after 3 s (it stops
    /// listening at once, but lingers for its watch clients).
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop(APISERVER_STOP_TIMEOUT);
    }

    /// Starts the apiserver (again) and waits for `/readyz`.
    pub fn start_apiserver(&mut self) -> Result<()> {
        self.apiserver.spawn()?;
        let ns = self.cfg.netns.clone();
        let readyz = format!("{}/readyz", self.server_url());
        let tls = [
            self.pki.ca.cert.as_path(),
            self.admin.cert.as_path(),
            self.admin.key.as_path(),
        ];
        self.apiserver.wait_ready(self.cfg.start_timeout, || {
            curl_probe(&ns, &readyz, &tls, false)
        })
    }

    /// PIDs of the running processes.
    pub fn pids(&self) -> Vec<u32> {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
        ]
        .iter()
        .filter_map(|c| c.pid())
        .collect()
    }

    /// Keep (or not) `work_dir` on drop.
    pub fn set_keep_work_dir(&mut self, keep: bool) {
        self.keep_work_dir = keep;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.forwarder = None;
        self.scheduler.stop(STOP_TIMEOUT);
        self.controller_manager.stop(STOP_TIMEOUT);
        self.apiserver.stop(APISERVER_STOP_TIMEOUT);
        self.etcd.stop(STOP_TIMEOUT);
        if self.keep_work_dir {
            tracing::info!(work_dir = %self.cfg.work_dir.display(), "control plane stopped; work dir kept");
        } else if let Err(e) = std::fs::remove_dir_all(&self.cfg.work_dir) {
            tracing::warn!(work_dir = %self.cfg.work_dir.display(), error = %e, "could not remove the work dir");
        }
    }
}
