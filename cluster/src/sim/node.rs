//! A simulated node: the real per-node composition ([`Node`]: membership and
//! tables) and room for more sans-IO layers.

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::member::{MemberEvent, NodeId};
use crate::node::{Node, NodeReject};

/// Another sans-IO layer run beside the membership on a simulated node (the
/// per-network tables, for one): it owns one message kind (the first byte of
/// its datagrams), is fed the datagrams of that kind and the node's
/// membership changes, and is polled like [`Membership`].
pub trait Layer {
    /// The kind byte of this layer's datagrams (not
    /// [`crate::member::KIND_MEMBERSHIP`] nor [`crate::table::KIND_TABLE`], which
    /// the [`Node`] owns).
    fn kind(&self) -> u8;
    /// A datagram of this layer's kind from `from`.
    fn handle(&mut self, from: SocketAddrV4, bytes: &[u8], now: Duration);
    /// Fire what is due at `now`.
    fn tick(&mut self, now: Duration);
    /// When [`Layer::tick`] must next be called.
    fn next_deadline(&self) -> Option<Duration>;
    /// The next datagram to send.
    fn poll_send(&mut self) -> Option<(SocketAddrV4, Vec<u8>)>;
    /// A membership change seen by this node (map `Up` to `node_up`, `Down`
    /// to `node_down`, and so on).
    fn member_event(&mut self, event: &MemberEvent, now: Duration);
}

/// One simulated node.
pub struct SimNode {
    /// The membership and tables of the node's current life.
    pub node: Node,
    /// Further layers, each with its own message kind.
    pub layers: Vec<Box<dyn Layer>>,
    /// Whether the node runs (false after a crash, until a restart).
    pub(super) running: bool,
    /// The active members as this node's events told them (for measures).
    pub(super) view: HashSet<NodeId>,
    /// The instant of the newest wake-up queued for this node.
    pub(super) wake: Option<Duration>,
    /// Restarts so far (varies the RNG seed of each life).
    pub(super) restarts: u32,
    /// Nodes (indices) this node knew as members when it stopped: a restarted node
    /// joins through them as well as through the seeds, as a daemon does through the
    /// peers it stored.
    pub(super) known: Vec<usize>,
    /// Datagrams of a kind no layer of this node owns.
    pub unknown_kind: u64,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("node", &self.node)
            .field("layers", &self.layers.len())
            .field("running", &self.running)
            .field("view", &self.view.len())
            .finish_non_exhaustive()
    }
}

impl SimNode {
    pub(super) fn new(node: Node) -> Self {
        Self {
            node,
            layers: Vec::new(),
            running: true,
            view: HashSet::new(),
            wake: None,
            restarts: 0,
            known: Vec::new(),
            unknown_kind: 0,
        }
    }

    /// Whether the node runs.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// How many members this node's events say are active.
    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// The membership of the node's current life.
    pub fn membership(&self) -> &crate::member::Membership {
        self.node.membership()
    }

    /// The earliest deadline of the membership and the layers.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        let layers = self.layers.iter().filter_map(|l| l.next_deadline());
        self.node.next_deadline().into_iter().chain(layers).min()
    }

    /// Hand a datagram to the membership or the layer of its kind.
    pub(super) fn dispatch(&mut self, from: SocketAddrV4, bytes: &[u8], now: Duration) {
        let Some(&kind) = bytes.first() else {
            self.unknown_kind += 1;
            return;
        };
        if let Some(layer) = self.layers.iter_mut().find(|l| l.kind() == kind) {
            layer.handle(from, bytes, now);
        } else if let Err(NodeReject::UnknownKind) = self.node.handle(from, bytes, now) {
            // Other rejects are counted in the node's and the layers' stats.
            self.unknown_kind += 1;
        }
    }

    pub(super) fn tick(&mut self, now: Duration) {
        self.node.tick(now);
        for layer in &mut self.layers {
            layer.tick(now);
        }
    }

    /// The next datagram any part of the node wants to send.
    pub(super) fn poll_send(&mut self, now: Duration) -> Option<(SocketAddrV4, Vec<u8>)> {
        self.node
            .poll_send(now)
            .or_else(|| self.layers.iter_mut().find_map(|l| l.poll_send()))
    }

    /// Apply a membership event to the view; forward it to the layers.
    pub(super) fn apply(&mut self, event: &MemberEvent, now: Duration) {
        match *event {
            MemberEvent::Up(id) => {
                self.view.insert(id);
            }
            MemberEvent::Down(id) => {
                self.view.remove(&id);
            }
            MemberEvent::Renamed { old, new } => {
                if self.view.remove(&old) {
                    self.view.insert(new);
                }
            }
            MemberEvent::Rejoined(_) => {}
        }
        for layer in &mut self.layers {
            layer.member_event(event, now);
        }
    }
}
