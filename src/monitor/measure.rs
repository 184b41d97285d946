//! A check in progress, shared by the probes: when it started, which phase it is in, what it
//! found so far, and how a timeout or failure is turned into the final result.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::time::error::Elapsed;

use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// What a probe fills in while a check runs.
pub struct Measurement {
    /// Monotonic start of the check; every phase is timed against it or on its own.
    pub start: Instant,
    /// The phase under way, named in a timeout's message.
    pub phase: &'static str,
    pub result: CheckResult,
}

impl Measurement {
    /// Starts measuring now, in `phase`.
    pub fn begin(phase: &'static str) -> Self {
        Self {
            start: Instant::now(),
            phase,
            result: CheckResult {
                started_at: Utc::now(),
                ..CheckResult::default()
            },
        }
    }

    /// The final result: a timeout names the phase reached; a failed check still records how
    /// long it took before failing.
    pub fn finish(
        self,
        outcome: Result<Result<(), CheckFailure>, Elapsed>,
        timeout: Duration,
    ) -> CheckResult {
        let mut result = self.result;
        if result.timings.total.is_none() {
            result.timings.total = Some(self.start.elapsed());
        }
        result.failure = match outcome {
            Ok(Ok(())) => result.failure,
            Ok(Err(failure)) => Some(failure),
            Err(_) => Some(CheckFailure::new(
                ErrorKind::Timeout,
                format!(
                    "no complete response within {timeout:?} (timed out during {})",
                    self.phase
                ),
            )),
        };
        result
    }
}
