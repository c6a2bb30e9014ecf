//! aya loader: loads, pins and attaches NovaNet's eBPF programs; typed access to its maps.
//!
//! This is the only crate that talks to aya. The eBPF object is built from `crates/novanet-ebpf` by
//! `build.rs` and embedded; [`Dataplane`] loads it.
//!
//! Architecture invariants:
//! - **Two tables say what there is**: [`programs::PROGRAMS`] (each program, its kind, where it attaches,
//!   its tc filter slot) and [`layout::MAPS`] (each pinned map, its layout version and shape, and what an
//!   upgrade carries over from earlier layouts). Loading and attaching are driven by them only.
//! - **Everything lives under `<bpffs root>/novanet`**: the maps (pinned by name and layout version, so a new
//!   agent adopts the very maps the running programs use, and never one of another layout) and the
//!   programs. A pin of this build's version with another shape is refused
//!   ([`DataplaneError::IncompatiblePinnedMap`]); pins of other versions are superseded, carried over where
//!   the layouts allow, and removed by [`Dataplane::finish_upgrade`].
//! - **An agent restart never interrupts traffic**: tc filters are legacy netlink `cls_bpf` filters that
//!   own a reference to their program, so they keep running when the agent exits or is killed; a new
//!   agent loads new programs and re-attaching swaps the program of each existing filter in place (same
//!   priority and handle), with no detach in between.
//! - **Nothing per interface is pinned**: a filter vanishes with its veth.
//! - Interface names are resolved in the calling thread's network namespace; callers that switch
//!   namespaces do so on a dedicated OS thread (see the integration tests).
//! - Maps may be read and written from any namespace: they are not tied to one.

mod bpffs;
mod conntrack;
mod error;
pub mod layout;
mod links;
mod lpm;
mod maps;
mod mem_map;
mod nat_flows;
mod netlink;
mod object;
mod pins;
mod policy_maps;
pub mod programs;
mod tc;
mod upgrade;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, PerCpuArray};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
pub use bpffs::is_bpffs;
pub use conntrack::{Conntrack, CtFlow, ct_expired, ct_flow};
pub use error::DataplaneError;
pub use links::delete_link;
pub use lpm::{BpfLpmTrie, LpmEntry, LpmHandle, MemLpm, masked};
pub use maps::{BpfHashMap, MapHandle};
pub use mem_map::{Faults, MapOp, MemMap};
pub use nat_flows::{NatFlow, NatFlows, monotonic_now_ns};
use novanet_common::{
    COUNTERS_MAP, CT_MAP, ENDPOINTS_MAP, EndpointKey, IPCACHE_MAP, MAX_ENDPOINTS, NAT_FLOWS_MAP, POLICY_CIDR_MAP,
    POLICY_CONFIG_MAP, POLICY_MAP, VERDICTS_MAP,
};
pub use novanet_common::{Counter, CounterValue, EndpointInfo};
pub use policy_maps::{
    BpfPolicySwitch, EndpointVerdicts, MemPolicySwitch, PolicyMaps, PolicySwitch, endpoint_verdicts,
    remove_endpoint_verdicts,
};
pub use tc::ifindex;
pub use upgrade::Superseded;

use crate::layout::{Carry, MapSpec};
use crate::programs::{PROGRAMS, ProgramKind, ProgramSpec};

/// NovaNet's loaded datapath: the programs of [`programs::PROGRAMS`] with the maps of a layout, adopted
/// from (or pinned to) the pin directory.
///
/// Dropping it closes this process's file descriptors only: pins and attached filters stay, so traffic
/// keeps flowing until [`Dataplane::unpin_all`] and the interfaces themselves are removed.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    endpoints: BpfHashMap<EndpointKey, EndpointInfo>,
    counters: PerCpuArray<MapData, CounterValue>,
    nat_flows_pin: PathBuf,
    endpoints_pin: PathBuf,
    /// Pin path of every map of the loaded layout.
    map_pins: Vec<(&'static str, PathBuf)>,
    superseded: Vec<Superseded>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("pin_dir", &self.pin_dir).finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the object with this build's map layout ([`layout::MAPS`]) under `<bpffs_root>/novanet` (e.g.
    /// "/sys/fs/bpf"), adopting maps already pinned there and pinning new ones; pins the programs too.
    /// Safe to call while old programs still run (agent restart or upgrade): traffic never stops.
    pub fn load(bpffs_root: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(bpffs_root, &layout::MAPS)
    }

    /// [`Dataplane::load`] with another map layout (tests of upgrades between layouts).
    pub fn load_with(bpffs_root: &Path, maps: &[MapSpec]) -> Result<Self, DataplaneError> {
        let pin_dir = pins::prepare_pin_dir(bpffs_root)?;
        let plan = upgrade::plan(&pin_dir, maps)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&pin_dir);
        for spec in maps {
            loader.map_pin_path(spec.name, spec.pin_path(&pin_dir)).map_max_entries(spec.name, spec.shape.max_entries);
        }
        let mut ebpf = loader.load(object::EBPF_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        // Fill newly created maps from their superseded versions before any program using them exists.
        for old in plan.superseded.iter().filter(|old| plan.fresh.contains(&old.map)) {
            match old.carry {
                Carry::Entries => {
                    let map = map_mut(&mut ebpf, old.map)?;
                    let carried = upgrade::carry_entries(old, map)?;
                    tracing::info!(map = old.map, from = old.version, carried, "map layout upgraded");
                }
                Carry::Nothing(why) => {
                    tracing::warn!(map = old.map, from = old.version, why, "map layout upgraded without its entries");
                }
            }
        }
        for spec in &PROGRAMS {
            match spec.kind {
                ProgramKind::TcClassifier => {
                    let prog = classifier(&mut ebpf, spec)?;
                    prog.load().map_err(program_err(spec.name, "loading (verifier)"))?;
                    pins::pin_program(prog, &pin_dir, spec.name)?;
                }
            }
        }
        let endpoints = BpfHashMap::new(ENDPOINTS_MAP, MAX_ENDPOINTS, take_map(&mut ebpf, ENDPOINTS_MAP)?)?;
        let counters = match take_map(&mut ebpf, COUNTERS_MAP)? {
            map @ Map::PerCpuArray(_) => PerCpuArray::try_from(map).map_err(maps::map_err(COUNTERS_MAP, "opening"))?,
            _ => {
                return Err(DataplaneError::MissingInObject { kind: "per-CPU array", name: COUNTERS_MAP });
            }
        };
        let pin_of = |name: &'static str| {
            maps.iter()
                .find(|s| s.name == name)
                .map(|s| s.pin_path(&pin_dir))
                .ok_or(DataplaneError::MissingInObject { kind: "map", name })
        };
        let (nat_flows_pin, endpoints_pin) = (pin_of(NAT_FLOWS_MAP)?, pin_of(ENDPOINTS_MAP)?);
        let map_pins = maps.iter().map(|s| (s.name, s.pin_path(&pin_dir))).collect();
        tracing::debug!(pin_dir = %pin_dir.display(), superseded = plan.superseded.len(), "dataplane loaded");
        Ok(Self {
            ebpf,
            pin_dir,
            endpoints,
            counters,
            nat_flows_pin,
            endpoints_pin,
            map_pins,
            superseded: plan.superseded,
        })
    }

    /// Where map `name` of the loaded layout is pinned.
    fn map_pin(&self, name: &'static str) -> Result<&Path, DataplaneError> {
        self.map_pins
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.as_path())
            .ok_or(DataplaneError::MissingInObject { kind: "map", name })
    }

    /// Handles of its own on the maps the policy subsystem owns (ipcache, policy and CIDR tries, policy
    /// switch, verdict counters).
    pub fn policy_maps(&self) -> Result<PolicyMaps, DataplaneError> {
        PolicyMaps::open(&policy_maps::PolicyPins {
            ipcache: self.map_pin(IPCACHE_MAP)?,
            policy: self.map_pin(POLICY_MAP)?,
            cidr: self.map_pin(POLICY_CIDR_MAP)?,
            config: self.map_pin(POLICY_CONFIG_MAP)?,
            verdicts: self.map_pin(VERDICTS_MAP)?,
        })
    }

    /// A handle of its own on the conntrack map (listing, pressure gauge, expiry sweep).
    pub fn conntrack(&self) -> Result<Conntrack, DataplaneError> {
        Conntrack::open(self.map_pin(CT_MAP)?)
    }

    /// Ensures the node-interface programs of [`programs::PROGRAMS`] (policy at tc egress) are attached to
    /// the node's underlay interface `ifname` (calling thread's namespace). Idempotent, replaces in place.
    /// Returns the ifindex.
    pub fn attach_node_interface(&mut self, ifname: &str) -> Result<u32, DataplaneError> {
        let mut index = 0;
        for (spec, hook) in programs::node_interface_programs() {
            index = tc::attach(classifier(&mut self.ebpf, spec)?, spec, hook, ifname)?;
        }
        tracing::debug!(ifname, ifindex = index, "node interface programs attached");
        Ok(index)
    }

    /// Whether all of NovaNet's node-interface filters are on `ifname`.
    pub fn is_node_interface_attached(&self, ifname: &str) -> Result<bool, DataplaneError> {
        for (spec, hook) in programs::node_interface_programs() {
            if !tc::is_attached(spec, hook, ifname)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes NovaNet's node-interface filters from `ifname`; `Ok(false)` when there were none or the
    /// interface is gone.
    pub fn detach_node_interface(ifname: &str) -> Result<bool, DataplaneError> {
        let mut any = false;
        for (spec, hook) in programs::node_interface_programs() {
            any |= tc::detach(spec, hook, ifname)?;
        }
        Ok(any)
    }

    /// Pins of other layout versions found at load. They stay until [`Dataplane::finish_upgrade`].
    pub fn superseded(&self) -> &[Superseded] {
        &self.superseded
    }

    /// Removes the superseded pins. Call once every filter runs this build's programs (after the
    /// endpoints are re-attached): until then the old programs keep using the old maps.
    pub fn finish_upgrade(&mut self) -> Result<Vec<Superseded>, DataplaneError> {
        upgrade::unpin(&self.superseded)?;
        Ok(std::mem::take(&mut self.superseded))
    }

    /// Ensures every pod-veth program of [`programs::PROGRAMS`] is attached to its hook of `host_ifname`
    /// (adds clsact if missing). Idempotent; re-attaching atomically replaces the program of NovaNet's
    /// existing filters. Returns the ifindex. The interface is looked up in the calling thread's namespace.
    pub fn attach_endpoint(&mut self, host_ifname: &str) -> Result<u32, DataplaneError> {
        let mut index = 0;
        for (spec, hook) in programs::pod_veth_programs() {
            index = tc::attach(classifier(&mut self.ebpf, spec)?, spec, hook, host_ifname)?;
        }
        tracing::debug!(ifname = host_ifname, ifindex = index, "pod programs attached");
        Ok(index)
    }

    /// Whether all of NovaNet's pod-veth filters are on `host_ifname` (calling thread's namespace).
    pub fn is_attached(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        for (spec, hook) in programs::pod_veth_programs() {
            if !tc::is_attached(spec, hook, host_ifname)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes NovaNet's pod-veth filters from `host_ifname`, so its programs stop running there.
    /// `Ok(false)` when there were none or the interface is gone.
    pub fn detach_endpoint(host_ifname: &str) -> Result<bool, DataplaneError> {
        let mut any = false;
        for (spec, hook) in programs::pod_veth_programs() {
            any |= tc::detach(spec, hook, host_ifname)?;
        }
        Ok(any)
    }

    /// The endpoint map (local pod address -> how to deliver to it), for its owner.
    pub fn endpoint_map(&mut self) -> &mut BpfHashMap<EndpointKey, EndpointInfo> {
        &mut self.endpoints
    }

    /// Inserts or replaces the endpoint for `ip`. [`DataplaneError::MapFull`] when the map is full.
    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError> {
        self.endpoints.insert(&EndpointKey::from_octets(ip.octets()), info)
    }

    /// Removes the endpoint for `ip`; `false` if there was none. Flows the datapath recorded for it are
    /// not swept here (that would walk the whole flow map on every CNI DEL): [`NatFlows::sweep`] frees
    /// them in the background, and until then they are harmless (a direct flow reusing their ends removes
    /// them, and only flows between two local endpoints are ever consulted).
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<bool, DataplaneError> {
        self.endpoints.remove(&EndpointKey::from_octets(ip.octets()))
    }

    /// All endpoints, sorted by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError> {
        Ok(maps::sorted_endpoints(self.endpoints.entries()?))
    }

    /// Every [`Counter`], summed over CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>, DataplaneError> {
        maps::counters(COUNTERS_MAP, &self.counters)
    }

    /// A handle of its own on the flows between local pods that the stack delivered (for listing and for
    /// the expiry sweep, which must not run under the endpoint manager's lock).
    pub fn nat_flows(&self) -> Result<NatFlows, DataplaneError> {
        NatFlows::open(&self.nat_flows_pin, &self.endpoints_pin)
    }

    /// `<bpffs_root>/novanet`.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Removes every pin (uninstall / lab teardown / tests). Filters already attached keep their program
    /// until their interfaces go away.
    pub fn unpin_all(bpffs_root: &Path) -> Result<(), DataplaneError> {
        pins::unpin_all(bpffs_root)
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, DataplaneError> {
    ebpf.map_mut(name).ok_or(DataplaneError::MissingInObject { kind: "map", name })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingInObject { kind: "map", name })
}

fn classifier<'a>(ebpf: &'a mut Ebpf, spec: &ProgramSpec) -> Result<&'a mut SchedClassifier, DataplaneError> {
    let prog =
        ebpf.program_mut(spec.name).ok_or(DataplaneError::MissingInObject { kind: "program", name: spec.name })?;
    prog.try_into().map_err(program_err(spec.name, "not a tc classifier"))
}

fn program_err(
    program: &'static str,
    operation: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { program, operation, source: Box::new(source) }
}

#[cfg(test)]
mod test_run;

impl PolicyMaps {
    /// Opens the policy maps an agent pinned under `<bpffs_root>/novanet` (this build's layout) without
    /// loading or pinning anything, so the running programs and their pins stay as they are: for tools and
    /// benchmarks that write policy themselves (`bench/`, whose light-lab agent has no policy subsystem).
    pub fn open_pinned(bpffs_root: &Path) -> Result<PolicyMaps, DataplaneError> {
        let dir = pins::pin_dir(bpffs_root);
        let pin = |name: &'static str| {
            layout::MAPS
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.pin_path(&dir))
                .ok_or(DataplaneError::MissingInObject { kind: "map", name })
        };
        let (ipcache, policy, cidr) = (pin(IPCACHE_MAP)?, pin(POLICY_MAP)?, pin(POLICY_CIDR_MAP)?);
        let (config, verdicts) = (pin(POLICY_CONFIG_MAP)?, pin(VERDICTS_MAP)?);
        PolicyMaps::open(&policy_maps::PolicyPins {
            ipcache: &ipcache,
            policy: &policy,
            cidr: &cidr,
            config: &config,
            verdicts: &verdicts,
        })
    }
}
