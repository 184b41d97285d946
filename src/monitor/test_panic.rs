//! `TESTPANIC`: a monitor type whose checks panic, compiled into debug builds only (the ones
//! `cargo test` runs), so that the supervision of a panicking check can be tested on the real
//! binary. Release builds do not know this type and skip such a monitor as of an unknown type.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{MonitorSpec, Probe};
use crate::heartbeat::CheckResult;

/// The `api_monitors.type` of [`PanicProbe`].
pub const TYPE: &str = "TESTPANIC";

/// Panics in every check, naming the monitor.
pub struct PanicProbe;

impl Probe for PanicProbe {
    fn validate(&self, _spec: &MonitorSpec) -> Result<(), String> {
        Ok(())
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { panic!("test panic in a check of monitor {}", spec.id) }.boxed()
    }
}
