//! Host-side interface names, derived from the attachment so DEL and GC find them without state.

use sha2::{Digest, Sha256};

/// Prefix of every host-side veth NovaNet creates.
pub const HOST_IFNAME_PREFIX: &str = "nn";

/// `"nn"` + the first 12 hex digits of SHA-256(`container_id` `/` `ifname`): 14 bytes, within Linux's
/// 15. The `/` cannot appear in either part, so distinct attachments never hash the same input.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let mut name = String::with_capacity(14);
    name.push_str(HOST_IFNAME_PREFIX);
    for byte in digest.iter().take(6) {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_deterministic_and_fits_ifnamsiz() {
        let a = host_ifname("0123456789abcdef", "eth0");
        assert_eq!(a, host_ifname("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("nn"));
        assert!(
            a[2..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn host_ifname_differs_per_container_and_per_ifname() {
        let base = host_ifname("c1", "eth0");
        assert_ne!(base, host_ifname("c2", "eth0"));
        assert_ne!(base, host_ifname("c1", "eth1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
    }

    #[test]
    fn host_ifname_matches_known_vector() {
        // `printf 'c1/eth0' | sha256sum` starts with d72e032fedd9.
        assert_eq!(host_ifname("c1", "eth0"), "nnd72e032fedd9");
    }
}
