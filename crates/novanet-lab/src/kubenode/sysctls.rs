//! The machine-wide sysctls a kubelet sets at start (`setupKernelTunables`, protectKernelDefaults=false):
//! vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10, kernel.panic_on_oops=1,
//! kernel.keys.root_maxkeys=1000000, kernel.keys.root_maxbytes=25000000.
//!
//! They are not per network namespace: a lab kubelet would change the whole machine (kernel.panic=10 with
//! panic_on_oops=1 turns any oops into a reboot). So each node's mount namespace bind-mounts read-only files
//! holding exactly those values over the `/proc/sys` entries: the kubelet reads what it wants and writes
//! nothing. As a safety net the host values are also recorded before the kubelet starts and compared (and
//! restored, with a complaint) at teardown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `(path under /proc/sys, the value kubelet wants)`.
pub const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Host values of [`KUBELET_SYSCTLS`] (keys are paths under /proc/sys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSysctls(pub BTreeMap<String, String>);

impl HostSysctls {
    /// Reads the current values (of this process's view: call it from the root mount namespace).
    pub fn record() -> Self {
        HostSysctls(
            KUBELET_SYSCTLS
                .iter()
                .filter_map(|(k, _)| read(k).map(|v| (k.to_string(), v)))
                .collect(),
        )
    }

    /// Writes back every recorded value that differs now; returns one line per value it had to restore
    /// (or could not).
    pub fn restore(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (key, want) in &self.0 {
            match read(key) {
                Some(now) if &now == want => {}
                now => {
                    let path = format!("/proc/sys/{key}");
                    match std::fs::write(&path, format!("{want}\n")) {
                        Ok(()) => notes.push(format!("host sysctl {key} was {now:?}; restored {want}")),
                        Err(e) => notes.push(format!("host sysctl {key} is {now:?}, could not restore {want}: {e}")),
                    }
                }
            }
        }
        notes
    }
}

fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}")).ok().map(|s| s.trim().to_string())
}
