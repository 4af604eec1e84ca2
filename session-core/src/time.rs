//! Wall-clock instants as Unix milliseconds: compact, portable across every backend
//! (an SQL `BIGINT`, a file field, a Redis hash field) and free of time-zone questions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant in UTC, stored as milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// From a [`SystemTime`], saturating far outside the representable range.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// This instant moved by `secs` seconds (negative moves back), saturating.
    pub fn add_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// This instant moved by `d`, saturating.
    pub fn add_duration(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Whole seconds from `self` until `later`, rounded down (negative when `later` is in
    /// the past), as Django's `delta.days * 86400 + delta.seconds`.
    pub fn secs_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0).div_euclid(1000)
    }

    /// Milliseconds from `self` until `later` (negative when in the past).
    pub fn millis_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::from_system_time(t)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.to_system_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_floors() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        let before = Timestamp::from_unix_millis(-1_500);
        assert_eq!(Timestamp::from_system_time(before.to_system_time()), before);
        assert_eq!(t.secs_until(t.add_secs(10)), 10);
        assert_eq!(t.secs_until(Timestamp::from_unix_millis(t.0 + 9_999)), 9);
        assert_eq!(t.secs_until(Timestamp::from_unix_millis(t.0 - 1)), -1);
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX).add_secs(5).0,
            i64::MAX
        );
    }
}
