//! The table of NovaNet's eBPF programs: what each is, where it attaches, how it is pinned and replaced.
//!
//! [`crate::Dataplane`] loads, pins and attaches from this table only; adding a program is adding an entry
//! (and its attach point, the first time a new kind of hook is used).

use novanet_common::{NODE_EGRESS_PROG, POD_EGRESS_PROG, POD_INGRESS_PROG};

/// The kind of eBPF program, i.e. how aya loads it and how it is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// A tc classifier (`SchedClassifier`), attached as a netlink `cls_bpf` filter in direct-action mode.
    TcClassifier,
}

/// Which clsact hook of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    Ingress,
    Egress,
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPoint {
    /// A hook of the host-side veth of every local pod (ingress = frames the pod sends, egress = frames the
    /// node's stack delivers to it). Attached per endpoint by `Dataplane::attach_endpoint`.
    PodVeth(TcHook),
    /// A hook of the node's own interface towards other nodes (the underlay). Attached by
    /// `Dataplane::attach_node_interface`.
    NodeInterface(TcHook),
}

/// One program of the eBPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The function name in the object; also its pin name under the pin directory and its tc filter name.
    pub name: &'static str,
    pub kind: ProgramKind,
    pub attach: AttachPoint,
    /// tc priority (`pref`) and handle of its filter: fixed, so that a new agent's attach replaces the
    /// program of the existing filter in place (`cls_bpf` swaps it under RCU, no moment without a program).
    pub tc_priority: u16,
    pub tc_handle: u32,
}

/// Every program NovaNet loads. Pins: `<pin dir>/<name>`, replaced atomically on each load (pin a
/// temporary name, rename over); filters own their program, so nothing per interface is pinned.
pub const PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec {
        name: POD_INGRESS_PROG,
        kind: ProgramKind::TcClassifier,
        attach: AttachPoint::PodVeth(TcHook::Ingress),
        tc_priority: 1,
        tc_handle: 1,
    },
    ProgramSpec {
        name: POD_EGRESS_PROG,
        kind: ProgramKind::TcClassifier,
        attach: AttachPoint::PodVeth(TcHook::Egress),
        tc_priority: 1,
        tc_handle: 1,
    },
    ProgramSpec {
        name: NODE_EGRESS_PROG,
        kind: ProgramKind::TcClassifier,
        attach: AttachPoint::NodeInterface(TcHook::Egress),
        tc_priority: 1,
        tc_handle: 1,
    },
];

/// The programs attached to every pod's host veth.
pub fn pod_veth_programs() -> impl Iterator<Item = (&'static ProgramSpec, TcHook)> {
    PROGRAMS.iter().filter_map(|p| match p.attach {
        AttachPoint::PodVeth(hook) => Some((p, hook)),
        AttachPoint::NodeInterface(_) => None,
    })
}

/// The programs attached to the node's underlay interface.
pub fn node_interface_programs() -> impl Iterator<Item = (&'static ProgramSpec, TcHook)> {
    PROGRAMS.iter().filter_map(|p| match p.attach {
        AttachPoint::NodeInterface(hook) => Some((p, hook)),
        AttachPoint::PodVeth(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_each_hook_has_one_filter_slot() {
        let mut names: Vec<_> = PROGRAMS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROGRAMS.len());
        let mut slots: Vec<_> =
            PROGRAMS.iter().map(|p| (format!("{:?}", p.attach), p.tc_priority, p.tc_handle)).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), PROGRAMS.len(), "two programs would fight over one tc filter");
    }
}
