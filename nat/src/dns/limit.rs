//! Queries per second per asker: a token bucket per source address, in a bounded table.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Entries of askers not seen for this long are dropped.
const IDLE: Duration = Duration::from_secs(60);
/// Askers tracked at most; past it the one seen longest ago is evicted.
pub(crate) const MAX_ASKERS: usize = 4096;
/// How often idle entries are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One asker's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens left (a query takes one).
    tokens: f64,
    /// When it was last refilled.
    last: Duration,
}

/// The token buckets of one network's askers. The network's server applies one to every
/// query; the engine applies another, with the same rate, before a query leaves its
/// worker, so that a flood over the rate is dropped where it enters.
#[derive(Debug)]
pub struct Limiter {
    /// Tokens added per second (0: no limit).
    rate: u32,
    /// Tokens a bucket holds at most.
    burst: f64,
    /// Buckets by asker.
    table: HashMap<Ipv4Addr, Bucket>,
    /// When idle entries were last swept out.
    swept: Duration,
}

impl Limiter {
    /// `rate` queries per second with bursts of `burst` (at least one).
    pub fn new(rate: u32, burst: u32) -> Limiter {
        Limiter {
            rate,
            burst: f64::from(burst.max(1)),
            table: HashMap::new(),
            swept: Duration::ZERO,
        }
    }

    /// Askers tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no asker is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether `ip` may ask at `now` (and take a token if so).
    pub fn allow(&mut self, now: Duration, ip: Ipv4Addr) -> bool {
        if self.rate == 0 {
            return true;
        }
        if now.saturating_sub(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if !self.table.contains_key(&ip) && self.table.len() >= MAX_ASKERS {
            self.sweep(now);
            if self.table.len() >= MAX_ASKERS {
                let oldest = self
                    .table
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    self.table.remove(&oldest);
                }
            }
        }
        let burst = self.burst;
        let b = self.table.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(self.rate)).min(burst);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops the entries not seen for [`IDLE`].
    fn sweep(&mut self, now: Duration) {
        self.swept = now;
        self.table.retain(|_, b| now.saturating_sub(b.last) < IDLE);
    }
}
