//! The actors, one file each. See the crate docs for how they talk to each other.

pub mod config_reload;
pub mod heartbeat_writer;
pub mod monitor;
pub mod retention;
pub mod supervisor;

pub use config_reload::ConfigReloadActor;
pub use heartbeat_writer::HeartbeatWriterActor;
pub use monitor::MonitorActor;
pub use retention::RetentionActor;
pub use supervisor::SupervisorActor;
