//! The network configuration the runtime writes on stdin (one plugin's config, as libcni derives it
//! from a conflist): the spec's keys plus NovaNet's own.
//!
//! Decoding is in three steps with distinct error codes: JSON syntax (6), `cniVersion` (1), then the
//! fields (7; 2 for a field NovaNet deliberately does not support).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tracing::Level;

use crate::env::Command;
use crate::error::{CniError, ErrorCode};
use crate::result::{CniResult, Dns};
use crate::version::{self, CniVersion};

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub plugin_type: String,
    /// The agent's gRPC unix socket.
    pub agent_socket: PathBuf,
    /// MTU for both veth ends until the agent says otherwise.
    pub mtu: u32,
    pub log_file: Option<PathBuf>,
    pub log_level: Level,
    pub agent_timeout: Duration,
    /// Parsed for ADD and CHECK only (DEL must not fail on a bad one).
    pub prev_result: Option<CniResult>,
    /// GC only.
    pub valid_attachments: Vec<ValidAttachment>,
    /// The well-known `dns` key: copied into the ADD result when no earlier plugin set one.
    pub dns: Option<Dns>,
}

/// The wire form. Unknown keys (`runtimeConfig`, `args`, `capabilities`, other plugins' fields) are
/// ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    plugin_type: String,
    agent_socket: Option<PathBuf>,
    mtu: Option<u32>,
    log_file: Option<PathBuf>,
    log_level: Option<String>,
    agent_timeout_seconds: Option<u64>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
    ipam: Option<Value>,
    dns: Option<Dns>,
}

/// The `cniVersion` string of a config, if it has one (used to tag error results even when the
/// rest of the config is bad).
pub fn requested_version(bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

/// Decodes and validates the config for `command`.
pub fn parse(bytes: &[u8], command: Command) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(ErrorCode::DecodingFailure, "error decoding network config")
            .with_details(e.to_string())
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            ErrorCode::DecodingFailure,
            "network config is not a JSON object",
        ));
    }
    let cni_version = version::negotiate(value.get("cniVersion").and_then(Value::as_str), command)?;
    let raw: RawNetConf =
        serde_json::from_value(value).map_err(|e| invalid("invalid network config", e))?;

    validate_name(&raw.name)?;
    if raw.plugin_type.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "missing plugin type",
        ));
    }
    if let Some(ipam) = &raw.ipam {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            format!(
                "unsupported field ipam={ipam}: NovaNet's agent allocates pod addresses itself"
            ),
        ));
    }
    let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("mtu {mtu} out of range 68..=65535"),
        ));
    }
    let log_level = match raw.log_level.as_deref() {
        None | Some("") => default_log_level(raw.log_file.is_some()),
        Some(level) => parse_log_level(level)?,
    };
    let agent_timeout = match raw.agent_timeout_seconds {
        None => DEFAULT_AGENT_TIMEOUT,
        Some(0) => {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "agentTimeoutSeconds must be > 0",
            ));
        }
        Some(s) => Duration::from_secs(s),
    };
    let prev_result = match (command, raw.prev_result) {
        (Command::Add | Command::Check, Some(prev)) if !prev.is_null() => {
            Some(CniResult::from_value(prev)?)
        }
        _ => None,
    };

    Ok(NetConf {
        cni_version,
        name: raw.name,
        plugin_type: raw.plugin_type,
        agent_socket: raw
            .agent_socket
            .unwrap_or_else(|| PathBuf::from(novanet_api::DEFAULT_SOCKET)),
        mtu,
        log_file: raw.log_file,
        log_level,
        agent_timeout,
        prev_result,
        valid_attachments: raw.valid_attachments.unwrap_or_default(),
        dns: raw.dns.filter(|d| !d.is_empty()),
    })
}

/// On stderr the runtime may surface every line, so only warnings by default; a log file gets info.
fn default_log_level(to_file: bool) -> Level {
    if to_file { Level::INFO } else { Level::WARN }
}

fn parse_log_level(level: &str) -> Result<Level, CniError> {
    match level.to_ascii_lowercase().as_str() {
        "error" => Ok(Level::ERROR),
        "warn" | "warning" => Ok(Level::WARN),
        "info" => Ok(Level::INFO),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        other => Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("logLevel {other:?} is not one of error, warn, info, debug, trace"),
        )),
    }
}

/// The network name: an alphanumeric, then alphanumerics, `_`, `.`, `-` (as libcni checks it).
fn validate_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "missing network name",
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "invalid characters found in network name",
        )
        .with_details(name.to_string()))
    }
}

fn invalid(msg: &str, err: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg).with_details(err.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value, command: Command) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes(), command)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let conf = parse_json(
            json!({"cniVersion": "1.1.0", "name": "novanet", "type": "novanet-cni"}),
            Command::Add,
        )
        .unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_1_0);
        assert_eq!(
            conf.agent_socket,
            PathBuf::from("/run/novanet/novanet.sock")
        );
        assert_eq!(conf.mtu, 1500);
        assert_eq!(conf.log_level, Level::WARN);
        assert_eq!(conf.prev_result, None);
        assert_eq!(conf.agent_timeout, DEFAULT_AGENT_TIMEOUT);
    }

    #[test]
    fn conflist_derived_config_with_runtime_fields_parses() {
        // What libcni hands the plugin for `plugins[0]` of a conflist, second in a chain.
        let v = json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "novanet-cni",
            "agentSocket": "/tmp/agent.sock",
            "mtu": 1450,
            "logFile": "/var/log/novanet-cni.log",
            "logLevel": "DEBUG",
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            "args": {"cni": {"labels": ["a"]}},
            "someOtherPluginsField": 3,
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth1", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.9.0.2/24", "interface": 0}]
            }
        });
        let conf = parse_json(v, Command::Add).unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(conf.agent_socket, PathBuf::from("/tmp/agent.sock"));
        assert_eq!(conf.mtu, 1450);
        assert_eq!(conf.log_level, Level::DEBUG);
        assert_eq!(
            conf.log_file,
            Some(PathBuf::from("/var/log/novanet-cni.log"))
        );
        let prev = conf.prev_result.unwrap();
        assert_eq!(prev.interfaces[0].name, "eth1");
        assert_eq!(prev.ips[0].address, "10.9.0.2/24");
    }

    #[test]
    fn bad_json_is_code_6() {
        let err = parse(b"{\"cniVersion\": \"1.1.0\", ", Command::Add).unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodingFailure);
        let err = parse(b"[1, 2]", Command::Add).unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodingFailure);
        let err = parse(b"", Command::Add).unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodingFailure);
    }

    #[test]
    fn unknown_version_is_code_1_before_field_validation() {
        let err = parse_json(
            json!({"cniVersion": "7.0.0", "name": "", "type": "x"}),
            Command::Add,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
    }

    #[test]
    fn wrong_field_types_and_values_are_code_7() {
        let cases = [
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "mtu": "big"}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "mtu": 10}),
            json!({"cniVersion": "1.1.0", "type": "t"}),
            json!({"cniVersion": "1.1.0", "name": "bad name", "type": "t"}),
            json!({"cniVersion": "1.1.0", "name": "n"}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "logLevel": "loud"}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "agentTimeoutSeconds": 0}),
        ];
        for case in cases {
            let err = parse_json(case.clone(), Command::Add).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{case}");
        }
    }

    #[test]
    fn ipam_section_is_unsupported_field_code_2_naming_key_and_value() {
        let err = parse_json(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "ipam": {"type": "host-local"}}),
            Command::Add,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedField);
        assert!(
            err.msg.contains("ipam") && err.msg.contains("host-local"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn bad_prev_result_fails_add_but_not_del() {
        let v = json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "prevResult": {"ips": 5}});
        assert_eq!(
            parse_json(v.clone(), Command::Add).unwrap_err().code,
            ErrorCode::DecodingFailure
        );
        assert!(parse_json(v, Command::Del).is_ok());
    }

    #[test]
    fn gc_reads_valid_attachments() {
        let v = json!({
            "cniVersion": "1.1.0", "name": "n", "type": "t",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
        });
        let conf = parse_json(v, Command::Gc).unwrap();
        assert_eq!(
            conf.valid_attachments,
            vec![
                ValidAttachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                ValidAttachment {
                    container_id: "c2".into(),
                    ifname: "net1".into()
                },
            ]
        );
    }

    #[test]
    fn log_file_defaults_to_info() {
        let conf = parse_json(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "logFile": "/tmp/x.log"}),
            Command::Add,
        )
        .unwrap();
        assert_eq!(conf.log_level, Level::INFO);
    }

    #[test]
    fn requested_version_is_read_even_from_bad_configs() {
        assert_eq!(
            requested_version(br#"{"cniVersion":"0.4.0","mtu":"x"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(requested_version(b"nope"), None);
    }
}
