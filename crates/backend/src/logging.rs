//! Logging: tracing to stderr and to daily-rotated files in `<data dir>/logs`, keeping at most
//! `LOG_MAX_FILES`. The file writer is non-blocking with a bounded, lossy buffer so a slow disk
//! never stalls a request; lines it had to drop are counted by tracing-appender.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines buffered for the file writer before new ones are dropped (bounded; see module doc).
const FILE_BUFFER_LINES: usize = 16_384;

/// Keeps the file writer flushing; drop it last (it flushes what is buffered).
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Installs the global subscriber. Safe to call twice (the second call is a no-op), so tests
/// and the desktop shell can both call it.
pub fn init(level: &str, data_dir: &Path, max_files: usize) -> LogGuard {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let dir = data_dir.join("logs");
    let file = std::fs::create_dir_all(&dir)
        .ok()
        .and_then(|()| {
            RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("collisionos")
                .filename_suffix("log")
                .max_log_files(max_files)
                .build(&dir)
                .ok()
        })
        .map(|appender| {
            tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(FILE_BUFFER_LINES)
                .lossy(true)
                .finish(appender)
        });
    let (file_writer, guard) = match file {
        Some((w, g)) => (Some(w), Some(g)),
        None => (None, None),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let file_layer = file_writer.map(|w| {
        tracing_subscriber::fmt::layer()
            .with_writer(w)
            .with_ansi(false)
            .with_target(true)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init();
    LogGuard { _file: guard }
}
