//! Local NovaNet clusters made of network namespaces: the light lab (nodes and pods are namespaces, pods
//! wired by the real `novanet-cni` exactly as a runtime calls it, a real `novanet-agent` per node), used
//! by `novanet lab`, the integration tests and the benchmarks.
//!
//! Invariant: everything the lab creates carries the lab's unique prefix and is recorded in its state
//! file before the next step, so `down` (or a test guard's `Drop`) removes all of it, even after a failure.
//! Nothing is created in the root network namespace: interfaces are made inside lab namespaces.

pub mod agent_supervision;
pub mod binaries;
pub mod cluster_dns;
pub mod cluster_probe;
pub mod connectivity;
pub mod controlplane;
pub mod kubenode;
pub mod images;
pub mod lab;
pub mod netns;
pub mod node;
pub mod objects;
pub mod pod;
pub mod probe;
pub mod process;
pub mod registry;
pub mod spec;
pub mod state;

pub use lab::{Lab, LabError, LabOptions};
pub use spec::{LabSpec, NodeSpec, PodSpec};
