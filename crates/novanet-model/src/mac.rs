//! How NovaNet writes a MAC address everywhere it shows one (CNI results, the agent's API, tests).

/// `aa:bb:cc:dd:ee:ff`: lower case, colon separated, as the reference CNI plugins and iproute2 print
/// MACs. Takes any length (a netlink link address need not be 6 bytes).
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_lower_case_colon_separated() {
        assert_eq!(format_mac(&[0xAB, 0xcd, 0, 1, 2, 0xff]), "ab:cd:00:01:02:ff");
    }

    #[test]
    fn any_length_and_empty() {
        assert_eq!(format_mac(&[]), "");
        assert_eq!(format_mac(&[1, 2, 3, 4, 5, 6, 7, 8]), "01:02:03:04:05:06:07:08");
    }
}
