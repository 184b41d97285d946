//! Reads the configuration tables: datacenters, agents and the monitors of a datacenter; and
//! listens for their changes.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;

use super::schema::{agents, api_monitors, datacenter_monitors, datacenters, schedules};
use super::{DbError, DbTarget};

/// The channel on which triggers of `api_monitors`, `schedules`, `datacenter_monitors` and
/// `datacenters` notify every committed change (payload: the table's name).
pub const CONFIG_CHANNEL: &str = "uptimeo_config";

/// How long a listening connection may stay silent before it is pinged, so that a connection
/// that died without a FIN is noticed.
pub const LISTEN_PING_INTERVAL: Duration = Duration::from_secs(15);

/// One `api_monitors` row as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = api_monitors)]
pub struct MonitorRow {
    pub id: i32,
    pub name: String,
    pub method: String,
    pub monitor_type: String,
    pub url: String,
    pub schedule_id: Option<i32>,
    pub headers: Option<serde_json::Value>,
    pub body: Option<serde_json::Value>,
    pub expected_status: Option<String>,
    pub body_match: Option<String>,
    pub body_match_mode: Option<String>,
    pub timeout_ms: Option<i32>,
    pub max_redirects: Option<i32>,
    pub ip_family: Option<String>,
    pub tls_verify: Option<bool>,
    pub min_cert_days: Option<i32>,
}

/// One `schedules` row as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = schedules)]
pub struct ScheduleRow {
    pub id: i32,
    pub name: String,
    pub interval: i32,
    pub include_response_body: Option<bool>,
    pub thresholds_warning: Option<i32>,
    pub thresholds_critical: Option<i32>,
}

/// A monitor of the datacenter with its schedule (absent when the row names none, or one that
/// does not exist).
pub type MonitorWithSchedule = (MonitorRow, Option<ScheduleRow>);

/// The datacenter's `code`, or `None` when no such datacenter exists.
pub async fn datacenter_code(
    conn: &mut AsyncPgConnection,
    datacenter_id: i32,
) -> Result<Option<String>, DbError> {
    Ok(datacenters::table
        .find(datacenter_id)
        .select(datacenters::code)
        .first(conn)
        .await
        .optional()?)
}

/// The lowest `agents.id` of the datacenter.
pub async fn lowest_agent_id(
    conn: &mut AsyncPgConnection,
    datacenter_id: i32,
) -> Result<Option<i32>, DbError> {
    Ok(agents::table
        .filter(agents::datacenter_id.eq(datacenter_id))
        .select(agents::id)
        .order(agents::id)
        .first(conn)
        .await
        .optional()?)
}

/// The datacenter an agent belongs to: `None` when the agent does not exist, `Some(None)` when
/// it has no datacenter.
pub async fn agent_datacenter(
    conn: &mut AsyncPgConnection,
    agent_id: i32,
) -> Result<Option<Option<i32>>, DbError> {
    Ok(agents::table
        .find(agent_id)
        .select(agents::datacenter_id)
        .first(conn)
        .await
        .optional()?)
}

/// Why an agent may not run a datacenter's checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("datacenter {0} does not exist (no row in datacenters with id {0})")]
    NoDatacenter(i32),
    #[error("agent {0} does not exist (no row in agents with id {0})")]
    NoAgent(i32),
    #[error("agent {agent} belongs to datacenter {other}, not to datacenter {datacenter}")]
    OtherDatacenter {
        agent: i32,
        other: i32,
        datacenter: i32,
    },
}

/// Why `agent_id` may not run the checks of `datacenter_id`, if it may not: the agent does not
/// exist or belongs to another datacenter. An agent of no datacenter may run any.
pub async fn agent_problem(
    conn: &mut AsyncPgConnection,
    datacenter_id: i32,
    agent_id: i32,
) -> Result<Option<IdentityError>, DbError> {
    Ok(match agent_datacenter(conn, agent_id).await? {
        None => Some(IdentityError::NoAgent(agent_id)),
        Some(Some(other)) if other != datacenter_id => Some(IdentityError::OtherDatacenter {
            agent: agent_id,
            other,
            datacenter: datacenter_id,
        }),
        Some(_) => None,
    })
}

/// Every monitor linked to the datacenter through `datacenter_monitors`, by id, each once: a
/// database whose `datacenter_monitors` lacks its primary key may link a monitor twice.
pub async fn monitors_of_datacenter(
    conn: &mut AsyncPgConnection,
    datacenter_id: i32,
) -> Result<Vec<MonitorWithSchedule>, DbError> {
    let mut rows: Vec<MonitorWithSchedule> = datacenter_monitors::table
        .inner_join(api_monitors::table.left_join(schedules::table))
        .filter(datacenter_monitors::datacenter_id.eq(datacenter_id))
        .select((MonitorRow::as_select(), Option::<ScheduleRow>::as_select()))
        .order(api_monitors::id)
        .load(conn)
        .await?;
    rows.dedup_by_key(|(monitor, _)| monitor.id);
    Ok(rows)
}

/// A connection of its own, LISTENing on [`CONFIG_CHANNEL`].
pub struct ConfigListener {
    conn: AsyncPgConnection,
}

impl ConfigListener {
    /// Opens the connection and starts listening.
    pub async fn start(target: &DbTarget) -> Result<Self, DbError> {
        let mut conn = target.connect().await?;
        diesel::sql_query(format!("LISTEN {CONFIG_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
    }

    /// Waits for the next notification and returns the name of the table that changed. The
    /// connection is pinged after [`LISTEN_PING_INTERVAL`] of silence; an error means it is
    /// lost and a new listener is needed.
    pub async fn next_change(&mut self) -> Result<String, DbError> {
        loop {
            let next = {
                let mut notifications = std::pin::pin!(self.conn.notifications_stream());
                tokio::time::timeout(LISTEN_PING_INTERVAL, notifications.next()).await
            };
            match next {
                Ok(Some(Ok(notification))) => return Ok(notification.payload),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) => return Err(DbError::Closed),
                Err(_silence) => {
                    let ping = diesel::sql_query("SELECT 1").execute(&mut self.conn);
                    tokio::time::timeout(LISTEN_PING_INTERVAL, ping)
                        .await
                        .map_err(|_| DbError::Timeout(LISTEN_PING_INTERVAL))??;
                }
            }
        }
    }
}
