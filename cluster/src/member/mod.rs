//! Membership and failure detection: SWIM (Das, Gupta, Motivala, "SWIM:
//! Scalable Weakly-consistent Infection-style Process Group Membership
//! Protocol", 2002) with the foca crate, wrapped in the sans-IO
//! [`Membership`].
//!
//! foca is sans-IO itself: it talks to the world through a `Runtime` that it
//! asks to send datagrams, to schedule timers and to notify membership
//! changes. [`Membership`] is that runtime: it queues the datagrams (framed,
//! see [`KIND_MEMBERSHIP`]), keeps the timers in a min-heap that
//! [`Membership::tick`] fires, and turns foca's notifications into
//! [`MemberEvent`]s.

mod config;
mod event;
mod id;
mod runtime;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddrV4;
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, PostcardCodec};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

pub use config::{SUSPICION_MULTIPLIER, TRANSMIT_MULTIPLIER, config};
pub use event::{MAX_EVENTS, MAX_OUTBOX, MemberEvent, MemberStats};
pub use id::{NodeAddr, NodeId};
pub use wire::{HEADER_LEN, KIND_MEMBERSHIP, MAX_DATAGRAM, OP_FOCA, OP_HELLO, Reject, VERSION};

use runtime::Io;
use wire::Frame;

/// Where to join: a seed node known by address only, or by its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// Only the gossip address is known: a hello asks the seed to announce.
    Addr(SocketAddrV4),
    /// The full identity is known: foca announces to it directly.
    Node(NodeId),
}

impl From<SocketAddrV4> for Seed {
    fn from(addr: SocketAddrV4) -> Self {
        Seed::Addr(addr)
    }
}

impl From<NodeId> for Seed {
    fn from(id: NodeId) -> Self {
        Seed::Node(id)
    }
}

type Swim = Foca<NodeId, PostcardCodec, ChaCha8Rng, NoCustomBroadcast>;

/// One node's membership: foca plus its queues, driven by the caller.
///
/// The caller feeds it datagrams ([`Membership::handle`]) and time
/// ([`Membership::tick`] at [`Membership::next_deadline`]), and after each
/// call drains [`Membership::poll_send`] and [`Membership::poll_event`].
pub struct Membership {
    foca: Swim,
    io: Io,
    /// Set by [`Membership::leave`]: foca then holds its identity down, and
    /// the next join renews it.
    left: bool,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", self.foca.identity())
            .field("stats", &self.io.stats)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A node with identity `id`, foca settings `config` (see [`config()`];
    /// its `max_packet_size` is capped so that a framed datagram fits
    /// [`MAX_DATAGRAM`]) and an RNG seeded with `seed`.
    pub fn new(id: NodeId, mut config: foca::Config, seed: u64) -> Self {
        let cap = MAX_DATAGRAM - HEADER_LEN;
        if config.max_packet_size.get() > cap {
            config.max_packet_size =
                std::num::NonZeroUsize::new(cap).unwrap_or(std::num::NonZeroUsize::MIN);
        }
        let rng = ChaCha8Rng::seed_from_u64(seed);
        Self {
            foca: Foca::new(id, config, rng, PostcardCodec),
            io: Io::default(),
            left: false,
        }
    }

    /// This node's current identity (its generation changes on a rejoin).
    pub fn id(&self) -> NodeId {
        *self.foca.identity()
    }

    /// Ask `seed` to let this node in. Repeat it (or join through several
    /// seeds) if no [`MemberEvent::Up`] follows: datagrams may be lost.
    pub fn join(&mut self, seed: impl Into<Seed>, now: Duration) {
        self.io.now = now;
        if self.left {
            self.left = false;
            let renewed = self.foca.identity().next_generation();
            if self.foca.change_identity(renewed, &mut self.io).is_err() {
                self.io.stats.timer_errors += 1;
            }
        }
        match seed.into() {
            Seed::Addr(addr) => {
                let hello = wire::hello(self.foca.identity());
                self.io.push_datagram(addr, hello);
            }
            Seed::Node(id) => {
                if self.foca.announce(id, &mut self.io).is_err() {
                    self.io.stats.timer_errors += 1;
                }
            }
        }
    }

    /// Handle a datagram received from `from` (used for counters only: the
    /// sender's identity is inside the packet). A bad datagram is counted
    /// and returned as an error, never a panic.
    pub fn handle(
        &mut self,
        from: SocketAddrV4,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), Reject> {
        let _ = from;
        self.io.now = now;
        self.io.stats.packets_in += 1;
        self.io.stats.bytes_in += bytes.len() as u64;
        let result = match wire::decode(bytes) {
            Ok(Frame::Foca(payload)) => self
                .foca
                .handle_data(payload, &mut self.io)
                .map_err(runtime::reject_of),
            Ok(Frame::Hello(id)) => {
                if foca::Identity::addr(&id) == foca::Identity::addr(self.foca.identity()) {
                    Err(Reject::FromOurselves)
                } else {
                    self.foca
                        .announce(id, &mut self.io)
                        .map_err(runtime::reject_of)
                }
            }
            Err(reject) => Err(reject),
        };
        if let Err(reject) = result {
            self.io.stats.rejected[reject.index()] += 1;
        }
        result
    }

    /// Fire every foca timer due at `now`.
    pub fn tick(&mut self, now: Duration) {
        self.io.now = now;
        while let Some(timer) = self.io.pop_due(now) {
            if self.foca.handle_timer(timer, &mut self.io).is_err() {
                self.io.stats.timer_errors += 1;
            }
        }
    }

    /// When [`Membership::tick`] must next be called, if any timer is set.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.io.next_deadline()
    }

    /// The next datagram to send, and where.
    pub fn poll_send(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        let out = self.io.outbox.pop_front()?;
        self.io.stats.packets_out += 1;
        self.io.stats.bytes_out += out.1.len() as u64;
        Some(out)
    }

    /// The next membership change seen by this node.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.io.events.pop_front()
    }

    /// Leave the cluster gracefully: a few active members are told this
    /// node is down, and they gossip it (foca's `leave_cluster`). The node
    /// then stays silent until [`Membership::join`] brings it back with the
    /// next generation.
    pub fn leave(&mut self, now: Duration) {
        self.io.now = now;
        if self.foca.leave_cluster(&mut self.io).is_err() {
            self.io.stats.timer_errors += 1;
        }
        self.left = true;
    }

    /// The members this node holds active (alive or suspect), without itself.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// How many members this node holds active.
    pub fn num_members(&self) -> usize {
        self.foca.num_members()
    }

    /// The counters.
    pub fn stats(&self) -> &MemberStats {
        &self.io.stats
    }
}
