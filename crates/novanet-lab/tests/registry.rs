//! The lab's own registry: every image `tools/images/build.sh` makes is pushed into a genuine CNCF
//! `registry` running in a fresh namespace, and must then be pullable by name: through `skopeo inspect`
//! from the root namespace (via the forwarder) and, when containerd is installed, by a throwaway containerd
//! in the registry's namespace that knows the registry only as a mirror of docker.io / registry.k8s.io
//! (`certs.d/<upstream>/hosts.toml`).
//!
//! Needs root. Skips (see `novanet_testkit::skip`) only when the Go-built binaries are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{ok_stdout, say};
use novanet_lab::controlplane::bins_or_skip;
use novanet_lab::images::{self, ImageArchive};
use novanet_lab::netns::{NetNs, unique_prefix};
use novanet_lab::process;
use novanet_lab::registry::{
    MIRRORED_UPSTREAMS, Registry, RegistryError, repository_of, write_mirror_config,
};

const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const REGISTRY_PORT: u16 = 5000;

/// The stdout of a command that must have started and succeeded.
fn ok(what: &str, out: std::io::Result<Output>) -> String {
    ok_stdout(what, out.unwrap_or_else(|e| panic!("{what}: {e}")))
}

#[test]
fn images_pushed_to_the_lab_registry_pull_by_plain_name() {
    let Some(bins) = bins_or_skip(
        "images_pushed_to_the_lab_registry_pull_by_plain_name",
        &["registry", "agnhost", "coredns"],
    ) else {
        return;
    };
    assert!(
        Command::new("skopeo").arg("--version").output().is_ok(),
        "skopeo is not installed: run scripts/setup.sh --k8s"
    );

    let started = Instant::now();
    let archives = images::build(&[]).unwrap_or_else(|e| panic!("{e}"));
    say(&format!("images built or found in {:?}", started.elapsed()));
    for a in &archives {
        let size = std::fs::metadata(&a.path).unwrap().len();
        say(&format!(
            "  {} {} ({} MB) {:?}",
            a.name,
            a.path.display(),
            size >> 20,
            a.references
        ));
    }
    let names: Vec<&str> = archives.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, images::ALL_IMAGES);
    assert!(
        archives.iter().any(|a| a.references.iter().any(|r| r == novanet_lab::cluster_dns::IMAGE)),
        "the lab's DNS manifest asks for {}, which no archive carries",
        novanet_lab::cluster_dns::IMAGE
    );
    check_agnhost_tag(&bins, &archives);

    let ns = NetNs::create(&format!("{}reg", unique_prefix())).unwrap();
    ns.ip(&["addr", "add", &format!("{REGISTRY_IP}/32"), "dev", "lo"])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(
        &bins,
        &tmp.path().join("registry"),
        ns.name(),
        REGISTRY_IP,
        REGISTRY_PORT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pids = reg.pids();
    assert_eq!(pids.len(), 1);

    for a in &archives {
        let started = Instant::now();
        for reference in &a.references {
            reg.push(&a.path, reference)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        say(&format!(
            "pushed {} ({} tags) in {:?}",
            a.name,
            a.references.len(),
            started.elapsed()
        ));
        for reference in &a.references {
            let info = reg.inspect(reference).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(info["Architecture"], "amd64", "{reference}: {info}");
            assert_eq!(info["Os"], "linux", "{reference}: {info}");
            assert_eq!(
                info["Layers"].as_array().map(Vec::len),
                Some(1),
                "{reference}: {info}"
            );
        }
    }
    // The path containerd asks the mirror for, by hand, from inside the namespace.
    let tags = ok(
        "curl tags/list",
        ns.command("curl")
            .args([
                "-sS",
                "--fail",
                &format!("{}/v2/library/busybox/tags/list", reg.url()),
            ])
            .output(),
    );
    assert!(
        tags.contains("\"latest\"") && tags.contains("\"1.36\""),
        "{tags}"
    );

    if which("containerd") && which("ctr") {
        let busybox = archives.iter().find(|a| a.name == "busybox").unwrap();
        pull_through_containerd(&ns, &reg, tmp.path(), busybox);
    } else {
        say(
            "NOTE registry test: containerd/ctr not installed; the containerd pull part did not run",
        );
    }

    let work = reg.work_dir().to_path_buf();
    drop(reg);
    assert!(
        !Path::new(&format!("/proc/{}", pids[0])).exists(),
        "registry pid {} still runs",
        pids[0]
    );
    assert!(!work.exists(), "{} was not removed", work.display());
}

#[test]
fn a_registry_that_cannot_listen_fails_with_its_log() {
    let Some(bins) = bins_or_skip(
        "a_registry_that_cannot_listen_fails_with_its_log",
        &["registry"],
    ) else {
        return;
    };
    let ns = NetNs::create(&format!("{}reg", unique_prefix())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let first = Registry::start(
        &bins,
        &tmp.path().join("a"),
        ns.name(),
        Ipv4Addr::LOCALHOST,
        5000,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let second = tmp.path().join("b");
    match Registry::start(&bins, &second, ns.name(), Ipv4Addr::LOCALHOST, 5000) {
        Err(RegistryError::Exited { log, tail }) => {
            assert!(tail.contains("address already in use"), "{tail}");
            assert!(
                log.starts_with(&second) && log.exists(),
                "the failed start keeps its log"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(
        Registry::start(
            &bins,
            &tmp.path().join("a"),
            ns.name(),
            Ipv4Addr::LOCALHOST,
            5001
        )
        .is_err(),
        "a work dir in use is refused"
    );
    drop(first);
    assert!(!tmp.path().join("a").exists());
}

/// The agnhost tag the images carry is the one this e2e.test runs (when e2e.test is built).
fn check_agnhost_tag(bins: &Path, archives: &[ImageArchive]) {
    let e2e = bins.join("e2e.test");
    if !e2e.exists() {
        novanet_testkit::skip(format_args!(
            "e2e.test not built in {}: agnhost tag not checked against --list-images",
            bins.display()
        ));
        return;
    }
    let listed = ok(
        "e2e.test --list-images",
        Command::new(&e2e).arg("--list-images").output(),
    );
    let wanted: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("registry.k8s.io/e2e-test-images/agnhost:"))
        .collect();
    let agnhost = archives.iter().find(|a| a.name == "agnhost").unwrap();
    assert_eq!(
        agnhost.references, wanted,
        "tools/images/build.sh agnhost_tag is not what e2e.test uses"
    );
    for pause in listed
        .lines()
        .filter(|l| l.starts_with("registry.k8s.io/pause:"))
    {
        let ours = archives.iter().find(|a| a.name == "pause").unwrap();
        assert!(
            ours.references.iter().any(|r| r == pause),
            "e2e.test wants {pause}; pause has {:?}",
            ours.references
        );
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A throwaway containerd (own root, state, socket, private mount namespace; no CRI plugin) in the
/// registry's namespace; `ctr images pull --hosts-dir <certs.d>` of upstream names resolves through the
/// `hosts.toml` files to the lab registry. (CRI's `registry.config_path` reads the same files; the
/// kubelet-driven lab exercises that path.)
fn pull_through_containerd(ns: &NetNs, reg: &Registry, tmp: &Path, busybox: &ImageArchive) {
    let dir = tmp.join("containerd");
    let certs_d = dir.join("certs.d");
    write_mirror_config(&certs_d, &reg.url(), &MIRRORED_UPSTREAMS).unwrap();
    let sock = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
            opt = dir.join("opt").display(),
        ),
    )
    .unwrap();
    let log = dir.join("containerd.log");
    let mut cmd = ns.command("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "--",
        "containerd",
        "--config",
    ])
    .arg(&config);
    let pid = process::spawn_detached(&mut cmd, &log).unwrap();
    let needle = config.to_string_lossy().into_owned();
    let _guard = StopOnDrop {
        pid,
        needle: needle.clone(),
    };

    let ctr_in = |namespace: &str, args: &[&str]| {
        let mut c = ns.command("ctr");
        c.arg("-a").arg(&sock).args(["-n", namespace]).args(args);
        c.output()
    };
    let ctr = |args: &[&str]| ctr_in("k8s.io", args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(&["version"]).is_ok_and(|o| o.status.success()) {
        assert!(
            process::runs(pid, &needle),
            "containerd exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "containerd did not answer:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let hosts_dir = certs_d.to_string_lossy().into_owned();
    for name in [
        "docker.io/library/busybox:latest",
        "registry.k8s.io/pause:3.10",
    ] {
        let started = Instant::now();
        ok(
            &format!("ctr images pull {name}"),
            ctr(&[
                "images",
                "pull",
                "--hosts-dir",
                &hosts_dir,
                "--plain-http",
                name,
            ]),
        );
        say(&format!(
            "containerd pulled {name} (as {}) through the mirror in {:?}",
            repository_of(name),
            started.elapsed()
        ));
    }
    let listed = ok("ctr images ls", ctr(&["images", "ls", "-q"]));
    for name in [
        "docker.io/library/busybox:latest",
        "registry.k8s.io/pause:3.10",
    ] {
        assert!(
            listed.lines().any(|l| l == name),
            "{name} not in:\n{listed}"
        );
    }
    // The archives also import as they are, every reference at once (what a lab without a registry does).
    let archive = busybox.path.to_string_lossy().into_owned();
    ok(
        "ctr images import",
        ctr_in("import", &["images", "import", &archive]),
    );
    let imported = ok("ctr images ls", ctr_in("import", &["images", "ls", "-q"]));
    let mut want: Vec<&str> = busybox.references.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        imported.lines().collect::<Vec<_>>(),
        want,
        "ctr images import of {archive}"
    );
}

struct StopOnDrop {
    pid: u32,
    needle: String,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        process::stop(self.pid, &self.needle, Duration::from_secs(10));
        // Collect it even if it was still exiting when `stop` returned (no zombie left behind).
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(nix::sys::wait::WaitStatus::StillAlive) =
            nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
