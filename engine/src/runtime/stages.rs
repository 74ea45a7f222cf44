//! The three pipeline stages. Each owns its tables outright (no locks on the per-packet
//! path) and is changed only through control messages it drains between batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rtrb::{Consumer, Producer};
use tapnet_switch::{
    Decision, DomainConfig, DomainCounters, DomainId, DropReason, MacAddr, PortBinding,
    PortGuardCountersSnapshot, PortId, Switch, SwitchError,
};
use tapnet_wire::gso::{self, SegmentSink};

use super::health::Fault;
use super::throttle::{FLOOD_READ_BATCH, FLOOD_READ_PERIOD, FloodThrottle, slot};
use crate::pool::{BufferPool, HEADROOM, Handle};
use crate::port::{PortCounters, PortInfo, PortRx, PortTx, RxSpare, RxStatus};
use crate::wake::{Notifier, WakeCell};

/// Which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// Reads ports into the pipeline.
    Rx,
    /// L2 lookup and policy.
    Switch,
    /// Offload fix-ups and writes to ports.
    Tx,
}

impl StageKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Rx => "rx",
            StageKind::Switch => "switch",
            StageKind::Tx => "tx",
        }
    }
}

tapnet_switch::counters! {
    /// Per-stage counters, readable while the engine runs.
    pub struct StageCounters / StageStats {
        /// Non-empty batches processed.
        batches,
        /// Frames taken in.
        packets,
        /// Frames for a port that no longer exists.
        drop_no_port,
        /// Frames dropped because the pool had no slot (flood copies, segments).
        drop_no_buffer,
        /// Frames the switch decided to drop (its own counters say why).
        drop_switch,
        /// Times the worker went to sleep on this stage's behalf.
        sleeps,
    }
}

/// The full id of the port now at table index `slot` (`u32::MAX`: none).
fn full_id(ids: &[u32], slot: PortId) -> u32 {
    ids.get(slot.0 as usize).copied().unwrap_or(u32::MAX)
}

/// A control request plus where its answer goes.
pub(crate) struct Ctl<T> {
    pub(crate) msg: T,
    pub(crate) done: Sender<Result<(), String>>,
}

pub(crate) enum RxCtl {
    Add(PortId, Box<dyn PortRx>, Arc<PortCounters>),
    Remove(PortId),
    Fault(Fault),
}

pub(crate) enum SwCtl {
    AddDomain(DomainId, DomainConfig),
    RemoveDomain(DomainId),
    Attach(PortId, DomainId),
    AttachAs(PortId, DomainId, tapnet_switch::PortRole),
    Detach(PortId),
    AddStatic(DomainId, MacAddr, PortId),
    RemoveStatic(DomainId, MacAddr),
    /// Set or clear a port's source binding (anti-spoofing).
    Bind(PortId, Option<PortBinding>),
    /// Read every attached port's guard counters (by full port id).
    GuardStats(Sender<Vec<(PortId, PortGuardCountersSnapshot)>>),
    /// Test hook: make the stage fail (see `Engine::inject_fault`).
    Fault(Fault),
}

pub(crate) enum TxCtl {
    Add(PortId, Box<dyn PortTx>, PortInfo, Arc<PortCounters>),
    Remove(PortId),
    Fault(Fault),
}

/// Push as many of `items` as fit into `ring`; returns how many went.
fn push_some(ring: &mut Producer<Handle>, items: &mut Vec<Handle>) -> usize {
    let n = ring.slots().min(items.len());
    if n > 0 {
        if let Ok(chunk) = ring.write_chunk_uninit(n) {
            chunk.fill_from_iter(items.drain(..n));
        }
    }
    n
}

fn notify(wake: &Option<Arc<WakeCell>>) {
    if let Some(w) = wake {
        w.notify();
    }
}

struct RxPort {
    id: PortId,
    rx: Box<dyn PortRx>,
    ctr: Arc<PortCounters>,
    ready: bool,
    has_fd: bool,
    /// While the port is throttled: when it may be read again.
    next_read: Duration,
    /// Ready but left unread this pass because it is throttled.
    deferred: bool,
}

pub(crate) struct RxStage {
    ports: Vec<RxPort>,
    out: Producer<Handle>,
    out_wake: Option<Arc<WakeCell>>,
    own_wake: Notifier,
    scratch: Vec<Handle>,
    spare: RxSpare,
    pub(crate) ctl: Receiver<Ctl<RxCtl>>,
    pub(crate) counters: Arc<StageCounters>,
    cursor: usize,
    throttle: Arc<FloodThrottle>,
}

impl RxStage {
    pub(crate) fn new(
        out: Producer<Handle>,
        out_wake: Option<Arc<WakeCell>>,
        own_wake: Notifier,
        ctl: Receiver<Ctl<RxCtl>>,
        counters: Arc<StageCounters>,
        throttle: Arc<FloodThrottle>,
    ) -> RxStage {
        RxStage {
            ports: Vec::new(),
            out,
            out_wake,
            own_wake,
            scratch: Vec::new(),
            spare: RxSpare::default(),
            ctl,
            counters,
            cursor: 0,
            throttle,
        }
    }

    pub(crate) fn control(&mut self, registry: &mio::Registry) {
        while let Ok(Ctl { msg, done }) = self.ctl.try_recv() {
            let r = match msg {
                RxCtl::Add(id, mut rx, ctr) => {
                    match rx.register(registry, mio::Token(id.0 as usize)) {
                        Ok(has_fd) => {
                            if !has_fd {
                                rx.set_notifier(self.own_wake.clone());
                            }
                            self.ports.push(RxPort {
                                id,
                                rx,
                                ctr,
                                // A descriptor may be readable before it was registered
                                // (edge-triggered): read it once. Polled ports report
                                // through `PortRx::pending`.
                                ready: has_fd,
                                has_fd,
                                next_read: Duration::ZERO,
                                deferred: false,
                            });
                            Ok(())
                        }
                        Err(e) => Err(format!("cannot watch port {}: {e}", id.0)),
                    }
                }
                RxCtl::Remove(id) => {
                    if let Some(i) = self.ports.iter().position(|p| p.id == id) {
                        let mut p = self.ports.swap_remove(i);
                        let _ = p.rx.deregister(registry);
                    }
                    Ok(())
                }
                RxCtl::Fault(f) => {
                    f.fire();
                    Ok(())
                }
            };
            let _ = done.send(r);
        }
    }

    /// Mark a port readable (from a poll event).
    pub(crate) fn set_ready(&mut self, token: usize) {
        if let Some(p) = self.ports.iter_mut().find(|p| p.id.0 as usize == token) {
            p.ready = true;
        }
    }

    pub(crate) fn has_fds(&self) -> bool {
        self.ports.iter().any(|p| p.has_fd)
    }

    /// True when some port may have frames without a new readiness event.
    pub(crate) fn pending(&self) -> bool {
        self.ports
            .iter()
            .any(|p| !p.deferred && (p.ready || (!p.has_fd && p.rx.pending())))
    }

    pub(crate) fn run(&mut self, pool: &BufferPool, now: Duration, budget: usize) -> usize {
        let n = self.ports.len();
        let mut total = 0;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let p = &mut self.ports[i];
            p.deferred = false;
            if !p.ready && p.has_fd {
                continue;
            }
            let mut room = self.out.slots().min(budget);
            if room == 0 {
                break;
            }
            if now < self.throttle.until(p.id) {
                // Over its flood rate a moment ago: a few frames per period.
                if now < p.next_read {
                    p.deferred = true;
                    continue;
                }
                p.next_read = now + FLOOD_READ_PERIOD;
                room = room.min(FLOOD_READ_BATCH);
                p.ctr.rx_flood_throttled.inc();
            }
            let start = self.scratch.len();
            let st =
                p.rx.recv(pool, &mut self.spare, &mut self.scratch, room, &p.ctr);
            if st == RxStatus::Drained && p.has_fd {
                p.ready = false;
            }
            if !p.rx.stamps_in_port() {
                for h in &mut self.scratch[start..] {
                    pool.get_mut(h).meta.in_port = p.id.0;
                }
            }
            let got = self.scratch.len() - start;
            total += got;
            push_some(&mut self.out, &mut self.scratch);
            // Cannot have left anything: we read no more than the ring had room for.
            for h in self.scratch.drain(..) {
                p.ctr.rx_ring_full.inc();
                pool.free(h);
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        if total > 0 {
            self.counters.batches.inc();
            self.counters.packets.add(total as u64);
            notify(&self.out_wake);
        }
        total
    }

    pub(crate) fn close(&mut self, pool: &BufferPool) {
        self.spare.release(pool);
    }
}

pub(crate) struct SwitchStage {
    switch: Switch,
    input: Consumer<Handle>,
    out: Producer<Handle>,
    out_wake: Option<Arc<WakeCell>>,
    pending: Vec<Handle>,
    pub(crate) ctl: Receiver<Ctl<SwCtl>>,
    pub(crate) counters: Arc<StageCounters>,
    targets: Vec<PortId>,
    domains: DomainMap,
    /// Full (generation-carrying) id of the port attached at each slot.
    ids: Vec<u32>,
    throttle: Option<Arc<FloodThrottle>>,
}

/// Counters of every domain, published by the switch stage for readers.
pub(crate) type DomainMap = Arc<Mutex<HashMap<DomainId, Arc<DomainCounters>>>>;

impl SwitchStage {
    pub(crate) fn new(
        switch: Switch,
        input: Consumer<Handle>,
        out: Producer<Handle>,
        out_wake: Option<Arc<WakeCell>>,
        ctl: Receiver<Ctl<SwCtl>>,
        counters: Arc<StageCounters>,
        domains: DomainMap,
    ) -> SwitchStage {
        SwitchStage {
            switch,
            input,
            out,
            out_wake,
            pending: Vec::new(),
            ctl,
            counters,
            targets: Vec::new(),
            domains,
            ids: Vec::new(),
            throttle: None,
        }
    }

    /// Tell the rx stage, through `throttle`, which ports are over their flood rate.
    pub(crate) fn throttling(mut self, throttle: Arc<FloodThrottle>) -> SwitchStage {
        self.throttle = Some(throttle);
        self
    }

    pub(crate) fn control(&mut self) {
        while let Ok(Ctl { msg, done }) = self.ctl.try_recv() {
            let r = match msg {
                SwCtl::AddDomain(d, cfg) => self.switch.add_domain(d, cfg).inspect(|_| {
                    if let Some(c) = self.switch.domain_counters(d) {
                        self.domains
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(d, c);
                    }
                }),
                SwCtl::RemoveDomain(d) => self.switch.remove_domain(d).inspect(|_| {
                    self.domains
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&d);
                }),
                SwCtl::Attach(p, d) => self
                    .switch
                    .attach(PortId(slot(p) as u32), d)
                    .inspect(|_| self.set_id(p)),
                SwCtl::AttachAs(p, d, r) => self
                    .switch
                    .attach_as(PortId(slot(p) as u32), d, r)
                    .inspect(|_| self.set_id(p)),
                SwCtl::Detach(p) => self.switch.detach(PortId(slot(p) as u32)),
                SwCtl::AddStatic(d, m, p) => self.switch.add_static(d, m, PortId(slot(p) as u32)),
                SwCtl::RemoveStatic(d, m) => self.switch.remove_static(d, m),
                SwCtl::Bind(p, b) => {
                    let at = PortId(slot(p) as u32);
                    if full_id(&self.ids, at) == p.0 && self.switch.domain_of(at).is_some() {
                        self.switch.set_binding(at, b)
                    } else {
                        Err(SwitchError::UnknownPort(p))
                    }
                }
                SwCtl::GuardStats(out) => {
                    let _ = out.send(self.guard_stats());
                    Ok(())
                }
                SwCtl::Fault(f) => {
                    f.fire();
                    Ok(())
                }
            };
            let _ = done.send(r.map(|_| ()).map_err(|e| e.to_string()));
        }
    }

    pub(crate) fn pending(&self) -> bool {
        !self.pending.is_empty() || !self.input.is_empty()
    }

    /// Give back every slot still held (engine shutdown).
    pub(crate) fn close(&mut self, pool: &BufferPool) {
        for h in self.pending.drain(..) {
            pool.free(h);
        }
        while let Ok(h) = self.input.pop() {
            pool.free(h);
        }
    }

    /// The guard counters of every attached port, by full port id.
    fn guard_stats(&self) -> Vec<(PortId, PortGuardCountersSnapshot)> {
        self.ids
            .iter()
            .enumerate()
            .filter_map(|(i, &full)| {
                let c = self.switch.port_counters(PortId(i as u32))?;
                Some((PortId(full), c.snapshot()))
            })
            .collect()
    }

    fn set_id(&mut self, full: PortId) {
        let i = slot(full);
        if self.ids.len() <= i {
            self.ids.resize(i + 1, u32::MAX);
        }
        self.ids[i] = full.0;
    }

    pub(crate) fn run(&mut self, pool: &BufferPool, now: Duration, budget: usize) -> usize {
        if let Some(t) = self.switch.poll_timeout() {
            if now >= t {
                self.switch.handle_timeout(now);
            }
        }
        // Finish what the next ring had no room for before taking more.
        push_some(&mut self.out, &mut self.pending);
        if !self.pending.is_empty() {
            notify(&self.out_wake);
            return 0;
        }
        let n = self.input.slots().min(budget);
        if n == 0 {
            return 0;
        }
        let Ok(chunk) = self.input.read_chunk(n) else {
            return 0;
        };
        for mut h in chunk {
            let from = pool.meta(&h).in_port;
            let ingress = PortId(slot(PortId(from)) as u32);
            if full_id(&self.ids, ingress) != from {
                // Received by a port that has been removed since.
                self.counters.drop_no_port.inc();
                pool.free(h);
                continue;
            }
            match self.switch.process(ingress, pool.frame(&h), now) {
                Decision::Forward(p) => {
                    pool.get_mut(&mut h).meta.out_port = full_id(&self.ids, p);
                    self.pending.push(h);
                }
                Decision::Flood(d) => {
                    self.targets.clear();
                    self.targets.extend(self.switch.flood_targets(d, ingress));
                    let Some((&last, rest)) = self.targets.split_last() else {
                        pool.free(h);
                        continue;
                    };
                    for &t in rest {
                        match pool.alloc_copy(pool.frame(&h)) {
                            Some(mut c) => {
                                let src = *pool.meta(&h);
                                let m = pool.get_mut(&mut c).meta;
                                m.vnet = src.vnet;
                                m.in_port = src.in_port;
                                m.out_port = full_id(&self.ids, t);
                                self.pending.push(c);
                            }
                            None => self.counters.drop_no_buffer.inc(),
                        }
                    }
                    pool.get_mut(&mut h).meta.out_port = full_id(&self.ids, last);
                    self.pending.push(h);
                }
                Decision::Drop(reason) => {
                    if let (DropReason::FloodRate, Some(t)) = (reason, &self.throttle) {
                        t.throttle(ingress, now);
                    }
                    self.counters.drop_switch.inc();
                    pool.free(h);
                }
            }
        }
        self.counters.batches.inc();
        self.counters.packets.add(n as u64);
        push_some(&mut self.out, &mut self.pending);
        notify(&self.out_wake);
        n
    }
}

struct TxPort {
    id: PortId,
    tx: Box<dyn PortTx>,
    info: PortInfo,
    ctr: Arc<PortCounters>,
    queue: Vec<Handle>,
}

pub(crate) struct TxStage {
    ports: Vec<Option<TxPort>>,
    input: Consumer<Handle>,
    dirty: Vec<usize>,
    /// The rx worker, when it is another one: in-process ports (the gateway) answer
    /// from inside `send`, and their replies wait on a polled ring the rx stage reads.
    rx_wake: Option<Arc<WakeCell>>,
    pub(crate) ctl: Receiver<Ctl<TxCtl>>,
    pub(crate) counters: Arc<StageCounters>,
    /// Handed to the ports that police what they are sent.
    throttle: Arc<FloodThrottle>,
}

/// Hands the segmenter one fresh pool slot per segment.
struct Segments<'a> {
    pool: &'a BufferPool,
    out: &'a mut Vec<Handle>,
    out_port: u32,
}

impl SegmentSink for Segments<'_> {
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]> {
        let h = self.pool.alloc_for(len)?;
        self.out.push(h);
        let h = self.out.last_mut()?;
        let p = self.pool.get_mut(h);
        p.meta.len = len as u32;
        p.meta.out_port = self.out_port;
        Some(&mut p.slot[HEADROOM..HEADROOM + len])
    }
}

impl TxStage {
    pub(crate) fn new(
        input: Consumer<Handle>,
        rx_wake: Option<Arc<WakeCell>>,
        ctl: Receiver<Ctl<TxCtl>>,
        counters: Arc<StageCounters>,
        throttle: Arc<FloodThrottle>,
    ) -> TxStage {
        TxStage {
            ports: Vec::new(),
            input,
            dirty: Vec::new(),
            rx_wake,
            ctl,
            counters,
            throttle,
        }
    }

    pub(crate) fn control(&mut self, pool: &BufferPool) {
        while let Ok(Ctl { msg, done }) = self.ctl.try_recv() {
            match msg {
                TxCtl::Add(id, tx, info, ctr) => {
                    let i = slot(id);
                    if self.ports.len() <= i {
                        self.ports.resize_with(i + 1, || None);
                    }
                    self.ports[i] = Some(TxPort {
                        id,
                        tx,
                        info,
                        ctr,
                        queue: Vec::new(),
                    });
                }
                TxCtl::Remove(id) => {
                    if let Some(entry) = self.ports.get_mut(slot(id)) {
                        if entry.as_ref().is_some_and(|p| p.id == id) {
                            if let Some(mut p) = entry.take() {
                                for h in p.queue.drain(..) {
                                    pool.free(h);
                                }
                            }
                        }
                    }
                }
                TxCtl::Fault(f) => f.fire(),
            }
            let _ = done.send(Ok(()));
        }
    }

    pub(crate) fn pending(&self) -> bool {
        !self.input.is_empty()
    }

    /// Give back every slot still held (engine shutdown).
    pub(crate) fn close(&mut self, pool: &BufferPool) {
        while let Ok(h) = self.input.pop() {
            pool.free(h);
        }
        for p in self.ports.iter_mut().flatten() {
            for h in p.queue.drain(..) {
                pool.free(h);
            }
        }
    }

    /// Make `h` fit port `p`: software segmentation or checksum where the port cannot
    /// take offloads, MTU checks everywhere. Appends what is to be sent to the queue.
    fn prepare(pool: &BufferPool, p: &mut TxPort, mut h: Handle) {
        let meta = *pool.meta(&h);
        let mut vnet = meta.vnet;
        let mtu = p.info.mtu as usize;
        let frame = pool.frame(&h);
        if vnet.is_gso() {
            if p.info.offloads && segment_ip_len(&vnet, frame).is_some_and(|l| l <= mtu) {
                p.queue.push(h);
                return;
            }
        } else {
            match gso::ip_len(frame) {
                Some(l) if l > mtu => {
                    // A plain TCP segment too big for this port is split like a
                    // superframe (TCP is a byte stream); anything else is dropped.
                    match tcp_gso_kind(frame) {
                        Some(kind) => {
                            vnet.gso_type = kind;
                            vnet.gso_size = u16::MAX;
                        }
                        None => {
                            p.ctr.tx_too_big.inc();
                            pool.free(h);
                            return;
                        }
                    }
                }
                _ => {
                    if vnet.needs_csum() && !p.info.offloads {
                        let mut pk = pool.get_mut(&mut h);
                        if gso::complete_checksum(&vnet, pk.frame_mut()).is_err() {
                            p.ctr.tx_offload_errors.inc();
                            pool.free(h);
                            return;
                        }
                        pk.meta.vnet = Default::default();
                    }
                    p.queue.push(h);
                    return;
                }
            }
        }
        let queued = p.queue.len();
        let mut sink = Segments {
            pool,
            out: &mut p.queue,
            out_port: meta.out_port,
        };
        match gso::segment(&vnet, pool.frame(&h), mtu, &mut sink) {
            Ok(_) => p.ctr.tx_segmented.inc(),
            Err(e) => {
                // All or nothing: a partial burst would only make the receiver ask
                // for the rest again.
                for s in p.queue.drain(queued..) {
                    pool.free(s);
                }
                if e.is_bound() {
                    p.ctr.tx_gso_refused.inc();
                }
                p.ctr.tx_offload_errors.inc();
            }
        }
        pool.free(h);
    }

    pub(crate) fn run(&mut self, pool: &BufferPool, now: Duration, budget: usize) -> usize {
        let n = self.input.slots().min(budget);
        if n == 0 {
            return 0;
        }
        let Ok(chunk) = self.input.read_chunk(n) else {
            return 0;
        };
        for h in chunk {
            let out = PortId(pool.meta(&h).out_port);
            let i = slot(out);
            match self
                .ports
                .get_mut(i)
                .and_then(|p| p.as_mut())
                .filter(|p| p.id == out)
            {
                Some(p) => {
                    if p.queue.is_empty() {
                        self.dirty.push(i);
                    }
                    TxStage::prepare(pool, p, h);
                }
                None => {
                    self.counters.drop_no_port.inc();
                    pool.free(h);
                }
            }
        }
        let mut in_process = false;
        for i in self.dirty.drain(..) {
            if let Some(p) = self.ports[i].as_mut() {
                in_process |= p.info.kind != crate::port::PortKind::Tap;
                p.tx.send_policed(pool, &mut p.queue, &p.ctr, now, &self.throttle);
            }
        }
        if in_process {
            notify(&self.rx_wake);
        }
        self.counters.batches.inc();
        self.counters.packets.add(n as u64);
        n
    }
}

/// IP length of each segment a superframe would be cut into: L3 and L4 headers plus
/// `gso_size`. `hdr_len` from the kernel is only a hint (it may cover payload), so the
/// headers are measured from `csum_start` and the TCP data offset.
fn segment_ip_len(vnet: &tapnet_wire::VnetHdr, frame: &[u8]) -> Option<usize> {
    let (_, l3) = tapnet_wire::ethernet::payload_ethertype(frame)?;
    let l4 = vnet.csum_start as usize;
    let doff = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
    Some(l4.checked_sub(l3)? + doff + vnet.gso_size as usize)
}

/// The GSO type a plain TCP frame would have, if it is IPv4 or IPv6 TCP.
fn tcp_gso_kind(frame: &[u8]) -> Option<u8> {
    use tapnet_wire::VnetHdr;
    let (et, l3) = tapnet_wire::ethernet::payload_ethertype(frame)?;
    match et {
        0x0800 if *frame.get(l3 + 9)? == 6 => Some(VnetHdr::GSO_TCPV4),
        0x86dd if *frame.get(l3 + 6)? == 6 => Some(VnetHdr::GSO_TCPV6),
        _ => None,
    }
}
