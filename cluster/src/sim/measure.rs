//! Measures of a simulation run.

use std::time::Duration;

/// Percentiles of a set of durations (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// Percentiles of `samples` (all zero when empty).
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1]
        };
        if sorted.is_empty() {
            return Self::default();
        }
        Self {
            count: sorted.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Traffic sent by the running nodes over a window, per node per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Datagrams per node per second.
    pub packets_per_node_sec: f64,
    /// Bytes (UDP payload) per node per second.
    pub bytes_per_node_sec: f64,
}

/// Traffic of one measuring window, by layer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrafficSplit {
    /// Membership (foca) datagrams.
    pub membership: Traffic,
    /// Table datagrams (push gossip and anti-entropy).
    pub tables: Traffic,
    /// Both.
    pub total: Traffic,
}

/// Datagrams the transport handled, by fate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by running nodes.
    pub sent: u64,
    /// Bytes of those datagrams.
    pub sent_bytes: u64,
    /// Of the datagrams sent, the membership's.
    pub member_sent: u64,
    /// Bytes of those.
    pub member_sent_bytes: u64,
    /// Datagrams delivered to a running node.
    pub delivered: u64,
    /// Lost at random ([`super::SimParams::loss`]).
    pub lost: u64,
    /// Dropped between two sides of a partition.
    pub partitioned: u64,
    /// Addressed to a crashed node, or to no node.
    pub unreachable: u64,
}

/// FNV-1a over 64-bit words: the digest of a run's events.
#[derive(Clone, Copy, Debug)]
pub(super) struct Digest(pub(super) u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub(super) fn add(&mut self, word: u64) {
        for byte in word.to_le_bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
