//! What a [`Membership`](super::Membership) reports: its events, its counters and their
//! bounds.

use super::id::NodeId;
use super::wire::Reject;

/// At most this many datagrams wait in [`Membership::poll_send`](super::Membership::poll_send)'s queue; a
/// datagram beyond is dropped and counted ([`MemberStats::outbox_dropped`]),
/// which SWIM tolerates as loss.
pub const MAX_OUTBOX: usize = 4096;
/// At most this many [`MemberEvent`]s wait to be drained; beyond, the oldest
/// is dropped and counted ([`MemberStats::events_dropped`]).
pub const MAX_EVENTS: usize = 65_536;

/// A change of the membership as seen by this node.
///
/// foca has no separate notification for a graceful leave: `leave_cluster`
/// gossips the leaving node as down, so peers see a [`MemberEvent::Down`]
/// for a leave as for a failure (only sooner: no suspicion period).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberEvent {
    /// A member became active (foca's `MemberUp`).
    Up(NodeId),
    /// A member was declared down or left (foca's `MemberDown`).
    Down(NodeId),
    /// A member came back with a newer generation (foca's `Rename`): `new`
    /// replaces `old`. An `Up(new)` follows if `old` was down.
    Renamed {
        /// The identity replaced.
        old: NodeId,
        /// The identity that replaces it.
        new: NodeId,
    },
    /// This node was declared down and rejoined with a renewed identity
    /// (foca's `Rejoin`).
    Rejoined(NodeId),
}

/// Counters of a [`Membership`](super::Membership).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberStats {
    /// Datagrams handed to [`Membership::handle`](super::Membership::handle).
    pub packets_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams taken out by [`Membership::poll_send`](super::Membership::poll_send).
    pub packets_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Rejected datagrams, indexed by [`Reject`] (see [`MemberStats::rejects`]).
    pub rejected: [u64; Reject::ALL.len()],
    /// Datagrams dropped because the send queue was full ([`MAX_OUTBOX`]).
    pub outbox_dropped: u64,
    /// Events dropped because nobody drained them ([`MAX_EVENTS`]).
    pub events_dropped: u64,
    /// Errors foca returned outside of received data: on a timer, a join, a
    /// leave (should stay zero).
    pub timer_errors: u64,
}

impl MemberStats {
    /// Datagrams rejected for `reason`.
    pub fn rejects(&self, reason: Reject) -> u64 {
        self.rejected[reason.index()]
    }

    /// Datagrams rejected for any reason.
    pub fn rejects_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}
