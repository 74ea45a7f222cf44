//! The foca `Runtime` of a [`super::Membership`]: queues of datagrams,
//! timers and events, filled while foca runs and drained by the caller.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddrV4;
use std::time::Duration;

use foca::{Notification, Runtime, Timer};

use super::event::{MAX_EVENTS, MAX_OUTBOX, MemberEvent, MemberStats};
use super::id::NodeId;
use super::wire::{self, OP_FOCA, Reject};

/// A foca timer due at `at`; `seq` keeps the order of submission among
/// timers due at the same instant (foca's `Timer` orders by kind only).
#[derive(Debug)]
struct Scheduled {
    at: Duration,
    seq: u64,
    timer: Timer<NodeId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Queues between foca and the caller.
///
/// The timer heap is not capped: foca must see every timer it asked for, and
/// it holds a few periodic timers, one per probe in flight, one per suspect
/// member and one per down member (to forget it), so O(cluster size).
#[derive(Debug, Default)]
pub(super) struct Io {
    pub(super) now: Duration,
    pub(super) outbox: VecDeque<(SocketAddrV4, Vec<u8>)>,
    pub(super) events: VecDeque<MemberEvent>,
    pub(super) stats: MemberStats,
    timers: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
}

impl Io {
    pub(super) fn push_datagram(&mut self, to: SocketAddrV4, bytes: Vec<u8>) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.stats.outbox_dropped += 1;
        } else {
            self.outbox.push_back((to, bytes));
        }
    }

    fn push_event(&mut self, event: MemberEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.timers.peek().map(|t| t.0.at)
    }

    pub(super) fn pop_due(&mut self, now: Duration) -> Option<Timer<NodeId>> {
        if self.timers.peek()?.0.at > now {
            return None;
        }
        self.timers.pop().map(|t| t.0.timer)
    }
}

impl Runtime<NodeId> for Io {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        let event = match notification {
            Notification::MemberUp(id) => MemberEvent::Up(*id),
            Notification::MemberDown(id) => MemberEvent::Down(*id),
            Notification::Rename(old, new) => MemberEvent::Renamed {
                old: *old,
                new: *new,
            },
            Notification::Rejoin(id) => MemberEvent::Rejoined(*id),
            // Our own connection state: Active, Idle, Defunct.
            _ => return,
        };
        self.push_event(event);
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.push_datagram(to.addr, wire::encode(OP_FOCA, data));
    }

    fn submit_after(&mut self, timer: Timer<NodeId>, after: Duration) {
        self.seq += 1;
        self.timers.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            timer,
        }));
    }
}

/// The counter for an error foca returned on received data.
pub(super) fn reject_of(error: foca::Error) -> Reject {
    match error {
        foca::Error::DataTooBig => Reject::Oversized,
        foca::Error::MalformedPacket => Reject::Malformed,
        foca::Error::DataFromOurselves => Reject::FromOurselves,
        foca::Error::Decode(e) => match e.downcast_ref::<postcard::Error>() {
            Some(postcard::Error::DeserializeUnexpectedEnd) => Reject::Truncated,
            _ => Reject::Malformed,
        },
        _ => Reject::Protocol,
    }
}
