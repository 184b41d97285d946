//! Retention: whole daily partitions of `api_heartbeats` are detached and dropped once their
//! whole range is older than the retention period. Never a row-by-row `DELETE`.
//!
//! Only partitions named `api_heartbeats_YYYY_MM_DD` are candidates, and the decision rests on
//! the partition's actual bound as PostgreSQL reports it, not on the name: a partition whose
//! upper bound is not a plain timestamp (`MAXVALUE`, a default partition) is never dropped.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::lease::Claimant;
use super::DbError;

/// How long a drop may wait for the locks it needs before giving up until the next sweep.
const LOCK_TIMEOUT: &str = "5s";

/// A partition of `api_heartbeats` as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct HeartbeatPartition {
    /// The table name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `pg_get_expr(relpartbound)`, e.g. `FOR VALUES FROM ('2026-11-01 00:00:00') TO (...)`.
    #[diesel(sql_type = Text)]
    pub bound: String,
}

impl HeartbeatPartition {
    /// The day in the name when it has the agent's form `api_heartbeats_YYYY_MM_DD`.
    pub fn named_day(&self) -> Option<NaiveDate> {
        let date = self.name.strip_prefix("api_heartbeats_")?;
        if date.len() != 10 || !date.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            return None;
        }
        NaiveDate::parse_from_str(date, "%Y_%m_%d").ok()
    }

    /// The exclusive upper bound of the range, when it is a plain timestamp.
    pub fn upper_bound(&self) -> Option<NaiveDateTime> {
        let (_, upper) = self.bound.split_once(" TO ('")?;
        let (upper, _) = upper.split_once("')")?;
        NaiveDateTime::parse_from_str(upper, "%Y-%m-%d %H:%M:%S%.f").ok()
    }

    /// True when the partition is one of the agent's daily partitions and every row it can
    /// hold is older than `cutoff`.
    pub fn expired(&self, cutoff: NaiveDateTime) -> bool {
        self.named_day().is_some() && self.upper_bound().is_some_and(|upper| upper <= cutoff)
    }
}

/// Every partition attached to `api_heartbeats`, oldest name first.
pub async fn list_partitions(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<HeartbeatPartition>, DbError> {
    Ok(diesel::sql_query(
        "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'api_heartbeats'::regclass \
         ORDER BY c.relname",
    )
    .load(conn)
    .await?)
}

/// What [`drop_partition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropOutcome {
    /// The partition was detached and dropped.
    Dropped,
    /// This agent does not hold its datacenter's lease (any more): nothing was done.
    NotLeaseHolder,
    /// The partition was no longer attached (another agent dropped it first).
    Gone,
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    #[allow(dead_code)]
    one: i32,
}

/// Detaches and drops `partition`, in one transaction, if `claimant` holds an unexpired lease.
/// Serialised with partition creation by the same advisory lock, so that two agents (of
/// different datacenters, each its own lease holder) never race on one partition.
pub async fn drop_partition(
    conn: &mut AsyncPgConnection,
    claimant: &Claimant,
    partition: &HeartbeatPartition,
) -> Result<DropOutcome, DbError> {
    // The name is interpolated below, so it must be exactly the agent's form.
    if partition.named_day().is_none() {
        return Ok(DropOutcome::Gone);
    }
    let name = partition.name.as_str();
    conn.transaction::<_, DbError, _>(async |conn| drop_locked(conn, claimant, name).await)
        .await
}

/// The body of [`drop_partition`]'s transaction.
async fn drop_locked(
    conn: &mut AsyncPgConnection,
    claimant: &Claimant,
    name: &str,
) -> Result<DropOutcome, DbError> {
    diesel::sql_query(format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(conn)
        .await?;
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtext('uptimeo-agent:api_heartbeats:partitions'))",
    )
    .execute(conn)
    .await?;
    let holder: Option<One> = diesel::sql_query(
        "SELECT 1 AS one FROM datacenter_leases \
         WHERE datacenter_id = $1 AND holder_instance = $2 \
           AND expires_at > clock_timestamp()",
    )
    .bind::<Integer, _>(claimant.datacenter_id)
    .bind::<Text, _>(&claimant.instance)
    .get_result(conn)
    .await
    .optional()?;
    if holder.is_none() {
        return Ok(DropOutcome::NotLeaseHolder);
    }
    let attached: Option<One> = diesel::sql_query(
        "SELECT 1 AS one FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'api_heartbeats'::regclass AND c.relname = $1",
    )
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()?;
    if attached.is_none() {
        return Ok(DropOutcome::Gone);
    }
    diesel::sql_query(format!(
        "ALTER TABLE api_heartbeats DETACH PARTITION \"{name}\""
    ))
    .execute(conn)
    .await?;
    diesel::sql_query(format!("DROP TABLE \"{name}\""))
        .execute(conn)
        .await?;
    Ok(DropOutcome::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(name: &str, bound: &str) -> HeartbeatPartition {
        HeartbeatPartition {
            name: name.to_string(),
            bound: bound.to_string(),
        }
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn only_daily_partitions_wholly_before_the_cutoff_expire() {
        let day = |name: &str, from: &str, to: &str| {
            partition(
                name,
                &format!("FOR VALUES FROM ('{from} 00:00:00') TO ('{to} 00:00:00')"),
            )
        };
        let cutoff = at("2026-11-03 12:00:00");
        assert!(day("api_heartbeats_2026_11_02", "2026-11-02", "2026-11-03").expired(cutoff));
        // Its range reaches past the cutoff.
        assert!(!day("api_heartbeats_2026_11_03", "2026-11-03", "2026-11-04").expired(cutoff));
        // Old, but not named as the agent names its partitions.
        assert!(!day("api_heartbeats_archive", "2020-01-01", "2021-01-01").expired(cutoff));
        assert!(!day("api_heartbeats_2026_11_2", "2026-11-02", "2026-11-03").expired(cutoff));
        // The name says an old day, the bound does not.
        assert!(!day("api_heartbeats_2026_01_01", "2026-01-01", "2027-01-01").expired(cutoff));
        let open = partition(
            "api_heartbeats_2026_01_01",
            "FOR VALUES FROM ('2026-01-01 00:00:00') TO (MAXVALUE)",
        );
        assert!(!open.expired(cutoff));
        assert!(!partition("api_heartbeats_2026_01_01", "DEFAULT").expired(cutoff));
    }
}
