//! Command line and environment settings, parsed once into typed values.
//!
//! Every setting is a flag with a matching environment variable; see `uptimeo-agent --help`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::monitor::{DEFAULT_MAX_REDIRECTS, MAX_REDIRECTS_LIMIT};

/// Default seconds between two configuration polls.
pub const DEFAULT_CONFIG_RELOAD_SECS: &str = "30";
/// Default port of the health endpoint.
pub const DEFAULT_HEALTH_PORT: &str = "8080";
/// Default lease time to live, in seconds.
pub const DEFAULT_LEASE_TTL_SECS: &str = "2";
/// Default seconds between two attempts of a standby to take the lease.
pub const DEFAULT_STANDBY_RETRY_SECS: &str = "1";
/// Default number of heartbeats written by one INSERT statement.
pub const DEFAULT_BATCH_SIZE: &str = "500";
/// Default longest wait, in milliseconds, before a partial batch is written.
pub const DEFAULT_FLUSH_DELAY_MS: &str = "200";
/// Default most batches written at once, each on its own connection.
pub const DEFAULT_WRITE_CONNECTIONS: &str = "2";
/// Default seconds between two retention sweeps.
pub const DEFAULT_RETENTION_CHECK_SECS: &str = "600";
/// Default directory of the spool of unwritten heartbeats (relative to the working directory).
pub const DEFAULT_SPOOL_DIR: &str = "spool";
/// Default most heartbeats the spool holds before the oldest are dropped.
pub const DEFAULT_SPOOL_MAX_ROWS: &str = "100000";
/// Default milliseconds between two `fsync`s of the spool.
pub const DEFAULT_SPOOL_SYNC_MS: &str = "1000";
/// Default seconds a `check` may take.
pub const DEFAULT_CHECK_TIMEOUT_SECS: &str = "10";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "uptimeo-agent",
    version,
    about = "Runs the HTTP, TCP, DNS and ping checks of one datacenter and stores timed heartbeats in PostgreSQL"
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process arguments; `run` is implied when no subcommand is named.
    pub fn parse_with_default() -> Self {
        Self::parse_from(with_default_subcommand(std::env::args_os().collect()))
    }
}

/// Inserts `run` after the program name unless a subcommand or a top-level help/version flag
/// is already there, so that `uptimeo-agent --datacenter-id 1` means `uptimeo-agent run ...`.
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const TOP_LEVEL: [&str; 8] = [
        "run",
        "migrate",
        "check",
        "help",
        "-h",
        "--help",
        "-V",
        "--version",
    ];
    let first = args.get(1).and_then(|a| a.to_str());
    if !matches!(first, Some(a) if TOP_LEVEL.contains(&a)) {
        args.insert(1.min(args.len()), "run".into());
    }
    args
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, take the datacenter's lease and run its monitors (default).
    Run(RunArgs),
    /// Apply pending migrations and exit.
    Migrate(MigrateArgs),
    /// Run one check of a URL now, without a database, and print its phases.
    Check(CheckArgs),
}

impl Command {
    /// The least severe level logged.
    pub fn log_level(&self) -> slog::Level {
        match self {
            Command::Run(args) => args.log_level,
            Command::Migrate(_) => slog::Level::Info,
            Command::Check(_) => slog::Level::Error,
        }
    }
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL connection string: a URL (postgres://user:pass@host:port/db) or libpq
    /// key=value pairs (host=... user=... dbname=...).
    #[arg(long, env = "DB_CONN_STRING", hide_env_values = true)]
    pub db_conn_string: String,
}

/// Settings of `migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Create the database named in the connection string when it does not exist.
    #[arg(long)]
    pub create_database: bool,

    /// Insert the sample configuration (nine datacenters, two agents each, one monitor aimed
    /// at the agent's own /healthz) where its rows are absent.
    #[arg(long)]
    pub sample: bool,
}

/// Settings of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The datacenter whose monitors this agent runs (datacenters.id).
    #[arg(long, env = "DATACENTER_ID")]
    pub datacenter_id: i32,

    /// This agent's id (agents.id); default: the lowest agents.id of the datacenter.
    #[arg(long, env = "AGENT_ID")]
    pub agent_id: Option<i32>,

    /// Seconds between two polls of the configuration tables.
    #[arg(long, env = "CONFIG_RELOAD_INTERVAL", default_value = DEFAULT_CONFIG_RELOAD_SECS,
          value_parser = parse_seconds)]
    pub config_reload_interval: Duration,

    /// Port of /healthz, /readyz and /metrics on all interfaces; 0 disables it.
    #[arg(long, env = "HEALTH_PORT", default_value = DEFAULT_HEALTH_PORT)]
    pub health_port: u16,

    /// Least severe log level written: trace, debug, info, warn, error or critical.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: slog::Level,

    /// Seconds a lease lasts unless renewed; the holder renews it four times per period and
    /// stops its checks on its own before it could have expired.
    #[arg(long, env = "LEASE_TTL", default_value = DEFAULT_LEASE_TTL_SECS,
          value_parser = parse_seconds)]
    pub lease_ttl: Duration,

    /// Longest wait, in seconds, between two attempts of a standby to take the lease; it also
    /// tries when the holder's lease expires.
    #[arg(long, env = "STANDBY_RETRY_INTERVAL", default_value = DEFAULT_STANDBY_RETRY_SECS,
          value_parser = parse_seconds)]
    pub standby_retry_interval: Duration,

    /// Most heartbeats written by one INSERT statement.
    #[arg(long, env = "WRITE_BATCH_SIZE", default_value = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u16).range(1..=2000))]
    pub write_batch_size: u16,

    /// Longest wait, in milliseconds, before a partial batch is written.
    #[arg(long = "write-flush-delay-ms", alias = "write-flush-delay", value_name = "WRITE_FLUSH_DELAY_MS", env = "WRITE_FLUSH_DELAY_MS", default_value = DEFAULT_FLUSH_DELAY_MS,
          value_parser = parse_millis)]
    pub write_flush_delay: Duration,

    /// Most batches written at once, each on its own PostgreSQL connection.
    #[arg(long, env = "WRITE_CONNECTIONS", default_value = DEFAULT_WRITE_CONNECTIONS,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    pub write_connections: u8,

    /// Days of heartbeats kept: older daily partitions are detached and dropped by the lease
    /// holder. Unset keeps everything.
    #[arg(long, env = "RETENTION_DAYS",
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: Option<u32>,

    /// Seconds between two retention sweeps (only with RETENTION_DAYS).
    #[arg(long, env = "RETENTION_CHECK_INTERVAL", default_value = DEFAULT_RETENTION_CHECK_SECS,
          value_parser = parse_seconds)]
    pub retention_check_interval: Duration,
    /// Directory of the spool of heartbeats not yet stored; the agent uses its subdirectory
    /// `dc<DATACENTER_ID>-agent<AGENT_ID>` and writes nowhere else.
    #[arg(long, env = "SPOOL_DIR", default_value = DEFAULT_SPOOL_DIR)]
    pub spool_dir: std::path::PathBuf,

    /// Most heartbeats the spool holds (memory and disk); past it the oldest are dropped.
    #[arg(long, env = "SPOOL_MAX_ROWS", default_value = DEFAULT_SPOOL_MAX_ROWS,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub spool_max_rows: u64,

    /// Milliseconds between two `fsync`s of the spool: a crash of the machine (not of the
    /// agent, which loses nothing) loses at most the heartbeats of the last interval. 0 never
    /// syncs and leaves it to the system.
    #[arg(long = "spool-sync-ms", value_name = "SPOOL_SYNC_MS", env = "SPOOL_SYNC_MS", default_value = DEFAULT_SPOOL_SYNC_MS,
          value_parser = parse_millis)]
    pub spool_sync: Duration,
    /// The DNS server checks resolve names with (IP or IP:port, port 53 by default), instead
    /// of the resolvers of /etc/resolv.conf.
    #[arg(long, env = "DNS_SERVER", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,
}

/// Settings of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The URL to check (http:// or https://).
    pub url: String,

    /// The request method.
    #[arg(short = 'X', long, default_value = "GET", value_parser = parse_method)]
    pub method: http::Method,

    /// A request header, `Name: value`; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// The request body. Valid JSON is sent as JSON (with Content-Type application/json
    /// unless a header sets one), anything else as text, like a monitor's `body` column.
    #[arg(short = 'd', long)]
    pub data: Option<String>,

    /// Seconds the whole check may take.
    #[arg(long, default_value = DEFAULT_CHECK_TIMEOUT_SECS, value_parser = parse_seconds)]
    pub timeout: Duration,

    /// Accept any certificate (expired, self-signed, another name); it is still reported.
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// Most redirects followed (0 to 50); 0 makes a redirect the answer.
    #[arg(long, default_value_t = DEFAULT_MAX_REDIRECTS,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_REDIRECTS_LIMIT)))]
    pub max_redirects: u32,

    /// The DNS server to resolve with (IP or IP:port), instead of /etc/resolv.conf's.
    #[arg(long, env = "DNS_SERVER", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,

    /// Connect over IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Accepted status codes, e.g. `200-299,301` (default: any 2xx).
    #[arg(long, value_name = "CODES", value_parser = crate::monitor::expect::StatusSet::parse)]
    pub expect_status: Option<crate::monitor::expect::StatusSet>,

    /// Text the decoded body must contain (see --body-match-mode).
    #[arg(long, value_name = "TEXT")]
    pub body_match: Option<String>,

    /// How --body-match applies: contains, not_contains, regex or not_regex.
    #[arg(long, value_name = "MODE", default_value = "contains", requires = "body_match",
          value_parser = |s: &str| crate::monitor::expect::BodyMatchMode::parse(Some(s)))]
    pub body_match_mode: crate::monitor::expect::BodyMatchMode,

    /// Fail when the certificate expires in fewer days than this.
    #[arg(long, value_name = "DAYS")]
    pub min_cert_days: Option<u32>,

    /// Print the heartbeat row the agent would store, as one line of JSON, instead of the
    /// waterfall.
    #[arg(long)]
    pub json: bool,

    /// Keep the response body in the row (first 64 KiB), as a schedule with
    /// include_response_body does.
    #[arg(long)]
    pub include_body: bool,
}

/// Parses a positive number of seconds (fractions allowed) into a duration.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "`{text}` must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    let ms: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of milliseconds"))?;
    Ok(Duration::from_millis(ms))
}

/// `IP`, `IP:port` or `[IPv6]:port`; port 53 when absent.
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("`{text}` is not an IP address or IP:port"))
}

fn parse_method(text: &str) -> Result<http::Method, String> {
    http::Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{text}` is not an HTTP method"))
}

/// `Name: value`, both valid in HTTP.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header: write `Name: value`"))?;
    let (name, value) = (name.trim(), value.trim());
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of `{name}` is not valid in HTTP"))?;
    Ok((name.to_string(), value.to_string()))
}

fn parse_level(text: &str) -> Result<slog::Level, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "warning" => Ok(slog::Level::Warning),
        other => other.parse().map_err(|_| {
            format!("`{text}` is not a log level (trace, debug, info, warn, error, critical)")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_the_default_subcommand() {
        let args = with_default_subcommand(vec!["agent".into(), "--datacenter-id".into()]);
        assert_eq!(args[1], "run");
        let args = with_default_subcommand(vec!["agent".into(), "migrate".into()]);
        assert_eq!(args[1], "migrate");
        let args = with_default_subcommand(vec!["agent".into()]);
        assert_eq!(args, vec!["agent", "run"]);
    }

    #[test]
    fn check_takes_curl_like_flags() {
        let args = with_default_subcommand(
            [
                "agent",
                "check",
                "http://127.0.0.1:1/",
                "-H",
                "X-A: b c",
                "-X",
                "post",
                "-k",
            ]
            .map(std::ffi::OsString::from)
            .to_vec(),
        );
        let Command::Check(check) = Cli::parse_from(args).command else {
            panic!("not a check");
        };
        assert_eq!(check.headers, vec![("X-A".to_string(), "b c".to_string())]);
        assert_eq!(check.method, http::Method::POST);
        assert!(check.insecure && !check.json);
        assert_eq!(check.timeout, Duration::from_secs(10));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert_eq!(
            parse_dns_server("127.0.0.53"),
            Ok("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(
            parse_dns_server("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_dns_server("dns.test").is_err());
    }

    #[test]
    fn seconds_must_be_positive_numbers() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn log_levels_parse_case_insensitively() {
        assert_eq!(parse_level("DEBUG"), Ok(slog::Level::Debug));
        assert_eq!(parse_level("warning"), Ok(slog::Level::Warning));
        assert!(parse_level("loud").is_err());
    }
}
