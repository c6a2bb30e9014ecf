//! A container image registry of the lab's own: the genuine CNCF distribution `registry` (v3, built by
//! `tools/build.sh registry`) serving plain HTTP on an address inside a lab namespace, with filesystem
//! storage under its work directory. Images get in with `skopeo copy` from the OCI archives of
//! `tools/images/build.sh` (see [`crate::images`]) through a [`Forwarder`] on `127.0.0.1`, and containerd
//! pulls plain names (`busybox`, `registry.k8s.io/pause:3.10`) through it once its CRI
//! `registry.config_path` points at a `certs.d` directory written by [`write_mirror_config`].
//!
//! ```no_run
//! # use novanet_lab::registry::*;
//! # fn main() -> Result<(), RegistryError> {
//! let reg = Registry::start("/cache/k8s/bin".as_ref(), "/tmp/reg".as_ref(), "nn-cp",
//!                           "10.99.0.1".parse().unwrap(), 5000)?;
//! reg.push("/cache/images/x/busybox.tar".as_ref(), "docker.io/library/busybox:latest")?;
//! write_mirror_config("/node/certs.d".as_ref(), &reg.url(), &MIRRORED_UPSTREAMS)?;
//! # Ok(()) }
//! ```
//!
//! Invariants: the registry runs only in the given namespace (`nsenter --net`), is signalled only by the
//! PID this value started (checked against its config path, PIDs get reused), and Drop stops it and
//! removes `work_dir`. A failed start stops it but keeps `work_dir`, whose log the error names. The
//! process runs in a session of its own, so a lab can hand it over ([`Registry::leak`]) and stop it later
//! from its state file ([`stop_recorded`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::controlplane::{ControlPlaneError, Forwarder};
use crate::netns::{NetNs, NetnsError, run};
use crate::process;

/// The upstream registries a lab mirrors: what pod specs and e2e tests name.
pub const MIRRORED_UPSTREAMS: [&str; 4] = ["docker.io", "registry.k8s.io", "quay.io", "ghcr.io"];

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from starting, filling or stopping a lab registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry is not in {bin_dir}: build it with `tools/build.sh registry`")]
    MissingBinary { bin_dir: PathBuf },
    #[error("network namespace {0} does not exist (no /run/netns/{0})")]
    NoSuchNetns(String),
    #[error("{0} must be absent or empty: it is removed when the registry stops")]
    WorkDirNotEmpty(PathBuf),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry exited before it answered; log {log} ends with:\n{tail}")]
    Exited { log: PathBuf, tail: String },
    #[error(
        "the registry did not answer /v2/ within {waited:?} ({last}); log {log} ends with:\n{tail}"
    )]
    NotReady {
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error(transparent)]
    Forward(#[from] ControlPlaneError),
    #[error("{what} {reference}: {source}")]
    Skopeo {
        what: &'static str,
        reference: String,
        source: NetnsError,
    },
    #[error("skopeo inspect {reference} printed no JSON: {source}")]
    Inspect {
        reference: String,
        source: serde_json::Error,
    },
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_path_buf();
    move |source| RegistryError::Io {
        action,
        path,
        source,
    }
}

/// A running registry; see the module documentation for what Drop does.
#[derive(Debug)]
pub struct Registry {
    pid: Option<u32>,
    config: PathBuf,
    work_dir: PathBuf,
    netns: String,
    address: SocketAddrV4,
    forwarder: Option<Forwarder>,
    /// Set by a failed start (its log is the error's evidence) and by [`Registry::leak`].
    keep_work_dir: bool,
    /// The value of this registry's `X-Novanet-Registry` response header.
    token: String,
}

impl Registry {
    /// Starts `<bin_dir>/registry serve <work_dir>/config.yml` in `netns`, listening on `address:port`
    /// (the address must already be configured there), storing under `<work_dir>/data`, and returns once
    /// `GET /v2/` answers 200 through a forwarder from `127.0.0.1` (a free port) in the calling namespace.
    pub fn start(
        bin_dir: &Path,
        work_dir: &Path,
        netns: &str,
        address: Ipv4Addr,
        port: u16,
    ) -> Result<Registry> {
        let bin = bin_dir.join("registry");
        if !bin.is_file() {
            return Err(RegistryError::MissingBinary {
                bin_dir: bin_dir.to_path_buf(),
            });
        }
        if !Path::new("/run/netns").join(netns).exists() {
            return Err(RegistryError::NoSuchNetns(netns.to_string()));
        }
        if std::fs::read_dir(work_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return Err(RegistryError::WorkDirNotEmpty(work_dir.to_path_buf()));
        }
        let data = work_dir.join("data");
        std::fs::create_dir_all(&data).map_err(io_err("create", &data))?;
        let config = work_dir.join("config.yml");
        let address = SocketAddrV4::new(address, port);
        // Sent back in a header, so readiness is this registry's answer, not another one's on the port.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("{:x}-{nanos:x}", std::process::id());
        std::fs::write(&config, config_yaml(&data, address, &token))
            .map_err(io_err("write", &config))?;

        let log = work_dir.join("registry.log");
        let mut cmd = NetNs::existing(netns).command(&bin.to_string_lossy());
        // No OpenTelemetry exporter: the default one would retry localhost:4318 forever.
        cmd.arg("serve")
            .arg(&config)
            .env("OTEL_TRACES_EXPORTER", "none");
        let pid = process::spawn_detached(&mut cmd, &log).map_err(io_err("start", &bin))?;
        let mut reg = Registry {
            pid: Some(pid),
            config,
            work_dir: work_dir.to_path_buf(),
            netns: netns.to_string(),
            address,
            forwarder: None,
            keep_work_dir: false,
            token,
        };
        if let Err(e) = reg.wait_ready() {
            reg.stop();
            reg.keep_work_dir = true; // the error points at its log
            return Err(e);
        }
        Ok(reg)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let fwd = Forwarder::start(
            (Ipv4Addr::LOCALHOST, 0).into(),
            &self.netns,
            self.address.into(),
        )?;
        let local = fwd.local_addr();
        self.forwarder = Some(fwd);
        let start = Instant::now();
        loop {
            if !self.running() {
                return Err(RegistryError::Exited {
                    log: self.log_file(),
                    tail: self.log_tail(),
                });
            }
            let last = match http_head(local, "/v2/") {
                Ok(head) if ours(&head, &self.token) => return Ok(()),
                Ok(head) => format!("not this registry's answer: {head:?}"),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > START_TIMEOUT {
                let (log, tail) = (self.log_file(), self.log_tail());
                return Err(RegistryError::NotReady {
                    waited: start.elapsed(),
                    last,
                    log,
                    tail,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Copies the image `reference` (one of the archive's index entries, e.g.
    /// `docker.io/library/busybox:latest`) from an OCI archive into the registry as [`repository_of`]
    /// it (`library/busybox:latest`), with `skopeo copy` through the forwarder.
    pub fn push(&self, archive: &Path, reference: &str) -> Result<()> {
        let tmp = self.work_dir.join("tmp"); // skopeo unpacks the archive here, not in /var/tmp
        std::fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let mut cmd = Command::new("skopeo");
        cmd.env("TMPDIR", &tmp)
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci-archive:{}:{reference}", archive.display()))
            .arg(format!("docker://{}", self.local_reference(reference)));
        run(&mut cmd).map_err(|source| RegistryError::Skopeo {
            what: "skopeo copy",
            reference: reference.to_string(),
            source,
        })?;
        Ok(())
    }

    /// `skopeo inspect` of `reference` as the registry serves it: the image's digest, architecture, layers.
    pub fn inspect(&self, reference: &str) -> Result<serde_json::Value> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "inspect", "--tls-verify=false"])
            .arg(format!("docker://{}", self.local_reference(reference)));
        let out = run(&mut cmd).map_err(|source| RegistryError::Skopeo {
            what: "skopeo inspect",
            reference: reference.to_string(),
            source,
        })?;
        serde_json::from_slice(&out.stdout).map_err(|source| RegistryError::Inspect {
            reference: reference.to_string(),
            source,
        })
    }

    /// `127.0.0.1:<forwarder port>/<repository:tag>` for tools in the calling namespace.
    pub fn local_reference(&self, reference: &str) -> String {
        let local = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        format!("{local}/{}", repository_of(reference))
    }

    /// `http://<address>:<port>`: the registry as seen from lab namespaces (containerd's mirror host).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address it listens on inside its namespace.
    pub fn address(&self) -> SocketAddrV4 {
        self.address
    }

    /// The forwarder's `127.0.0.1:<port>` in the namespace that started the registry.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.forwarder.as_ref().map(Forwarder::local_addr)
    }

    pub fn log_file(&self) -> PathBuf {
        self.work_dir.join("registry.log")
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The registry's PID while it runs, for the lab's state file.
    pub fn pids(&self) -> Vec<u32> {
        self.pid.into_iter().collect()
    }

    /// Hands the running process over (to a lab state file): Drop then stops nothing and removes nothing,
    /// and the forwarder closes. Returns the PID; [`stop_recorded`] stops it later.
    pub fn leak(mut self) -> Option<u32> {
        self.forwarder = None;
        self.keep_work_dir = true;
        self.pid.take()
    }

    fn running(&self) -> bool {
        self.pid
            .is_some_and(|pid| process::runs(pid, &self.config.to_string_lossy()))
    }

    fn stop(&mut self) {
        self.forwarder = None;
        if let Some(pid) = self.pid.take() {
            process::stop(pid, &self.config.to_string_lossy(), STOP_TIMEOUT);
            reap(pid, STOP_TIMEOUT);
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        if self.keep_work_dir {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work_dir) {
            tracing::warn!(work_dir = %self.work_dir.display(), error = %e, "could not remove the registry's work dir");
        }
    }
}

/// Stops a registry recorded by a lab (`pid` from [`Registry::leak`], its `work_dir`) if that PID still
/// runs it, and removes `work_dir`.
pub fn stop_recorded(pid: u32, work_dir: &Path) -> std::io::Result<()> {
    let config = work_dir.join("config.yml");
    process::stop(pid, &config.to_string_lossy(), STOP_TIMEOUT);
    match std::fs::remove_dir_all(work_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Waits for our child `pid` to be gone and collects it. `process::stop` may return while a
/// multi-threaded process is still exiting (its cmdline reads empty then), which would leave a zombie.
fn reap(pid: u32, timeout: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    while let Ok(WaitStatus::StillAlive) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        if Instant::now() > deadline {
            tracing::warn!(%pid, "the registry has not exited");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config_yaml(data: &Path, address: SocketAddrV4, token: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {address}\n  secret: novanet-lab\n  headers:\n    X-Novanet-Registry: [\"{token}\"]\n\
         health:\n  storagedriver:\n    enabled: false\n",
        data.display()
    )
}

/// One `GET <path>` over HTTP/1.0; the response's status line and headers.
fn http_head(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = Vec::new();
    conn.take(8192).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A 200 answer carrying `X-Novanet-Registry: <token>`.
fn ours(head: &str, token: &str) -> bool {
    let mut lines = head.lines();
    let ok = lines.next().and_then(|l| l.split_whitespace().nth(1)) == Some("200");
    ok && lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("x-novanet-registry") && value.trim() == token
        })
    })
}

/// The repository path (and tag or digest) of a reference inside the registry that mirrors its host:
/// `docker.io/library/busybox:latest` and `busybox` -> `library/busybox:latest`,
/// `registry.k8s.io/pause:3.10` -> `pause:3.10`.
pub fn repository_of(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let has_host = first.contains(['.', ':']) || first == "localhost";
    let path = if has_host { rest } else { reference };
    let docker_hub = !has_host || first == "docker.io" || first == "index.docker.io";
    let path = if docker_hub && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let name_end = path.rfind('/').map_or(0, |i| i + 1);
    if path[name_end..].contains([':', '@']) {
        path
    } else {
        format!("{path}:latest")
    }
}

/// containerd `hosts.toml` lines that send pulls and resolves to `registry_url` (`http://<addr>:<port>`).
pub fn hosts_toml(registry_url: &str) -> String {
    format!("[host.\"{registry_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

/// Writes `<certs_d>/<upstream>/hosts.toml` for each upstream: the lab registry first, the real upstream
/// as the fallback `server` (unreachable from a lab, so a missing image fails instead of being fetched).
/// containerd reads it with CRI `registry.config_path = "<certs_d>"` (or `ctr ... --hosts-dir`).
pub fn write_mirror_config(certs_d: &Path, registry_url: &str, upstreams: &[&str]) -> Result<()> {
    for upstream in upstreams {
        let dir = certs_d.join(upstream);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let server = if *upstream == "docker.io" {
            "registry-1.docker.io"
        } else {
            upstream
        };
        let body = format!(
            "server = \"https://{server}\"\n\n{}",
            hosts_toml(registry_url)
        );
        let file = dir.join("hosts.toml");
        std::fs::write(&file, body).map_err(io_err("write", &file))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths() {
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "library/busybox:latest"
        );
        assert_eq!(repository_of("busybox"), "library/busybox:latest");
        assert_eq!(repository_of("busybox:1.36"), "library/busybox:1.36");
        assert_eq!(repository_of("registry.k8s.io/pause:3.10"), "pause:3.10");
        assert_eq!(
            repository_of("registry.k8s.io/e2e-test-images/agnhost:2.56"),
            "e2e-test-images/agnhost:2.56"
        );
        assert_eq!(
            repository_of("docker.io/novanet/agent:dev"),
            "novanet/agent:dev"
        );
        assert_eq!(repository_of("novanet/agent"), "novanet/agent:latest");
        assert_eq!(
            repository_of("localhost:5000/x/y@sha256:ab"),
            "x/y@sha256:ab"
        );
    }

    #[test]
    fn mirror_config_files() {
        let dir = std::env::temp_dir().join(format!("nn-certs-{}", std::process::id()));
        write_mirror_config(&dir, "http://10.0.0.1:5000", &MIRRORED_UPSTREAMS).unwrap();
        let docker = std::fs::read_to_string(dir.join("docker.io/hosts.toml")).unwrap();
        assert_eq!(
            docker,
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://10.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        let k8s = std::fs::read_to_string(dir.join("registry.k8s.io/hosts.toml")).unwrap();
        assert!(
            k8s.starts_with("server = \"https://registry.k8s.io\"\n"),
            "{k8s}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
