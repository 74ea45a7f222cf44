//! Ports: where frames enter and leave the engine.
//!
//! A port moves *batches*: its receive half fills a vector of pool handles, its transmit
//! half drains one. The two halves are separate objects because the rx and tx stages may
//! run on different workers.

use std::io;
use std::sync::Arc;

use mio::{Registry, Token};

use crate::pool::{BufferPool, Handle};

pub mod gateway;
pub mod mem;
pub mod tap;

pub use gateway::{GatewayHandle, GatewayPort};
pub use mem::{MemPeer, MemPort};
pub use tap::TapPort;

/// What kind of device backs a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A TAP device.
    Tap,
    /// An in-memory port (rig hosts, perf generators).
    Memory,
    /// A VXLAN port: a network's overlay port, or the engine's underlay socket
    /// (`crate::overlay`).
    Overlay,
}

/// What the engine needs to know about a port.
#[derive(Clone, Debug)]
pub struct PortInfo {
    /// Name, for counters and errors.
    pub name: String,
    /// Backing device.
    pub kind: PortKind,
    /// True when the port takes frames with a virtio-net header: GSO superframes and
    /// partial checksums pass to it intact. False means the engine segments and fills
    /// checksums in software first.
    pub offloads: bool,
    /// Largest IP packet the port carries (its MTU).
    pub mtu: u32,
}

tapnet_switch::counters! {
    /// Per-port counters, written by the stage owning each half, readable any time.
    pub struct PortCounters / PortStats {
        /// Frames received.
        rx_packets,
        /// Bytes received (frame bytes, virtio-net header excluded).
        rx_bytes,
        /// Receive failures other than "would block".
        rx_errors,
        /// Frames dropped on receive because the pool was empty.
        rx_no_buffer,
        /// Frames dropped on receive because the next stage's ring was full.
        rx_ring_full,
        /// Frames (or segments) sent.
        tx_packets,
        /// Bytes sent.
        tx_bytes,
        /// Send failures.
        tx_errors,
        /// Frames dropped because the peer's queue was full.
        tx_queue_full,
        /// Frames larger than the port's MTU that could not be segmented.
        tx_too_big,
        /// Superframes split in software for this port.
        tx_segmented,
        /// Superframes or partial checksums that software offload could not handle.
        tx_offload_errors,
        /// Frames dropped on receive because the TAP's virtio-net header size was not the
        /// one the port set (another holder of the fd changed it): the frame would not
        /// start where the port expects it.
        rx_vnet_hdr_drops,
        /// Frames dropped on receive because the port held its share of the pool's large
        /// slots already (`BufferPool::large_share`): its earlier superframes or jumbo
        /// frames were still on their way out.
        rx_pool_share_drops,
        /// Superframes software segmentation refused for a bound: a `gso_size` below
        /// `tapnet_wire::gso::MIN_GSO_SIZE`, or more than `MAX_GSO_SEGMENTS` segments.
        /// Also counted in `tx_offload_errors`.
        tx_gso_refused,
        /// Receive passes in which the port was read at most [`FLOOD_READ_BATCH`]
        /// frames because it had just been over its network's flood rate: a flooding
        /// sandbox's frames wait in its TAP's queue (and the kernel drops them when it
        /// is full) instead of costing the datapath a read each.
        ///
        /// [`FLOOD_READ_BATCH`]: crate::runtime::FLOOD_READ_BATCH
        rx_flood_throttled,
    }
}

/// Outcome of one receive call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxStatus {
    /// Nothing more to read now; wait for readiness (or poll again next cycle for ports
    /// without a file descriptor).
    Drained,
    /// The budget ran out with frames still waiting.
    More,
}

/// Receive half of a port.
pub trait PortRx: Send {
    /// Register for readiness. Returns false when the port has no file descriptor and
    /// must be polled every cycle.
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<bool>;
    /// Undo [`PortRx::register`].
    fn deregister(&mut self, registry: &Registry) -> io::Result<()>;
    /// For ports without a file descriptor: whether frames are waiting. An idle worker
    /// sleeps only when no such port has any.
    fn pending(&self) -> bool {
        false
    }
    /// For ports without a file descriptor: how the peer wakes the worker after queuing.
    fn set_notifier(&mut self, notifier: crate::wake::Notifier) {
        let _ = notifier;
    }
    /// True for a port whose frames enter the switch through other ports (the underlay
    /// port: each inner frame through its network's overlay port): it sets
    /// `meta.in_port` itself, and the rx stage leaves it.
    fn stamps_in_port(&self) -> bool {
        false
    }
    /// Receive up to `budget` frames, appending their handles to `out` with `meta.len`,
    /// `meta.head` and `meta.vnet` set. Slots to read into come from `spare`, which the
    /// rx stage owns, so an idle port holds no slot at all.
    fn recv(
        &mut self,
        pool: &BufferPool,
        spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus;
}

/// Slots an rx stage keeps at hand for the next read: one of each class, shared by all
/// its ports.
#[derive(Debug, Default)]
pub struct RxSpare {
    /// A small slot, if one is held.
    pub small: Option<Handle>,
    /// A large slot, if one is held.
    pub large: Option<Handle>,
}

impl RxSpare {
    /// Make sure one slot of each class is held; false if the pool could not supply one.
    pub fn fill(&mut self, pool: &BufferPool) -> bool {
        if self.small.is_none() {
            self.small = pool.alloc(crate::pool::SizeClass::Small);
        }
        if self.large.is_none() {
            self.large = pool.alloc(crate::pool::SizeClass::Large);
        }
        self.small.is_some() && self.large.is_some()
    }

    /// Give the held slots back.
    pub fn release(&mut self, pool: &BufferPool) {
        for h in [self.small.take(), self.large.take()].into_iter().flatten() {
            pool.free(h);
        }
    }
}

/// Transmit half of a port.
pub trait PortTx: Send {
    /// Send every frame of `batch` (draining it) and give the slots back to the pool.
    /// Frames already fit the port: segmentation happened before.
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters);

    /// What the tx stage calls: [`PortTx::send`], for a port that may drop frames over a
    /// rate of its own (the gateway's DNS rate limit). `now` is the workers' clock; a
    /// port that drops a frame for its rate throttles the port the frame came from
    /// (`meta.in_port`) through `throttle`, so that the rx stage reads it a few frames
    /// per period, as a port over its flood rate.
    fn send_policed(
        &mut self,
        pool: &BufferPool,
        batch: &mut Vec<Handle>,
        ctr: &PortCounters,
        now: std::time::Duration,
        throttle: &crate::runtime::FloodThrottle,
    ) {
        let _ = (now, throttle);
        self.send(pool, batch, ctr);
    }
}

/// A port before it is handed to the engine.
pub trait Port: Send {
    /// Name, kind, offload capability and MTU.
    fn info(&self) -> PortInfo;
    /// Split into the halves the rx and tx stages own.
    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>);
    /// The pool an in-process port's frames come from: it must be the engine's, since
    /// the engine frees every handle it receives into its own pool.
    fn pool(&self) -> Option<&Arc<BufferPool>> {
        None
    }
}

/// Receive half of an in-process port: move up to `budget` handles off `ring`.
pub(crate) fn recv_ring(
    ring: &mut rtrb::Consumer<Handle>,
    pool: &BufferPool,
    out: &mut Vec<Handle>,
    budget: usize,
    ctr: &PortCounters,
) -> RxStatus {
    let avail = ring.slots();
    let n = avail.min(budget);
    if n == 0 {
        return RxStatus::Drained;
    }
    let mut bytes = 0u64;
    if let Ok(chunk) = ring.read_chunk(n) {
        for h in chunk {
            bytes += u64::from(pool.meta(&h).len);
            out.push(h);
        }
    }
    ctr.rx_packets.add(n as u64);
    ctr.rx_bytes.add(bytes);
    if avail > n {
        RxStatus::More
    } else {
        RxStatus::Drained
    }
}

/// Counters shared between the engine and whoever inspects it.
pub type SharedPortCounters = Arc<PortCounters>;
