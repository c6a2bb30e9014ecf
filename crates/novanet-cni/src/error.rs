//! CNI error results: the spec's well-known codes, NovaNet's plugin-specific ones, and their JSON form.
//!
//! Every failure of the plugin ends up as one [`CniError`], printed on stdout as the spec's error
//! structure (`{cniVersion, code, msg, details}`) with a non-zero exit status.

use serde::Serialize;

/// Error codes. 1-99 are the spec's (8 is libcni's "invalid netns"); 100+ are NovaNet's own; 999 is
/// libcni's "internal error", the code reference plugins use for unexpected failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the config's `cniVersion` is not one the plugin speaks, or is too old for the command.
    IncompatibleVersion,
    /// 2: the config has a field the plugin does not support (the message names key and value).
    UnsupportedField,
    /// 3: the container (its network namespace) does not exist; the runtime need not clean up.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid (the message names it).
    InvalidEnvironment,
    /// 5: reading the config from stdin failed.
    IoFailure,
    /// 6: the config (or its `prevResult`) is not decodable JSON.
    DecodingFailure,
    /// 7: the config decodes but fails validation.
    InvalidNetworkConfig,
    /// 8: `CNI_NETNS` is not a usable network namespace (libcni's `ErrInvalidNetNS`).
    InvalidNetns,
    /// 11: a transient condition (agent down or not ready, or the node has no room for another pod
    /// until some leave: see `agent.rs`); the runtime should retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot service ADD now.
    PluginNotAvailable,
    /// 100: the agent answered with a non-transient error.
    AgentRejected,
    /// 101: CHECK found the attachment missing or different from what ADD set up.
    CheckFailed,
    /// 102: an interface this ADD must create already exists.
    InterfaceExists,
    /// 999: anything else (netlink, threads): libcni's `ErrInternal`.
    Internal,
}

impl ErrorCode {
    /// The numeric code written in the error result.
    pub fn value(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::IoFailure => 5,
            Self::DecodingFailure => 6,
            Self::InvalidNetworkConfig => 7,
            Self::InvalidNetns => 8,
            Self::TryAgainLater => 11,
            Self::PluginNotAvailable => 50,
            Self::AgentRejected => 100,
            Self::CheckFailed => 101,
            Self::InterfaceExists => 102,
            Self::Internal => 999,
        }
    }
}

/// One failed CNI invocation: a code, a short message and optional details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {})", code.value())]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, context).with_details(err.to_string())
    }

    pub fn check_failed(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::CheckFailed, msg)
    }

    /// The spec's error structure, tagged with the protocol version in use.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version,
            code: self.code.value(),
            msg: &self.msg,
            details: &self.details,
        };
        // Serialising plain strings and integers cannot fail; keep a hand-written fallback anyway.
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{cni_version}","code":{},"msg":"internal error"}}"#,
                self.code.value()
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_keys() {
        let err = CniError::new(ErrorCode::InvalidNetworkConfig, "Invalid Configuration")
            .with_details("mtu 10 out of range");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("1.1.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "Invalid Configuration");
        assert_eq!(v["details"], "mtu 10 out of range");
    }

    #[test]
    fn error_json_omits_empty_details() {
        let err = CniError::new(ErrorCode::TryAgainLater, "agent down");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("0.4.0")).unwrap();
        assert_eq!(v["code"], 11);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(v.get("details").is_none());
    }

    #[test]
    fn error_codes_match_the_spec_table() {
        let table = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::IoFailure, 5),
            (ErrorCode::DecodingFailure, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::InvalidNetns, 8),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
            (ErrorCode::Internal, 999),
        ];
        for (code, value) in table {
            assert_eq!(code.value(), value, "{code:?}");
        }
        for plugin_specific in [
            ErrorCode::AgentRejected,
            ErrorCode::CheckFailed,
            ErrorCode::InterfaceExists,
        ] {
            assert!(plugin_specific.value() >= 100);
        }
    }
}
