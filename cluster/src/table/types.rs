//! The tables' basic types and bounds, shared by the store, the wire format and the
//! gossip.

use serde::{Deserialize, Serialize};

/// A node's identity for the tables: the membership layer's 64-bit node id.
pub type NodeKey = u64;

/// Largest datagram sent or accepted (bytes), below a 1,500-byte underlay MTU.
pub const MAX_DATAGRAM: usize = 1400;
/// Longest entry key (endpoint id), bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Longest entry value, bytes.
pub const MAX_VALUE_LEN: usize = 512;
/// Longest network name, bytes.
pub const MAX_NET_LEN: usize = 64;

/// Version of a write: ordered by generation, then sequence.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// The owner's generation (bumped when it restarts).
    pub generation: u32,
    /// Per-owner, per-network sequence number.
    pub seq: u64,
}
