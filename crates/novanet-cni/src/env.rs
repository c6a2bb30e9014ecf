//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`.
//!
//! Parsing takes a getter instead of reading the process environment, so tests need not mutate it.
//! Every failure here is code 4 and names the offending variable.

use std::path::PathBuf;

use crate::error::{CniError, ErrorCode};

/// The operation requested by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }

    /// ADD, DEL and CHECK act on one attachment and need its environment.
    pub fn needs_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

/// Reads `CNI_COMMAND`.
pub fn command<F: Fn(&str) -> Option<String>>(get: &F) -> Result<Command, CniError> {
    let Some(value) = get("CNI_COMMAND") else {
        return Err(invalid_env("required env variables [CNI_COMMAND] missing"));
    };
    match value.as_str() {
        "ADD" => Ok(Command::Add),
        "DEL" => Ok(Command::Del),
        "CHECK" => Ok(Command::Check),
        "STATUS" => Ok(Command::Status),
        "GC" => Ok(Command::Gc),
        "VERSION" => Ok(Command::Version),
        other => Err(invalid_env(format!("unknown CNI_COMMAND: {other:?}"))),
    }
}

/// The pod a sandbox belongs to, from `CNI_ARGS` (kubelet/containerd pass these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub infra_container_id: String,
}

/// One attachment, `(CNI_CONTAINERID, CNI_IFNAME)`, with its netns and pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    pub container_id: String,
    pub ifname: String,
    /// Required for ADD and CHECK; optional for DEL (the namespace may be gone).
    pub netns: Option<PathBuf>,
    pub pod: PodArgs,
}

/// Reads and validates the attachment variables `command` requires (ADD/CHECK: id, netns, ifname;
/// DEL: id, ifname).
pub fn attachment<F: Fn(&str) -> Option<String>>(
    command: Command,
    get: &F,
) -> Result<AttachmentEnv, CniError> {
    let container_id = get("CNI_CONTAINERID");
    let ifname = get("CNI_IFNAME");
    let netns = get("CNI_NETNS");
    let netns_required = matches!(command, Command::Add | Command::Check);

    let mut missing = Vec::new();
    if container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if netns_required && netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    let missing_err = || {
        invalid_env(format!(
            "required env variables [{}] missing",
            missing.join(",")
        ))
    };
    if !missing.is_empty() {
        return Err(missing_err());
    }
    let (Some(container_id), Some(ifname)) = (container_id, ifname) else {
        return Err(missing_err());
    };

    validate_container_id(&container_id)?;
    validate_ifname(&ifname)?;
    let pod = parse_cni_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
    Ok(AttachmentEnv {
        container_id,
        ifname,
        netns: netns.map(PathBuf::from),
        pod,
    })
}

/// `CNI_CONTAINERID`: an alphanumeric first character, then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(invalid_env("invalid characters in CNI_CONTAINERID").with_details(id.to_string()))
    }
}

/// `CNI_IFNAME`: a Linux interface name (1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains / or : or whitespace")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(
            invalid_env(format!("invalid CNI_IFNAME: interface name {problem}"))
                .with_details(name.to_string()),
        ),
        None => Ok(()),
    }
}

/// Parses `CNI_ARGS` (`K=V;K=V`). Known keys fill [`PodArgs`]; unknown keys are ignored whether or
/// not `IgnoreUnknown` is set (runtimes pass keys meant for other plugins of a chain).
pub fn parse_cni_args(raw: &str) -> Result<PodArgs, CniError> {
    let mut pod = PodArgs::default();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(
                invalid_env("invalid CNI_ARGS: a pair has no '='").with_details(pair.to_string())
            );
        };
        match key {
            "K8S_POD_NAME" => pod.name = value.to_string(),
            "K8S_POD_NAMESPACE" => pod.namespace = value.to_string(),
            "K8S_POD_UID" => pod.uid = value.to_string(),
            "K8S_POD_INFRA_CONTAINER_ID" => pod.infra_container_id = value.to_string(),
            _ => {} // IgnoreUnknown and anything else.
        }
    }
    Ok(pod)
}

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn getter(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn cni_args_fill_pod_ref_and_ignore_unknown_keys() {
        let pod = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1b2c;SOMETHING_ELSE=x=y",
        )
        .unwrap();
        assert_eq!(
            pod,
            PodArgs {
                name: "web-0".into(),
                namespace: "default".into(),
                uid: "1b2c".into(),
                infra_container_id: "abc123".into(),
            }
        );
    }

    #[test]
    fn cni_args_empty_and_trailing_separators_are_fine() {
        assert_eq!(parse_cni_args("").unwrap(), PodArgs::default());
        assert_eq!(parse_cni_args(";K8S_POD_NAME=a;").unwrap().name, "a");
        assert_eq!(parse_cni_args("K8S_POD_NAME=").unwrap().name, "");
    }

    #[test]
    fn cni_args_pair_without_equals_is_code_4() {
        let err = parse_cni_args("K8S_POD_NAME=a;garbage").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_ARGS"));
    }

    #[test]
    fn missing_command_is_code_4() {
        let err = command(&getter(&[])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn unknown_command_is_code_4() {
        let err = command(&getter(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn add_lists_every_missing_variable() {
        let err = attachment(Command::Add, &getter(&[("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_CONTAINERID,CNI_NETNS"), "{}", err.msg);
    }

    #[test]
    fn del_does_not_need_netns() {
        let env = attachment(
            Command::Del,
            &getter(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]),
        )
        .unwrap();
        assert_eq!(env.netns, None);
        let err = attachment(
            Command::Check,
            &getter(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]),
        )
        .unwrap_err();
        assert!(err.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn container_id_and_ifname_are_validated() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert!(validate_container_id("-abc").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcde").is_ok());
        for bad in ["", ".", "..", "0123456789abcdef", "a/b", "a:b", "a b"] {
            assert_eq!(
                validate_ifname(bad).unwrap_err().code,
                ErrorCode::InvalidEnvironment,
                "{bad:?}"
            );
        }
    }
}
