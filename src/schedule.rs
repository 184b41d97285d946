//! Schedule slots: the wall-clock instants at which a monitor's checks are due.
//!
//! Slots are derived from the wall clock, the interval and a stable per-monitor offset only,
//! never from when an agent started: checks of many monitors spread evenly over the interval,
//! and an agent that takes over a datacenter continues the same slots.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The monitor's stable offset inside its interval (a multiplicative hash of its id).
pub fn offset(monitor_id: i32, interval: Duration) -> Duration {
    let interval_ms = interval.as_millis().max(1) as u64;
    let spread = (monitor_id as u32 as u64).wrapping_mul(2_654_435_761) % (1 << 32);
    Duration::from_millis((spread * interval_ms) >> 32)
}

/// The first slot strictly after `now`.
pub fn next_slot_after(now: DateTime<Utc>, monitor_id: i32, interval: Duration) -> DateTime<Utc> {
    let interval_ms = interval.as_millis().max(1) as i64;
    let offset_ms = offset(monitor_id, interval).as_millis() as i64;
    let now_ms = now.timestamp_millis();
    let k = (now_ms - offset_ms).div_euclid(interval_ms) + 1;
    DateTime::from_timestamp_millis(k * interval_ms + offset_ms).unwrap_or(now)
}

/// How long from `now` until `slot` (zero when it has passed).
pub fn until(slot: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (slot - now).to_std().unwrap_or(Duration::ZERO)
}

/// The slot after `slot`.
pub fn following(slot: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    slot + TimeDelta::from_std(interval).unwrap_or(TimeDelta::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_inside_the_interval() {
        let interval = Duration::from_secs(10);
        for id in [1, 2, 3, 1000, i32::MAX] {
            let o = offset(id, interval);
            assert!(o < interval, "{id}: {o:?}");
            assert_eq!(o, offset(id, interval));
        }
        assert_ne!(offset(1, interval), offset(2, interval));
    }

    #[test]
    fn next_slot_is_after_now_and_on_the_grid() {
        let interval = Duration::from_secs(10);
        let now = DateTime::from_timestamp_millis(1_700_000_003_217).unwrap();
        let slot = next_slot_after(now, 42, interval);
        assert!(slot > now && slot - now <= TimeDelta::seconds(10));
        let on_grid = (slot.timestamp_millis() - offset(42, interval).as_millis() as i64) % 10_000;
        assert_eq!(on_grid, 0);
        // Asking from the slot itself gives the following one.
        assert_eq!(
            next_slot_after(slot, 42, interval),
            following(slot, interval)
        );
    }
}
