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
                    "no complete response within {} (timed out during {})",
                    shown(timeout),
                    self.phase
                ),
            )),
        };
        result
    }
}

/// A timeout as a person reads it, to the nearest 10 ms (`4s`, `2.5s`): a check that started a
/// few milliseconds after its slot, because the one before it ran into that slot, has that
/// much less time (see `actors::monitor`), and its message still names the monitor's timeout.
fn shown(timeout: Duration) -> String {
    let centis = (timeout.as_millis() + 5) / 10;
    let text = format!("{}.{:02}", centis / 100, centis % 100);
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_shown_to_the_nearest_ten_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(shown(ms(4000)), "4s");
        assert_eq!(shown(ms(3998)), "4s");
        assert_eq!(shown(Duration::from_nanos(3_997_991_209)), "4s");
        assert_eq!(shown(ms(2500)), "2.5s");
        assert_eq!(shown(ms(300)), "0.3s");
        assert_eq!(shown(ms(1234)), "1.23s");
        assert_eq!(shown(ms(10)), "0.01s");
    }
}
