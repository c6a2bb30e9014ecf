//! Local NovaNet clusters made of network namespaces: the light lab (nodes and pods are namespaces, pods
//! wired by the real `novanet-cni`), used by `novanet lab`, the integration tests and the benchmarks.
//!
//! Invariant: everything the lab creates carries the lab's unique prefix and is recorded in its state
//! directory, so `down` (or a test guard's `Drop`) removes all of it, even after a failure.

pub mod netns;
