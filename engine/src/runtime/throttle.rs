//! Port slots, and the flood throttle kept per slot: which ports the rx stage reads only
//! a few frames at a time, because a frame of theirs was just dropped for a rate (the
//! switch's flood rate, the gateway's DNS rate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tapnet_switch::PortId;

/// Bits of a [`PortId`] that index the engine's port tables; the bits above are the
/// slot's generation. A slot is reused after its port is removed, and frames of the old
/// port may still be in a ring: the generation tells them apart, so they are dropped
/// instead of entering (or leaving by) the new port, which may be on another network.
pub(crate) const INDEX_BITS: u32 = 16;

/// The table index of a port id.
pub(crate) fn slot(id: PortId) -> usize {
    (id.0 & ((1 << INDEX_BITS) - 1)) as usize
}

/// How long a port stays throttled after a frame of it was dropped for its flood rate:
/// several read periods, so that the few frames a throttled port is still read keep it
/// throttled while it floods, and a port that stopped is read in full within 10 ms.
pub const FLOOD_THROTTLE: Duration = Duration::from_millis(10);

/// How often a throttled port is read.
pub const FLOOD_READ_PERIOD: Duration = Duration::from_millis(1);

/// Frames read from a throttled port per [`FLOOD_READ_PERIOD`] at most: 8,000 frames/s,
/// twice the default flood rate (`FloodLimit::DEFAULT_RATE`) and above the default DNS
/// rate (`tapnet_nat::dns::DEFAULT_RATE`), so a port that floods is still read faster
/// than its floods may pass (it stays throttled while it floods), and its other
/// traffic goes on, slowed.
pub const FLOOD_READ_BATCH: usize = 8;

/// Per port slot, until when (nanoseconds on the workers' clock) the port is throttled:
/// written by the switch stage when it drops a frame for the port's flood rate, and by a
/// port's transmit half when it drops a frame the port sent it over a rate of its own
/// (the gateway's DNS rate limit, through [`PortTx::send_policed`]); read by the rx
/// stage (they may run on different workers).
pub struct FloodThrottle(Box<[AtomicU64]>);

impl Default for FloodThrottle {
    fn default() -> FloodThrottle {
        FloodThrottle(
            (0..1usize << INDEX_BITS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }
}

impl FloodThrottle {
    /// Until when `port` is throttled.
    pub(crate) fn until(&self, port: PortId) -> Duration {
        Duration::from_nanos(self.0[slot(port)].load(Ordering::Relaxed))
    }

    /// Read `port` (a full id, as in a frame's `meta.in_port`) at most
    /// [`FLOOD_READ_BATCH`] frames per [`FLOOD_READ_PERIOD`] for [`FLOOD_THROTTLE`]
    /// from `now` (the workers' clock).
    pub(crate) fn throttle(&self, port: PortId, now: Duration) {
        let until = (now + FLOOD_THROTTLE).as_nanos() as u64;
        let cell = &self.0[slot(port)];
        // Written at most once per read period: a flood of drops does not keep the cache
        // line bouncing between the workers.
        if cell.load(Ordering::Relaxed) + FLOOD_READ_PERIOD.as_nanos() as u64 <= until {
            cell.store(until, Ordering::Relaxed);
        }
    }
}
