//! [`FileSource`]: the stores fed from a manifests file that changes while the agent runs (the light
//! lab's `objects.yaml`), through the same [`StaticSource`] writers, hence the same `watcher::Event`s.
//!
//! Invariants:
//! - Each successful read is a relist ([`StaticSource::load`]): objects missing from the new file are
//!   deleted, changed ones updated, unchanged ones silent. The first good read syncs every kind.
//! - A file that cannot be read or parsed changes nothing: the stores keep the last good contents and
//!   every kind records the error (degraded once synced, like an apiserver error; still syncing, with
//!   the error as the reason, before the first good read).
//! - The file is polled every [`POLL_INTERVAL`] for a change of (mtime, size, inode, device), so a
//!   change reaches the stores within about one interval; writers should replace the file atomically
//!   (temp + rename), which always changes the inode. The same failing contents are reported once.
//! - Dropping (or [`FileSource::stop`]ping) the source aborts its task; the stores stay readable.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::manifests::load_manifests;
use crate::sources::StaticSource;
use crate::stores::ClusterObjects;

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

/// Keeps [`ClusterObjects`] equal to the last good contents of a manifests file. Aborts its task when
/// dropped.
#[derive(Debug)]
pub struct FileSource {
    task: JoinHandle<()>,
}

impl FileSource {
    /// Reads `path` once now (so a good file is synced before this returns), then watches it (must run
    /// inside a tokio runtime).
    pub fn start(path: &Path) -> (ClusterObjects, FileSource) {
        let (objects, mut source) = StaticSource::new();
        let path = path.to_path_buf();
        let mut last = Reload::new();
        last.check(&path, &mut source);
        let span = tracing::info_span!("objects_file", path = %path.display());
        let task = tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    last.check(&path, &mut source);
                }
            }
            .instrument(span),
        );
        (objects, FileSource { task })
    }

    /// Stops watching. The stores keep their contents.
    pub fn stop(self) {
        // Drop aborts.
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reload decision: the stamp of the version last handled.
struct Reload {
    handled: Option<Option<Stamp>>,
}

impl Reload {
    fn new() -> Self {
        Reload { handled: None }
    }

    fn check(&mut self, path: &Path, source: &mut StaticSource) {
        let now = stamp(path);
        if self.handled == Some(now) {
            return;
        }
        self.handled = Some(now);
        match load_manifests(path) {
            Ok(manifests) => {
                tracing::info!(objects = manifests.len(), "objects file loaded");
                source.load(&manifests);
            }
            Err(error) => {
                tracing::warn!(%error, "objects file not loaded; the stores keep the last good contents");
                source.record_error(&error);
            }
        }
    }
}
