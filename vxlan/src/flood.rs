//! The rate limit of head-end replication: a token bucket per network.

use std::time::Duration;

/// Default sustained rate of head-end replication: broadcast frames per second
/// per network toward the underlay (each copied to every peer VTEP).
pub const FLOOD_RATE: u32 = 1000;

/// Default burst: broadcast frames allowed back to back after a quiet spell.
pub const FLOOD_BURST: u32 = 200;

/// One token in nano-tokens: integer arithmetic, no float.
const NANOS: u64 = 1_000_000_000;

/// Head-end replication's rate limit for one network: a token bucket, sans-IO
/// (`now` from the caller, any monotonic origin). It starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimit {
    rate_per_s: u32,
    burst: u32,
    nano_tokens: u64,
    last: Option<Duration>,
}

impl FloodLimit {
    /// A full bucket of `burst` tokens refilled at `rate_per_s` tokens a
    /// second. A burst of 0 allows nothing; a rate of 0 allows `burst` frames
    /// and then nothing.
    pub const fn new(rate_per_s: u32, burst: u32) -> Self {
        FloodLimit {
            rate_per_s,
            burst,
            nano_tokens: 0,
            last: None,
        }
    }

    /// Takes a token at `now` if there is one: whether one more broadcast
    /// frame may be replicated. A clock that went back refills nothing.
    pub fn allow(&mut self, now: Duration) -> bool {
        let cap = u64::from(self.burst) * NANOS;
        self.nano_tokens = match self.last {
            None => cap,
            Some(last) => {
                let elapsed =
                    u64::try_from(now.saturating_sub(last).as_nanos()).unwrap_or(u64::MAX);
                self.nano_tokens
                    .saturating_add(elapsed.saturating_mul(u64::from(self.rate_per_s)))
                    .min(cap)
            }
        };
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if self.nano_tokens >= NANOS {
            self.nano_tokens -= NANOS;
            true
        } else {
            false
        }
    }
}

impl Default for FloodLimit {
    /// [`FLOOD_RATE`] and [`FLOOD_BURST`].
    fn default() -> Self {
        FloodLimit::new(FLOOD_RATE, FLOOD_BURST)
    }
}
