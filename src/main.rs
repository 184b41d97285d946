//! `uptimeo-agent`: see the library's docs and `uptimeo-agent --help`.
//!
//! Environment variables read (each also a flag): `DB_CONN_STRING`, `DATACENTER_ID`,
//! `AGENT_ID`, `CONFIG_RELOAD_INTERVAL`, `HEALTH_PORT`, `LOG_LEVEL`, `LEASE_TTL`,
//! `STANDBY_RETRY_INTERVAL`, `WRITE_BATCH_SIZE`, `WRITE_FLUSH_DELAY_MS`, `SPOOL_DIR`,
//! `SPOOL_MAX_ROWS`; and `SSL_CERT_FILE`,
//! which replaces the system's CA bundle for HTTPS checks.

use std::process::ExitCode;

use slog::error;
use uptimeo_agent::settings::{Cli, Command};
use uptimeo_agent::{agent, logging};

fn main() -> ExitCode {
    let cli = Cli::parse_with_default();
    let log = logging::json_logger(cli.command.log_level());
    let outcome = match &cli.command {
        Command::Run(args) => agent::run(args, &log),
        Command::Migrate(args) => agent::migrate(args, &log),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "agent failed"; "error" => format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
