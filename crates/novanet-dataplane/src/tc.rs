//! tc attachment of the programs of [`crate::programs::PROGRAMS`]: legacy netlink `clsact` + `cls_bpf`
//! filter (direct action), one filter per program at the priority and handle its table entry gives.
//!
//! Why netlink and not tcx links: a netlink filter holds its own reference to the program, so it keeps
//! running when the agent dies (even `kill -9`) with nothing pinned per interface, and it disappears with
//! the interface. Re-attaching sends a filter change for the same priority and handle, which `cls_bpf`
//! applies by swapping the program pointer under RCU: there is no moment without a program.
//!
//! Everything here resolves interface names in the calling thread's network namespace.

use std::ffi::CString;

use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle};
use aya::programs::{Link, ProgramError, SchedClassifier, TcAttachType};

use crate::programs::{ProgramSpec, TcHook};
use crate::{DataplaneError, netlink};

/// `if_nametoindex(3)` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, DataplaneError> {
    let not_found = || DataplaneError::InterfaceNotFound { name: name.to_string() };
    let c_name = CString::new(name).map_err(|_| not_found())?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 { Err(not_found()) } else { Ok(index) }
}

fn attach_type(hook: TcHook) -> TcAttachType {
    match hook {
        TcHook::Ingress => TcAttachType::Ingress,
        TcHook::Egress => TcAttachType::Egress,
    }
}

fn netlink_hook(hook: TcHook) -> netlink::Hook {
    match hook {
        TcHook::Ingress => netlink::Hook::Ingress,
        TcHook::Egress => netlink::Hook::Egress,
    }
}

/// The filters on `hook` of `ifname`.
fn filters(ifname: &str, index: u32, hook: TcHook) -> Result<Vec<netlink::TcFilter>, DataplaneError> {
    netlink::filters(index, netlink_hook(hook)).map_err(|e| {
        gone_or(ifname, e.raw_os_error(), DataplaneError::Netlink { operation: "listing tc filters", source: e })
    })
}

/// Makes sure `prog` is the filter of `spec` on `hook` of `ifname`, creating clsact and the filter if
/// needed and replacing the program of an existing filter in place. Returns the ifindex.
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    spec: &ProgramSpec,
    hook: TcHook,
    ifname: &str,
) -> Result<u32, DataplaneError> {
    let index = ifindex(ifname)?;
    let attach_err = |operation: &'static str, source: Box<dyn std::error::Error + Send + Sync>| {
        DataplaneError::Attach { program: spec.name, ifname: ifname.to_string(), operation, source }
    };
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) => {}
        Err(e) if tc_errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(gone_or(ifname, tc_errno(&e), attach_err("adding clsact", Box::new(e)))),
    }
    let ours_exists =
        filters(ifname, index, hook)?.iter().any(|f| f.priority == spec.tc_priority && f.handle == spec.tc_handle);
    let attached = if ours_exists {
        replace(prog, spec, hook, ifname)
    } else {
        let options =
            NlOptions { priority: spec.tc_priority, handle: TcHandle::from(spec.tc_handle), classid: None };
        match prog.attach_with_options(ifname, attach_type(hook), TcAttachOptions::Netlink(options)) {
            // Someone attached between our dump and our create: replace theirs.
            Err(e) if program_errno(&e) == Some(libc::EEXIST) => replace(prog, spec, hook, ifname),
            other => other,
        }
    };
    let link_id = attached.map_err(|e| {
        let errno = program_errno(&e);
        gone_or(ifname, errno, attach_err("attaching the filter", Box::new(e)))
    })?;
    let link = prog.take_link(link_id).map_err(|e| attach_err("taking the link", Box::new(e)))?;
    // Dropping the link would delete the filter; forgetting it leaves the filter in the kernel, owned by
    // the interface. A netlink link is only integers (ifindex, priority, handle): nothing leaks.
    std::mem::forget(link);
    Ok(index)
}

fn existing_link(spec: &ProgramSpec, hook: TcHook, ifname: &str) -> std::io::Result<SchedClassifierLink> {
    SchedClassifierLink::attached(ifname, attach_type(hook), spec.tc_priority, TcHandle::from(spec.tc_handle), None)
}

fn replace(
    prog: &mut SchedClassifier,
    spec: &ProgramSpec,
    hook: TcHook,
    ifname: &str,
) -> Result<aya::programs::tc::SchedClassifierLinkId, ProgramError> {
    let link = existing_link(spec, hook, ifname).map_err(|e| ProgramError::TcError(TcError::IoError(e)))?;
    prog.attach_to_link(link)
}

/// Whether the filter of `spec` (any build of its program) is on `hook` of `ifname`.
pub(crate) fn is_attached(spec: &ProgramSpec, hook: TcHook, ifname: &str) -> Result<bool, DataplaneError> {
    let index = ifindex(ifname)?;
    Ok(filters(ifname, index, hook)?.iter().any(|f| {
        f.priority == spec.tc_priority
            && f.handle == spec.tc_handle
            && f.kind == "bpf"
            && f.bpf_name.as_deref() == Some(spec.name)
    }))
}

/// Removes the filter of `spec` from `hook` of `ifname`. `Ok(false)` when it is not there or the
/// interface is gone; other filters on the hook are left alone.
pub(crate) fn detach(spec: &ProgramSpec, hook: TcHook, ifname: &str) -> Result<bool, DataplaneError> {
    match is_attached(spec, hook, ifname) {
        Ok(true) => {}
        Ok(false) | Err(DataplaneError::InterfaceNotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    let detach_err = |source: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
        program: spec.name,
        ifname: ifname.to_string(),
        operation: "detaching the filter",
        source,
    };
    let link = existing_link(spec, hook, ifname).map_err(|e| detach_err(Box::new(e)))?;
    match link.detach() {
        Ok(()) => Ok(true),
        Err(e) if program_errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(detach_err(Box::new(e))),
    }
}

/// Maps "no such device" to [`DataplaneError::InterfaceNotFound`] (the veth vanished mid-operation).
fn gone_or(ifname: &str, errno: Option<i32>, other: DataplaneError) -> DataplaneError {
    if errno == Some(libc::ENODEV) { DataplaneError::InterfaceNotFound { name: ifname.to_string() } } else { other }
}

fn tc_errno(e: &TcError) -> Option<i32> {
    match e {
        TcError::NetlinkError(e) => e.raw_os_error(),
        TcError::IoError(e) => e.raw_os_error(),
        _ => None,
    }
}

fn program_errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::TcError(e) => tc_errno(e),
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}
