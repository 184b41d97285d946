//! # uptimeo-agent
//!
//! Runs the HTTP monitors of one datacenter, times every phase of every check (DNS, TCP
//! connect, TLS handshake, time to first byte, transfer) and stores each result as a heartbeat
//! in PostgreSQL. Several agents may serve one datacenter: a lease in the database lets exactly
//! one run the checks while the others wait as standbys.
//!
//! ## The actor tree
//!
//! ```text
//!                       ConfigChanged (monitors that should run)
//!   +-------------------+ ------------------> +-----------------+
//!   | ConfigReloadActor |                     | SupervisorActor |--- lease: take, renew,
//!   +-------------------+                     +-----------------+    release (db::lease)
//!     LISTEN uptimeo_config,             start /  |      ^  MonitorStopped
//!     and polls (db::config)        StopMonitor   v      |  (restart if unexpected)
//!                                          +--------------+
//!                                          | MonitorActor |  one per monitor, fixed-rate
//!                                          +--------------+  slots; runs a monitor::Probe
//!                                                 |
//!                                                 | RecordHeartbeat
//!                                                 v
//!                                      +----------------------+  batched INSERTs (up to
//!                                      | HeartbeatWriterActor |  WRITE_CONNECTIONS at once),
//!                                      +----------------------+  daily partitions (db::heartbeats)
//!                                        queues every row in the spool (SPOOL_DIR) until
//!                                        stored; replays what a killed run left
//!
//!   +----------------+  with RETENTION_DAYS: drops expired daily partitions, each drop
//!   | RetentionActor |  guarded in its transaction by this process holding the lease
//!   +----------------+  (db::retention)
//!
//!   Every actor records into one metrics::Metrics, which the health port serves
//!   (/metrics) and reads for /readyz (lease role).
//!
//!   shutdown (SIGTERM/SIGINT): Shutdown -> supervisor (stop monitors, release lease),
//!                              then Flush -> writer (store what it holds)
//! ```
//!
//! ## Layout
//!
//! - [`actors`]: one file per actor.
//! - [`monitor`]: monitor definitions and one file per monitor type behind [`monitor::Probe`].
//!   Adding a type means one new file and one line in [`monitor::ProbeSet::for_type`].
//! - [`db`]: every SQL statement.
//! - [`heartbeat`]: what a check measured and how it becomes a row.
//! - [`schedule`]: slot arithmetic.
//! - [`metrics`]: the Prometheus registry the actors record into.
//! - [`spool`]: the disk-backed queue of heartbeats not yet stored.
//! - [`settings`], [`logging`], [`health`], [`agent`]: the process around the actors.
//! - [`check`]: the `check` subcommand, one probe run printed for a person (no actors, no
//!   database).

pub mod actors;
pub mod agent;
pub mod check;
pub mod db;
pub mod health;
pub mod heartbeat;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod schedule;
pub mod settings;
pub mod spool;
