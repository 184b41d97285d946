//! JSON log lines on stdout: `ts`, `level`, `msg` and structured fields.

use slog::{o, Drain, Level, Logger};

/// Builds the process logger writing one JSON object per line to stdout, dropping records
/// less severe than `level`.
pub fn json_logger(level: Level) -> Logger {
    let json = slog_json::Json::new(std::io::stdout())
        .add_default_keys()
        .set_newlines(true)
        .build();
    // A mutex keeps lines whole when several threads log at once.
    let drain = std::sync::Mutex::new(json).fuse();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Logger::root(drain, o!("service" => "uptimeo-agent"))
}
