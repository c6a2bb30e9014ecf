//! The error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading, attaching or updating NovaNet's datapath.
///
/// aya's own errors are boxed (they are large) and kept as `source`s, so callers can log the full chain.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The pin root is not a mounted bpf filesystem.
    #[error("{path} is not a bpf filesystem (mount it with `mount -t bpf bpf {path}`)")]
    NotBpffs { path: PathBuf },

    /// Creating, reading or removing something under the pin root failed.
    #[error("{operation} {path}: {source}")]
    PinDir { operation: &'static str, path: PathBuf, source: io::Error },

    /// A map pinned by an earlier agent has another shape than this build's: adopting it would corrupt
    /// memory views on both sides. An uninstall (`Dataplane::unpin_all`) and reload recreates it.
    #[error("pinned map {path} does not match this build: {detail}")]
    IncompatiblePinnedMap { path: PathBuf, detail: String },

    /// The embedded eBPF object could not be loaded (parse, map creation or adoption).
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),

    /// The embedded object lacks a program or map this crate expects (build mismatch).
    #[error("the eBPF object has no {kind} named {name}")]
    MissingInObject { kind: &'static str, name: &'static str },

    /// Loading (verifying), converting or attaching a program failed.
    #[error("program {program}: {operation}")]
    Program {
        program: &'static str,
        operation: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    /// Pinning a program failed.
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },

    /// No interface of that name in the calling thread's network namespace.
    #[error("interface {name} not found in this network namespace")]
    InterfaceNotFound { name: String },

    /// Adding the clsact qdisc or the tc filter failed.
    #[error("attaching {program} to a tc hook of {ifname}: {operation}")]
    Attach {
        program: &'static str,
        ifname: String,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A hash map has no room for another entry.
    #[error("map {map} is full ({max_entries} entries)")]
    MapFull { map: &'static str, max_entries: u32 },

    /// Any other map operation failure.
    #[error("map {map}: {operation}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    /// A netlink request (tc filter dump) failed.
    #[error("netlink {operation}: {source}")]
    Netlink { operation: &'static str, source: io::Error },
}
