//! The endpoint table on disk: JSON, written atomically (temporary file in the same directory, fsync,
//! rename, fsync of the directory), so a crash at any point leaves either the old or the new state.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use novanet_model::PersistedTable;

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile { path }
    }

    /// The persisted table, or `None` on first start. A file that exists but does not parse is an
    /// error: starting empty would hand out addresses that running pods still use.
    pub fn load(&self) -> anyhow::Result<Option<PersistedTable>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let table = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a valid NovaNet state file; move it away only if no pod uses its addresses", self.path.display())
        })?;
        Ok(Some(table))
    }

    pub fn save(&self, table: &PersistedTable) -> anyhow::Result<()> {
        let dir = self.path.parent().context("state file has no parent directory")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(table)?;
        {
            let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path).with_context(|| format!("renaming into {}", self.path.display()))?;
        File::open(dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use novanet_model::EndpointTable;

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
        assert!(format!("{err:#}").contains("not a valid NovaNet state file"));
    }
}
