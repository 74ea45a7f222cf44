//! The underlay port: reads the VTEP's socket, checks every datagram against the tables
//! and hands the inner frames to the switch as if they had entered through their
//! network's overlay port. It is in no bridge domain and is never sent to.
//!
//! With UDP GRO a read holds a run of datagrams of one sender, `gso_size` bytes each but
//! the last, in one large slot; without it, one datagram per small slot. The inner
//! frames of a run are merged in place into TCP superframes where they are consecutive
//! segments of one flow (`tapnet_wire::gro`); the first frame of a slot stays in it, any
//! other frame of the slot is copied to a slot of its own.

use std::io::{self, IoSliceMut};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tapnet_vxlan::{Ingress, RxDrop, Tables};
use tapnet_wire::VnetHdr;
use tapnet_wire::gro::{Frame, merge_in_place};

use super::io::Underlay;
use super::published::{Published, Reader};
use super::shared::OverlayCounters;
use crate::pool::{BufferPool, HEADROOM, Handle, SizeClass};
use crate::port::{Port, PortCounters, PortInfo, PortKind, PortRx, PortTx, RxSpare, RxStatus};
use crate::sys::udp::{MAX_BATCH, MAX_GSO_SEGMENTS, Received};

/// Large slots one GRO read fills at most (each up to 64 KiB of datagrams).
const GRO_BATCH: usize = 8;

/// The engine's underlay port before the engine splits it.
pub(crate) struct UnderlayPort {
    rx: UnderlayRx,
}

impl UnderlayPort {
    pub(crate) fn new(
        sock: Arc<dyn Underlay>,
        tables: Arc<Published<Tables>>,
        counters: Arc<OverlayCounters>,
        pool: Arc<BufferPool>,
        merge: bool,
    ) -> UnderlayPort {
        let reader = tables.reader();
        UnderlayPort {
            rx: UnderlayRx {
                sock,
                tables,
                reader,
                counters,
                pool,
                merge,
                slots: Vec::new(),
                read: Vec::new(),
                got: vec![Received::default(); MAX_BATCH],
                inner: Vec::new(),
                ranges: Vec::new(),
                frames: Vec::new(),
                out_frames: Vec::new(),
            },
        }
    }
}

impl Port for UnderlayPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            name: format!(
                "underlay-{}",
                self.rx
                    .sock
                    .local_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string())
            ),
            kind: PortKind::Overlay,
            offloads: true,
            mtu: 65_535,
        }
    }

    fn pool(&self) -> Option<&Arc<BufferPool>> {
        Some(&self.rx.pool)
    }

    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>) {
        (Box::new(self.rx), Box::new(NoTx))
    }
}

/// The underlay port is sent nothing; whatever reaches it is given back.
struct NoTx;

impl PortTx for NoTx {
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters) {
        for h in batch.drain(..) {
            ctr.tx_errors.inc();
            pool.free(h);
        }
    }
}

struct UnderlayRx {
    sock: Arc<dyn Underlay>,
    tables: Arc<Published<Tables>>,
    reader: Reader<Tables>,
    counters: Arc<OverlayCounters>,
    pool: Arc<BufferPool>,
    merge: bool,
    slots: Vec<Handle>,
    read: Vec<Handle>,
    got: Vec<Received>,
    /// Inner frames of the slot at hand: overlay port and range in the slot.
    inner: Vec<(u32, Range<usize>)>,
    /// Scratch of `take`, kept so that a read allocates nothing.
    ranges: Vec<Range<usize>>,
    frames: Vec<Frame>,
    out_frames: Vec<(u32, Frame)>,
}

impl UnderlayRx {
    fn count(&self, d: RxDrop) {
        let c = &self.counters;
        match d {
            RxDrop::Short => c.drop_short.inc(),
            RxDrop::NoVniFlag => c.drop_no_vni_flag.inc(),
            RxDrop::InnerTruncated => c.drop_inner_truncated.inc(),
            RxDrop::InnerVlan => c.drop_inner_vlan.inc(),
            RxDrop::UnknownVni => c.drop_unknown_vni.inc(),
            RxDrop::UnknownVtep => c.drop_unknown_vtep.inc(),
            RxDrop::SpoofedSource => c.drop_spoofed_source.inc(),
        }
    }

    /// Turn one read (slot `h`, what `r` says of it) into frames on `out`.
    fn take(
        &mut self,
        tables: &Tables,
        pool: &BufferPool,
        mut h: Handle,
        r: Received,
        out: &mut Vec<Handle>,
        ctr: &PortCounters,
    ) {
        let c = &self.counters;
        if r.truncated {
            c.rx_truncated.inc();
            pool.free(h);
            return;
        }
        let Some(from) = r.from else {
            c.drop_unknown_vtep.inc();
            pool.free(h);
            return;
        };
        let from: Ipv4Addr = *from.ip();
        let step = if r.gso_size == 0 {
            r.len.max(1)
        } else {
            r.gso_size as usize
        };
        self.inner.clear();
        {
            let slot = &pool.get_mut(&mut h).slot[HEADROOM..HEADROOM + r.len];
            let mut at = 0;
            while at < r.len {
                let end = (at + step).min(r.len);
                c.rx_datagrams.inc();
                c.rx_bytes.add((end - at) as u64);
                match tables.ingress(from, &slot[at..end]) {
                    Ingress::Local { port, inner, .. } => self
                        .inner
                        .push((port, HEADROOM + at + inner.start..HEADROOM + at + inner.end)),
                    Ingress::Drop(d) => self.count(d),
                }
                at = end;
            }
        }
        if self.inner.is_empty() {
            pool.free(h);
            return;
        }
        // Frames of the slot with their overlay port, merged per run of one port.
        let mut frames = std::mem::take(&mut self.out_frames);
        frames.clear();
        let mut k = 0;
        while k < self.inner.len() {
            let port = self.inner[k].0;
            let mut end = k + 1;
            while end < self.inner.len() && self.inner[end].0 == port {
                end += 1;
            }
            if self.merge && end - k > 1 {
                self.ranges.clear();
                self.ranges
                    .extend(self.inner[k..end].iter().map(|(_, r)| r.clone()));
                self.frames.clear();
                let merged = merge_in_place(
                    pool.get_mut(&mut h).slot,
                    &self.ranges,
                    MAX_GSO_SEGMENTS,
                    &mut self.frames,
                );
                c.rx_merged.add(merged as u64);
                frames.extend(self.frames.drain(..).map(|f| (port, f)));
            } else {
                frames.extend(self.inner[k..end].iter().map(|(p, r)| {
                    (
                        *p,
                        Frame {
                            range: r.clone(),
                            vnet: VnetHdr::default(),
                        },
                    )
                }));
            }
            k = end;
        }
        // A large slot whose first frame is MTU-sized (datagrams the sender's kernel
        // did not batch, or nothing to merge) is not handed on: its frames are copied
        // to small slots and it is kept for the next read, so that a stream of single
        // datagrams does not hold one of the pool's few large slots each.
        if frames.is_empty() {
            // Not reached: every range given to the merge lies in the slot.
            self.out_frames = frames;
            pool.free(h);
            return;
        }
        let recycle = h.class() == SizeClass::Large
            && frames[0].1.range.len() <= pool.frame_capacity(SizeClass::Small);
        // Otherwise the first frame stays in the slot; every other leaves in a slot of
        // its own, after it (the order the datagrams came in).
        let mut kept = None;
        let (first, at) = if recycle {
            kept = Some(h);
            (0, None)
        } else {
            let (port, f) = &frames[0];
            let m = pool.get_mut(&mut h).meta;
            m.head = f.range.start as u32;
            m.len = f.range.len() as u32;
            m.vnet = f.vnet;
            m.in_port = *port;
            ctr.rx_packets.inc();
            ctr.rx_bytes.add(f.range.len() as u64);
            out.push(h);
            (1, Some(out.len() - 1))
        };
        for (port, f) in &frames[first..] {
            let copy = {
                let src = match (&mut kept, at) {
                    (Some(k), _) => k,
                    (None, Some(i)) => &mut out[i],
                    (None, None) => unreachable!("a slot is kept or handed on"),
                };
                let slot = &pool.get_mut(src).slot;
                pool.alloc_copy(&slot[f.range.clone()])
            };
            match copy {
                Some(mut n) => {
                    let m = pool.get_mut(&mut n).meta;
                    m.vnet = f.vnet;
                    m.in_port = *port;
                    ctr.rx_packets.inc();
                    ctr.rx_bytes.add(f.range.len() as u64);
                    out.push(n);
                }
                None => c.rx_no_buffer.inc(),
            }
        }
        c.rx_frames.add(frames.len() as u64);
        self.out_frames = frames;
        if let Some(k) = kept {
            self.slots.push(k);
        }
    }
}

impl PortRx for UnderlayRx {
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<bool> {
        match self.sock.raw_fd() {
            Some(fd) => {
                registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self.sock.raw_fd() {
            Some(fd) => registry.deregister(&mut SourceFd(&fd)),
            None => Ok(()),
        }
    }

    fn pending(&self) -> bool {
        self.sock.pending()
    }

    fn set_notifier(&mut self, notifier: crate::wake::Notifier) {
        self.sock.set_notifier(notifier);
    }

    fn stamps_in_port(&self) -> bool {
        true
    }

    fn recv(
        &mut self,
        pool: &BufferPool,
        _spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus {
        let tables = self.reader.get(&self.tables).clone();
        let (class, per_read) = if self.sock.gro() {
            (SizeClass::Large, GRO_BATCH)
        } else {
            (SizeClass::Small, MAX_BATCH)
        };
        let mut taken = 0;
        while taken < budget {
            let want = per_read.min(budget - taken);
            while self.slots.len() < want {
                match pool.alloc(class) {
                    Some(h) => self.slots.push(h),
                    None => break,
                }
            }
            if self.slots.is_empty() {
                self.counters.rx_no_buffer.inc();
                return RxStatus::More;
            }
            let n = self.slots.len();
            let got = {
                let mut bufs: Vec<IoSliceMut<'_>> = Vec::with_capacity(n);
                // Each slot is borrowed once, mutably, for the read.
                let mut rest: &mut [Handle] = &mut self.slots;
                while let Some((h, tail)) = rest.split_first_mut() {
                    let crate::pool::PacketMut { slot, .. } = pool.get_mut(h);
                    bufs.push(IoSliceMut::new(&mut slot[HEADROOM..]));
                    rest = tail;
                }
                self.sock.recv_batch(&mut bufs, &mut self.got)
            };
            let got = match got {
                Ok(g) => g,
                Err(_) => {
                    self.counters.rx_errors.inc();
                    ctr.rx_errors.inc();
                    return RxStatus::Drained;
                }
            };
            if got == 0 {
                return RxStatus::Drained;
            }
            self.counters.rx_syscalls.inc();
            // The read slots are the first `got`; the rest wait for the next read.
            let mut read = std::mem::take(&mut self.read);
            read.extend(self.slots.drain(..got));
            for (i, h) in read.drain(..).enumerate() {
                let r = self.got[i];
                self.take(&tables, pool, h, r, out, ctr);
            }
            self.read = read;
            taken += got;
            if got < n {
                return RxStatus::Drained;
            }
        }
        RxStatus::More
    }
}

impl Drop for UnderlayRx {
    fn drop(&mut self) {
        for h in self.slots.drain(..) {
            self.pool.free(h);
        }
    }
}
