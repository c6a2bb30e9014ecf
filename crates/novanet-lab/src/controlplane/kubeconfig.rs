//! kubeconfig files with the CA and the client certificate embedded, so a copy works anywhere.

use std::fs;
use std::path::Path;

use super::error::{Result, io_err};
use super::pki::CertPair;

/// The cluster name every lab kubeconfig uses.
pub const CLUSTER_NAME: &str = "novanet-lab";

/// Writes a kubeconfig for `user` (a client certificate) talking to `server` (`https://host:port`).
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    client: &CertPair,
) -> Result<()> {
    let ca = fs::read(ca_cert).map_err(io_err("read", ca_cert))?;
    let cert = fs::read(&client.cert).map_err(io_err("read", &client.cert))?;
    let key = fs::read(&client.key).map_err(io_err("read", &client.key))?;
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: {CLUSTER_NAME}\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: {user}@{CLUSTER_NAME}\n  context:\n    cluster: {CLUSTER_NAME}\n    user: {user}\n\
         current-context: {user}@{CLUSTER_NAME}\n",
        base64(&ca),
        base64(&cert),
        base64(&key),
    );
    fs::write(path, text).map_err(io_err("write", path))
}

/// Standard base64 with padding (RFC 4648), as kubeconfig `*-data` fields expect.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
