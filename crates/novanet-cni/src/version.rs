//! CNI protocol versions: which ones the plugin speaks, negotiation per command, and the VERSION answer.
//!
//! The runtime picks the version (the config's `cniVersion`); the plugin either speaks it or fails with
//! code 1. Results are then written in that version's format (see `result.rs`).

use serde::Serialize;

use crate::env::Command;
use crate::error::{CniError, ErrorCode};

/// A CNI specification version this plugin supports, in ascending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version the plugin speaks, oldest first (as VERSION reports them).
pub const SUPPORTED: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<Self> {
        SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Before 1.0.0 each entry of `ips` carries `"version": "4"|"6"`.
    pub fn ips_carry_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// 1.1.0 added `mtu`/`socketPath`/`pciID` to interfaces and `mtu`/`advmss`/`priority`/`table`/`scope`
    /// to routes.
    pub fn has_v1_1_fields(self) -> bool {
        self >= Self::V1_1_0
    }
}

/// The oldest version in which `command` exists (CHECK came with 0.4.0, GC and STATUS with 1.1.0).
fn minimum_for(command: Command) -> CniVersion {
    match command {
        Command::Check => CniVersion::V0_4_0,
        Command::Gc | Command::Status => CniVersion::V1_1_0,
        Command::Add | Command::Del | Command::Version => CniVersion::V0_3_0,
    }
}

/// Accepts the config's `cniVersion` for `command`, or fails with code 1.
pub fn negotiate(requested: Option<&str>, command: Command) -> Result<CniVersion, CniError> {
    let supported = supported_list().join(", ");
    let Some(requested) = requested.filter(|s| !s.is_empty()) else {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI versions: the config has no cniVersion",
        )
        .with_details(format!(
            "a config without cniVersion means 0.1.0; plugin supports [{supported}]"
        )));
    };
    let Some(version) = CniVersion::parse(requested) else {
        return Err(
            CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI versions")
                .with_details(format!(
                    "config is {requested:?}, plugin supports [{supported}]"
                )),
        );
    };
    let minimum = minimum_for(command);
    if version < minimum {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "config version {requested} does not allow {}",
                command.as_str()
            ),
        )
        .with_details(format!(
            "{} needs cniVersion {} or later",
            command.as_str(),
            minimum.as_str()
        )));
    }
    Ok(version)
}

fn supported_list() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.as_str()).collect()
}

/// The answer to VERSION: echoes the requested `cniVersion` (the latest when none was given).
pub fn version_answer(requested: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Answer<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported_versions: Vec<&'static str>,
    }
    let cni_version = requested
        .filter(|s| !s.is_empty())
        .unwrap_or(CniVersion::LATEST.as_str());
    let answer = Answer {
        cni_version,
        supported_versions: supported_list(),
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// The version to write into an error result: the requested one when the plugin speaks it.
pub fn version_for_errors(requested: Option<&str>) -> &'static str {
    requested
        .and_then(CniVersion::parse)
        .unwrap_or(CniVersion::LATEST)
        .as_str()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_is_accepted_for_add() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert_eq!(negotiate(Some(v), Command::Add).unwrap().as_str(), v);
        }
    }

    #[test]
    fn unknown_version_is_code_1() {
        for v in ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "banana"] {
            let err = negotiate(Some(v), Command::Add).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion, "{v}");
        }
    }

    #[test]
    fn missing_version_is_code_1() {
        assert_eq!(
            negotiate(None, Command::Add).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            negotiate(Some(""), Command::Del).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
    }

    #[test]
    fn check_needs_0_4_0() {
        assert_eq!(
            negotiate(Some("0.3.1"), Command::Check).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert!(negotiate(Some("0.4.0"), Command::Check).is_ok());
    }

    #[test]
    fn gc_and_status_need_1_1_0() {
        for command in [Command::Gc, Command::Status] {
            let err = negotiate(Some("1.0.0"), command).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion);
            assert!(err.msg.contains(command.as_str()));
            assert!(negotiate(Some("1.1.0"), command).is_ok());
        }
    }

    #[test]
    fn version_answer_lists_supported_versions_and_echoes_request() {
        let v: serde_json::Value = serde_json::from_str(&version_answer(Some("1.0.0"))).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let v: serde_json::Value = serde_json::from_str(&version_answer(None)).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_use_requested_version_only_when_supported() {
        assert_eq!(version_for_errors(Some("0.4.0")), "0.4.0");
        assert_eq!(version_for_errors(Some("9.9.9")), "1.1.0");
        assert_eq!(version_for_errors(None), "1.1.0");
    }

    #[test]
    fn result_format_switches() {
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.has_v1_1_fields());
        assert!(CniVersion::V1_1_0.has_v1_1_fields());
    }
}
