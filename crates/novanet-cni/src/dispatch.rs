//! One invocation from environment and stdin to stdout text, with the checks in the spec's order:
//! `CNI_COMMAND` (4) -> stdin (5) -> attachment variables (4) -> JSON (6) -> `cniVersion` (1) ->
//! config fields (7/2) -> the command itself.

use std::io::Read;

use crate::config::{self, NetConf};
use crate::env::{self, Command};
use crate::error::{CniError, ErrorCode};
use crate::version;
use crate::{commands, logging};

/// A failed invocation and the protocol version to tag its error result with.
#[derive(Debug)]
pub struct Failure {
    pub error: CniError,
    pub cni_version: &'static str,
}

/// Runs one invocation; `Ok(Some(text))` is printed on stdout, `Ok(None)` prints nothing.
pub fn dispatch<F: Fn(&str) -> Option<String>>(
    get: &F,
    stdin: &mut dyn Read,
) -> Result<Option<String>, Failure> {
    let latest = version::CniVersion::LATEST.as_str();
    let command = env::command(get).map_err(|error| Failure {
        error,
        cni_version: latest,
    })?;

    let mut bytes = Vec::new();
    let read = stdin.read_to_end(&mut bytes);
    if command == Command::Version {
        // VERSION needs no valid config: an unreadable or empty stdin just means "latest".
        let requested = config::requested_version(&bytes);
        return Ok(Some(version::version_answer(requested.as_deref())));
    }
    let requested = config::requested_version(&bytes);
    let cni_version = version::version_for_errors(requested.as_deref());
    let fail = |error: CniError| Failure { error, cni_version };
    read.map_err(|e| {
        fail(
            CniError::new(ErrorCode::IoFailure, "error reading config from stdin")
                .with_details(e.to_string()),
        )
    })?;

    let attachment = if command.needs_attachment() {
        Some(env::attachment(command, get).map_err(fail)?)
    } else {
        None
    };
    let conf: NetConf = config::parse(&bytes, command).map_err(fail)?;
    logging::init(&conf);
    tracing::debug!(command = command.as_str(), version = conf.cni_version.as_str(), network = %conf.name, "invoked");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(CniError::internal("cannot start the async runtime", e)))?;
    let outcome = runtime.block_on(commands::run(command, attachment.as_ref(), &conf));
    match outcome {
        Ok(Some(value)) => Ok(Some(value.to_string())),
        Ok(None) => Ok(None),
        Err(error) => {
            tracing::error!(command = command.as_str(), error = %error, details = %error.details, "failed");
            Err(fail(error))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)], stdin: &str) -> Result<Option<String>, Failure> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        dispatch(&move |k: &str| map.get(k).cloned(), &mut stdin.as_bytes())
    }

    #[test]
    fn version_needs_no_config() {
        let out = run(&[("CNI_COMMAND", "VERSION")], "").unwrap().unwrap();
        assert!(out.contains("\"supportedVersions\""));
        let out = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#)
            .unwrap()
            .unwrap();
        assert!(out.contains("\"cniVersion\":\"0.4.0\""));
    }

    #[test]
    fn env_errors_come_before_config_errors_and_carry_the_requested_version() {
        let f = run(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"0.4.0","name":"n","type":"t","mtu":1}"#,
        )
        .unwrap_err();
        assert_eq!(f.error.code, ErrorCode::InvalidEnvironment);
        assert_eq!(f.cni_version, "0.4.0");
    }

    #[test]
    fn bad_json_is_code_6_after_env_passes() {
        let vars = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        let f = run(&vars, "{not json").unwrap_err();
        assert_eq!(f.error.code, ErrorCode::DecodingFailure);
        assert_eq!(f.cni_version, "1.1.0");
    }

    #[test]
    fn gc_on_old_version_is_code_1() {
        let f = run(
            &[("CNI_COMMAND", "GC")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
        )
        .unwrap_err();
        assert_eq!(f.error.code, ErrorCode::IncompatibleVersion);
        assert_eq!(f.cni_version, "1.0.0");
    }
}
