//! aya loader: loads, pins and attaches NovaNet's eBPF programs; typed access to its maps.
//!
//! This is the only crate that talks to aya. The eBPF object is built from `crates/novanet-ebpf` by
//! `build.rs` and embedded; [`Dataplane`] loads it.
//!
//! Architecture invariants:
//! - **Everything lives under `<bpffs root>/novanet`**: the maps (pinned by name, so a new agent adopts
//!   the very maps the running programs use) and the program `novanet_pod_ingress`. A pinned map of
//!   another shape is refused ([`DataplaneError::IncompatiblePinnedMap`]), never silently adopted.
//! - **An agent restart never interrupts traffic**: tc filters are legacy netlink `cls_bpf` filters that
//!   own a reference to their program, so they keep running when the agent exits or is killed; a new
//!   agent loads a new program against the same maps and re-attaching swaps the program of the existing
//!   filter in place (same priority and handle), with no detach in between.
//! - **Nothing per interface is pinned**: a filter vanishes with its veth.
//! - Interface names are resolved in the calling thread's network namespace; callers that switch
//!   namespaces do so on a dedicated OS thread (see the integration tests).
//! - Maps may be read and written from any namespace: they are not tied to one.

mod bpffs;
mod error;
mod maps;
mod netlink;
mod object;
mod pins;
mod tc;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
pub use bpffs::is_bpffs;
pub use error::DataplaneError;
use novanet_common::POD_INGRESS_PROG;
pub use novanet_common::{Counter, CounterValue, EndpointInfo};
pub use tc::ifindex;

/// NovaNet's loaded datapath: the eBPF object with its maps adopted from (or pinned to) the pin directory.
///
/// Dropping it closes this process's file descriptors only: pins and attached filters stay, so traffic
/// keeps flowing until [`Dataplane::unpin_all`] and the interfaces themselves are removed.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("pin_dir", &self.pin_dir).finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the object, re-using maps already pinned under `<bpffs_root>/novanet` (e.g. "/sys/fs/bpf"),
    /// pinning new ones; pins the program too. Creates the directory if needed. Safe to call while old
    /// programs still run (agent restart): existing pinned maps are adopted, so traffic never stops.
    pub fn load(bpffs_root: &Path) -> Result<Self, DataplaneError> {
        let pin_dir = pins::prepare_pin_dir(bpffs_root)?;
        pins::check_pinned_maps(&pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(object::EBPF_OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let prog = pod_ingress(&mut ebpf)?;
        prog.load().map_err(program_err("loading (verifier)"))?;
        pins::pin_program(prog, &pin_dir, POD_INGRESS_PROG)?;
        tracing::debug!(pin_dir = %pin_dir.display(), "dataplane loaded");
        Ok(Self { ebpf, pin_dir })
    }

    /// Ensures `novanet_pod_ingress` is attached to tc ingress of `host_ifname` (adds clsact if missing).
    /// Idempotent; re-attaching atomically replaces the program of NovaNet's existing filter. Returns the
    /// ifindex. The interface is looked up in the calling thread's network namespace.
    pub fn attach_endpoint(&mut self, host_ifname: &str) -> Result<u32, DataplaneError> {
        let prog = pod_ingress(&mut self.ebpf)?;
        let index = tc::attach_pod_ingress(prog, host_ifname)?;
        tracing::debug!(ifname = host_ifname, ifindex = index, "pod ingress attached");
        Ok(index)
    }

    /// Whether NovaNet's pod filter is on tc ingress of `host_ifname` (calling thread's namespace).
    pub fn is_attached(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        tc::pod_ingress_attached(host_ifname)
    }

    /// Inserts or replaces the endpoint for `ip`. [`DataplaneError::MapFull`] when the map is full.
    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError> {
        maps::upsert_endpoint(&mut self.ebpf, ip, info)
    }

    /// Removes the endpoint for `ip`, and the flows the datapath remembered for it; `false` if there was
    /// no endpoint.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<bool, DataplaneError> {
        let removed = maps::remove_endpoint(&mut self.ebpf, ip)?;
        maps::forget_flows(&mut self.ebpf, ip)?;
        Ok(removed)
    }

    /// All endpoints, sorted by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError> {
        maps::endpoints(&self.ebpf)
    }

    /// Every [`Counter`], summed over CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>, DataplaneError> {
        maps::counters(&self.ebpf)
    }

    /// Pod sides of the flows to non-local addresses the datapath remembers (see `NAT_FLOWS_MAP`), as
    /// (pod address, pod port, IP protocol).
    pub fn nat_flows(&self) -> Result<Vec<(Ipv4Addr, u16, u8)>, DataplaneError> {
        maps::nat_flows(&self.ebpf)
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

    /// Removes NovaNet's tc filter from `host_ifname` (uninstall), so its program stops running there.
    /// `Ok(false)` when there was none or the interface is gone.
    pub fn detach_endpoint(host_ifname: &str) -> Result<bool, DataplaneError> {
        tc::detach_pod_ingress(host_ifname)
    }
}

fn pod_ingress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    let prog = ebpf
        .program_mut(POD_INGRESS_PROG)
        .ok_or(DataplaneError::MissingInObject { kind: "program", name: POD_INGRESS_PROG })?;
    prog.try_into().map_err(program_err("not a tc classifier"))
}

fn program_err(operation: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { program: POD_INGRESS_PROG, operation, source: Box::new(source) }
}

#[cfg(test)]
mod test_run;
