//! The network's gateway as an in-process port.
//!
//! The engine owns each bridge network's gateway address (ARP, ICMP echo; later DNS and
//! NAT). Rather than a special case in the switch, the gateway is one more port of the
//! domain, attached with [`PortRole::Gateway`](tapnet_switch::PortRole::Gateway) through
//! [`Engine::add_gateway_port`](crate::Engine::add_gateway_port) so that an `icc=false`
//! network still reaches it:
//!
//! ```text
//!  switch ──▶ tx stage ──▶ GatewayTx::send ── Gateway::handle ──▶ reply slot
//!                                                                    │ rtrb SPSC ring
//!  switch ◀── rx stage ◀── GatewayRx::recv ◀─────────────────────────┘
//! ```
//!
//! The transmit half runs [`tapnet_nat::Gateway::handle`] inline, on the tx stage's
//! thread, for every frame the switch sends it, and writes each reply straight into a
//! fresh pool slot. The receive half hands those slots to the rx stage, which polls it
//! (no file descriptor). The port advertises no offloads, so the tx stage completes
//! checksums and segments superframes before the gateway sees them.
//!
//! Counters: `tx_*` count the frames given to the gateway; `rx_*` the replies coming
//! back; a reply that found the pool empty is `rx_no_buffer`, one that found the ring
//! full is `tx_queue_full`. What the gateway made of each frame is in its own
//! [`GatewayCounters`], which [`GatewayHandle`] reads.
//!
//! A routing gateway port applies its network's DNS rate limit before a query leaves
//! the worker (the relay applies the same limit again, over UDP and TCP): a UDP query to
//! the gateway address over its asker's rate is dropped here, counted in the network's
//! `DnsCounters::rate_limited`, and the port it came from is throttled like a port over
//! its flood rate ([`PortTx::send_policed`]), so that the rest of a flood waits, and is
//! dropped, in the flooder's own queue rather than costing every other network's
//! queries their turn.

use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mio::{Registry, Token};
use rtrb::{Consumer, Producer, RingBuffer};
use tapnet_nat::dns::{DnsCounters, Limiter};
use tapnet_nat::{Gateway, GatewayConfig, GatewayCounters, GatewayCountersSnapshot, Outcome};
use tapnet_switch::PortId;

use super::{Port, PortCounters, PortInfo, PortKind, PortRx, PortTx, RxSpare, RxStatus};
use crate::pool::{BufferPool, HEADROOM, Handle, SizeClass};
use crate::runtime::FloodThrottle;

/// Replies that can wait for the rx stage. The gateway answers at most one reply per
/// frame, and the tx stage hands it at most one batch per pass.
pub const RING_CAPACITY: usize = 1024;

/// Engine end of a network's gateway (see the module docs).
pub struct GatewayPort {
    info: PortInfo,
    gateway: Gateway,
    pool: Arc<BufferPool>,
    to_engine: Producer<Handle>,
    from_gateway: Consumer<Handle>,
    uplink: Option<Uplink>,
}

/// The rings between a gateway port and the host thread that relays its routed frames
/// (`crate::hostnet`).
pub(crate) struct Uplink {
    /// Routed frames, engine → host thread.
    pub(crate) to_host: Producer<Handle>,
    /// Frames from the relay, host thread → engine.
    pub(crate) from_host: Consumer<Handle>,
    /// Wakes the host thread.
    pub(crate) wake_host: Arc<mio::Waker>,
    /// Set by the engine when the port is attached; the host thread rings it after
    /// queuing frames.
    pub(crate) notifier: Arc<OnceLock<crate::wake::Notifier>>,
    /// The network's DNS rate limit, applied before a query goes up (none: not here).
    pub(crate) dns_limit: Option<DnsLimit>,
}

/// A network's DNS rate limit as the gateway port applies it: per asker address,
/// `rate` queries per second with bursts of `burst` (`rate` 0: no limit), drops counted
/// in the network's DNS counters.
pub(crate) struct DnsLimit {
    /// Queries per second per asker.
    pub(crate) rate: u32,
    /// The burst above `rate`.
    pub(crate) burst: u32,
    /// The network's DNS counters (`rate_limited`).
    pub(crate) counters: Arc<DnsCounters>,
}

/// The DNS rate limit of a gateway port's transmit half.
struct DnsGuard {
    /// The gateway address (queries are UDP to it, port 53).
    gw: Ipv4Addr,
    limiter: Limiter,
    counters: Arc<DnsCounters>,
}

/// What the control plane keeps of a [`GatewayPort`] once the engine owns it: its
/// configuration and its counters.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    config: GatewayConfig,
    counters: Arc<GatewayCounters>,
}

impl GatewayHandle {
    /// The gateway's MAC, address, prefix and internal flag.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The live counters (written by the engine's tx stage, readable here any time).
    pub fn counters(&self) -> &GatewayCounters {
        &self.counters
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> GatewayCountersSnapshot {
        self.counters.snapshot()
    }
}

impl GatewayPort {
    /// A gateway port answering for `cfg`. `pool` must be the engine's
    /// ([`Engine::pool`](crate::Engine::pool)): replies are written into its slots.
    /// `mtu` is the network's.
    pub fn new(
        cfg: GatewayConfig,
        pool: Arc<BufferPool>,
        mtu: u32,
    ) -> (GatewayPort, GatewayHandle) {
        Self::build(Gateway::new(cfg), pool, mtu, None)
    }

    /// A gateway port that also routes: frames the gateway forwards go to the host
    /// thread over `uplink`, and what the relay sends back enters here. It takes
    /// superframes and partial checksums as they are (the relay handles them). On an
    /// internal network only DNS to the gateway address goes up
    /// ([`Gateway::with_relay`]).
    pub(crate) fn with_uplink(
        cfg: GatewayConfig,
        pool: Arc<BufferPool>,
        mtu: u32,
        uplink: Uplink,
    ) -> (GatewayPort, GatewayHandle) {
        Self::build(Gateway::with_relay(cfg), pool, mtu, Some(uplink))
    }

    fn build(
        gateway: Gateway,
        pool: Arc<BufferPool>,
        mtu: u32,
        uplink: Option<Uplink>,
    ) -> (GatewayPort, GatewayHandle) {
        let cfg = *gateway.config();
        let handle = GatewayHandle {
            config: *gateway.config(),
            counters: gateway.counters(),
        };
        let (to_engine, from_gateway) = RingBuffer::new(RING_CAPACITY);
        let info = PortInfo {
            name: format!("gateway-{}", cfg.ip),
            // In process, like a memory port. (A `PortKind::Gateway` would need an arm in
            // every exhaustive match on the kind, the daemon's stats included.)
            kind: PortKind::Memory,
            offloads: uplink.is_some(),
            mtu,
        };
        (
            GatewayPort {
                info,
                gateway,
                pool,
                to_engine,
                from_gateway,
                uplink,
            },
            handle,
        )
    }
}

impl Port for GatewayPort {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn pool(&self) -> Option<&Arc<BufferPool>> {
        Some(&self.pool)
    }

    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>) {
        let GatewayPort {
            gateway,
            pool,
            to_engine,
            from_gateway,
            uplink,
            ..
        } = *self;
        let gw = gateway.config().ip;
        let (up_tx, up_rx, dns) = match uplink {
            Some(u) => (
                Some((u.to_host, u.wake_host)),
                Some((u.from_host, u.notifier)),
                u.dns_limit.filter(|l| l.rate > 0).map(|l| DnsGuard {
                    gw,
                    limiter: Limiter::new(l.rate, l.burst),
                    counters: l.counters,
                }),
            ),
            None => (None, None, None),
        };
        (
            Box::new(GatewayRx {
                replies: from_gateway,
                from_host: up_rx,
                pool: pool.clone(),
            }),
            Box::new(GatewayTx {
                gateway,
                replies: to_engine,
                to_host: up_tx,
                dns,
                spare: None,
                pool,
            }),
        )
    }
}

/// Replies, gateway → engine.
struct GatewayRx {
    replies: Consumer<Handle>,
    /// The relay's frames, and where the engine's notifier goes for the host thread.
    from_host: Option<(Consumer<Handle>, Arc<OnceLock<crate::wake::Notifier>>)>,
    /// To free replies nobody read when the port goes away.
    pool: Arc<BufferPool>,
}

/// Frames, engine → gateway, answered inline.
struct GatewayTx {
    gateway: Gateway,
    replies: Producer<Handle>,
    /// Routed frames to the host thread, and its doorbell.
    to_host: Option<(Producer<Handle>, Arc<mio::Waker>)>,
    /// The network's DNS rate limit, applied to queries before they go up.
    dns: Option<DnsGuard>,
    /// A small slot that the last frame did not need for a reply, kept for the next:
    /// most frames a gateway sees (floods, ARP for others) get none.
    spare: Option<Handle>,
    /// To free the spare when the port goes away.
    pool: Arc<BufferPool>,
}

impl PortRx for GatewayRx {
    fn register(&mut self, _: &Registry, _: Token) -> io::Result<bool> {
        Ok(false)
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.replies.is_empty() || self.from_host.as_ref().is_some_and(|(c, _)| !c.is_empty())
    }

    fn set_notifier(&mut self, notifier: crate::wake::Notifier) {
        if let Some((_, slot)) = &self.from_host {
            let _ = slot.set(notifier);
        }
    }

    fn recv(
        &mut self,
        pool: &BufferPool,
        _spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus {
        let before = out.len();
        let st = super::recv_ring(&mut self.replies, pool, out, budget, ctr);
        let left = budget - (out.len() - before);
        match &mut self.from_host {
            Some((ring, _)) if left > 0 => {
                let st2 = super::recv_ring(ring, pool, out, left, ctr);
                if st == RxStatus::More { st } else { st2 }
            }
            Some((ring, _)) if !ring.is_empty() => RxStatus::More,
            _ => st,
        }
    }
}

impl Drop for GatewayRx {
    fn drop(&mut self) {
        while let Ok(h) = self.replies.pop() {
            self.pool.free(h);
        }
        if let Some((ring, _)) = &mut self.from_host {
            while let Ok(h) = ring.pop() {
                self.pool.free(h);
            }
        }
    }
}

impl GatewayTx {
    /// A slot big enough for a reply to a frame of `len` bytes (replies are never longer
    /// than what they answer), if the pool has one.
    fn slot_for(&mut self, pool: &BufferPool, len: usize) -> Option<Handle> {
        match pool.class_for(len) {
            Some(SizeClass::Large) => pool.alloc(SizeClass::Large),
            _ => self.spare.take().or_else(|| pool.alloc(SizeClass::Small)),
        }
    }

    /// Keep an unused slot for the next frame, or give it back.
    fn unused(&mut self, pool: &BufferPool, h: Handle) {
        if self.spare.is_none() && h.class() == SizeClass::Small {
            self.spare = Some(h);
        } else {
            pool.free(h);
        }
    }
}

/// The source of `frame` if it is a UDP query to `gw` port 53 over IPv4 (a first or only
/// fragment; RFC 791 §3.1, RFC 768).
fn dns_query_source(frame: &[u8], gw: Ipv4Addr) -> Option<Ipv4Addr> {
    let (et, l3) = tapnet_wire::payload_ethertype(frame)?;
    if et != tapnet_wire::ethertype::IPV4 {
        return None;
    }
    let ip = frame.get(l3..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
        return None;
    }
    let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    if Ipv4Addr::from(dst) != gw {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != 53 {
        return None;
    }
    let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    Some(Ipv4Addr::from(src))
}

impl PortTx for GatewayTx {
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters) {
        self.send_inner(pool, batch, ctr, None);
    }

    fn send_policed(
        &mut self,
        pool: &BufferPool,
        batch: &mut Vec<Handle>,
        ctr: &PortCounters,
        now: Duration,
        throttle: &FloodThrottle,
    ) {
        self.send_inner(pool, batch, ctr, Some((now, throttle)));
    }
}

impl GatewayTx {
    /// [`PortTx::send`], with the DNS rate limit when the tx stage gives the clock and
    /// the engine's throttle.
    fn send_inner(
        &mut self,
        pool: &BufferPool,
        batch: &mut Vec<Handle>,
        ctr: &PortCounters,
        police: Option<(Duration, &FloodThrottle)>,
    ) {
        debug_assert!(
            std::ptr::eq(pool, &*self.pool),
            "a GatewayPort must be built with the engine's pool"
        );
        let mut bytes = 0u64;
        let n = batch.len();
        let mut forwarded = false;
        for h in batch.drain(..) {
            let frame = pool.frame(&h);
            bytes += frame.len() as u64;
            if let (Some((now, throttle)), Some(dns)) = (police, &mut self.dns) {
                if let Some(src) = dns_query_source(frame, dns.gw) {
                    if !dns.limiter.allow(now, src) {
                        // Over its rate: dropped before it costs the host ring a slot,
                        // and its sender is read a few frames per period for a while.
                        dns.counters.rate_limited.inc();
                        throttle.throttle(PortId(pool.meta(&h).in_port), now);
                        pool.free(h);
                        continue;
                    }
                }
            }

            let mut slot = self.slot_for(pool, frame.len());
            let outcome = match slot.as_mut() {
                Some(r) => {
                    let reply = pool.get_mut(r);
                    self.gateway.handle(frame, &mut reply.slot[HEADROOM..])
                }
                // No slot: the gateway still counts the frame; a reply it would have
                // made is dropped as `NoRoom`.
                None => self.gateway.handle(frame, &mut []),
            };
            if outcome == Outcome::Forward {
                if let Some(r) = slot {
                    self.unused(pool, r);
                }
                // Routed: the frame itself goes to the host thread, no copy.
                match &mut self.to_host {
                    // The host thread let go of this network: nobody would free it.
                    Some((ring, _)) if ring.is_abandoned() => pool.free(h),
                    Some((ring, _)) => match ring.push(h) {
                        Ok(()) => forwarded = true,
                        Err(rtrb::PushError::Full(h)) => {
                            ctr.tx_queue_full.inc();
                            pool.free(h);
                        }
                    },
                    None => pool.free(h),
                }
                continue;
            }
            pool.free(h);
            match (outcome, slot) {
                (Outcome::Reply(len), Some(mut r)) => {
                    pool.get_mut(&mut r).meta.len = len as u32;
                    if let Err(rtrb::PushError::Full(r)) = self.replies.push(r) {
                        ctr.tx_queue_full.inc();
                        pool.free(r);
                    }
                }
                (Outcome::Drop(tapnet_nat::GatewayDrop::NoRoom), None) => {
                    ctr.rx_no_buffer.inc();
                }
                (_, Some(r)) => self.unused(pool, r),
                (_, None) => {}
            }
        }
        if forwarded {
            if let Some((_, waker)) = &self.to_host {
                let _ = waker.wake();
            }
        }
        ctr.tx_packets.add(n as u64);
        ctr.tx_bytes.add(bytes);
    }
}

impl Drop for GatewayTx {
    fn drop(&mut self) {
        if let Some(h) = self.spare.take() {
            self.pool.free(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tapnet_switch::MacAddr;

    use super::*;
    use crate::pool::PoolConfig;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

    fn pool() -> Arc<BufferPool> {
        Arc::new(BufferPool::new(PoolConfig {
            small_slots: 8,
            small_size: 2048,
            large_slots: 2,
            large_size: 16384,
        }))
    }

    fn cfg() -> GatewayConfig {
        GatewayConfig {
            mac: MacAddr::from_ipv4(GW),
            ip: GW,
            prefix_len: 24,
            internal: false,
        }
    }

    /// 10.9.0.2 asks who has `target`.
    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let host = MacAddr::from_ipv4(Ipv4Addr::new(10, 9, 0, 2));
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&host.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&host.0);
        f.extend_from_slice(&[10, 9, 0, 2, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&target.octets());
        f
    }

    #[test]
    fn answers_through_the_ring_and_keeps_one_spare() {
        let pool = pool();
        let (port, handle) = GatewayPort::new(cfg(), pool.clone(), 1500);
        let info = port.info();
        assert_eq!(info.kind, PortKind::Memory);
        assert_eq!(info.name, "gateway-10.9.0.1");
        assert!(!info.offloads);
        assert_eq!(info.mtu, 1500);
        let (mut rx, mut tx) = Box::new(port).split();
        let ctr = PortCounters::default();
        let mut batch: Vec<Handle> = [GW, GW, Ipv4Addr::new(10, 9, 0, 7)]
            .iter()
            .map(|&t| pool.alloc_copy(&arp_request(t)).unwrap())
            .collect();
        assert!(!rx.pending());
        tx.send(&pool, &mut batch, &ctr);
        assert!(batch.is_empty());
        assert!(rx.pending());
        let mut out = Vec::new();
        let st = rx.recv(&pool, &mut RxSpare::default(), &mut out, 64, &ctr);
        assert_eq!(st, RxStatus::Drained);
        assert_eq!(out.len(), 2);
        for h in out {
            let f = pool.frame(&h);
            assert_eq!(f.len(), 42);
            assert_eq!(&f[6..12], &MacAddr::from_ipv4(GW).0);
            pool.free(h);
        }
        let s = ctr.snapshot();
        assert_eq!((s.tx_packets, s.rx_packets, s.rx_bytes), (3, 2, 84));
        let g = handle.snapshot();
        assert_eq!((g.received, g.arp_replies, g.drop_not_for_us), (3, 2, 1));
        assert_eq!(handle.config().ip, GW);
        // One small slot is held as the spare; dropping the halves returns it.
        assert_eq!(
            pool.available(),
            crate::pool::PoolFree { small: 7, large: 2 }
        );
        drop(tx);
        drop(rx);
        assert_eq!(
            pool.available(),
            crate::pool::PoolFree { small: 8, large: 2 }
        );
    }

    #[test]
    fn empty_pool_and_full_ring_are_counted() {
        let pool = pool();
        let (port, handle) = GatewayPort::new(cfg(), pool.clone(), 1500);
        let (rx, mut tx) = Box::new(port).split();
        let ctr = PortCounters::default();
        // Take every small slot but one, which carries the request.
        let mut hoard: Vec<Handle> = (0..7)
            .map(|_| pool.alloc(SizeClass::Small).unwrap())
            .collect();
        let mut batch = vec![pool.alloc_copy(&arp_request(GW)).unwrap()];
        tx.send(&pool, &mut batch, &ctr);
        assert_eq!(ctr.snapshot().rx_no_buffer, 1);
        assert_eq!(handle.snapshot().drop_no_room, 1);
        assert!(!rx.pending());
        for h in hoard.drain(..) {
            pool.free(h);
        }
        // Fill the ring: every reply past its capacity is dropped and freed.
        let big = Arc::new(BufferPool::new(PoolConfig {
            small_slots: 4 * RING_CAPACITY as u32,
            small_size: 256,
            large_slots: 1,
            large_size: 512,
        }));
        let (port, _) = GatewayPort::new(cfg(), big.clone(), 1500);
        let (rx, mut tx) = Box::new(port).split();
        let mut batch: Vec<Handle> = (0..RING_CAPACITY + 5)
            .map(|_| big.alloc_copy(&arp_request(GW)).unwrap())
            .collect();
        tx.send(&big, &mut batch, &ctr);
        assert_eq!(ctr.snapshot().tx_queue_full, 5);
        drop(rx);
        drop(tx);
        assert_eq!(big.available().small, 4 * RING_CAPACITY);
    }
}
