//! Everything that talks to PostgreSQL. Every SQL statement of the agent lives in this module's
//! files, each behind a small documented function; callers never build SQL.
//!
//! - [`migrations`]: the embedded schema migrations, applied under an advisory lock.
//! - [`config`]: datacenters, agents and the monitors of a datacenter.
//! - [`heartbeats`]: batched heartbeat inserts and daily partitions.
//! - [`lease`]: the datacenter lease (holder, epoch, expiry by the database clock).
//! - [`retention`]: dropping whole daily partitions older than the retention period.
//! - [`sample`]: the sample configuration of the README.
//! - [`tls`]: TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert`.

pub mod config;
pub mod heartbeats;
pub mod lease;
pub mod migrations;
pub mod retention;
pub mod sample;
pub mod schema;
pub mod tls;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError};
use diesel_async::AsyncPgConnection;
use futures_util::FutureExt;

/// How long a new connection may take before the attempt counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

/// A pool of diesel-async connections (bb8's, which it dereferences to) that remembers why
/// its last connection attempt failed, so that a timeout can say why no connection came.
#[derive(Clone)]
pub struct Pool {
    inner: bb8::Pool<Manager>,
    last_error: LastError,
}

impl std::ops::Deref for Pool {
    type Target = bb8::Pool<Manager>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Pool {
    /// `DbError::Timeout(limit)`, or, when a connection attempt failed within that time,
    /// the error saying why no connection could be made.
    pub fn timed_out(&self, limit: Duration) -> DbError {
        match self.last_error.within(limit) {
            Some(reason) => DbError::Unreachable { limit, reason },
            None => DbError::Timeout(limit),
        }
    }
}

/// bb8's error sink: keeps the pool's last connection error and when it happened.
#[derive(Debug, Clone, Default)]
struct LastError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastError {
    fn within(&self, limit: Duration) -> Option<String> {
        let last = self.0.lock().ok()?;
        let (at, reason) = last.as_ref()?;
        (at.elapsed() <= limit).then(|| reason.clone())
    }
}

impl bb8::ErrorSink<PoolError> for LastError {
    fn sink(&self, error: PoolError) {
        let reason = match &error {
            PoolError::ConnectionError(e) => e.to_string(),
            other => other.to_string(),
        };
        if let Ok(mut last) = self.0.lock() {
            *last = Some((Instant::now(), reason));
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

/// A parsed connection string. Its `Display` names user, host, port and database only: the
/// password never leaves this type.
#[derive(Clone)]
pub struct DbTarget {
    config: Arc<tokio_postgres::Config>,
    tls: tls::RustlsConnect,
    tls_mode: tls::SslMode,
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string could not be parsed.
    #[error("invalid DB_CONN_STRING: {0}")]
    InvalidConnString(String),
    /// No connection could be made.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The pool gave no connection in time.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A statement did not finish in time.
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    /// No connection came in time, and attempts to make one failed.
    #[error("no database connection within {limit:?}: {reason}")]
    Unreachable { limit: Duration, reason: String },
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// True when the insert failed because no partition covers a row's `executed_at`.
    pub fn is_partition_missing(&self) -> bool {
        match self {
            DbError::Query(diesel::result::Error::DatabaseError(_, info)) => {
                info.message().contains("no partition of relation")
            }
            _ => false,
        }
    }

    /// True when the statement failed because of a row's content (a constraint it breaks, such
    /// as a monitor deleted since its check ran): retrying the same rows cannot succeed.
    pub fn is_row_rejected(&self) -> bool {
        use diesel::result::DatabaseErrorKind as Kind;
        match self {
            DbError::Query(diesel::result::Error::DatabaseError(kind, _)) => {
                !self.is_partition_missing()
                    && matches!(
                        kind,
                        Kind::ForeignKeyViolation
                            | Kind::NotNullViolation
                            | Kind::CheckViolation
                            | Kind::UniqueViolation
                    )
            }
            _ => false,
        }
    }

    /// True when retrying later may succeed (the server or network was the problem).
    pub fn is_transient(&self) -> bool {
        !matches!(self, DbError::InvalidConnString(_) | DbError::Migration(_))
    }
}

impl DbTarget {
    /// Parses a libpq-style URL or key=value connection string, with its TLS settings (see
    /// [`tls`]); reads the `sslrootcert` file.
    pub fn parse(conn_string: &str) -> Result<Self, DbError> {
        let (tls_settings, conn_string) = tls::TlsSettings::extract(conn_string)?;
        let mut config = tokio_postgres::Config::from_str(&conn_string)
            .map_err(|e| DbError::InvalidConnString(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("uptimeo-agent");
        }
        Ok(Self {
            config: Arc::new(config),
            tls: tls_settings.connector()?,
            tls_mode: tls_settings.mode,
        })
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> tls::SslMode {
        self.tls_mode
    }

    /// The database name, if the connection string gives one.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server with another database (used to create the configured one).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut config = (*self.config).clone();
        config.dbname(dbname);
        Self {
            config: Arc::new(config),
            tls: self.tls.clone(),
            tls_mode: self.tls_mode,
        }
    }

    /// Opens one connection outside any pool.
    pub async fn connect(&self) -> Result<AsyncPgConnection, DbError> {
        connect_with(&self.config, &self.tls)
            .await
            .map_err(|e| DbError::Connect {
                target: self.to_string(),
                reason: e.to_string(),
            })
    }

    /// Builds a pool of at most `size` connections; connections are opened on demand.
    pub fn pool(&self, size: u32) -> Pool {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        manager_config.custom_setup =
            Box::new(move |_url| connect_with_owned(config.clone(), tls.clone()).boxed());
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            "configured-separately",
            manager_config,
        );
        let last_error = LastError::default();
        let inner = bb8::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(DEFAULT_CONNECT_TIMEOUT)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Pool { inner, last_error }
    }
}

impl std::fmt::Display for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        let user = c.get_user().unwrap_or("(default user)");
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let db = c.get_dbname().unwrap_or(user);
        write!(f, "{user}@{host}:{port}/{db}")
    }
}

async fn connect_with_owned(
    config: Arc<tokio_postgres::Config>,
    tls: tls::RustlsConnect,
) -> Result<AsyncPgConnection, ConnectionError> {
    connect_with(&config, &tls).await
}

async fn connect_with(
    config: &tokio_postgres::Config,
    tls: &tls::RustlsConnect,
) -> Result<AsyncPgConnection, ConnectionError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| ConnectionError::BadConnection(with_sources(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Runs the cheapest statement there is: proves the server answers on this connection.
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// An error and its sources, joined by `: ` (tokio-postgres puts the server's message and the
/// TLS failure in the source).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Takes a connection from the pool. When none comes within the connect timeout, the error
/// says why attempts failed ([`DbError::Unreachable`]) if they did; other pool errors are
/// [`DbError::Pool`].
pub async fn checkout(pool: &Pool) -> Result<bb8::PooledConnection<'_, Manager>, DbError> {
    pool.get().await.map_err(|e| match e {
        bb8::RunError::TimedOut => pool.timed_out(DEFAULT_CONNECT_TIMEOUT),
        other => DbError::Pool(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_shows_the_password() {
        let url = DbTarget::parse("postgres://app:s3cr3t@db.example:6543/uptime").unwrap();
        assert_eq!(url.to_string(), "app@db.example:6543/uptime");
        let kv = DbTarget::parse("host=10.0.0.1 user=app password=s3cr3t dbname=u").unwrap();
        assert!(!kv.to_string().contains("s3cr3t"));
        assert_eq!(kv.to_string(), "app@10.0.0.1:5432/u");
    }

    #[test]
    fn unparsable_strings_are_rejected() {
        assert!(matches!(
            DbTarget::parse("postgres://x:y@host:notaport/db"),
            Err(DbError::InvalidConnString(_))
        ));
    }
}
