//! The datacenter lease: one row per datacenter in `datacenter_leases` naming the holder, an
//! epoch that grows with every new holder (the fencing token) and an expiry computed by the
//! database's clock, so that agents' clocks never have to agree.
//!
//! A row lock, not a session advisory lock: a pooled connection may be recycled at any time,
//! which would silently free an advisory lock.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::DbError;

/// Who asks for the lease.
#[derive(Debug, Clone)]
pub struct Claimant {
    pub datacenter_id: i32,
    pub agent_id: i32,
    /// Unique per process, so that two agents configured with the same agent id still differ.
    pub instance: String,
}

/// What an attempt to take the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// Taken, under this epoch.
    Acquired(i64),
    /// Another agent holds it; it expires in this long unless renewed (by the database's
    /// clock, as the attempt saw it).
    Held {
        expires_in: Duration,
        /// `agents.id` of the holder.
        holder: Option<i32>,
    },
}

#[derive(QueryableByName)]
struct AttemptRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    epoch: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    expires_in_s: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    holder: Option<i32>,
}

/// Takes the lease if nobody holds it or the holder's lease expired. Otherwise says when the
/// holder's lease expires, so that a standby can try again at that moment rather than poll.
///
/// The expiry is read from the statement's snapshot: a renewal committed while the attempt ran
/// is not seen, so the time returned may be early, never late.
pub async fn try_acquire(
    conn: &mut AsyncPgConnection,
    claimant: &Claimant,
    ttl: Duration,
) -> Result<LeaseAttempt, DbError> {
    let row: AttemptRow = diesel::sql_query(
        "WITH attempt AS ( \
             INSERT INTO datacenter_leases AS l \
                 (datacenter_id, holder_agent_id, holder_instance, epoch, acquired_at, \
                  renewed_at, expires_at) \
             VALUES ($1, $2, $3, 1, clock_timestamp(), clock_timestamp(), \
                     clock_timestamp() + make_interval(secs => $4)) \
             ON CONFLICT (datacenter_id) DO UPDATE SET \
                 holder_agent_id = EXCLUDED.holder_agent_id, \
                 holder_instance = EXCLUDED.holder_instance, \
                 epoch = l.epoch + 1, \
                 acquired_at = EXCLUDED.acquired_at, \
                 renewed_at = EXCLUDED.renewed_at, \
                 expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at <= clock_timestamp() \
             RETURNING l.epoch) \
         SELECT (SELECT epoch FROM attempt) AS epoch, \
                l.expires_in_s, l.holder \
         FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
             SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s, \
                    holder_agent_id AS holder \
             FROM datacenter_leases WHERE datacenter_id = $1) AS l ON true",
    )
    .bind::<Integer, _>(claimant.datacenter_id)
    .bind::<Integer, _>(claimant.agent_id)
    .bind::<Text, _>(&claimant.instance)
    .bind::<Double, _>(ttl.as_secs_f64())
    .get_result(conn)
    .await?;
    Ok(match row.epoch {
        Some(epoch) => LeaseAttempt::Acquired(epoch),
        None => LeaseAttempt::Held {
            // Clamped: a NaN or an absurd expiry must not panic the conversion.
            expires_in: Duration::from_secs_f64(row.expires_in_s.unwrap_or(0.0).clamp(0.0, 1e6)),
            holder: row.holder,
        },
    })
}

/// Extends the lease held under `epoch`; false when it was lost (expired and taken, or the
/// datacenter's row is gone), in which case the caller must stop at once.
pub async fn renew(
    conn: &mut AsyncPgConnection,
    claimant: &Claimant,
    epoch: i64,
    ttl: Duration,
) -> Result<bool, DbError> {
    let updated = diesel::sql_query(
        "UPDATE datacenter_leases \
         SET expires_at = clock_timestamp() + make_interval(secs => $4), \
             renewed_at = clock_timestamp() \
         WHERE datacenter_id = $1 AND holder_instance = $2 AND epoch = $3 \
           AND expires_at > clock_timestamp()",
    )
    .bind::<Integer, _>(claimant.datacenter_id)
    .bind::<Text, _>(&claimant.instance)
    .bind::<BigInt, _>(epoch)
    .bind::<Double, _>(ttl.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Gives the lease up so that a standby can take it at once.
pub async fn release(
    conn: &mut AsyncPgConnection,
    claimant: &Claimant,
    epoch: i64,
) -> Result<bool, DbError> {
    let updated = diesel::sql_query(
        "UPDATE datacenter_leases \
         SET expires_at = clock_timestamp(), holder_instance = NULL \
         WHERE datacenter_id = $1 AND holder_instance = $2 AND epoch = $3",
    )
    .bind::<Integer, _>(claimant.datacenter_id)
    .bind::<Text, _>(&claimant.instance)
    .bind::<BigInt, _>(epoch)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}
