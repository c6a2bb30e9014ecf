//! The endpoint table on disk: JSON, written atomically (temporary file in the same directory, then
//! rename), so an agent crash at any point leaves either the old or the new state.
//!
//! No fsync: the table describes this boot's endpoints (veths, network namespaces, bpffs pins), which only
//! a crash of the agent can outlive, and after an agent crash the page cache still holds every completed
//! write. A crash of the whole machine ends every endpoint with it; it may also leave a torn file (its
//! rename reached the disk before its data), which only such a crash can make: an unreadable file written
//! before the current boot is therefore set aside and the agent starts empty ([`StateFile::load`]). An
//! unreadable file written during this boot is refused as before. (An fsync cost 1-7 ms per ADD and DEL on
//! a shared disk.)
//!
//! The file carries the format `version` ([`EndpointTable::PERSIST_VERSION`]). A file of a newer version
//! than this build knows is refused (a downgraded agent must not guess at a format it does not know and
//! then rewrite it without the fields it dropped); an older known version is upgraded step by step
//! ([`UPGRADES`]) before it is parsed, and the next save writes the current version.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use novanet_model::{EndpointTable, PersistedTable};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{operation} {path}: {source}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid NovaNet state file ({source}); move it away only if no pod uses its addresses")]
    Invalid { path: PathBuf, source: serde_json::Error },
    #[error("{path} has no numeric \"version\"; move it away only if no pod uses its addresses")]
    NoVersion { path: PathBuf },
    #[error(
        "{path} is state file version {found}, newer than this agent understands (up to {supported}): \
         run the agent version that wrote it, or a newer one"
    )]
    TooNew { path: PathBuf, found: u64, supported: u32 },
    #[error("{path} is state file version {found}, which no NovaNet release wrote (known: 1 to {supported})")]
    Unknown { path: PathBuf, found: u64, supported: u32 },
    #[error("upgrading {path} from state file version {from}: {reason}")]
    Upgrade { path: PathBuf, from: u64, reason: String },
    #[error("encoding the endpoint table: {0}")]
    Encode(#[source] serde_json::Error),
}

/// One format upgrade: turns a document of version N into one of version N + 1 (its `version` field
/// included). `UPGRADES[i]` upgrades version `i + 1`.
pub type Upgrade = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// The upgrades from every older version to [`EndpointTable::PERSIST_VERSION`]. Empty while version 1,
/// the first format, is the only one any release wrote.
pub const UPGRADES: &[Upgrade] = &[];

/// Where the endpoint manager persists its table. A trait so the manager's tests can make a write fail.
pub trait TableStore: Send {
    fn save(&mut self, table: &PersistedTable) -> Result<(), StateFileError>;
}

pub struct StateFile {
    path: PathBuf,
}

fn io_err(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateFileError {
    let path = path.to_path_buf();
    move |source| StateFileError::Io { operation, path, source }
}

/// When this boot began (`btime` of `/proc/stat`), if it can be read.
fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks the version of a parsed document and upgrades it to `current` with `upgrades`.
fn upgraded(
    path: &Path,
    mut doc: serde_json::Value,
    current: u32,
    upgrades: &[Upgrade],
) -> Result<serde_json::Value, StateFileError> {
    let found = doc.get("version").and_then(serde_json::Value::as_u64).ok_or_else(|| StateFileError::NoVersion {
        path: path.to_path_buf(),
    })?;
    if found > u64::from(current) {
        return Err(StateFileError::TooNew { path: path.to_path_buf(), found, supported: current });
    }
    let first_known = u64::from(current).saturating_sub(upgrades.len() as u64);
    if found < first_known.max(1) {
        return Err(StateFileError::Unknown { path: path.to_path_buf(), found, supported: current });
    }
    for from in found..u64::from(current) {
        let step = usize::try_from(from - first_known)
            .ok()
            .and_then(|i| upgrades.get(i))
            .ok_or_else(|| StateFileError::Unknown { path: path.to_path_buf(), found, supported: current })?;
        doc = step(doc).map_err(|reason| StateFileError::Upgrade { path: path.to_path_buf(), from, reason })?;
        let now = doc.get("version").and_then(serde_json::Value::as_u64);
        if now != Some(from + 1) {
            return Err(StateFileError::Upgrade {
                path: path.to_path_buf(),
                from,
                reason: format!("the upgrade produced version {now:?}, not {}", from + 1),
            });
        }
        tracing::info!(path = %path.display(), from, to = from + 1, "upgraded the state file format");
    }
    Ok(doc)
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile { path }
    }

    /// The persisted table, or `None` on first start. A file that exists but does not parse, or whose
    /// version this build does not know, is an error: starting empty would hand out addresses that
    /// running pods still use. Except a file that does not parse and was last written before this boot:
    /// only a machine crash tears a file (see the module doc), and no endpoint outlives one, so it is
    /// renamed to `<name>.torn-before-boot` and the agent starts empty.
    pub fn load(&self) -> Result<Option<PersistedTable>, StateFileError> {
        self.load_with(EndpointTable::PERSIST_VERSION, UPGRADES, boot_time())
    }

    fn load_with(
        &self,
        current: u32,
        upgrades: &[Upgrade],
        boot: Option<SystemTime>,
    ) -> Result<Option<PersistedTable>, StateFileError> {
        match self.parse(current, upgrades) {
            Err(e @ (StateFileError::Invalid { .. } | StateFileError::NoVersion { .. }))
                if self.written_before(boot) =>
            {
                let aside = self.path.with_extension("json.torn-before-boot");
                fs::rename(&self.path, &aside).map_err(io_err("setting aside", &self.path))?;
                tracing::warn!(
                    error = %e,
                    moved_to = %aside.display(),
                    "the state file was torn by a machine crash before this boot (no endpoint outlives one): starting with no endpoints"
                );
                Ok(None)
            }
            other => other,
        }
    }

    /// Whether the file was last modified before `boot` (false when either is unknown).
    fn written_before(&self, boot: Option<SystemTime>) -> bool {
        let modified = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        matches!((modified, boot), (Some(modified), Some(boot)) if modified < boot)
    }

    fn parse(&self, current: u32, upgrades: &[Upgrade]) -> Result<Option<PersistedTable>, StateFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &self.path)(e)),
        };
        let invalid = |source| StateFileError::Invalid { path: self.path.clone(), source };
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(invalid)?;
        let doc = upgraded(&self.path, doc, current, upgrades)?;
        let table = serde_json::from_value(doc).map_err(invalid)?;
        Ok(Some(table))
    }

    pub fn save(&self, table: &PersistedTable) -> Result<(), StateFileError> {
        let dir = self.path.parent().ok_or_else(|| {
            io_err("finding the directory of", &self.path)(std::io::Error::other("state file has no parent directory"))
        })?;
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(table).map_err(StateFileError::Encode)?;
        fs::write(&tmp, &body).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_err("renaming into", &self.path))?;
        Ok(())
    }
}

impl TableStore for StateFile {
    fn save(&mut self, table: &PersistedTable) -> Result<(), StateFileError> {
        StateFile::save(self, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_first_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StateFile::new(dir.path().join("endpoints.json")).load().unwrap().is_none());
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sub/endpoints.json"));
        let table = EndpointTable::new("10.244.0.0/24".parse().unwrap()).unwrap().persisted();
        file.save(&table).unwrap();
        assert_eq!(file.load().unwrap(), Some(table));
        let names: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("endpoints.json")]);
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        fs::write(&path, "{not json").unwrap();
        let err = StateFile::new(path).load().unwrap_err();
        assert!(err.to_string().contains("not a valid NovaNet state file"), "{err}");
    }

    #[test]
    fn a_torn_file_from_before_this_boot_is_set_aside_and_the_agent_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        fs::write(&path, "").unwrap(); // what a rename that reached the disk before its data leaves
        let boot = SystemTime::now();
        let written = boot - Duration::from_secs(3600);
        fs::File::options().write(true).open(&path).unwrap().set_modified(written).unwrap();
        let file = StateFile::new(path.clone());
        let current = EndpointTable::PERSIST_VERSION;
        assert_eq!(file.load_with(current, UPGRADES, Some(boot)).unwrap(), None);
        assert!(!path.exists());
        assert!(dir.path().join("endpoints.json.torn-before-boot").exists(), "kept for a post-mortem");
        // The same torn file written during this boot is refused: only a person or a bug could have made it.
        fs::write(&path, "{not json").unwrap();
        let err = file.load_with(current, UPGRADES, Some(written)).unwrap_err();
        assert!(err.to_string().contains("not a valid NovaNet state file"), "{err}");
        let err = file.load_with(current, UPGRADES, None).unwrap_err();
        assert!(err.to_string().contains("not a valid NovaNet state file"), "unknown boot time: {err}");
        assert!(boot_time().is_some_and(|b| b < SystemTime::now()), "this machine's boot time is readable");
    }

    fn saved_with_version(dir: &Path, version: serde_json::Value) -> StateFile {
        let path = dir.join("endpoints.json");
        let mut doc = serde_json::to_value(EndpointTable::new("10.244.0.0/24".parse().unwrap()).unwrap().persisted()).unwrap();
        doc["version"] = version;
        fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        StateFile::new(path)
    }

    #[test]
    fn a_newer_version_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let newer = u64::from(EndpointTable::PERSIST_VERSION) + 1;
        let err = saved_with_version(dir.path(), newer.into()).load().unwrap_err();
        assert!(matches!(err, StateFileError::TooNew { found, .. } if found == newer), "{err:?}");
        assert!(err.to_string().contains("newer than this agent understands"), "{err}");
    }

    #[test]
    fn a_file_without_a_version_or_of_version_0_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = saved_with_version(dir.path(), serde_json::Value::Null).load().unwrap_err();
        assert!(matches!(err, StateFileError::NoVersion { .. }), "{err:?}");
        let err = saved_with_version(dir.path(), 0.into()).load().unwrap_err();
        assert!(matches!(err, StateFileError::Unknown { found: 0, .. }), "{err:?}");
    }

    /// The upgrade chain with two hypothetical later formats: version 1 -> 2 renames a field, 2 -> 3 adds
    /// one; a version-1 file is upgraded through both steps, in order, before it is parsed.
    #[test]
    fn older_versions_are_upgraded_step_by_step() {
        fn one_to_two(mut doc: serde_json::Value) -> Result<serde_json::Value, String> {
            let obj = doc.as_object_mut().ok_or("not an object")?;
            let cursor = obj.remove("cursor").ok_or("no cursor")?;
            obj.insert("nextAddress".into(), cursor);
            obj.insert("version".into(), 2.into());
            Ok(doc)
        }
        fn two_to_three(mut doc: serde_json::Value) -> Result<serde_json::Value, String> {
            let obj = doc.as_object_mut().ok_or("not an object")?;
            let next = obj.remove("nextAddress").ok_or("step 1 did not run first")?;
            obj.insert("cursor".into(), next);
            obj.insert("version".into(), 3.into());
            Ok(doc)
        }
        let dir = tempfile::tempdir().unwrap();
        let file = saved_with_version(dir.path(), 1.into());
        let table = file.load_with(3, &[one_to_two, two_to_three], None).unwrap().unwrap();
        assert_eq!(table.version, 3);
        assert_eq!(table.pod_cidr, "10.244.0.0/24".parse().unwrap());
        // A step that does not bump the version is caught rather than looping or mislabelling the file.
        fn forgetful(doc: serde_json::Value) -> Result<serde_json::Value, String> {
            Ok(doc)
        }
        let err = file.load_with(2, &[forgetful], None).unwrap_err();
        assert!(matches!(err, StateFileError::Upgrade { from: 1, .. }), "{err:?}");
        // Versions older than the oldest upgrade are unknown.
        let err = saved_with_version(dir.path(), 1.into()).load_with(3, &[two_to_three], None).unwrap_err();
        assert!(matches!(err, StateFileError::Unknown { found: 1, .. }), "{err:?}");
    }

    #[test]
    fn the_current_version_loads_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = saved_with_version(dir.path(), EndpointTable::PERSIST_VERSION.into());
        assert_eq!(file.load().unwrap().unwrap().version, EndpointTable::PERSIST_VERSION);
    }
}
