//! The rate limit of head-end replication: a token bucket per network.

use std::time::Duration;

use tapnet_switch::TokenBucket;

/// Default sustained rate of head-end replication: broadcast frames per second
/// per network toward the underlay (each copied to every peer VTEP).
pub const FLOOD_RATE: u32 = 1000;

/// Default burst: broadcast frames allowed back to back after a quiet spell.
pub const FLOOD_BURST: u32 = 200;

/// Head-end replication's rate limit for one network: a token bucket, sans-IO
/// (`now` from the caller, any monotonic origin). It starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimit {
    rate_per_s: u32,
    burst: u32,
    bucket: TokenBucket,
}

impl FloodLimit {
    /// A full bucket of `burst` tokens refilled at `rate_per_s` tokens a
    /// second. A burst of 0 allows nothing; a rate of 0 allows `burst` frames
    /// and then nothing.
    pub const fn new(rate_per_s: u32, burst: u32) -> Self {
        FloodLimit {
            rate_per_s,
            burst,
            bucket: TokenBucket::new(),
        }
    }

    /// Takes a token at `now` if there is one: whether one more broadcast
    /// frame may be replicated. A clock that went back refills nothing.
    pub fn allow(&mut self, now: Duration) -> bool {
        self.bucket.take_at(self.rate_per_s, self.burst, now)
    }
}

impl Default for FloodLimit {
    /// [`FLOOD_RATE`] and [`FLOOD_BURST`].
    fn default() -> Self {
        FloodLimit::new(FLOOD_RATE, FLOOD_BURST)
    }
}
