//! The schema migrations under `migrations/`, embedded in the binary.
//!
//! Several agents may start at once against an empty database, so migrations run while holding
//! a session advisory lock on a dedicated connection (never a pooled one): the first agent
//! applies them, the others wait and then find nothing pending.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{DbError, DbTarget};

/// The migrations compiled into this binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key that serialises migrations across agents ("uptimeo" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0075_7074_696d_656f;

/// Applies every pending migration and returns the versions applied.
///
/// Must run on a multi-threaded tokio runtime: diesel's migration harness is synchronous and
/// blocks in place.
pub async fn run_pending(target: &DbTarget) -> Result<Vec<String>, DbError> {
    let mut conn = target.connect().await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await?;

    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(|v| v.to_string()).collect())
        .map_err(|e| DbError::Migration(e.to_string()));

    // Closing the connection would free the lock too; unlocking says so explicitly.
    let mut conn = harness.into_inner();
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await?;
    applied
}

/// The versions of the migrations compiled into this binary, as diesel records them.
pub fn embedded_versions() -> Vec<String> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map(|all| all.iter().map(|m| m.name().version().to_string()).collect())
        .unwrap_or_default()
}

/// The versions in `__diesel_schema_migrations` that this binary does not embed, in order:
/// a newer agent migrated the schema.
pub async fn unknown_versions(conn: &mut AsyncPgConnection) -> Result<Vec<String>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let applied: Vec<Applied> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations ORDER BY version")
            .load(conn)
            .await?;
    let known = embedded_versions();
    Ok(applied
        .into_iter()
        .map(|a| a.version)
        .filter(|v| !known.contains(v))
        .collect())
}

/// Creates the database named by `target` when it does not exist yet, connecting to the
/// server's `postgres` database to do so. Returns whether it was created.
pub async fn create_database_if_missing(target: &DbTarget) -> Result<bool, DbError> {
    let Some(name) = target.dbname().map(str::to_owned) else {
        return Ok(false);
    };
    let mut conn = target.with_dbname("postgres").connect().await?;

    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await?;
    if found.exists {
        return Ok(false);
    }
    // CREATE DATABASE takes no bind parameters; the name is quoted as an identifier.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(true),
        // Another agent created it at the same moment.
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("already exists") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_versions_are_named_as_diesel_records_them() {
        let versions = super::embedded_versions();
        assert!(
            versions.contains(&"20261203000001".to_string()),
            "{versions:?}"
        );
    }
}
