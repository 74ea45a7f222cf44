//! The identity of a cluster node.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

/// Who a node is: its gossip address, a node id fixed for the node's life and
/// a generation bumped each time it restarts or rejoins.
///
/// Implements foca's [`foca::Identity`]: two `NodeId`s with the same address
/// and key are the same node (the same [`NodeAddr`], foca's "prefix"); the one
/// with the higher generation wins, so a node that was declared down renews
/// its identity ([`foca::Identity::renew`]) and rejoins at once instead of
/// waiting for the cluster to forget the down identity (foca's
/// `identity_golf` example; the swarm design keeps a down node's state
/// suspended, not deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's gossip address (UDP, IPv4 underlay).
    pub addr: SocketAddrV4,
    /// Random node id, fixed for the node's life (the tables' `NodeKey`).
    pub key: u64,
    /// Bumped on every restart or rejoin; the higher one wins.
    pub generation: u32,
}

/// The part of a [`NodeId`] that stays the same across generations: foca
/// keeps one member per `NodeAddr`, so its memory is bounded by the number of
/// nodes, not of identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// The gossip address.
    pub addr: SocketAddrV4,
    /// The node id.
    pub key: u64,
}

impl NodeId {
    /// A first-generation identity.
    pub fn new(addr: SocketAddrV4, key: u64) -> Self {
        Self {
            addr,
            key,
            generation: 0,
        }
    }

    /// The same node, one generation later (wrapping).
    pub fn next_generation(&self) -> Self {
        Self {
            generation: self.generation.wrapping_add(1),
            ..*self
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = NodeAddr;

    fn renew(&self) -> Option<Self> {
        Some(self.next_generation())
    }

    fn addr(&self) -> NodeAddr {
        NodeAddr {
            addr: self.addr,
            key: self.key,
        }
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}
