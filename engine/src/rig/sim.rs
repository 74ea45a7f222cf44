//! The simulated clock and the movement of frames: hosts ↔ links ↔ engines, and
//! between engines, VTEP ↔ underlay links ↔ VTEP.

use std::time::Duration;

use smoltcp::iface::PollResult;

use super::host::Host;
use super::host_id::HostId;
use super::link::{Digest, Direction, Fate, LinkEvent};
use super::site::{Site, route};
use super::site_id::SiteId;
use super::time::{duration, instant};
use super::underlay::{Datagram, UnderlayEvent};
use super::{Rig, RigError};

/// Most `Interface::poll` calls per host per step (each sends at most one segment per
/// socket, so this bounds a host's burst per tick).
const POLL_BUDGET: usize = 512;
/// Most engine passes per step.
const ENGINE_BUDGET: usize = 64;
/// Bytes of each frame folded into the digest.
const DIGEST_HEAD: usize = 64;
/// Most rounds of engines ↔ underlay per step: datagrams due at once (on a link
/// without delay) reach the next engine in the same step, a reply the step after.
const UNDERLAY_ROUNDS: usize = 4;
/// Folded into the digest before each underlay event, so it cannot read as a link event.
const UNDERLAY_TAG: u64 = 0x756e_6465_726c_6179;

/// Where link events go: the digest always, the trace when it is on.
struct Recorder<'a> {
    digest: &'a mut Digest,
    trace: &'a mut Option<Vec<LinkEvent>>,
    underlay_trace: &'a mut Option<Vec<UnderlayEvent>>,
    now: Duration,
}

fn fate_code(fate: Fate) -> u64 {
    match fate {
        Fate::Queued { due } => due.as_nanos() as u64,
        Fate::Lost => u64::MAX,
        Fate::Cut => u64::MAX - 1,
        Fate::Overflow => u64::MAX - 2,
    }
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
        d.u64(fate_code(fate));
        // Headers carry the addresses, sequence numbers and checksums: enough to tell
        // runs apart without hashing every payload byte.
        d.bytes(&head[..head.len().min(DIGEST_HEAD)]);
        if let Some(t) = self.trace {
            t.push(ev);
        }
    }

    /// Fold an underlay event, and the head of its datagram, into the digest and the
    /// underlay trace.
    fn record_underlay(&mut self, site: usize, dir: Direction, dg: &Datagram, fate: Fate) {
        self.record_sent(site, dir, dg.to, &Head::of(&dg.bytes), fate);
    }

    /// As [`Recorder::record_underlay`], from the head of a datagram that has moved on.
    fn record_sent(
        &mut self,
        site: usize,
        dir: Direction,
        to: std::net::SocketAddrV4,
        head: &Head,
        fate: Fate,
    ) {
        let d = &mut *self.digest;
        d.u64(UNDERLAY_TAG);
        d.u64(self.now.as_nanos() as u64);
        d.u64(site as u64);
        d.u64(dir as u64);
        d.u64((u64::from(u32::from(*to.ip())) << 16) | u64::from(to.port()));
        d.u64(head.len as u64);
        d.u64(fate_code(fate));
        d.bytes(head.bytes());
        if let Some(t) = self.underlay_trace {
            t.push(UnderlayEvent {
                at: self.now,
                site: SiteId(site),
                dir,
                to: *to.ip(),
                len: head.len,
                fate,
            });
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
        for s in &self.sites {
            earliest(s.up.next_due());
        }
        next
    }

    /// Everything that happens at `self.now`: arrivals, the hosts' stacks, the engine.
    pub(super) fn run_at(&mut self) {
        let now = self.now;
        let at = instant(now);
        let Rig {
            cfg,
            sites,
            rng,
            hosts,
            digest,
            trace,
            underlay_trace,
            ..
        } = self;
        let mut rec = Recorder {
            digest,
            trace,
            underlay_trace,
            now,
        };
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
        let mut sent = Vec::new();
        for _ in 0..UNDERLAY_ROUNDS {
            for s in sites.iter_mut() {
                s.idle = false;
                for _ in 0..ENGINE_BUDGET {
                    if s.engine.step(now) == 0 {
                        s.idle = true;
                        break;
                    }
                }
            }
            if !underlay_send(sites, &mut sent, cfg.port_capacity, rng, &mut rec) {
                break;
            }
        }
        let idle = sites.iter().all(|s| s.idle && !s.inbox_pending());
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

/// Put what every site's VTEP sent on its underlay link, then hand the datagrams due
/// to their destinations' inboxes; returns whether any was handed over (the engines then
/// have work).
fn underlay_send(
    sites: &mut [Site],
    sent: &mut Vec<Datagram>,
    inbox: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
    rec: &mut Recorder<'_>,
) -> bool {
    let now = rec.now;
    for (i, s) in sites.iter_mut().enumerate() {
        let Some(v) = &s.vtep else { continue };
        v.mem.take_sent(sent);
        for dg in sent.drain(..) {
            let (to, head) = (dg.to, Head::of(&dg.bytes));
            let (fate, _) = s.up.offer(dg, now, &s.faults, s.cut, rng);
            rec.record_sent(i, Direction::Up, to, &head, fate);
        }
    }
    let mut handed = false;
    for i in 0..sites.len() {
        while let Some(dg) = sites[i].up.pop_due(now) {
            if sites[i].cut {
                sites[i].up.stats.cut += 1;
                rec.record_underlay(i, Direction::Up, &dg, Fate::Cut);
                continue;
            }
            let Some(j) = route(sites, dg.to) else {
                sites[i].unroutable += 1;
                rec.record_underlay(i, Direction::Up, &dg, Fate::Lost);
                continue;
            };
            sites[i].up.stats.delivered += 1;
            sites[i].up.stats.delivered_bytes += dg.bytes.len() as u64;
            let dst = &mut sites[j];
            dst.down.offered += 1;
            if dst.cut {
                dst.down.cut += 1;
                rec.record_underlay(j, Direction::Down, &dg, Fate::Cut);
                continue;
            }
            let Some(v) = &dst.vtep else { continue };
            let len = dg.bytes.len();
            match v.mem.deliver(dg.from, dg.bytes, inbox) {
                Ok(()) => {
                    dst.down.delivered += 1;
                    dst.down.delivered_bytes += len as u64;
                    handed = true;
                }
                Err(bytes) => {
                    dst.down.overflow += 1;
                    let dg = Datagram { bytes, ..dg };
                    rec.record_underlay(j, Direction::Down, &dg, Fate::Overflow);
                }
            }
        }
    }
    handed
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
