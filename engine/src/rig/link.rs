//! One direction of a host's link: loss, delay, jitter and partition, drawn from the
//! rig's seeded RNG, in the manner of smoltcp's `phy::FaultInjector` but on a simulated
//! clock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::host_id::HostId;

/// Faults applied to every frame crossing a host's link, in each direction separately.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Probability in `[0, 1]` that a frame is lost.
    pub loss: f64,
    /// Fixed one-way delay added to every frame.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame. A non-zero jitter lets
    /// frames overtake each other, as on a real path with several queues.
    pub jitter: Duration,
}

impl LinkFaults {
    /// No faults: frames cross in the tick they are sent.
    pub const NONE: LinkFaults = LinkFaults {
        loss: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    /// Loss and a fixed delay, no jitter.
    pub const fn new(loss: f64, delay: Duration) -> LinkFaults {
        LinkFaults {
            loss,
            delay,
            jitter: Duration::ZERO,
        }
    }
}

/// Which way a frame crosses a host's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the host to the engine.
    Up,
    /// From the engine to the host.
    Down,
}

/// What happened to one frame on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Accepted by the link; arrives at `due`.
    Queued {
        /// Simulated time of arrival.
        due: Duration,
    },
    /// Lost to the configured loss rate.
    Lost,
    /// Dropped because the link is partitioned.
    Cut,
    /// Dropped on arrival: the engine port's ring or the host's receive queue was full.
    Overflow,
}

/// One frame on one link, as recorded by the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    /// Simulated time of the event.
    pub at: Duration,
    /// Whose link.
    pub host: HostId,
    /// Which way.
    pub dir: Direction,
    /// Frame length in bytes.
    pub len: usize,
    /// What happened to it.
    pub fate: Fate,
}

/// Counters of one direction of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Frames offered to the link.
    pub offered: u64,
    /// Frames that arrived at the other end.
    pub delivered: u64,
    /// Bytes that arrived at the other end.
    pub delivered_bytes: u64,
    /// Frames lost to the loss rate.
    pub lost: u64,
    /// Frames dropped by a partition (when sent or while in flight).
    pub cut: u64,
    /// Frames dropped on arrival because the receiving queue was full.
    pub overflow: u64,
}

/// Counters of both directions of a host's link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Host to engine.
    pub up: DirStats,
    /// Engine to host.
    pub down: DirStats,
}

struct InFlight<T> {
    due: Duration,
    seq: u64,
    frame: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl<T> Eq for InFlight<T> {}

impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for InFlight<T> {
    // Reversed: `BinaryHeap` is a max-heap and the earliest frame must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Frames (or, on the underlay, datagrams) in flight in one direction, ordered by
/// arrival time then sending order.
pub(super) struct Wire<T = Vec<u8>> {
    queue: BinaryHeap<InFlight<T>>,
    seq: u64,
    pub(super) stats: DirStats,
}

impl<T> Default for Wire<T> {
    fn default() -> Self {
        Wire {
            queue: BinaryHeap::new(),
            seq: 0,
            stats: DirStats::default(),
        }
    }
}

impl<T> Wire<T> {
    /// Decide the fate of `frame`, sent at `now`, and queue it unless it is dropped.
    pub(super) fn offer(
        &mut self,
        frame: T,
        now: Duration,
        faults: &LinkFaults,
        cut: bool,
        rng: &mut ChaCha8Rng,
    ) -> (Fate, Option<T>) {
        self.stats.offered += 1;
        if cut {
            self.stats.cut += 1;
            return (Fate::Cut, Some(frame));
        }
        // Draw only for faults that are configured, so a fault-free link leaves the RNG
        // stream alone for everyone else.
        if faults.loss > 0.0 && rng.random_bool(faults.loss.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return (Fate::Lost, Some(frame));
        }
        let mut due = now + faults.delay;
        if !faults.jitter.is_zero() {
            let j = rng.random_range(0..=faults.jitter.as_nanos() as u64);
            due += Duration::from_nanos(j);
        }
        self.seq += 1;
        self.queue.push(InFlight {
            due,
            seq: self.seq,
            frame,
        });
        (Fate::Queued { due }, None)
    }

    /// The next frame due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Duration) -> Option<T> {
        if self.queue.peek().is_some_and(|f| f.due <= now) {
            self.queue.pop().map(|f| f.frame)
        } else {
            None
        }
    }

    /// Arrival time of the earliest frame in flight.
    pub(super) fn next_due(&self) -> Option<Duration> {
        self.queue.peek().map(|f| f.due)
    }
}

/// A 64-bit FNV-1a accumulator: cheap, order-sensitive, stable across runs and builds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub(super) fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub(super) fn value(&self) -> u64 {
        self.0
    }
}
