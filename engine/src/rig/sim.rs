//! The simulated clock and the movement of frames: hosts ↔ links ↔ engine.

use std::time::Duration;

use smoltcp::iface::PollResult;

use super::host::Host;
use super::host_id::HostId;
use super::link::{Digest, Direction, Fate, LinkEvent};
use super::time::{duration, instant};
use super::{Rig, RigError};

/// Most `Interface::poll` calls per host per step (each sends at most one segment per
/// socket, so this bounds a host's burst per tick).
const POLL_BUDGET: usize = 512;
/// Most engine passes per step.
const ENGINE_BUDGET: usize = 64;
/// Bytes of each frame folded into the digest.
const DIGEST_HEAD: usize = 64;

/// Where link events go: the digest always, the trace when it is on.
struct Recorder<'a> {
    digest: &'a mut Digest,
    trace: &'a mut Option<Vec<LinkEvent>>,
    now: Duration,
}

impl Recorder<'_> {
    /// Fold an event, and the head of its frame, into the digest and the trace.
    fn record(&mut self, host: usize, dir: Direction, len: usize, head: &[u8], fate: Fate) {
        let ev = LinkEvent {
            at: self.now,
            host: HostId(host),
            dir,
            len,
            fate,
        };
        let d = &mut *self.digest;
        d.u64(ev.at.as_nanos() as u64);
        d.u64(host as u64);
        d.u64(dir as u64);
        d.u64(len as u64);
        d.u64(match fate {
            Fate::Queued { due } => due.as_nanos() as u64,
            Fate::Lost => u64::MAX,
            Fate::Cut => u64::MAX - 1,
            Fate::Overflow => u64::MAX - 2,
        });
        // Headers carry the addresses, sequence numbers and checksums: enough to tell
        // runs apart without hashing every payload byte.
        d.bytes(&head[..head.len().min(DIGEST_HEAD)]);
        if let Some(t) = self.trace {
            t.push(ev);
        }
    }
}

impl Rig {
    /// Step (skipping idle time) until `app` returns true or fails, or `deadline`
    /// passes. `app` runs before the first step and after each one.
    pub(super) fn drive(
        &mut self,
        deadline: Duration,
        mut app: impl FnMut(&mut Rig) -> Result<bool, RigError>,
    ) -> Result<bool, RigError> {
        loop {
            if app(self)? {
                return Ok(true);
            }
            if self.now >= deadline {
                return Ok(false);
            }
            self.advance(deadline);
        }
    }

    /// One step, after skipping idle time up to the next event (never past `deadline`).
    fn advance(&mut self, deadline: Duration) {
        let next = self.now + self.cfg.tick;
        let mut target = next;
        if self.quiescent() {
            let event = self.next_event().unwrap_or(deadline);
            target = target.max(event.min(deadline));
        }
        self.now = target;
        self.run_at();
    }

    /// True when no frame waits in any queue but the links' (whose arrivals are timed).
    fn quiescent(&self) -> bool {
        self.engine_idle
            && self
                .hosts
                .iter()
                .all(|h| h.dev.rx.is_empty() && h.dev.tx.is_empty())
    }

    /// The earliest time something is scheduled: a smoltcp timer, a frame's arrival, a
    /// caller's wake-up.
    fn next_event(&mut self) -> Option<Duration> {
        let now = self.now;
        while self.wakes.first().is_some_and(|&w| w <= now) {
            self.wakes.pop_first();
        }
        let mut next = self.wakes.first().copied();
        let mut earliest = |t: Option<Duration>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for h in &mut self.hosts {
            earliest(h.iface.poll_at(instant(now), &h.sockets).map(duration));
            earliest(h.up.next_due());
            earliest(h.down.next_due());
        }
        next
    }

    /// Everything that happens at `self.now`: arrivals, the hosts' stacks, the engine.
    pub(super) fn run_at(&mut self) {
        let now = self.now;
        let at = instant(now);
        let Rig {
            cfg,
            engine,
            rng,
            hosts,
            digest,
            trace,
            ..
        } = self;
        let mut rec = Recorder { digest, trace, now };
        let queue = cfg.host_queue;
        for (i, h) in hosts.iter_mut().enumerate() {
            deliver_down(i, h, queue, &mut rec);
        }
        for (i, h) in hosts.iter_mut().enumerate() {
            h.dev.reclaim();
            for _ in 0..POLL_BUDGET {
                if h.iface.poll(at, &mut h.dev, &mut h.sockets) == PollResult::None {
                    break;
                }
            }
            let mut sent = std::mem::take(&mut h.dev.tx);
            for frame in sent.drain(..) {
                let head = Head::of(&frame);
                let (fate, dropped) = h.up.offer(frame, now, &h.faults, h.cut, rng);
                rec.record(i, Direction::Up, head.len, head.bytes(), fate);
                if let Some(b) = dropped {
                    h.dev.recycle(b);
                }
            }
            h.dev.tx = sent;
        }
        for (i, h) in hosts.iter_mut().enumerate() {
            while let Some(frame) = h.up.pop_due(now) {
                if h.cut {
                    h.up.stats.cut += 1;
                    rec.record(i, Direction::Up, frame.len(), &frame, Fate::Cut);
                } else if h.peer.send(&frame) {
                    h.up.stats.delivered += 1;
                    h.up.stats.delivered_bytes += frame.len() as u64;
                } else {
                    h.up.stats.overflow += 1;
                    rec.record(i, Direction::Up, frame.len(), &frame, Fate::Overflow);
                }
                h.dev.recycle(frame);
            }
        }
        let mut idle = false;
        for _ in 0..ENGINE_BUDGET {
            if engine.step(now) == 0 {
                idle = true;
                break;
            }
        }
        for (i, h) in hosts.iter_mut().enumerate() {
            let mut frame = h.dev.buffer();
            while h.peer.recv(&mut frame) {
                let head = Head::of(&frame);
                let (fate, dropped) = h.down.offer(frame, now, &h.faults, h.cut, rng);
                rec.record(i, Direction::Down, head.len, head.bytes(), fate);
                frame = dropped.unwrap_or_else(|| h.dev.buffer());
            }
            h.dev.recycle(frame);
            deliver_down(i, h, queue, &mut rec);
        }
        self.engine_idle = idle;
    }
}

/// The first bytes of a frame and its length, kept for the recorder after the frame
/// itself has moved into a link.
struct Head {
    bytes: [u8; DIGEST_HEAD],
    len: usize,
}

impl Head {
    fn of(frame: &[u8]) -> Head {
        let mut bytes = [0u8; DIGEST_HEAD];
        let n = frame.len().min(DIGEST_HEAD);
        bytes[..n].copy_from_slice(&frame[..n]);
        Head {
            bytes,
            len: frame.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len.min(DIGEST_HEAD)]
    }
}

/// Hand the frames due on a host's downlink to its stack.
fn deliver_down(i: usize, h: &mut Host, queue: usize, rec: &mut Recorder<'_>) {
    while let Some(frame) = h.down.pop_due(rec.now) {
        let drop = if h.cut {
            h.down.stats.cut += 1;
            Some(Fate::Cut)
        } else if h.dev.rx.len() >= queue {
            h.down.stats.overflow += 1;
            Some(Fate::Overflow)
        } else {
            None
        };
        match drop {
            Some(fate) => {
                rec.record(i, Direction::Down, frame.len(), &frame, fate);
                h.dev.recycle(frame);
            }
            None => {
                h.down.stats.delivered += 1;
                h.down.stats.delivered_bytes += frame.len() as u64;
                h.snoop(&frame);
                h.dev.rx.push_back(frame);
            }
        }
    }
}
