//! The embedded eBPF object (built from `crates/novanet-ebpf` by `build.rs`).

/// The BPF ELF object. `include_bytes_aligned!` because the ELF parser needs 8-byte alignment.
pub(crate) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/novanet-ebpf.o"));
