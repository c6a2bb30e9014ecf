//! The pinned maps, listed once: name, layout version and shape, and what an upgrade carries over from
//! each earlier layout.
//!
//! Version 1 of a map is pinned under its name, version N > 1 under `<name>_v<N>`: an agent never adopts a
//! map of another layout (aya would adopt it blindly, and programs and agent would read each other's bytes
//! wrongly). On an upgrade the new version is created beside the old one and filled from it where the
//! layouts allow ([`Carry`]) before the new programs replace the old ones on their filters; the old pins go
//! once every filter runs the new programs (`Dataplane::finish_upgrade`). So an upgrade never crash-loops
//! on a refused pin, and traffic keeps flowing through it.

use std::path::{Path, PathBuf};

use aya::maps::MapType;
use novanet_common::{
    COUNTERS_MAP, COUNTERS_MAP_VERSION, CT_MAP, CT_MAP_VERSION, CidrKey, CidrValue, Counter, CounterValue, CtEntry,
    CtKey, ENDPOINTS_MAP, ENDPOINTS_MAP_VERSION, EndpointInfo, EndpointKey, IPCACHE_MAP, IPCACHE_MAP_VERSION,
    IpcacheValue, MAX_CT, MAX_ENDPOINTS, MAX_IPCACHE, MAX_NAT_FLOWS, MAX_POLICY_CIDRS, MAX_POLICY_ENTRIES,
    MAX_VERDICTS, NAT_FLOWS_MAP, NAT_FLOWS_MAP_VERSION, NatFlowKey, NatFlowSeen, POLICY_CIDR_MAP,
    POLICY_CIDR_MAP_VERSION, POLICY_CONFIG_MAP, POLICY_CONFIG_MAP_VERSION, POLICY_MAP, POLICY_MAP_VERSION,
    PolicyConfig, PolicyKey, PolicyValue, VERDICTS_MAP, VERDICTS_MAP_VERSION, VerdictKey, VerdictValue,
};

/// The kernel-visible shape of a map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// What an upgrade from an earlier layout of a map carries into the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Every entry whose key fits the new map, byte for byte (same key and value layout; for arrays, the
    /// slots below the new size).
    Entries,
    /// Nothing; the reason is logged and documented (the owner refills the map, or it is a cache).
    Nothing(&'static str),
}

/// An earlier layout of a map that this build can still recognise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PastLayout {
    pub version: u32,
    pub shape: MapShape,
    pub carry: Carry,
}

/// One pinned map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapSpec {
    /// The map's name in the eBPF object.
    pub name: &'static str,
    pub version: u32,
    pub shape: MapShape,
    pub past: &'static [PastLayout],
}

impl MapSpec {
    /// Where this version of the map is pinned.
    pub fn pin_path(&self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(pin_name(self.name, self.version))
    }
}

/// The pin name of version `version` of map `name`.
pub fn pin_name(name: &str, version: u32) -> String {
    if version == 1 { name.to_string() } else { format!("{name}_v{version}") }
}

/// The version a pin name gives for map `name`, if the pin is one of its versions.
pub fn pinned_version(name: &str, pin: &str) -> Option<u32> {
    if pin == name {
        return Some(1);
    }
    let version: u32 = pin.strip_prefix(name)?.strip_prefix("_v")?.parse().ok()?;
    (version > 1).then_some(version)
}

const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// The key size of an LPM trie whose key data is `T`: the kernel's `bpf_lpm_trie_key` is a `u32` prefix
/// length followed by the data. (aya creates LPM tries with `BPF_F_NO_PREALLOC`, which the kernel requires;
/// the shape check does not compare flags.)
const fn lpm_key<T>() -> u32 {
    4 + size::<T>()
}

/// This build's maps. The endpoint map stays first (tests build other layouts from it).
pub const MAPS: [MapSpec; 9] = [
    MapSpec {
        name: ENDPOINTS_MAP,
        version: ENDPOINTS_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::Hash,
            key_size: size::<EndpointKey>(),
            value_size: size::<EndpointInfo>(),
            max_entries: MAX_ENDPOINTS,
        },
        past: &[],
    },
    MapSpec {
        name: COUNTERS_MAP,
        version: COUNTERS_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::PerCpuArray,
            key_size: size::<u32>(),
            value_size: size::<CounterValue>(),
            max_entries: Counter::COUNT,
        },
        past: &[PastLayout {
            version: 1,
            shape: MapShape {
                map_type: MapType::PerCpuArray,
                key_size: size::<u32>(),
                value_size: size::<CounterValue>(),
                max_entries: 8,
            },
            carry: Carry::Entries,
        }],
    },
    MapSpec {
        name: NAT_FLOWS_MAP,
        version: NAT_FLOWS_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::LruHash,
            key_size: size::<NatFlowKey>(),
            value_size: size::<NatFlowSeen>(),
            max_entries: MAX_NAT_FLOWS,
        },
        past: &[PastLayout {
            version: 1,
            shape: MapShape { map_type: MapType::LruHash, key_size: 8, value_size: 4, max_entries: MAX_NAT_FLOWS },
            carry: Carry::Nothing(
                "v1 entries name only the client's end of a flow, v2 needs both; Service connections to a \
                 backend on the client's own node that were open across the upgrade lose their answers",
            ),
        }],
    },
    MapSpec {
        name: IPCACHE_MAP,
        version: IPCACHE_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::Hash,
            key_size: size::<EndpointKey>(),
            value_size: size::<IpcacheValue>(),
            max_entries: MAX_IPCACHE,
        },
        past: &[],
    },
    MapSpec {
        name: POLICY_MAP,
        version: POLICY_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::LpmTrie,
            key_size: lpm_key::<PolicyKey>(),
            value_size: size::<PolicyValue>(),
            max_entries: MAX_POLICY_ENTRIES,
        },
        past: &[],
    },
    MapSpec {
        name: POLICY_CIDR_MAP,
        version: POLICY_CIDR_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::LpmTrie,
            key_size: lpm_key::<CidrKey>(),
            value_size: size::<CidrValue>(),
            max_entries: MAX_POLICY_CIDRS,
        },
        past: &[],
    },
    MapSpec {
        name: CT_MAP,
        version: CT_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::LruHash,
            key_size: size::<CtKey>(),
            value_size: size::<CtEntry>(),
            max_entries: MAX_CT,
        },
        past: &[],
    },
    MapSpec {
        name: POLICY_CONFIG_MAP,
        version: POLICY_CONFIG_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::Array,
            key_size: size::<u32>(),
            value_size: size::<PolicyConfig>(),
            max_entries: 1,
        },
        past: &[],
    },
    MapSpec {
        name: VERDICTS_MAP,
        version: VERDICTS_MAP_VERSION,
        shape: MapShape {
            map_type: MapType::Hash,
            key_size: size::<VerdictKey>(),
            value_size: size::<VerdictValue>(),
            max_entries: MAX_VERDICTS,
        },
        past: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_one_keeps_the_plain_name_and_later_versions_a_suffix() {
        assert_eq!(pin_name("NOVANET_COUNTERS", 1), "NOVANET_COUNTERS");
        assert_eq!(pin_name("NOVANET_COUNTERS", 2), "NOVANET_COUNTERS_v2");
        assert_eq!(pinned_version("NOVANET_COUNTERS", "NOVANET_COUNTERS"), Some(1));
        assert_eq!(pinned_version("NOVANET_COUNTERS", "NOVANET_COUNTERS_v12"), Some(12));
        assert_eq!(pinned_version("NOVANET_COUNTERS", "NOVANET_COUNTERS_v1"), None);
        assert_eq!(pinned_version("NOVANET_COUNTERS", "NOVANET_COUNTERS_vx"), None);
        assert_eq!(pinned_version("NOVANET_COUNTERS", "NOVANET_ENDPOINTS"), None);
    }

    #[test]
    fn every_past_layout_is_older_and_differs_from_the_current_one() {
        for spec in &MAPS {
            for past in spec.past {
                assert!(past.version < spec.version, "{}", spec.name);
                assert_ne!(
                    past.shape, spec.shape,
                    "{} v{}: an unchanged layout needs no new version",
                    spec.name, past.version
                );
                if past.carry == Carry::Entries {
                    assert_eq!(
                        (past.shape.key_size, past.shape.value_size),
                        (spec.shape.key_size, spec.shape.value_size),
                        "{}: entries can only be carried byte for byte",
                        spec.name
                    );
                }
            }
        }
    }
}
