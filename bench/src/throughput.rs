//! One TCP throughput sample: an `iperf3` one-off server in the server namespace and a client in the
//! client namespace, each pinned to its own core with `taskset`; the result is the receiver's rate.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::child::{ChildGuard, output_with_timeout, pinned, wait_listening};
use crate::veth_pair::Endpoints;

const PORT: u16 = 5201;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ThroughputSample {
    /// Receiver-side goodput.
    pub gbit_per_s: f64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
}

pub fn sample(ep: &Endpoints, cpus: (usize, usize), secs: u32) -> anyhow::Result<ThroughputSample> {
    let ip = ep.server_ip.to_string();
    let mut server_cmd = pinned(&ep.server_ns, cpus.1, "iperf3");
    server_cmd.args(["-s", "-1", "-B", &ip, "-p", &PORT.to_string()]).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut server = ChildGuard::spawn(&mut server_cmd, "iperf3 server")?;
    wait_listening(&ep.server_ns, PORT, &mut server)?;
    let mut client = pinned(&ep.client_ns, cpus.0, "iperf3");
    client.args(["-c", &ip, "-p", &PORT.to_string(), "-t", &secs.to_string(), "-J", "--connect-timeout", "3000"]);
    let out = output_with_timeout(&mut client, "iperf3 client", Duration::from_secs(u64::from(secs) + 20))?;
    let parsed = parse(&out.stdout);
    if !out.status.success() || parsed.is_err() {
        bail!(
            "iperf3 client failed ({}): {}; stderr: {}",
            out.status,
            parsed.err().map(|e| e.to_string()).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // The one-off server exits by itself after the test; the guard stops it if it does not.
    let _ = server.wait_exit(Duration::from_secs(3));
    parsed
}

/// Reads `iperf3 -J` client output.
pub fn parse(json: &[u8]) -> anyhow::Result<ThroughputSample> {
    let v: serde_json::Value = serde_json::from_slice(json).context("iperf3 output is not JSON")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"].as_f64().context("no end.sum_received.bits_per_second")?;
    Ok(ThroughputSample { gbit_per_s: bps / 1e9, retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_rate_and_retransmits() {
        let json = br#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":4.1e9,"retransmits":12},
            "sum_received":{"bits_per_second":4.0e9}}}"#;
        let s = parse(json).unwrap_or_else(|e| panic!("{e}"));
        assert!((s.gbit_per_s - 4.0).abs() < 1e-9);
        assert_eq!(s.retransmits, 12);
    }

    #[test]
    fn iperf3_error_is_reported() {
        let err = parse(br#"{"start":{},"end":{},"error":"unable to connect to server"}"#).err();
        assert!(err.map(|e| e.to_string().contains("unable to connect")).unwrap_or(false));
    }
}
