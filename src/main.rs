//! `uptimeo-agent`: see the library's docs and `uptimeo-agent --help`.
//!
//! Environment variables read (each also a flag): `DB_CONN_STRING`, `DATACENTER_ID`,
//! `AGENT_ID`, `CONFIG_RELOAD_INTERVAL`, `HEALTH_PORT`, `LOG_LEVEL`, `LEASE_TTL`,
//! `STANDBY_RETRY_INTERVAL`, `WRITE_BATCH_SIZE`, `WRITE_FLUSH_DELAY_MS`, `RETENTION_DAYS`,
//! `RETENTION_CHECK_INTERVAL`, `SPOOL_DIR`, `SPOOL_MAX_ROWS`, `DNS_SERVER`; and
//! `SSL_CERT_FILE`, which replaces the system's CA bundle for HTTPS checks (`run` and `check`
//! alike).

use std::process::ExitCode;

use slog::crit;
use uptimeo_agent::settings::{Cli, Command};
use uptimeo_agent::{agent, check, logging};

fn main() -> ExitCode {
    let cli = Cli::parse_with_default();
    let log = logging::json_logger(cli.command.log_level());
    let outcome = match &cli.command {
        Command::Run(args) => agent::run(args, &log),
        Command::Migrate(args) => agent::migrate(args, &log),
        // Output for a person (or one JSON row); nothing is logged.
        Command::Check(args) => return check::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Critical, so that no LOG_LEVEL hides why the process ends.
            crit!(log, "agent failed"; "error" => format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
