//! One node's control plane: the membership ([`Membership`], SWIM with foca) and the
//! per-network tables ([`Tables`], NetworkDB's model) composed on one gossip socket,
//! sans-IO. This is what the daemon runs per host, and what the simulation runs per
//! simulated node.
//!
//! The two layers share the socket and tell their datagrams apart by the first byte
//! ([`KIND_MEMBERSHIP`], [`KIND_TABLE`]). The tables speak of nodes by [`NodeKey`]
//! only; the node maps keys to gossip addresses (and back) from the membership's
//! events, and turns those events into the tables' failure input:
//!
//! | membership event ([`MemberEvent`]) | tables call |
//! |---|---|
//! | `Up(id)` | `node_up(id.key, id.generation)` |
//! | `Down(id)` | `node_down(id.key)`: entries suspended |
//! | `Renamed { new, .. }` | `node_up(new.key, new.generation)` |
//! | `Rejoined(id)` (this node) | [`Tables::renew`] with `id.generation` |
//!
//! foca has no graceful-leave notification: `leave_cluster` gossips the leaving
//! node as down, so peers get `Down` for a leave as for a crash (only sooner, with no
//! suspicion period) and suspend its entries; the data plane sees the same Remove
//! events as for a deletion. `node_left` is therefore not called: the entries of a
//! node that left stay stored (hidden) until it comes back, when a higher generation
//! replaces them after [`crate::table::Config::restart_grace`]. A node that leaves
//! ([`Node::leave`]) first leaves its networks, so its own view empties at once.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::member::{KIND_MEMBERSHIP, MemberEvent, Membership, NodeId, Seed};
use crate::table::{self, KIND_TABLE, NodeKey, TableError, Tables};

/// Something that changed on this node, for the caller (the daemon programs its data
/// plane from the table events; the membership events are for logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A membership change (already applied to the tables).
    Member(MemberEvent),
    /// A change of the visible entries of a network this node is attached to.
    Table(table::Event),
}

/// Counters of the composition itself (each layer has its own:
/// [`Membership::stats`], [`Tables::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Datagrams that were empty or of a kind neither layer owns.
    pub unknown_kind: u64,
    /// Table datagrams from an address no member event named: dropped (the sender
    /// is not known up here yet; gossip and anti-entropy send again).
    pub table_from_stranger: u64,
    /// Table datagrams for a key with no known address: dropped.
    pub table_to_stranger: u64,
    /// Table datagrams the tables refused (their reason is in [`Tables::stats`]).
    pub table_rejected: u64,
}

/// Why [`Node::handle`] dropped a datagram (each is counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeReject {
    /// Empty, or a kind neither layer owns.
    #[error("unknown message kind")]
    UnknownKind,
    /// Refused by the membership.
    #[error("membership: {0:?}")]
    Member(crate::member::Reject),
    /// A table datagram from an address that is no known member.
    #[error("table datagram from a stranger")]
    Stranger,
    /// Refused by the tables.
    #[error("tables: {0}")]
    Table(table::Reject),
}

/// One node's membership and tables, driven by the caller like each layer alone:
/// feed datagrams to [`Node::handle`], call [`Node::tick`] at
/// [`Node::next_deadline`], and after every call drain [`Node::poll_send`] and
/// [`Node::poll_event`].
///
/// Bounds: the address map holds one entry per node key the membership reported
/// (the cluster size); the event queue holds what one call produced (the caller
/// drains it after each call); the layers bound their own queues.
#[derive(Debug)]
pub struct Node {
    membership: Membership,
    tables: Tables,
    addr_of: HashMap<NodeKey, SocketAddrV4>,
    key_of: HashMap<SocketAddrV4, NodeKey>,
    events: VecDeque<NodeEvent>,
    now: Duration,
    stats: NodeStats,
}

impl Node {
    /// A node with identity `id`, foca settings `member` (see
    /// [`crate::member::config`]) and table settings `tables`; `seed` seeds both
    /// layers' RNGs (differently).
    pub fn new(
        id: NodeId,
        member: foca::Config,
        tables: table::Config,
        seed: u64,
        now: Duration,
    ) -> Self {
        Self {
            membership: Membership::new(id, member, seed),
            tables: Tables::new(id.key, id.generation, tables, seed ^ 0x7461_626c_6573, now),
            addr_of: HashMap::new(),
            key_of: HashMap::new(),
            events: VecDeque::new(),
            now,
            stats: NodeStats::default(),
        }
    }

    /// This node's current identity.
    pub fn id(&self) -> NodeId {
        self.membership.id()
    }

    /// The membership layer (read only: drive it through the node).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The tables layer (read only: write through [`Node::set`] and the others).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The counters of the composition.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Join the cluster through `seed` ([`Membership::join`]).
    pub fn join(&mut self, seed: impl Into<Seed>, now: Duration) {
        self.now = now;
        self.membership.join(seed, now);
        self.pump();
    }

    /// Leave gracefully: leave every network (own entries tombstoned, the others'
    /// removed from the view), then the cluster ([`Membership::leave`]).
    pub fn leave(&mut self, now: Duration) {
        self.now = now;
        for net in self.tables.networks() {
            let _ = self.tables.leave_network(&net, now);
        }
        self.membership.leave(now);
        self.pump();
    }

    /// Attach to `net` ([`Tables::join_network`]).
    pub fn join_network(&mut self, net: &str, now: Duration) -> Result<(), TableError> {
        self.now = now;
        let r = self.tables.join_network(net, now);
        self.pump();
        r
    }

    /// Detach from `net` ([`Tables::leave_network`]).
    pub fn leave_network(&mut self, net: &str, now: Duration) -> Result<(), TableError> {
        self.now = now;
        let r = self.tables.leave_network(net, now);
        self.pump();
        r
    }

    /// Write an own entry ([`Tables::set`]).
    pub fn set(
        &mut self,
        net: &str,
        key: &str,
        value: &[u8],
        now: Duration,
    ) -> Result<(), TableError> {
        self.now = now;
        let r = self.tables.set(net, key, value, now);
        self.pump();
        r
    }

    /// Delete an own entry ([`Tables::delete`]).
    pub fn delete(&mut self, net: &str, key: &str, now: Duration) -> Result<(), TableError> {
        self.now = now;
        let r = self.tables.delete(net, key, now);
        self.pump();
        r
    }

    /// Take a datagram received from `from`: to the layer its first byte names.
    /// A bad datagram is counted (here or in the layer) and returned as an error.
    pub fn handle(
        &mut self,
        from: SocketAddrV4,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), NodeReject> {
        self.now = now;
        let result = match bytes.first() {
            Some(&KIND_MEMBERSHIP) => self
                .membership
                .handle(from, bytes, now)
                .map_err(NodeReject::Member),
            Some(&KIND_TABLE) => match self.key_of.get(&from) {
                Some(&key) => self.tables.handle(key, bytes, now).map_err(|e| {
                    self.stats.table_rejected += 1;
                    NodeReject::Table(e)
                }),
                None => {
                    self.stats.table_from_stranger += 1;
                    Err(NodeReject::Stranger)
                }
            },
            _ => {
                self.stats.unknown_kind += 1;
                Err(NodeReject::UnknownKind)
            }
        };
        self.pump();
        result
    }

    /// Fire what is due at `now` in both layers.
    pub fn tick(&mut self, now: Duration) {
        self.now = now;
        self.membership.tick(now);
        self.pump();
        self.tables.tick(now);
        self.pump();
    }

    /// When [`Node::tick`] must next be called (already past while datagrams wait
    /// in [`Node::poll_send`]).
    pub fn next_deadline(&self) -> Option<Duration> {
        let tables = self.tables.next_deadline();
        Some(
            self.membership
                .next_deadline()
                .map_or(tables, |m| m.min(tables)),
        )
    }

    /// The next datagram to send, and where: the membership's first, then the
    /// tables' (whose peers are addressed through the membership's view).
    pub fn poll_send(&mut self, now: Duration) -> Option<(SocketAddrV4, Vec<u8>)> {
        self.now = now;
        if let Some(out) = self.membership.poll_send() {
            return Some(out);
        }
        let out = loop {
            let (key, bytes) = self.tables.poll_send(now)?;
            match self.addr_of.get(&key) {
                Some(&addr) => break Some((addr, bytes)),
                None => self.stats.table_to_stranger += 1,
            }
        };
        // Polling the tables may have run their timers (reaping, grace ends).
        self.pump();
        out
    }

    /// The next change seen by this node, oldest first.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Apply the membership's events to the tables, and queue both layers' events.
    fn pump(&mut self) {
        let now = self.now;
        while let Some(event) = self.membership.poll_event() {
            match event {
                MemberEvent::Up(id) => {
                    self.learn(id);
                    self.tables.node_up(id.key, id.generation, now);
                }
                MemberEvent::Down(id) => self.tables.node_down(id.key, now),
                MemberEvent::Renamed { new, .. } => {
                    self.learn(new);
                    self.tables.node_up(new.key, new.generation, now);
                }
                MemberEvent::Rejoined(id) => self.tables.renew(id.generation, now),
            }
            self.events.push_back(NodeEvent::Member(event));
        }
        while let Some(event) = self.tables.poll_event() {
            self.events.push_back(NodeEvent::Table(event));
        }
    }

    /// Remember the address of `id`'s key (a node keeps its key for life; a new
    /// address for a key replaces the old one).
    fn learn(&mut self, id: NodeId) {
        if let Some(old) = self.addr_of.insert(id.key, id.addr)
            && old != id.addr
        {
            self.key_of.remove(&old);
        }
        self.key_of.insert(id.addr, id.key);
    }
}

#[cfg(test)]
mod tests;
