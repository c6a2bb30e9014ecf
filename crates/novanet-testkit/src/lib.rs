//! Support shared by every NovaNet test crate (a dev-dependency; the lab uses it for `bins_or_skip`).
//!
//! A test that cannot run on this machine (not root, a tool or a Kubernetes binary missing) calls
//! [`skip`] and returns. libtest reports such a test as passed, so a skip must never go unnoticed:
//! - with `CI` or `NOVANET_REQUIRE_ALL` set (to anything but empty, `0` or `false`) the skip fails the
//!   test instead: CI has everything installed, so a skip there is a broken setup, not a missing tool;
//! - otherwise it prints `SKIP <test>: <reason>` straight to stderr (past libtest's capture) and appends
//!   that line to the file `NOVANET_SKIP_LOG` names, which `scripts/test.sh` counts and lists.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What a skip does, as the environment says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkipPolicy {
    /// Skips fail the test (`CI`, or `NOVANET_REQUIRE_ALL`).
    pub forbidden: bool,
    /// Where each skip is recorded as one line (`NOVANET_SKIP_LOG`).
    pub log: Option<PathBuf>,
}

impl SkipPolicy {
    /// The policy of this process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// The policy the variables give; `var` looks one up (the environment, or a test's own table, so
    /// tests never change the process environment under other threads).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let set = |name: &str| {
            var(name).is_some_and(|v| {
                let v = v.to_string_lossy();
                let v = v.trim();
                !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
            })
        };
        SkipPolicy {
            forbidden: set("CI") || set("NOVANET_REQUIRE_ALL"),
            log: var("NOVANET_SKIP_LOG").filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }

    /// What skipping `test` for `reason` comes to: `Ok(line)` to print and record, or `Err(message)` to
    /// fail the test with. The line is always one line, whatever `reason` holds.
    pub fn verdict(&self, test: &str, reason: &str) -> Result<String, String> {
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.forbidden {
            Err(format!(
                "{test} would be skipped ({reason}), but skips fail the run when CI or NOVANET_REQUIRE_ALL is set"
            ))
        } else {
            Ok(format!("SKIP {test}: {reason}"))
        }
    }
}

/// Skips the running test (named by its libtest thread) for `reason`; see the crate docs. Panics when
/// skips are forbidden. The caller returns right after.
pub fn skip(reason: impl Display) {
    skip_named(&current_test(), reason);
}

/// [`skip`] for a caller that knows the test's name.
pub fn skip_named(test: &str, reason: impl Display) {
    skip_with(&SkipPolicy::from_env(), test, &reason.to_string());
}

/// [`skip_named`] under an explicit policy.
pub fn skip_with(policy: &SkipPolicy, test: &str, reason: &str) {
    match policy.verdict(test, reason) {
        Err(message) => panic!("{message}"),
        Ok(line) => {
            say(&line);
            if let Some(log) = &policy.log
                && let Err(e) = append_line(log, &line)
            {
                // An unrecorded skip would be counted as a test that ran.
                panic!("{line}; recording it in {} failed: {e}", log.display());
            }
        }
    }
}

/// The running test's name: libtest runs each test on a thread named after it.
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "<unnamed test thread>".to_string(),
    }
}

/// A line for the log: written straight to stderr, which libtest does not capture (it captures only
/// `eprintln!` and friends of passing tests).
pub fn say(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// Appends `line` and a newline in one `write` on an `O_APPEND` file, so lines from tests running in
/// parallel (threads, or several test binaries) never interleave.
fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn policy(vars: &[(&str, &str)]) -> SkipPolicy {
        SkipPolicy::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v)))
    }

    #[test]
    fn ci_or_require_all_forbid_skips() {
        assert!(policy(&[("CI", "true")]).forbidden);
        assert!(policy(&[("CI", "1")]).forbidden);
        assert!(policy(&[("NOVANET_REQUIRE_ALL", "1")]).forbidden);
        assert!(policy(&[("CI", "false"), ("NOVANET_REQUIRE_ALL", "1")]).forbidden);
    }

    #[test]
    fn skips_are_allowed_without_them_or_when_they_say_no() {
        assert!(!policy(&[]).forbidden);
        assert!(!policy(&[("CI", "false"), ("NOVANET_REQUIRE_ALL", "0")]).forbidden);
        assert!(!policy(&[("CI", ""), ("NOVANET_REQUIRE_ALL", " FALSE ")]).forbidden);
    }

    #[test]
    fn the_log_is_the_named_file_when_there_is_a_name() {
        assert_eq!(policy(&[("NOVANET_SKIP_LOG", "/tmp/x")]).log, Some(PathBuf::from("/tmp/x")));
        assert_eq!(policy(&[("NOVANET_SKIP_LOG", "")]).log, None);
        assert_eq!(policy(&[]).log, None);
    }

    #[test]
    fn verdict_is_a_one_line_skip_or_a_failure_naming_the_reason() {
        let allowed = policy(&[]);
        assert_eq!(allowed.verdict("t1", "no ip\n(needs iproute2)"), Ok("SKIP t1: no ip (needs iproute2)".into()));
        let err = policy(&[("CI", "true")]).verdict("t1", "no ip").unwrap_err();
        assert!(err.contains("t1") && err.contains("no ip") && err.contains("CI"), "{err}");
    }

    #[test]
    #[should_panic(expected = "would be skipped (helm not built)")]
    fn a_forbidden_skip_panics() {
        skip_with(&SkipPolicy { forbidden: true, log: None }, "t2", "helm not built");
    }

    #[test]
    fn allowed_skips_append_one_line_each_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let policy = SkipPolicy { forbidden: false, log: Some(log.clone()) };
        skip_with(&policy, "t3", "first");
        skip_with(&policy, "t4", "second");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "SKIP t3: first\nSKIP t4: second\n");
    }

    #[test]
    #[should_panic(expected = "recording it in")]
    fn a_skip_that_cannot_be_recorded_fails() {
        let dir = tempfile::tempdir().unwrap();
        let policy = SkipPolicy { forbidden: false, log: Some(dir.path().join("missing/skips")) };
        skip_with(&policy, "t5", "x");
    }

    #[test]
    fn the_current_test_is_named_by_its_thread() {
        assert_eq!(current_test(), "tests::the_current_test_is_named_by_its_thread");
    }
}
