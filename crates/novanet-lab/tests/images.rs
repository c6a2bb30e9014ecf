//! The lab's images run what their users run with them. The busybox image's root filesystem, unpacked
//! from its OCI archive, runs `wget` (directly, as `kubectl exec ... -- wget` does, and from its shell)
//! against an HTTP server on the loopback of a network namespace of the test's own.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{in_netns, ok_stdout};
use novanet_lab::images;
use novanet_lab::netns::{NetNs, unique_prefix};

const BODY: &str = "hello from the lab\n";

/// Unpacks the single layer of an OCI archive made by tools/images/build.sh into `rootfs`.
fn unpack(archive: &Path, work: &Path, rootfs: &Path) {
    let layout = work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(rootfs).unwrap();
    ok_stdout("tar", Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout).output().unwrap());
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    ok_stdout("tar", Command::new("tar").arg("-xf").arg(&layer).arg("-C").arg(rootfs).output().unwrap());
}

#[test]
fn the_busybox_images_wget_fetches_from_a_local_server() {
    let archives = images::build(&["busybox"]).unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    unpack(&archives[0].path, work.path(), &rootfs);

    let ns = NetNs::create(&format!("{}img", unique_prefix())).unwrap();
    let commands = [
        vec!["/usr/bin/wget", "-T", "5", "-qO-"],
        vec!["wget", "-O-"],
        vec!["/bin/sh", "-c", "wget -q -T 5 -O - \"$0\""],
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    let count = commands.len();
    let server = in_netns(ns.name(), move || {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        for _ in 0..count {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(request.starts_with(b"GET /hello HTTP/1."), "{}", String::from_utf8_lossy(&request));
            write!(conn, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len())
                .unwrap();
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let url = format!("http://127.0.0.1:{port}/hello");
    for argv in commands {
        let out = ns
            .command("chroot")
            .arg(&rootfs)
            .args(&argv)
            .arg(&url)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        let got = ok_stdout(&format!("{argv:?} {url} in the busybox image"), out);
        assert_eq!(got, BODY.trim(), "{argv:?}");
    }
    server.join().unwrap();
}
