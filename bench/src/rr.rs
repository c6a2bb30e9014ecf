//! One TCP request/response sample: `sockperf pp` (ping-pong, one message in flight) against a `sockperf
//! sr` server, each pinned to its own core. Reports transactions per second over sockperf's valid window
//! (warm-up excluded) and the median one-way latency sockperf prints (half the round trip).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::child::{ChildGuard, output_with_timeout, pinned, wait_listening};
use crate::veth_pair::Endpoints;

const PORT: u16 = 11111;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RrSample {
    /// Completed request/response round trips per second.
    pub transactions_per_s: f64,
    /// sockperf's 50th percentile latency: half a round trip, microseconds.
    pub p50_half_rtt_us: f64,
}

pub fn sample(ep: &Endpoints, cpus: (usize, usize), secs: u32) -> anyhow::Result<RrSample> {
    let ip = ep.server_ip.to_string();
    let port = PORT.to_string();
    let mut server_cmd = pinned(&ep.server_ns, cpus.1, "sockperf");
    server_cmd.args(["sr", "--tcp", "-i", &ip, "-p", &port]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut server = ChildGuard::spawn(&mut server_cmd, "sockperf server")?;
    wait_listening(&ep.server_ns, PORT, &mut server)?;
    let mut client = pinned(&ep.client_ns, cpus.0, "sockperf");
    client.args(["pp", "--tcp", "-i", &ip, "-p", &port, "-t", &secs.to_string()]);
    let out = output_with_timeout(&mut client, "sockperf client", Duration::from_secs(u64::from(secs) + 20))?;
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let parsed = parse(&text);
    if !out.status.success() || parsed.is_err() {
        bail!(
            "sockperf client failed ({}): {}; output:\n{}",
            out.status,
            parsed.err().map(|e| e.to_string()).unwrap_or_default(),
            text.trim()
        );
    }
    drop(server); // the server never exits by itself
    parsed
}

/// Reads the summary of `sockperf pp` (ANSI colour codes and all).
pub fn parse(text: &str) -> anyhow::Result<RrSample> {
    let valid = text.lines().find(|l| l.contains("[Valid Duration]")).context("no [Valid Duration] line")?;
    let runtime: f64 = field(valid, "RunTime=").context("no RunTime")?;
    let received: f64 = field(valid, "ReceivedMessages=").context("no ReceivedMessages")?;
    if runtime <= 0.0 || received <= 0.0 {
        bail!("sockperf measured nothing: {valid}");
    }
    let p50 = text
        .lines()
        .find(|l| l.contains("percentile 50.000"))
        .and_then(|l| l.rsplit('=').next()?.trim().trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .context("no 50th percentile line")?;
    Ok(RrSample { transactions_per_s: received / runtime, p50_half_rtt_us: p50 })
}

fn field(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "sockperf: Test ended
sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=14499; ReceivedMessages=14498
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=6772; ReceivedMessages=6772
sockperf: \x1b[2;35m====> avg-latency=40.589 (std-dev=65.420)\x1b[0m
sockperf: ---> percentile 99.000 =  291.287
sockperf: ---> percentile 50.000 =   29.168
sockperf: ---> <MIN> observation =    9.288
";

    #[test]
    fn parses_rate_over_the_valid_window_and_the_median() {
        let s = parse(OUTPUT).unwrap_or_else(|e| panic!("{e}"));
        assert!((s.transactions_per_s - 6772.0 / 0.550).abs() < 1e-6);
        assert!((s.p50_half_rtt_us - 29.168).abs() < 1e-9);
    }

    #[test]
    fn output_without_summary_is_an_error() {
        assert!(parse("sockperf: ERROR: connect failed").is_err());
    }
}
