//! The node's filesystem view, as a kind node's container would have it: a mount namespace (and a UTS
//! namespace, for its hostname) held by a long-lived process, in which
//!
//! - `/etc`, `/opt`, `/var` are overlays (the host's directory below, a per-node upper layer above), so the
//!   node may create and change anything there while the host's files stay untouched;
//! - the standard host paths of a Kubernetes node ([`NODE_DIRS`]) are bind mounts of per-node directories
//!   `<node dir>/root/<path>`, visible from the host too (to write a CNI config or read a log);
//! - `/run` is a fresh tmpfs (containerd's state and socket, sandbox network namespaces under /run/netns, the
//!   agent's socket) and so is `/tmp` (containerd's temporary mounts), with the directories that must stay
//!   visible (the lab directory, the binaries) bound back in;
//! - `/sys/fs/bpf` is a bpffs of its own, so pins never collide between nodes;
//! - the machine-wide sysctls a kubelet would set are masked (see [`super::sysctls`]).
//!
//! `/sys` and the cgroup tree are the host's (no `ip netns exec`, which remounts /sys). The namespace was
//! created with private propagation, so no mount made in it ever reaches the host; once built, its tree is
//! made rshared (new peer groups of its own, as a kind node does), so pods' HostToContainer and
//! Bidirectional mounts work. It disappears with its last process.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::sysctls::KUBELET_SYSCTLS;

/// Directories of a Kubernetes node that are per-node bind mounts (`<node dir>/root/<path>`).
pub const NODE_DIRS: [&str; 13] = [
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/etc/containerd",
    "/etc/kubernetes",
    "/etc/novanet",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/lib/novanet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/log/novanet",
];

/// Top-level directories shown as overlays of the host's.
pub const OVERLAYS: [&str; 3] = ["etc", "opt", "var"];

/// Directories that are fresh tmpfs instances in the node.
pub const PRIVATE_TMPFS: [&str; 2] = ["run", "tmp"];

/// `/run/<first component>` (or `/tmp/...`) of each path under a [`PRIVATE_TMPFS`] directory: these are
/// bound back over the node's fresh tmpfs so the paths stay valid inside.
pub fn dirs_to_keep(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut keep: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| {
            let mut comps = p.components();
            if comps.next() != Some(Component::RootDir) {
                return None;
            }
            let top = comps.next()?.as_os_str().to_str()?;
            let second = comps.next()?;
            PRIVATE_TMPFS.contains(&top).then(|| Path::new("/").join(top).join(second.as_os_str()))
        })
        .collect();
    keep.sort();
    keep.dedup();
    keep
}

/// The shell script (bash, `set -eu`) that builds the view inside the node's mount namespace.
/// `tag` names the mounts (`novanet-<tag>-run`, ...) so any leak is recognisable.
pub fn setup_script(node_dir: &Path, tag: &str, keep_under_run: &[PathBuf]) -> String {
    let nd = node_dir.display();
    let mut s = String::from("set -eu\n");
    // Belt and braces: the namespace must not share mounts with the host.
    s += "if grep -q 'shared:' /proc/self/mountinfo; then echo 'mount namespace is not private' >&2; exit 1; fi\n";
    for d in OVERLAYS {
        let _ = writeln!(
            s,
            "mkdir -p '{nd}/fs/{d}/upper' '{nd}/fs/{d}/work'\n\
             mount -t overlay 'novanet-{tag}-{d}' -o 'lowerdir=/{d},upperdir={nd}/fs/{d}/upper,workdir={nd}/fs/{d}/work' '/{d}'"
        );
    }
    // The host's named network namespaces would only be pinned by this copy: drop it.
    s += "if mountpoint -q /run/netns; then umount --recursive --lazy /run/netns; fi\n";
    // Handles on what must stay visible, opened before /run and /tmp are covered, bound back through /proc/self/fd
    // (--no-canonicalize, or mount(8) would resolve the path again, now on the tmpfs).
    for (fd, k) in (10..).zip(keep_under_run) {
        let _ = writeln!(s, "exec {fd}<'{}'", k.display());
    }
    let _ = writeln!(s, "mount -t tmpfs -o mode=0755 'novanet-{tag}-run' /run");
    let _ = writeln!(s, "mount -t tmpfs -o mode=1777 'novanet-{tag}-tmp' /tmp");
    s += "mkdir -p /run/lock /run/netns\n";
    for (fd, k) in (10..).zip(keep_under_run) {
        let _ = writeln!(
            s,
            "mkdir -p '{k}'\nmount --no-canonicalize --bind /proc/self/fd/{fd} '{k}'\nexec {fd}<&-",
            k = k.display()
        );
    }
    for d in NODE_DIRS {
        let _ = writeln!(s, "mkdir -p '{nd}/root{d}' '{d}'\nmount --bind '{nd}/root{d}' '{d}'");
    }
    let _ = writeln!(s, "mount -t bpf 'novanet-{tag}-bpf' /sys/fs/bpf");
    let _ = writeln!(s, "mkdir -p '{nd}/sysctl-mask'");
    for (key, value) in KUBELET_SYSCTLS {
        let file = format!("{nd}/sysctl-mask/{}", key.replace('/', "."));
        let _ = writeln!(s, "echo {value} > '{file}'\nmount --bind -o ro '{file}' '/proc/sys/{key}'");
    }
    // As in a kind node: shared inside the node, so HostToContainer/Bidirectional volumes work (the CRI
    // refuses them on private mounts). The peer groups are new and this namespace's own: the host has no copy
    // made after this point, so nothing propagates to it.
    s += "mount --make-rshared /\n";
    s
}

/// The holder's command: enters the node's network namespace, makes new mount (private propagation) and
/// UTS namespaces, sets the hostname and sleeps under the name `tag`, so it is recognisable by its
/// command line.
pub fn holder_command(netns: &str, hostname: &str, tag: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .args(["--", "unshare", "--mount", "--uts", "--propagation", "private", "--", "bash", "-c"])
        .arg("hostname \"$0\" && exec -a \"$1\" sleep infinity")
        .arg(hostname)
        .arg(tag);
    cmd
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn keeps_top_level_run_and_tmp_dirs() {
        let keep = dirs_to_keep(&[
            PathBuf::from("/run/novanet-lab/x/nodes/n1"),
            PathBuf::from("/run/novanet-lab/x/control-plane"),
            PathBuf::from("/root/.cache/bin"),
            PathBuf::from("/run/other"),
            PathBuf::from("/tmp/.tmpX/bin"),
            PathBuf::from("/run"),
        ]);
        let want = ["/run/novanet-lab", "/run/other", "/tmp/.tmpX"].map(PathBuf::from);
        assert_eq!(keep, want);
    }

    #[test]
    fn script_binds_every_node_dir_and_masks_sysctls() {
        let s = setup_script(Path::new("/run/novanet-lab/l/nodes/n1"), "t", &[PathBuf::from("/run/novanet-lab")]);
        for d in NODE_DIRS {
            assert!(s.contains(&format!("mount --bind '/run/novanet-lab/l/nodes/n1/root{d}' '{d}'")), "{d}");
        }
        assert!(s.contains("mount --bind -o ro '/run/novanet-lab/l/nodes/n1/sysctl-mask/kernel.panic' '/proc/sys/kernel/panic'"));
        assert!(s.find("exec 10<'/run/novanet-lab'").unwrap() < s.find("/run\n").unwrap());
    }
}
