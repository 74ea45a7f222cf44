//! Sans-IO layer-2 core of tapnet: MAC learning and the forwarding decision of
//! a learning bridge. The packet views it reads frames with live in
//! `tapnet-wire`.
//!
//! Nothing in this crate does I/O, spawns threads or reads a clock. The engine
//! passes a frame, the ingress port and `now`, and gets back a [`Decision`]
//! saying where the frame goes; aging runs through
//! [`Switch::poll_timeout`] / [`Switch::handle_timeout`].
//!
//! ```
//! use std::time::Duration;
//! use tapnet_switch::{Decision, DomainConfig, DomainId, PortId, Switch};
//!
//! let mut sw = Switch::new();
//! sw.add_domain(DomainId(0), DomainConfig::default()).unwrap();
//! sw.attach(PortId(1), DomainId(0)).unwrap();
//! sw.attach(PortId(2), DomainId(0)).unwrap();
//!
//! // 02:42:ac:11:00:02 -> broadcast: learned, then flooded.
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&[0xff; 6]);
//! frame[6..12].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
//! frame[12..14].copy_from_slice(&[0x08, 0x06]);
//! let now = Duration::from_secs(1);
//! assert_eq!(sw.process(PortId(1), &frame, now), Decision::Flood(DomainId(0)));
//! let targets: Vec<_> = sw.flood_targets(DomainId(0), PortId(1)).collect();
//! assert_eq!(targets, [PortId(2)]);
//! ```

mod counters;
mod error;
mod guard;
mod switch;
mod table;

use std::fmt;

pub use counters::{
    Counter, DomainCounters, DomainCountersSnapshot, PortGuardCounters, PortGuardCountersSnapshot,
    SwitchCounters, SwitchCountersSnapshot,
};
pub use error::SwitchError;
pub use guard::{FloodLimit, PortBinding, TokenBucket};
pub use switch::{Decision, DomainConfig, DropReason, PortRole, Switch};
pub use table::{LearnOutcome, MacTable, TableConfig, TableEntry};
pub use tapnet_wire::{MacAddr, MacParseError};

/// A port: a dense, engine-wide index (one per TAP device, veth, or tunnel).
///
/// The switch indexes a vector with it, so keep the numbers small and dense.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// A bridge domain: one per Docker network. Frames never cross domains.
///
/// Like [`PortId`], a dense index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct DomainId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
