//! Port ranges as LPM prefixes of the 16-bit port field.

/// The minimal set of aligned prefixes covering `first..=last`, as `(base port, prefix bits 0..=16)`:
/// 80-81 is `[(80, 15)]`, 0-65535 is `[(0, 0)]`, 1-3 is `[(1, 16), (2, 15)]`. Empty when `first > last`.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        let mut size_bits = lo.trailing_zeros().min(16);
        while size_bits > 0 && lo + (1 << size_bits) - 1 > hi {
            size_bits -= 1;
        }
        out.push((lo as u16, 16 - size_bits));
        lo += 1 << size_bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(prefixes: &[(u16, u32)], port: u16) -> bool {
        prefixes.iter().any(|(base, bits)| {
            let mask: u16 = if *bits == 0 { 0 } else { u16::MAX << (16 - bits) };
            port & mask == *base
        })
    }

    #[test]
    fn known_ranges() {
        assert_eq!(port_prefixes(80, 81), vec![(80, 15)]);
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(1, 3), vec![(1, 16), (2, 15)]);
        assert_eq!(port_prefixes(1024, 2047), vec![(1024, 6)]);
        assert!(port_prefixes(81, 80).is_empty());
    }

    #[test]
    fn ranges_are_covered_exactly_every_port_in_none_out() {
        let ranges =
            [(80, 81), (81, 82), (1, 65535), (0, 0), (65535, 65535), (1000, 1999), (32000, 32768), (7, 12345)];
        for (first, last) in ranges {
            let prefixes = port_prefixes(first, last);
            for port in 0..=u16::MAX {
                assert_eq!(covers(&prefixes, port), (first..=last).contains(&port), "{first}-{last} port {port}");
            }
            // Aligned and no more than 2 per bit of the range.
            for (base, bits) in &prefixes {
                let mask: u16 = if *bits == 0 { 0 } else { u16::MAX << (16 - bits) };
                assert_eq!(base & mask, *base);
            }
            assert!(prefixes.len() <= 30);
        }
    }
}
