//! A network's overlay port: the member of its bridge domain that stands for every
//! endpoint on other engines. Its transmit half encapsulates and sends; its receive
//! half only carries the proxy-ARP replies the transmit half made (frames from the
//! underlay enter through the underlay port, stamped with this port as their ingress).

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use mio::{Registry, Token};
use rtrb::{Consumer, Producer, RingBuffer};
use tapnet_vxlan::{Egress, FloodLimit, SOURCE_PORTS, Tables, TxDrop, VXLAN_HEADER_LEN, Vni};
use tapnet_wire::gso::{self, HeaderSink};

use super::published::{Published, Reader};
use super::shared::{OverlayCounters, Senders};
use crate::pool::{BufferPool, HEADROOM, Handle, SizeClass};
use crate::port::{Port, PortCounters, PortInfo, PortKind, PortRx, PortTx, RxSpare, RxStatus};
use crate::runtime::FloodThrottle;
use crate::sys::udp::{MAX_BATCH, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, Outgoing};

/// Proxy-ARP replies that can wait for the rx stage.
const REPLY_RING: usize = 256;

/// One network's overlay port before the engine splits it.
pub(crate) struct OverlayPort {
    info: PortInfo,
    tx: OverlayTx,
    rx: OverlayRx,
}

impl OverlayPort {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vni: Vni,
        mtu: u32,
        tables: Arc<Published<Tables>>,
        senders: Arc<Senders>,
        counters: Arc<OverlayCounters>,
        pool: Arc<BufferPool>,
        flood_rate: u32,
        flood_burst: u32,
    ) -> OverlayPort {
        let (replies_in, replies_out) = RingBuffer::new(REPLY_RING);
        let reader = tables.reader();
        OverlayPort {
            info: PortInfo {
                name: format!("vxlan{}", vni.get()),
                kind: PortKind::Overlay,
                // Superframes and partial checksums come intact: the transmit half
                // segments to the inner MTU itself, each segment's headers written
                // apart and its payload sent from where it lies, and completes
                // checksums (a VXLAN peer takes plain frames).
                offloads: true,
                mtu,
            },
            tx: OverlayTx {
                vni,
                mtu: mtu as usize,
                tables,
                reader,
                senders,
                counters,
                flood: FloodLimit::new(flood_rate, flood_burst),
                replies: replies_in,
                pool: pool.clone(),
                held: Vec::new(),
                heads: Vec::new(),
                out: Vec::new(),
                spans: Vec::new(),
                runs: Vec::new(),
                idx: Vec::new(),
            },
            rx: OverlayRx {
                replies: replies_out,
                pool,
            },
        }
    }
}

impl Port for OverlayPort {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn pool(&self) -> Option<&Arc<BufferPool>> {
        Some(&self.rx.pool)
    }

    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>) {
        (Box::new(self.rx), Box::new(self.tx))
    }
}

/// Receive half: proxy-ARP replies.
struct OverlayRx {
    replies: Consumer<Handle>,
    pool: Arc<BufferPool>,
}

impl PortRx for OverlayRx {
    fn register(&mut self, _: &Registry, _: Token) -> io::Result<bool> {
        Ok(false)
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.replies.is_empty()
    }

    fn recv(
        &mut self,
        pool: &BufferPool,
        _spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus {
        crate::port::recv_ring(&mut self.replies, pool, out, budget, ctr)
    }
}

impl Drop for OverlayRx {
    fn drop(&mut self) {
        while let Ok(h) = self.replies.pop() {
            self.pool.free(h);
        }
    }
}

/// One datagram to send, to which VTEP from which socket: `head` (bytes of
/// [`OverlayTx::heads`], empty for a frame sent whole) followed by `body` (bytes of the
/// frame of held slot `held`).
#[derive(Clone, Copy)]
struct Out {
    held: u32,
    vtep: Ipv4Addr,
    sock: u16,
    /// Datagram length: `head` and `body` together.
    len: u32,
    head: (u32, u32),
    body: (u32, u32),
}

/// [`gso::segment_headers`]'s room for a segment's headers: the VXLAN header and the
/// inner headers back to back in [`OverlayTx::heads`], noted with the payload's range.
struct Heads<'a> {
    vni: Vni,
    heads: &'a mut Vec<u8>,
    /// Per segment: its headers' start and length in `heads`, its payload's range.
    spans: &'a mut Vec<(u32, u32, Range<usize>)>,
}

impl HeaderSink for Heads<'_> {
    fn next_headers(&mut self, len: usize, payload: Range<usize>) -> Option<&mut [u8]> {
        let start = self.heads.len();
        self.heads.resize(start + VXLAN_HEADER_LEN + len, 0);
        let hdr: &mut [u8; VXLAN_HEADER_LEN] = (&mut self.heads[start..start + VXLAN_HEADER_LEN])
            .try_into()
            .ok()?;
        tapnet_vxlan::write_header(hdr, self.vni);
        self.spans
            .push((start as u32, (VXLAN_HEADER_LEN + len) as u32, payload));
        Some(&mut self.heads[start + VXLAN_HEADER_LEN..])
    }
}

/// Transmit half: encapsulation and sends.
struct OverlayTx {
    vni: Vni,
    /// Largest inner IP packet: superframes are segmented to it.
    mtu: usize,
    tables: Arc<Published<Tables>>,
    reader: Reader<Tables>,
    senders: Arc<Senders>,
    counters: Arc<OverlayCounters>,
    flood: FloodLimit,
    replies: Producer<Handle>,
    pool: Arc<BufferPool>,
    /// Slots of this batch being sent (a flooded frame once for all its copies).
    held: Vec<Handle>,
    /// Headers of this batch's segments (VXLAN and inner), whose payloads stay in
    /// their superframes' slots.
    heads: Vec<u8>,
    /// Scratch of `send_policed`: one superframe's segments.
    spans: Vec<(u32, u32, Range<usize>)>,
    out: Vec<Out>,
    /// Scratch of `flush`: runs of one socket's datagrams, and their indices in `out`.
    runs: Vec<(usize, usize, Ipv4Addr)>,
    idx: Vec<usize>,
}

impl OverlayTx {
    fn count(&self, d: TxDrop) {
        let c = &self.counters;
        match d {
            TxDrop::UnknownUnicast => c.drop_unknown_unicast.inc(),
            TxDrop::UnknownVni => c.drop_unknown_vni.inc(),
            TxDrop::NoPeers => c.drop_no_peers.inc(),
            TxDrop::FloodRate => c.drop_flood_rate.inc(),
            TxDrop::Malformed => c.drop_malformed.inc(),
        }
    }

    /// Write the VXLAN header in front of the frame; false if there is no room and no
    /// slot to copy it to.
    fn encap(&self, pool: &BufferPool, h: &mut Handle) -> bool {
        if (pool.meta(h).head as usize) < VXLAN_HEADER_LEN {
            // Frames come after HEADROOM bytes; this one was placed otherwise.
            let Some(c) = pool.alloc_copy(pool.frame(h)) else {
                return false;
            };
            pool.free(std::mem::replace(h, c));
        }
        let p = pool.get_mut(h);
        let head = p.meta.head as usize;
        let hdr: &mut [u8; VXLAN_HEADER_LEN] = (&mut p.slot[head - VXLAN_HEADER_LEN..head])
            .try_into()
            .expect("eight bytes");
        tapnet_vxlan::write_header(hdr, self.vni);
        p.meta.head -= VXLAN_HEADER_LEN as u32;
        p.meta.len += VXLAN_HEADER_LEN as u32;
        true
    }

    /// Which send socket carries `inner`'s flow.
    fn sock_for(&self, inner: &[u8]) -> u16 {
        let n = self.senders.socks.len();
        if n <= 1 {
            return 0;
        }
        (usize::from(tapnet_vxlan::source_port(inner, SOURCE_PORTS)) % n) as u16
    }

    /// Answer an ARP request for a remote endpoint through the rx ring.
    fn proxy_arp(&mut self, pool: &BufferPool, request: &[u8], mac: tapnet_vxlan::MacAddr) {
        let Some(mut r) = pool.alloc(SizeClass::Small) else {
            self.counters.rx_no_buffer.inc();
            return;
        };
        let p = pool.get_mut(&mut r);
        match tapnet_vxlan::arp_reply(request, mac, &mut p.slot[HEADROOM..]) {
            Some(n) => {
                p.meta.head = HEADROOM as u32;
                p.meta.len = n as u32;
            }
            None => {
                self.counters.drop_malformed.inc();
                pool.free(r);
                return;
            }
        }
        match self.replies.push(r) {
            Ok(()) => self.counters.proxy_arp.inc(),
            Err(rtrb::PushError::Full(r)) => {
                self.counters.rx_no_buffer.inc();
                pool.free(r);
            }
        }
    }

    /// Send every queued datagram: per socket, runs of equal-sized datagrams to one VTEP
    /// as one GSO message each, all messages of a socket in as few `sendmmsg` calls as
    /// [`MAX_BATCH`] allows.
    fn flush(&mut self, pool: &BufferPool, ctr: &PortCounters) {
        let nsock = self.senders.socks.len();
        for s in 0..nsock {
            let sock = &self.senders.socks[s];
            let gso = sock.gso();
            // Runs of `out` (indices into it), in order.
            let mut runs = std::mem::take(&mut self.runs);
            let mut idx = std::mem::take(&mut self.idx);
            runs.clear();
            idx.clear();
            for (i, o) in self.out.iter().enumerate() {
                if o.sock as usize == s {
                    idx.push(i);
                }
            }
            if idx.is_empty() {
                self.runs = runs;
                self.idx = idx;
                continue;
            }
            let mut k = 0;
            while k < idx.len() {
                let first = self.out[idx[k]];
                let mut end = k + 1;
                let mut bytes = first.len as usize;
                if gso {
                    while end < idx.len() && end - k < MAX_GSO_SEGMENTS {
                        let o = self.out[idx[end]];
                        let prev = self.out[idx[end - 1]];
                        if o.vtep != first.vtep
                            || prev.len != first.len
                            || o.len > first.len
                            || bytes + o.len as usize > MAX_GSO_BYTES
                        {
                            break;
                        }
                        bytes += o.len as usize;
                        end += 1;
                    }
                }
                runs.push((k, end, first.vtep));
                k = end;
            }
            // Each datagram's iovecs, in order; `at[k]` is where datagram `idx[k]`'s start.
            let mut iovs: Vec<IoSlice<'_>> = Vec::with_capacity(idx.len() * 2);
            let mut at = Vec::with_capacity(idx.len() + 1);
            for &i in &idx {
                at.push(iovs.len());
                let o = &self.out[i];
                if o.head.1 != 0 {
                    let (start, len) = (o.head.0 as usize, o.head.1 as usize);
                    iovs.push(IoSlice::new(&self.heads[start..start + len]));
                }
                let frame = pool.frame(&self.held[o.held as usize]);
                let (start, len) = (o.body.0 as usize, o.body.1 as usize);
                iovs.push(IoSlice::new(&frame[start..start + len]));
            }
            at.push(iovs.len());
            let msgs: Vec<Outgoing<'_>> = runs
                .iter()
                .map(|&(a, b, vtep)| Outgoing {
                    to: SocketAddrV4::new(vtep, self.senders.peer_port),
                    iov: &iovs[at[a]..at[b]],
                    gso_size: if b - a > 1 {
                        self.out[idx[a]].len as u16
                    } else {
                        0
                    },
                })
                .collect();
            // Datagrams and bytes of each message.
            let sizes: Vec<(u64, u64)> = runs
                .iter()
                .map(|&(a, b, _)| {
                    let bytes = idx[a..b].iter().map(|&i| u64::from(self.out[i].len)).sum();
                    ((b - a) as u64, bytes)
                })
                .collect();
            let mut m = 0;
            while m < msgs.len() {
                let chunk = &msgs[m..(m + MAX_BATCH).min(msgs.len())];
                // A failed call sent nothing; its messages count as errors below.
                let sent = sock.send_batch(chunk).unwrap_or_default();
                self.counters.tx_syscalls.inc();
                for (j, msg) in chunk.iter().enumerate() {
                    let (datagrams, bytes) = sizes[m + j];
                    if j < sent {
                        self.counters.tx_datagrams.add(datagrams);
                        self.counters.tx_bytes.add(bytes);
                        if msg.gso_size != 0 {
                            self.counters.tx_gso_messages.inc();
                        }
                        ctr.tx_packets.add(datagrams);
                        ctr.tx_bytes.add(bytes);
                    } else {
                        self.counters.tx_errors.add(datagrams);
                        ctr.tx_queue_full.add(datagrams);
                    }
                }
                if sent < chunk.len() {
                    // The socket's buffer is full: what is left of this socket's batch
                    // is dropped, as a full TAP queue drops.
                    for &(datagrams, _) in &sizes[m + chunk.len()..] {
                        self.counters.tx_errors.add(datagrams);
                        ctr.tx_queue_full.add(datagrams);
                    }
                    break;
                }
                m += chunk.len();
            }
            drop(msgs);
            drop(iovs);
            self.runs = runs;
            self.idx = idx;
        }
    }
}

impl PortTx for OverlayTx {
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters) {
        // Without the workers' clock the replication limit reads no time: the tx
        // stage always calls `send_policed`.
        self.send_policed(pool, batch, ctr, Duration::ZERO, &FloodThrottle::default());
    }

    fn send_policed(
        &mut self,
        pool: &BufferPool,
        batch: &mut Vec<Handle>,
        ctr: &PortCounters,
        now: Duration,
        _throttle: &FloodThrottle,
    ) {
        let tables = self.reader.get(&self.tables).clone();
        self.held.clear();
        self.heads.clear();
        self.out.clear();
        for mut h in batch.drain(..) {
            let target = match tables.egress(self.vni, pool.frame(&h)) {
                Egress::Encap(v) => Target::One(v),
                Egress::Flood(peers) if self.flood.allow(now) => {
                    // Rate-limited: the only allocation here is per replicated frame.
                    self.counters.tx_flood_copies.add(peers.len() as u64);
                    Target::Flood(peers.to_vec())
                }
                Egress::Flood(_) => {
                    self.count(TxDrop::FloodRate);
                    Target::None
                }
                Egress::ProxyArp(mac) => {
                    self.proxy_arp(pool, pool.frame(&h), mac);
                    Target::None
                }
                Egress::Drop(d) => {
                    self.count(d);
                    Target::None
                }
            };
            if matches!(target, Target::None) {
                pool.free(h);
                continue;
            }
            let sock = self.sock_for(pool.frame(&h));
            let vnet = pool.meta(&h).vnet;
            let held = self.held.len() as u32;
            let mut spans = std::mem::take(&mut self.spans);
            spans.clear();
            if vnet.is_gso() {
                // Segments: headers here, payloads where they lie in the superframe.
                let mut sink = Heads {
                    vni: self.vni,
                    heads: &mut self.heads,
                    spans: &mut spans,
                };
                match gso::segment_headers(&vnet, pool.frame(&h), self.mtu, &mut sink) {
                    Ok(_) => ctr.tx_segmented.inc(),
                    Err(e) => {
                        if e.is_bound() {
                            ctr.tx_gso_refused.inc();
                        }
                        ctr.tx_offload_errors.inc();
                        self.spans = spans;
                        pool.free(h);
                        continue;
                    }
                }
            } else {
                if vnet.needs_csum() {
                    let mut p = pool.get_mut(&mut h);
                    if gso::complete_checksum(&vnet, p.frame_mut()).is_err() {
                        ctr.tx_offload_errors.inc();
                        self.spans = spans;
                        pool.free(h);
                        continue;
                    }
                    p.meta.vnet = Default::default();
                }
                if !self.encap(pool, &mut h) {
                    self.counters.drop_no_headroom.inc();
                    self.spans = spans;
                    pool.free(h);
                    continue;
                }
                spans.push((0, 0, 0..pool.meta(&h).len as usize));
            }
            for (start, len, body) in spans.drain(..) {
                let out = |vtep| Out {
                    held,
                    vtep,
                    sock,
                    len: len + body.len() as u32,
                    head: (start, len),
                    body: (body.start as u32, body.len() as u32),
                };
                match &target {
                    Target::One(v) => self.out.push(out(*v)),
                    Target::Flood(peers) => self.out.extend(peers.iter().map(|&v| out(v))),
                    Target::None => {}
                }
            }
            self.spans = spans;
            self.held.push(h);
        }
        if !self.out.is_empty() {
            self.flush(pool, ctr);
        }
        for h in self.held.drain(..) {
            pool.free(h);
        }
    }
}

/// Where one frame goes.
enum Target {
    One(Ipv4Addr),
    Flood(Vec<Ipv4Addr>),
    None,
}

impl Drop for OverlayTx {
    fn drop(&mut self) {
        for h in self.held.drain(..) {
            self.pool.free(h);
        }
    }
}
