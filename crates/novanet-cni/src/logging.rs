//! Logging to stderr or to the config's `logFile`: never stdout, which carries the CNI result.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::NetConf;

/// Installs the global subscriber. A log file that cannot be opened falls back to stderr: logging
/// never fails a CNI operation.
pub fn init(conf: &NetConf) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(conf.log_level)
        .with_ansi(false)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let file = conf.log_file.as_ref().and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => Some(file),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "novanet-cni: cannot open logFile {}: {e}",
                    path.display()
                );
                None
            }
        }
    });
    // A second init (tests) is harmless: try_init just reports it.
    let _ = match file {
        Some(file) => builder.with_writer(Mutex::new(file)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
