//! The rig's simulated underlay: an in-memory [`Underlay`] per site's VTEP. What the
//! VTEP sends waits in its outbox until the rig collects it, puts it on the sending
//! site's underlay link (loss, delay, jitter) and, when it is due, into the inbox of the
//! site whose VTEP has the destination address. Nothing here reads a clock or draws a
//! random number: the rig decides every fate, so the same seed gives the same run.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::link::{DirStats, Direction, Fate};
use super::site_id::SiteId;
use crate::overlay::Underlay;
use crate::sys::udp::{MAX_GSO_SEGMENTS, Outgoing, Received};
use crate::wake::Notifier;

/// One datagram between VTEPs.
pub(super) struct Datagram {
    pub(super) from: SocketAddrV4,
    pub(super) to: SocketAddrV4,
    pub(super) bytes: Vec<u8>,
}

/// One datagram on the underlay, as recorded by the trace ([`Rig::underlay_trace`]).
///
/// [`Rig::underlay_trace`]: super::Rig::underlay_trace
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnderlayEvent {
    /// Simulated time of the event.
    pub at: Duration,
    /// The site whose underlay link it is: the sender's when sent ([`Direction::Up`]),
    /// the receiver's when dropped on arrival ([`Direction::Down`]).
    pub site: SiteId,
    /// Which way it crosses that site's link.
    pub dir: Direction,
    /// The VTEP it was sent to.
    pub to: Ipv4Addr,
    /// UDP payload length (VXLAN header and inner frame).
    pub len: usize,
    /// What happened to it: a datagram to an address no site's VTEP has is recorded as
    /// [`Fate::Lost`] when due (and counted in [`UnderlayStats::unroutable`]).
    pub fate: Fate,
}

/// Counters of a site's underlay link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnderlayStats {
    /// Datagrams the site's VTEP sent: offered to the link, lost, cut, and delivered
    /// (handed to the destination, which counts them again under `received`).
    pub sent: DirStats,
    /// Datagrams that arrived for the site's VTEP: delivered to its inbox, cut, or
    /// dropped because the inbox was full (`overflow`).
    pub received: DirStats,
    /// Datagrams sent to an address no site's VTEP has, or to another port.
    pub unroutable: u64,
}

#[derive(Default)]
struct Queues {
    outbox: Vec<Datagram>,
    inbox: VecDeque<(SocketAddrV4, Vec<u8>)>,
    notifier: Option<Notifier>,
}

/// A site VTEP's end of the simulated underlay (see the module docs).
///
/// Without offloads it takes one datagram per message and gives one per read. With
/// them, as the kernel's UDP GSO and GRO do: a message is split into datagrams of
/// `gso_size` bytes (the last may be shorter), and a read takes, after the first
/// datagram waiting, those of the same sender that follow it in the inbox while they
/// are as long (a shorter one ends the run), up to [`MAX_GSO_SEGMENTS`] and the buffer.
pub(super) struct MemUnderlay {
    local: SocketAddrV4,
    offloads: bool,
    queues: Mutex<Queues>,
}

impl std::fmt::Debug for MemUnderlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("MemUnderlay")
            .field("local", &self.local)
            .field("offloads", &self.offloads)
            .field("outbox", &q.outbox.len())
            .field("inbox", &q.inbox.len())
            .finish()
    }
}

impl MemUnderlay {
    pub(super) fn new(local: SocketAddrV4, offloads: bool) -> MemUnderlay {
        MemUnderlay {
            local,
            offloads,
            queues: Mutex::new(Queues::default()),
        }
    }

    pub(super) fn local(&self) -> SocketAddrV4 {
        self.local
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move what the VTEP sent, in the order it sent it, to `out`.
    pub(super) fn take_sent(&self, out: &mut Vec<Datagram>) {
        out.append(&mut self.lock().outbox);
    }

    /// Queue a datagram from `from` for the VTEP to read; gives it back when `cap`
    /// datagrams wait already.
    pub(super) fn deliver(
        &self,
        from: SocketAddrV4,
        bytes: Vec<u8>,
        cap: usize,
    ) -> Result<(), Vec<u8>> {
        let mut q = self.lock();
        if q.inbox.len() >= cap {
            return Err(bytes);
        }
        q.inbox.push_back((from, bytes));
        if let Some(n) = &q.notifier {
            n.notify();
        }
        Ok(())
    }

    /// Whether datagrams wait to be read.
    pub(super) fn has_inbox(&self) -> bool {
        !self.lock().inbox.is_empty()
    }
}

impl Underlay for MemUnderlay {
    fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.local)
    }

    fn gso(&self) -> bool {
        self.offloads
    }

    fn gro(&self) -> bool {
        self.offloads
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn pending(&self) -> bool {
        self.has_inbox()
    }

    fn set_notifier(&self, notifier: Notifier) {
        self.lock().notifier = Some(notifier);
    }

    fn recv_batch(&self, bufs: &mut [IoSliceMut<'_>], out: &mut [Received]) -> io::Result<usize> {
        let mut q = self.lock();
        let mut n = 0;
        for (buf, r) in bufs.iter_mut().zip(out.iter_mut()) {
            let Some((from, bytes)) = q.inbox.pop_front() else {
                break;
            };
            let mut len = bytes.len().min(buf.len());
            buf[..len].copy_from_slice(&bytes[..len]);
            let truncated = len < bytes.len();
            let size = bytes.len();
            let mut segments = 1;
            while self.offloads && !truncated && size > 0 && segments < MAX_GSO_SEGMENTS {
                let Some((f, next)) = q.inbox.front() else {
                    break;
                };
                if *f != from || next.len() > size || len + next.len() > buf.len() {
                    break;
                }
                let last = next.len() < size;
                buf[len..len + next.len()].copy_from_slice(next);
                len += next.len();
                segments += 1;
                q.inbox.pop_front();
                if last {
                    break;
                }
            }
            *r = Received {
                len,
                from: Some(from),
                gso_size: if segments > 1 { size as u16 } else { 0 },
                truncated,
            };
            n += 1;
        }
        Ok(n)
    }

    fn send_batch(&self, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        let mut q = self.lock();
        for m in msgs {
            let whole: Vec<u8> = m.iov.iter().flat_map(|v| v.iter().copied()).collect();
            let step = if m.gso_size == 0 {
                whole.len().max(1)
            } else {
                usize::from(m.gso_size)
            };
            for chunk in whole.chunks(step) {
                q.outbox.push(Datagram {
                    from: self.local,
                    to: m.to,
                    bytes: chunk.to_vec(),
                });
            }
            if whole.is_empty() {
                q.outbox.push(Datagram {
                    from: self.local,
                    to: m.to,
                    bytes: Vec::new(),
                });
            }
        }
        Ok(msgs.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use super::*;

    fn addr(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, last), 4789)
    }

    #[test]
    fn splits_gso_messages_and_reads_one_datagram_per_buffer() {
        let u = MemUnderlay::new(addr(1), false);
        let a = [1u8; 10];
        let b = [2u8; 10];
        let c = [3u8; 4];
        let iov = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let one = [IoSlice::new(&c)];
        let msgs = [
            Outgoing {
                to: addr(2),
                iov: &iov,
                gso_size: 10,
            },
            Outgoing {
                to: addr(3),
                iov: &one,
                gso_size: 0,
            },
        ];
        assert_eq!(u.send_batch(&msgs).unwrap(), 2);
        let mut sent = Vec::new();
        u.take_sent(&mut sent);
        let lens: Vec<_> = sent.iter().map(|d| (d.to, d.bytes.len())).collect();
        assert_eq!(
            lens,
            [(addr(2), 10), (addr(2), 10), (addr(2), 4), (addr(3), 4)]
        );
        assert!(!u.pending());
        u.deliver(addr(2), vec![7; 6], 2).unwrap();
        u.deliver(addr(3), vec![8; 3], 2).unwrap();
        assert!(u.deliver(addr(3), vec![9], 2).is_err());
        assert!(u.pending());
        let (mut x, mut y) = ([0u8; 4], [0u8; 4]);
        let mut bufs = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
        let mut got = [Received::default(); 2];
        assert_eq!(u.recv_batch(&mut bufs, &mut got).unwrap(), 2);
        assert_eq!((got[0].len, got[0].truncated), (4, true));
        assert_eq!((got[1].len, got[1].truncated), (3, false));
        assert_eq!(got[1].from, Some(addr(3)));
        assert!(!u.pending());
    }

    #[test]
    fn gro_reads_runs_of_one_sender() {
        let u = MemUnderlay::new(addr(1), true);
        for (from, len) in [(2, 10), (2, 10), (2, 4), (2, 10), (3, 10), (3, 10)] {
            u.deliver(addr(from), vec![from; len], 16).unwrap();
        }
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let mut c = [0u8; 64];
        let mut bufs = [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ];
        let mut got = [Received::default(); 3];
        assert_eq!(u.recv_batch(&mut bufs, &mut got).unwrap(), 3);
        let runs: Vec<_> = got.iter().map(|r| (r.from, r.len, r.gso_size)).collect();
        assert_eq!(
            runs,
            [
                (Some(addr(2)), 24, 10),
                (Some(addr(2)), 10, 0),
                (Some(addr(3)), 20, 10)
            ]
        );
        assert!(!u.pending());
    }
}
