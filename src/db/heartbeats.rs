//! Heartbeat rows: batched inserts into the partitioned `api_heartbeats` and its daily
//! partitions (`api_heartbeats_YYYY_MM_DD`, UTC days).

use chrono::{NaiveDate, NaiveDateTime};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Bool, Int4, Int8, Jsonb, Nullable, Text, Timestamp};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::DbError;

/// One row of `api_heartbeats`, ready to insert.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Inserts the rows with one statement, skipping each row already stored: a row is identified
/// by `(monitor_id, scheduled_at, executed_at)` (the unique index `api_heartbeats_check_key`),
/// so writing a row twice (a replayed spool, a retry after a lost commit acknowledgement, the
/// same check twice in one batch) stores it once. Either all new rows are stored or none.
/// Returns how many were new.
///
/// The rows travel as one array per column, unnested by the server ([`ColumnArrays`]): the
/// statement's text does not depend on the number of rows, so each connection prepares it
/// once and keeps it, where a multi-row `VALUES` list was a new statement of 25 parameters a
/// row, parsed and planned for every batch.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    rows: &[NewHeartbeat],
) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(ColumnArrays::new(rows).execute(conn).await?)
}

/// A batch as one array per column, borrowing the rows' strings and JSON. As a statement
/// (see its `walk_ast`): `INSERT INTO api_heartbeats (...) SELECT unnest($1), ...,
/// unnest($25) ON CONFLICT (the check key) DO NOTHING`. The arrays are all as long as the
/// batch, so the `unnest`s of the select list advance in step, one row each; in the select
/// list rather than in `FROM unnest(...)` they stream, where the function scan would first
/// copy every row into a tuple store.
struct ColumnArrays<'a> {
    monitor_id: Vec<Option<i32>>,
    agent_id: Vec<Option<i32>>,
    executed_at: Vec<NaiveDateTime>,
    success: Vec<Option<bool>>,
    response_time_ms: Vec<Option<i32>>,
    response_size_bytes: Vec<Option<i32>>,
    response_status_code: Vec<Option<i32>>,
    response_content_type: Vec<Option<&'a str>>,
    response_server: Vec<Option<&'a str>>,
    response_cache_status: Vec<Option<&'a str>>,
    dns_lookup_ms: Vec<Option<i32>>,
    tcp_connect_ms: Vec<Option<i32>>,
    tls_handshake_ms: Vec<Option<i32>>,
    time_to_first_byte_ms: Vec<Option<i32>>,
    warning_threshold_ms: Vec<Option<i32>>,
    critical_threshold_ms: Vec<Option<i32>>,
    error_type: Vec<Option<&'a str>>,
    error_message: Vec<Option<&'a str>>,
    raw_request_headers: Vec<Option<&'a serde_json::Value>>,
    raw_response_headers: Vec<Option<&'a serde_json::Value>>,
    raw_response_body: Vec<Option<&'a serde_json::Value>>,
    status: Vec<Option<&'a str>>,
    lease_epoch: Vec<Option<i64>>,
    scheduled_at: Vec<Option<NaiveDateTime>>,
    details: Vec<Option<&'a serde_json::Value>>,
}

impl<'a> ColumnArrays<'a> {
    fn new(rows: &'a [NewHeartbeat]) -> Self {
        fn column<'a, T>(rows: &'a [NewHeartbeat], value: fn(&'a NewHeartbeat) -> T) -> Vec<T> {
            rows.iter().map(value).collect()
        }
        Self {
            monitor_id: column(rows, |r| r.monitor_id),
            agent_id: column(rows, |r| r.agent_id),
            executed_at: column(rows, |r| r.executed_at),
            success: column(rows, |r| r.success),
            response_time_ms: column(rows, |r| r.response_time_ms),
            response_size_bytes: column(rows, |r| r.response_size_bytes),
            response_status_code: column(rows, |r| r.response_status_code),
            response_content_type: column(rows, |r| r.response_content_type.as_deref()),
            response_server: column(rows, |r| r.response_server.as_deref()),
            response_cache_status: column(rows, |r| r.response_cache_status.as_deref()),
            dns_lookup_ms: column(rows, |r| r.dns_lookup_ms),
            tcp_connect_ms: column(rows, |r| r.tcp_connect_ms),
            tls_handshake_ms: column(rows, |r| r.tls_handshake_ms),
            time_to_first_byte_ms: column(rows, |r| r.time_to_first_byte_ms),
            warning_threshold_ms: column(rows, |r| r.warning_threshold_ms),
            critical_threshold_ms: column(rows, |r| r.critical_threshold_ms),
            error_type: column(rows, |r| r.error_type.as_deref()),
            error_message: column(rows, |r| r.error_message.as_deref()),
            raw_request_headers: column(rows, |r| r.raw_request_headers.as_ref()),
            raw_response_headers: column(rows, |r| r.raw_response_headers.as_ref()),
            raw_response_body: column(rows, |r| r.raw_response_body.as_ref()),
            status: column(rows, |r| r.status.as_deref()),
            lease_epoch: column(rows, |r| r.lease_epoch),
            scheduled_at: column(rows, |r| r.scheduled_at),
            details: column(rows, |r| r.details.as_ref()),
        }
    }
}

/// Pushes `INSERT INTO api_heartbeats (first, column, ...) SELECT unnest($1), unnest($2), ...`,
/// binding each named field of `arrays` as an array of its SQL type: one list gives both the
/// column names and the arrays, so they cannot drift apart.
macro_rules! insert_unnest {
    ($out:ident, $arrays:ident, $first:ident: $first_type:ty $(, $column:ident: $type:ty)* $(,)?) => {
        $out.push_sql(concat!(
            "INSERT INTO api_heartbeats (",
            stringify!($first) $(, ", ", stringify!($column))*,
            ") SELECT unnest("
        ));
        $out.push_bind_param::<Array<$first_type>, _>(&$arrays.$first)?;
        $(
            $out.push_sql("), unnest(");
            $out.push_bind_param::<Array<$type>, _>(&$arrays.$column)?;
        )*
        $out.push_sql(")");
    };
}

impl QueryFragment<Pg> for ColumnArrays<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        insert_unnest!(out, self,
            monitor_id: Nullable<Int4>,
            agent_id: Nullable<Int4>,
            executed_at: Timestamp,
            success: Nullable<Bool>,
            response_time_ms: Nullable<Int4>,
            response_size_bytes: Nullable<Int4>,
            response_status_code: Nullable<Int4>,
            response_content_type: Nullable<Text>,
            response_server: Nullable<Text>,
            response_cache_status: Nullable<Text>,
            dns_lookup_ms: Nullable<Int4>,
            tcp_connect_ms: Nullable<Int4>,
            tls_handshake_ms: Nullable<Int4>,
            time_to_first_byte_ms: Nullable<Int4>,
            warning_threshold_ms: Nullable<Int4>,
            critical_threshold_ms: Nullable<Int4>,
            error_type: Nullable<Text>,
            error_message: Nullable<Text>,
            raw_request_headers: Nullable<Jsonb>,
            raw_response_headers: Nullable<Jsonb>,
            raw_response_body: Nullable<Jsonb>,
            status: Nullable<Text>,
            lease_epoch: Nullable<Int8>,
            scheduled_at: Nullable<Timestamp>,
            details: Nullable<Jsonb>,
        );
        out.push_sql(" ON CONFLICT (monitor_id, scheduled_at, executed_at) DO NOTHING");
        Ok(())
    }
}

/// Its text is the same for every batch (bind types included), so diesel-async may keep it
/// prepared: the default `is_safe_to_cache_prepared` holds, as nothing marks it unsafe.
impl QueryId for ColumnArrays<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// Runs with diesel-async's `execute`.
impl diesel::query_dsl::RunQueryDslSupport for ColumnArrays<'_> {}

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
