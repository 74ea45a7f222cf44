//! smoltcp's view of the container network: a device of IPv4 packets in memory, whose
//! buffers are reused, and a one-packet device that lets smoltcp read a segment where it
//! lies.

use std::collections::VecDeque;
use std::time::Duration;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};

/// Largest IPv4 packet; the relay's smoltcp MTU, so that it emits superframes.
pub(super) const IP_MAX: usize = 65535;

/// Packet buffers kept for reuse, per direction: a 64 KiB superframe costs no
/// allocation and no zeroing once the relay is warm.
const SPARE_BUFFERS: usize = 64;
/// Bytes of a reused transmit buffer cleared before smoltcp writes a packet into it:
/// more than any IPv4 + TCP header, so option padding never carries old bytes (smoltcp
/// writes every payload byte itself).
const HEADER_CLEAR: usize = 128;

/// smoltcp's view of the container network: IPv4 packets in, IPv4 packets out.
#[derive(Default)]
pub(super) struct Dev {
    /// Packets for smoltcp, queued.
    pub(super) rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp (or the relay itself) wrote for the container network.
    pub(super) tx: VecDeque<Vec<u8>>,
    rx_spare: Vec<Vec<u8>>,
    tx_spare: Vec<Vec<u8>>,
}

impl Dev {
    /// A buffer of `len` bytes for a packet the relay writes itself, reused if one is
    /// spare.
    pub(super) fn tx_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.tx_spare.pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        v
    }

    /// Keep `v`, a packet of `tx` that has been sent, for reuse.
    pub(super) fn recycle_tx(&mut self, v: Vec<u8>) {
        recycle(&mut self.tx_spare, v);
    }

    /// A copy of `pkt` for smoltcp's receive queue, in a reused buffer if one is spare.
    pub(super) fn queue_rx(&mut self, pkt: &[u8]) {
        let mut v = self.rx_spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(pkt);
        self.rx.push_back(v);
    }
}

fn recycle(spare: &mut Vec<Vec<u8>>, v: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS {
        spare.push(v);
    }
}

/// A queued packet for smoltcp; its buffer goes back to the spares once read.
pub(super) struct RxTok<'a>(Vec<u8>, &'a mut Vec<Vec<u8>>);
/// Room for one packet smoltcp sends, in a spare buffer if there is one.
pub(super) struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>, &'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        recycle(self.1, self.0);
        r
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = self.1.pop().unwrap_or_default();
        if v.len() >= len {
            v.truncate(len);
            let n = len.min(HEADER_CLEAR);
            v[..n].fill(0);
        } else {
            v.clear();
            v.resize(len, 0);
        }
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

/// smoltcp's view of the container network for one packet read in place: that packet,
/// and [`Dev`]'s transmit queue for anything smoltcp answers at once.
pub(super) struct OneRx<'p, 'd> {
    pub(super) pkt: Option<&'p [u8]>,
    pub(super) dev: &'d mut Dev,
}

/// The one packet a [`OneRx`] lends smoltcp.
pub(super) struct InPlace<'p>(&'p [u8]);

impl phy::RxToken for InPlace<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<'p> phy::Device for OneRx<'p, '_> {
    type RxToken<'a>
        = InPlace<'p>
    where
        Self: 'a;
    type TxToken<'a>
        = TxTok<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.pkt.take()?;
        Some((InPlace(p), TxTok(&mut self.dev.tx, &mut self.dev.tx_spare)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok(&mut self.dev.tx, &mut self.dev.tx_spare))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.dev.capabilities()
    }
}

impl phy::Device for Dev {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((
            RxTok(p, &mut self.rx_spare),
            TxTok(&mut self.tx, &mut self.tx_spare),
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok(&mut self.tx, &mut self.tx_spare))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MAX;
        let mut cs = ChecksumCapabilities::ignored();
        // Frames come from local TAPs: transport checksums may be partial, and there is
        // no wire to corrupt them. IPv4 header checksums are always complete.
        cs.ipv4 = Checksum::Both;
        cs.tcp = Checksum::None;
        caps.checksum = cs;
        caps
    }
}

/// `now` as smoltcp counts time.
pub(super) fn smol_now(now: Duration) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}
