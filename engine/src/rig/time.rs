//! The rig's time (a `Duration` since it started) as smoltcp's `Instant` and back.

use std::time::Duration;

use smoltcp::time::Instant;

/// `t` as smoltcp's instant.
pub(super) fn instant(t: Duration) -> Instant {
    Instant::from_micros(t.as_micros() as i64)
}

/// smoltcp's instant as the rig's time (never before its start).
pub(super) fn duration(i: Instant) -> Duration {
    Duration::from_micros(i.total_micros().max(0) as u64)
}
