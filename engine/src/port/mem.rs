//! In-memory port pairs: one end is an engine port, the other ([`MemPeer`]) belongs to a
//! rig host or a load generator. Frames cross as pool handles on SPSC rings, so nothing
//! is copied between the peer and the engine.

use std::io;
use std::sync::{Arc, OnceLock};

use mio::{Registry, Token};
use rtrb::{Consumer, Producer, RingBuffer};

use super::{Port, PortCounters, PortInfo, PortKind, PortRx, PortTx, RxSpare, RxStatus};
use crate::pool::{BufferPool, Handle};
use crate::wake::Notifier;

/// Engine end of a memory port pair.
pub struct MemPort {
    info: PortInfo,
    pool: Arc<BufferPool>,
    from_peer: Consumer<Handle>,
    to_peer: Producer<Handle>,
    notifier: Arc<OnceLock<Notifier>>,
}

/// Peer end of a memory port pair.
pub struct MemPeer {
    pool: Arc<BufferPool>,
    to_engine: Producer<Handle>,
    from_engine: Consumer<Handle>,
    /// Set once the engine's rx stage owns the other end.
    notifier: Arc<OnceLock<Notifier>>,
}

impl MemPort {
    /// A connected pair with rings of `capacity` frames each way. `offloads` says whether
    /// the peer takes superframes and partial checksums as they are.
    pub fn pair(
        name: &str,
        pool: Arc<BufferPool>,
        capacity: usize,
        mtu: u32,
        offloads: bool,
    ) -> (MemPort, MemPeer) {
        let (to_engine, from_peer) = RingBuffer::new(capacity);
        let (to_peer, from_engine) = RingBuffer::new(capacity);
        let info = PortInfo {
            name: name.to_string(),
            kind: PortKind::Memory,
            offloads,
            mtu,
        };
        let notifier = Arc::new(OnceLock::new());
        (
            MemPort {
                info,
                pool: pool.clone(),
                from_peer,
                to_peer,
                notifier: notifier.clone(),
            },
            MemPeer {
                pool,
                to_engine,
                from_engine,
                notifier,
            },
        )
    }
}

impl Port for MemPort {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn pool(&self) -> Option<&Arc<BufferPool>> {
        Some(&self.pool)
    }

    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>) {
        (
            Box::new(MemRx(self.from_peer, self.notifier, self.pool)),
            Box::new(MemTx(self.to_peer)),
        )
    }
}

struct MemRx(Consumer<Handle>, Arc<OnceLock<Notifier>>, Arc<BufferPool>);

impl Drop for MemRx {
    /// Frames the peer queued but the engine never took go back to the pool.
    fn drop(&mut self) {
        while let Ok(h) = self.0.pop() {
            self.2.free(h);
        }
    }
}
struct MemTx(Producer<Handle>);

impl PortRx for MemRx {
    fn register(&mut self, _: &Registry, _: Token) -> io::Result<bool> {
        Ok(false)
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.0.is_empty()
    }

    fn set_notifier(&mut self, notifier: Notifier) {
        let _ = self.1.set(notifier);
    }

    fn recv(
        &mut self,
        pool: &BufferPool,
        _spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus {
        super::recv_ring(&mut self.0, pool, out, budget, ctr)
    }
}

impl PortTx for MemTx {
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters) {
        let room = self.0.slots();
        let n = room.min(batch.len());
        let mut bytes = 0u64;
        for h in batch.iter().take(n) {
            bytes += u64::from(pool.meta(h).len);
        }
        let mut rest = batch.drain(..);
        if n > 0 {
            if let Ok(chunk) = self.0.write_chunk_uninit(n) {
                chunk.fill_from_iter(rest.by_ref());
            }
        }
        let mut dropped = 0u64;
        for h in rest {
            pool.free(h);
            dropped += 1;
        }
        ctr.tx_packets.add(n as u64);
        ctr.tx_bytes.add(bytes);
        ctr.tx_queue_full.add(dropped);
    }
}

impl MemPeer {
    /// The pool frames are drawn from.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Copy `frame` into a pool slot and queue it to the engine. False if the pool is
    /// empty, the frame is too big, or the ring is full (the frame is then not sent).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        if self.to_engine.is_full() {
            return false;
        }
        match self.pool.alloc_copy(frame) {
            Some(h) => self.send_handle(h).is_ok(),
            None => false,
        }
    }

    /// Queue a slot the caller filled itself. Gives the handle back if the ring is full.
    pub fn send_handle(&mut self, h: Handle) -> Result<(), Handle> {
        self.to_engine
            .push(h)
            .map_err(|rtrb::PushError::Full(h)| h)?;
        self.wake();
        Ok(())
    }

    /// Wake the engine's worker if it sleeps.
    fn wake(&self) {
        if let Some(n) = self.notifier.get() {
            n.notify();
        }
    }

    /// Queue many filled slots; returns how many were taken (the rest stay in `batch`).
    pub fn send_batch(&mut self, batch: &mut Vec<Handle>) -> usize {
        let n = self.to_engine.slots().min(batch.len());
        if n > 0 {
            if let Ok(chunk) = self.to_engine.write_chunk_uninit(n) {
                chunk.fill_from_iter(batch.drain(..n));
            }
            self.wake();
        }
        n
    }

    /// Free room in the ring towards the engine.
    pub fn send_room(&self) -> usize {
        self.to_engine.slots()
    }

    /// Next frame from the engine, as a handle the caller must free (or reuse).
    pub fn recv_handle(&mut self) -> Option<Handle> {
        self.from_engine.pop().ok()
    }

    /// Next frame from the engine, copied into `buf` (cleared first); the slot is freed.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        match self.from_engine.pop() {
            Ok(h) => {
                buf.clear();
                buf.extend_from_slice(self.pool.frame(&h));
                self.pool.free(h);
                true
            }
            Err(_) => false,
        }
    }

    /// Move up to `max` received handles into `out`; returns how many.
    pub fn recv_batch(&mut self, out: &mut Vec<Handle>, max: usize) -> usize {
        let n = self.from_engine.slots().min(max);
        if n > 0 {
            if let Ok(chunk) = self.from_engine.read_chunk(n) {
                out.extend(chunk);
            }
        }
        n
    }
}
