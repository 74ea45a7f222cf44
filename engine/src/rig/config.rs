//! How a rig is built, and what can go wrong.

use std::time::Duration;

use crate::overlay::OverlayError;
use crate::pool::PoolConfig;
use crate::runtime::EngineError;

/// How a rig is built.
#[derive(Clone, Debug)]
pub struct RigConfig {
    /// Seeds every random choice: link faults, smoltcp's ISNs and IP ids, ports, data.
    pub seed: u64,
    /// Simulated time per [`Rig::step`](super::Rig::step).
    pub tick: Duration,
    /// IP MTU of every host and engine port.
    pub mtu: u32,
    /// Ring capacity of each memory port, in frames per direction.
    pub port_capacity: usize,
    /// Frames a host's receive queue holds before arrivals are dropped.
    pub host_queue: usize,
    /// Size of each TCP socket buffer used by [`Rig::tcp_transfer`](super::Rig::tcp_transfer) (above 64 KiB,
    /// smoltcp negotiates window scaling).
    pub tcp_buffer: usize,
    /// The engine's buffer pool.
    pub pool: PoolConfig,
}

impl RigConfig {
    /// Defaults with `seed`.
    pub fn new(seed: u64) -> RigConfig {
        RigConfig {
            seed,
            tick: Duration::from_micros(100),
            mtu: 1500,
            port_capacity: 1024,
            host_queue: 1024,
            tcp_buffer: 256 * 1024,
            pool: PoolConfig {
                small_slots: 8192,
                large_slots: 16,
                ..PoolConfig::default()
            },
        }
    }
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig::new(0)
    }
}

/// Errors of the rig.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The engine refused a change (its error is the source).
    #[error("the engine refused the change")]
    Engine(#[source] EngineError),
    /// A site's VTEP refused a change (its error is the source).
    #[error("the overlay refused the change")]
    Overlay(#[source] OverlayError),
    /// A request the rig cannot carry out as asked.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// smoltcp refused a socket operation.
    #[error("smoltcp refused: {0}")]
    Socket(String),
    /// Traffic did not complete within its simulated-time budget.
    #[error(
        "{what} timed out after {after:?} of simulated time with {done} of {expected} delivered; \
         raise the timeout or lower the link faults"
    )]
    Timeout {
        /// What was running.
        what: &'static str,
        /// Simulated time spent.
        after: Duration,
        /// Bytes (TCP) or datagrams delivered so far.
        done: u64,
        /// Bytes or datagrams expected.
        expected: u64,
    },
    /// The receiver got bytes that differ from what was sent.
    #[error("byte {offset} of the TCP stream differs from what was sent")]
    Corrupted {
        /// Stream offset of the first wrong byte.
        offset: u64,
    },
    /// The connection closed before every byte arrived.
    #[error("the TCP connection closed after {received} bytes, before the transfer completed")]
    Reset {
        /// Bytes delivered before it closed.
        received: u64,
    },
}

impl From<OverlayError> for RigError {
    fn from(e: OverlayError) -> Self {
        RigError::Overlay(e)
    }
}

impl From<EngineError> for RigError {
    fn from(e: EngineError) -> Self {
        RigError::Engine(e)
    }
}
