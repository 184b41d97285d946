//! Heartbeat rows: batched inserts into the partitioned `api_heartbeats` and its daily
//! partitions (`api_heartbeats_YYYY_MM_DD`, UTC days).

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::api_heartbeats;
use super::DbError;

/// One row of `api_heartbeats`, ready to insert.
#[derive(Debug, Clone, PartialEq, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = api_heartbeats)]
pub struct NewHeartbeat {
    pub monitor_id: Option<i32>,
    pub agent_id: Option<i32>,
    /// When the check started, UTC.
    pub executed_at: NaiveDateTime,
    pub success: Option<bool>,
    pub response_time_ms: Option<i32>,
    pub response_size_bytes: Option<i32>,
    pub response_status_code: Option<i32>,
    pub response_content_type: Option<String>,
    pub response_server: Option<String>,
    pub response_cache_status: Option<String>,
    pub dns_lookup_ms: Option<i32>,
    pub tcp_connect_ms: Option<i32>,
    pub tls_handshake_ms: Option<i32>,
    pub time_to_first_byte_ms: Option<i32>,
    pub warning_threshold_ms: Option<i32>,
    pub critical_threshold_ms: Option<i32>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub raw_request_headers: Option<serde_json::Value>,
    pub raw_response_headers: Option<serde_json::Value>,
    pub raw_response_body: Option<serde_json::Value>,
    pub status: Option<String>,
    pub lease_epoch: Option<i64>,
    /// The schedule slot the check belongs to, UTC.
    pub scheduled_at: Option<NaiveDateTime>,
    /// Figures without a column of their own (microsecond timings, versions, certificate,
    /// redirects): see `heartbeat::CheckDetails`.
    pub details: Option<serde_json::Value>,
}

/// Inserts the rows with one multi-row INSERT, skipping each row already stored: a row is
/// identified by `(monitor_id, scheduled_at, executed_at)` (the unique index
/// `api_heartbeats_check_key`), so writing a row twice (a replayed spool, a retry after a lost
/// commit acknowledgement) stores it once. Either all new rows are stored or none. Returns how
/// many were new.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    rows: &[NewHeartbeat],
) -> Result<usize, DbError> {
    Ok(diesel::insert_into(api_heartbeats::table)
        .values(rows)
        .on_conflict((
            api_heartbeats::monitor_id,
            api_heartbeats::scheduled_at,
            api_heartbeats::executed_at,
        ))
        .do_nothing()
        .execute(conn)
        .await?)
}

/// What [`ensure_partition`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// The day's partition was created now.
    Created,
    /// A partition of that name already existed.
    Exists,
    /// Another partition (of another name) already covers the day.
    Covered,
}

/// Makes sure the UTC day has a partition, creating `api_heartbeats_YYYY_MM_DD` when needed.
/// Safe when several agents call it at once (the SQL function takes an advisory lock).
pub async fn ensure_partition(
    conn: &mut AsyncPgConnection,
    day: NaiveDate,
) -> Result<PartitionOutcome, DbError> {
    #[derive(QueryableByName)]
    struct Outcome {
        #[diesel(sql_type = diesel::sql_types::Text)]
        outcome: String,
    }
    let row: Outcome =
        diesel::sql_query("SELECT uptimeo_ensure_heartbeat_partition($1) AS outcome")
            .bind::<diesel::sql_types::Date, _>(day)
            .get_result(conn)
            .await?;
    Ok(match row.outcome.as_str() {
        "created" => PartitionOutcome::Created,
        "covered" => PartitionOutcome::Covered,
        _ => PartitionOutcome::Exists,
    })
}

/// The name of the partition this agent creates for a day.
pub fn partition_name(day: NaiveDate) -> String {
    format!("api_heartbeats_{}", day.format("%Y_%m_%d"))
}
