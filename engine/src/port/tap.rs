//! The engine's port over a TAP device.
//!
//! Receive scatters each read over three pieces: the virtio-net header, a small slot and
//! the tail of a spare large slot. An ordinary frame lands in the small slot; a TSO
//! superframe spills into the large one, and only its first small-slot's worth of bytes
//! is copied across to make it contiguous. So an MTU frame costs no copy and no 64 KiB
//! slot, and a superframe costs one ~2 KiB copy. Transmit gathers the header and the
//! frame straight from the slot.
//!
//! The virtio-net header size belongs to the device, and whoever else holds an fd of it
//! (the process that handed an adopted TAP over shares its file description) may change
//! it with `TUNSETVNETHDRSZ`. The kernel then writes a header of that size: the frame
//! starts elsewhere than the port expects, and the bytes in between are not frame bytes
//! (older kernels skip them without writing, so they would be whatever the slot held
//! before: a frame of another network). Two checks keep such reads out of the switch:
//!
//! - before every read the bytes where the destination MAC lands are zeroed; a read that
//!   leaves them all zero had a header at least [`DST_GUARD`] bytes too long (no frame is
//!   sent to 00:00:00:00:00:00), and is dropped. Every byte a longer header could have
//!   skipped lies in that guard or after it, so no unwritten slot byte is ever taken as
//!   frame data;
//! - after every call that read something, the device's header size is read back
//!   (`TUNGETVNETHDRSZ`, one ioctl per batch); if it is not ours, every frame of the
//!   batch is dropped (any of them may be shifted by a few bytes) and the size is set
//!   back.
//!
//! Both count `rx_vnet_hdr_drops`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tapnet_wire::{VNET_HDR_LEN, VnetHdr};

use super::{Port, PortCounters, PortInfo, PortKind, PortRx, PortTx, RxSpare, RxStatus};
use crate::pool::{BufferPool, HEADROOM, Handle, ShareAccount, SizeClass};
use crate::sys::tap::Tap;

/// Bytes zeroed before every read where the frame's destination MAC lands (see the
/// module documentation): a read that leaves them zero had a longer header than ours.
const DST_GUARD: usize = 6;

/// A TAP device as an engine port (queue 0 of the device).
pub struct TapPort {
    tap: Arc<Tap>,
    mtu: u32,
}

impl TapPort {
    /// Wrap a TAP; `mtu` is the MTU configured on the interface.
    pub fn new(tap: Tap, mtu: u32) -> TapPort {
        TapPort {
            tap: Arc::new(tap),
            mtu,
        }
    }
}

impl Port for TapPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            name: self.tap.name().to_string(),
            kind: PortKind::Tap,
            offloads: self.tap.vnet_hdr_len() > 0,
            mtu: self.mtu,
        }
    }

    fn split(self: Box<Self>) -> (Box<dyn PortRx>, Box<dyn PortTx>) {
        let rx = TapRx {
            tap: self.tap.clone(),
            account: None,
        };
        (Box::new(rx), Box::new(TapTx { tap: self.tap }))
    }
}

struct TapRx {
    tap: Arc<Tap>,
    /// The large slots this port holds, opened at its first read.
    account: Option<ShareAccount>,
}

struct TapTx {
    tap: Arc<Tap>,
}

impl PortRx for TapRx {
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<bool> {
        let fd = self.tap.fd(0).as_raw_fd();
        registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        Ok(true)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let fd = self.tap.fd(0).as_raw_fd();
        registry.deregister(&mut SourceFd(&fd))
    }

    fn recv(
        &mut self,
        pool: &BufferPool,
        spare: &mut RxSpare,
        out: &mut Vec<Handle>,
        budget: usize,
        ctr: &PortCounters,
    ) -> RxStatus {
        let vlen = self.tap.vnet_hdr_len();
        let small_cap = pool.frame_capacity(SizeClass::Small);
        let large_cap = pool.frame_capacity(SizeClass::Large);
        const MAX_ERRORS_PER_CALL: usize = 8;
        let mut errors = 0;
        let start = out.len();
        let mut read = Batch::default();
        let mut status = RxStatus::More;
        let account = self.account.get_or_insert_with(|| pool.open_account());
        for _ in 0..budget {
            spare.fill(pool);
            let (Some(small), Some(large)) = (spare.small.as_mut(), spare.large.as_mut()) else {
                // Leave the frame in the kernel's queue and try again next cycle.
                ctr.rx_no_buffer.inc();
                break;
            };
            let mut hdr = [0u8; VNET_HDR_LEN];
            let s = pool.get_mut(small);
            let l = pool.get_mut(large);
            s.slot[HEADROOM..HEADROOM + DST_GUARD].fill(0);
            let res = {
                let mut iov = [
                    IoSliceMut::new(&mut hdr[..vlen]),
                    IoSliceMut::new(&mut s.slot[HEADROOM..]),
                    IoSliceMut::new(&mut l.slot[HEADROOM + small_cap..HEADROOM + large_cap]),
                ];
                self.tap.recv_vectored(0, &mut iov)
            };
            let n = match res {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    status = RxStatus::Drained;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The kernel dropped that frame; others may be queued behind it, and
                    // readiness is edge-triggered: keep reading. A device that only
                    // errors is given up on until its next readiness event.
                    ctr.rx_errors.inc();
                    errors += 1;
                    if errors >= MAX_ERRORS_PER_CALL {
                        status = RxStatus::Drained;
                        break;
                    }
                    continue;
                }
            };
            read.reads += 1;
            if n < vlen + 14 {
                ctr.rx_errors.inc();
                continue;
            }
            if vlen > 0
                && s.slot[HEADROOM..HEADROOM + DST_GUARD]
                    .iter()
                    .all(|&b| b == 0)
            {
                // The header was longer than ours: nothing of this read is a frame.
                ctr.rx_vnet_hdr_drops.inc();
                read.shifted = true;
                continue;
            }
            let flen = n - vlen;
            let vnet = if vlen > 0 {
                VnetHdr::parse(&hdr).unwrap_or_default()
            } else {
                VnetHdr::default()
            };
            let h = if flen <= small_cap {
                s.meta.head = HEADROOM as u32;
                s.meta.len = flen as u32;
                s.meta.vnet = vnet;
                spare.small.take()
            } else {
                l.slot[HEADROOM..HEADROOM + small_cap]
                    .copy_from_slice(&s.slot[HEADROOM..HEADROOM + small_cap]);
                l.meta.head = HEADROOM as u32;
                l.meta.len = flen as u32;
                l.meta.vnet = vnet;
                if !spare
                    .large
                    .as_ref()
                    .is_some_and(|h| pool.charge(h, account))
                {
                    // Over this port's share: the slot stays the spare, for any port.
                    ctr.rx_pool_share_drops.inc();
                    continue;
                }
                spare.large.take()
            };
            if let Some(h) = h {
                out.push(h);
                read.bytes += flen as u64;
            }
        }
        if vlen > 0 && read.reads > 0 && self.header_changed(read.shifted) {
            // Any frame of this batch may have been read with another header size.
            for h in out.drain(start..) {
                ctr.rx_vnet_hdr_drops.inc();
                pool.free(h);
            }
            read.bytes = 0;
        }
        ctr.rx_packets.add((out.len() - start) as u64);
        ctr.rx_bytes.add(read.bytes);
        status
    }
}

/// What one receive call read.
#[derive(Default)]
struct Batch {
    /// Successful reads, dropped frames included.
    reads: usize,
    /// Frame bytes taken.
    bytes: u64,
    /// A read had a longer header than ours.
    shifted: bool,
}

impl TapRx {
    /// Whether the device's header size is not ours (or `shifted` said a read showed
    /// it); if so, sets it back.
    fn header_changed(&self, shifted: bool) -> bool {
        let ours = self.tap.vnet_hdr_len();
        // A size that cannot be read counts as changed: the batch is dropped, not trusted.
        let changed = shifted || self.tap.current_vnet_hdr_len().ok() != Some(ours);
        if changed {
            match self.tap.restore_vnet_hdr_len() {
                Ok(()) => tracing::debug!(
                    name = self.tap.name(),
                    "TAP virtio-net header size changed by another holder of the fd; set back"
                ),
                Err(e) => tracing::warn!(
                    name = self.tap.name(), error = %e,
                    "could not set the TAP virtio-net header size back"
                ),
            }
        }
        changed
    }
}

impl PortTx for TapTx {
    fn send(&mut self, pool: &BufferPool, batch: &mut Vec<Handle>, ctr: &PortCounters) {
        let vlen = self.tap.vnet_hdr_len();
        for h in batch.drain(..) {
            let mut hdr = [0u8; VNET_HDR_LEN];
            let meta = pool.meta(&h);
            if vlen > 0 {
                meta.vnet.emit(&mut hdr);
            }
            let frame = pool.frame(&h);
            let iov = [IoSlice::new(&hdr[..vlen]), IoSlice::new(frame)];
            match self.tap.send_vectored(0, &iov) {
                Ok(_) => {
                    ctr.tx_packets.inc();
                    ctr.tx_bytes.add(frame.len() as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ctr.tx_queue_full.inc(),
                Err(_) => ctr.tx_errors.inc(),
            }
            pool.free(h);
        }
    }
}

#[cfg(test)]
mod tests;
