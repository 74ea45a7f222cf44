//! TCP headers (RFC 9293 §3.1) and their options (RFC 9293 §3.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! |           Checksum            |         Urgent Pointer        |
//! |                           [Options]                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The view wraps exactly one TCP segment (the IP payload, without Ethernet
//! padding): the checksum covers the whole buffer and a pseudo-header made of
//! the IP addresses ([`IpPair`]), the protocol and the buffer's length.

use std::fmt;
use std::ops::BitOr;

use crate::checksum::{self, IpPair};
use crate::{Field, WireError, read_u16, write_u16};

mod field {
    use super::Field;
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ_NUM: Field = 4..8;
    pub(super) const ACK_NUM: Field = 8..12;
    pub(super) const DATA_OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
    pub(super) const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// Length of the longest header: data offset 15, 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;

/// Offset of the checksum field in the header (`offsetof(struct tcphdr, check)`): the
/// `csum_offset` of a partial TCP checksum.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// IANA protocol number of TCP, for the pseudo-header and IP headers.
pub const PROTOCOL: u8 = 6;

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    /// End of option list (RFC 9293 §3.2).
    pub const END: u8 = 0;
    /// No operation, padding between options (RFC 9293 §3.2).
    pub const NOP: u8 = 1;
    /// Maximum segment size, SYN only (RFC 9293 §3.7.1).
    pub const MSS: u8 = 2;
    /// Window scale (RFC 7323 §2).
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted (RFC 2018 §2).
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks (RFC 2018 §3).
    pub const SACK: u8 = 5;
    /// Timestamps (RFC 7323 §3).
    pub const TIMESTAMP: u8 = 8;
}

/// The eight control bits of the flags octet (RFC 9293 §3.1, CWR and ECE from
/// RFC 3168 §6.1), as a set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flag set.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// The flags octet as it is on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set for a flags octet.
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags of `other`.
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        write!(f, "TcpFlags(")?;
        let mut sep = "";
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                write!(f, "{sep}{name}")?;
                sep = "|";
            }
        }
        write!(f, ")")
    }
}

/// One option of a TCP header (RFC 9293 §3.2). An option whose length does
/// not match its kind is [`TcpOption::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 1, padding.
    NoOperation,
    /// Kind 2, length 4: the largest segment the sender can receive
    /// (RFC 9293 §3.7.1).
    MaxSegmentSize(u16),
    /// Kind 3, length 3: the window shift count (RFC 7323 §2.2).
    WindowScale(u8),
    /// Kind 4, length 2 (RFC 2018 §2).
    SackPermitted,
    /// Kind 8, length 10 (RFC 7323 §3.2).
    Timestamp {
        /// Timestamp value.
        tsval: u32,
        /// Timestamp echo reply.
        tsecr: u32,
    },
    /// Any other option (SACK blocks included), or a known kind with an
    /// unexpected length.
    Other {
        /// Option kind.
        kind: u8,
        /// The bytes after kind and length.
        data: &'a [u8],
    },
}

/// Iterator over the options of a header, from [`TcpPacket::options_iter`].
///
/// Stops at the end-of-option-list option or the end of the header. An option
/// whose length byte is missing, below 2 or runs past the header yields one
/// `Err(WireError::Malformed)`, then the iterator ends.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> TcpOptions<'a> {
    /// Iterates over `bytes`, the options area of a header (after the fixed
    /// 20 bytes, up to the data offset).
    pub const fn new(bytes: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions { bytes, at: 0 }
    }

    /// The next option and the offset of its kind byte in the options area.
    fn next_at(&mut self) -> Option<(usize, Result<TcpOption<'a>, WireError>)> {
        let at = self.at;
        let kind = *self.bytes.get(at)?;
        let opt = match kind {
            option_kind::END => {
                self.at = self.bytes.len();
                return None;
            }
            option_kind::NOP => {
                self.at += 1;
                TcpOption::NoOperation
            }
            _ => {
                let len = self.bytes.get(at + 1).map_or(0, |&l| usize::from(l));
                let Some(data) = self.bytes.get(at + 2..at + len).filter(|_| len >= 2) else {
                    self.at = self.bytes.len();
                    return Some((at, Err(WireError::Malformed)));
                };
                self.at += len;
                match (kind, data) {
                    (option_kind::MSS, &[a, b]) => {
                        TcpOption::MaxSegmentSize(u16::from_be_bytes([a, b]))
                    }
                    (option_kind::WINDOW_SCALE, &[s]) => TcpOption::WindowScale(s),
                    (option_kind::SACK_PERMITTED, &[]) => TcpOption::SackPermitted,
                    (option_kind::TIMESTAMP, &[a, b, c, d, e, f, g, h]) => TcpOption::Timestamp {
                        tsval: u32::from_be_bytes([a, b, c, d]),
                        tsecr: u32::from_be_bytes([e, f, g, h]),
                    },
                    _ => TcpOption::Other { kind, data },
                }
            }
        };
        Some((at, Ok(opt)))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_at().map(|(_, opt)| opt)
    }
}

/// The header length a segment's data offset gives, if the buffer reaches it.
fn data_offset(b: &[u8]) -> Option<usize> {
    b.get(field::DATA_OFF).map(|&d| usize::from(d >> 4) * 4)
}

/// Offset in the options area of the value of the first well-formed MSS
/// option, if the options up to it are well formed.
fn mss_at(options: &[u8]) -> Option<usize> {
    let mut it = TcpOptions::new(options);
    while let Some((at, opt)) = it.next_at() {
        if let TcpOption::MaxSegmentSize(_) = opt.ok()? {
            return Some(at + 2);
        }
    }
    None
}

/// A view of one TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header and the header length
    /// the data offset gives: `Truncated` if not, `Malformed` if the data
    /// offset is below 5.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.b().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            Err(WireError::Malformed)
        } else if header_len > len {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// Acknowledgment number (meaningful when [`TcpFlags::ACK`] is set).
    pub fn ack_number(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.b()[field::FLAGS])
    }

    /// Window.
    pub fn window_len(&self) -> u16 {
        read_u16(self.b(), field::WINDOW)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Urgent pointer (meaningful when [`TcpFlags::URG`] is set).
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.b(), field::URGENT)
    }

    /// The options area: bytes 20 up to the header length, cut at the end of
    /// the buffer. Never panics, even on an unchecked view.
    pub fn options(&self) -> &[u8] {
        let b = self.b();
        let end = data_offset(b).map_or(0, |h| h.min(b.len()));
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The options, one by one (see [`TcpOptions`]).
    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// The value of the first MSS option (kind 2, length 4), if the options
    /// before it are well formed. Never panics, even on an unchecked view.
    pub fn mss(&self) -> Option<u16> {
        let opts = self.options();
        let at = mss_at(opts)?;
        Some(u16::from_be_bytes([opts[at], opts[at + 1]]))
    }

    /// The payload: everything after the header. Empty if the data offset
    /// runs past the buffer. Never panics, even on an unchecked view.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        data_offset(b).and_then(|h| b.get(h..)).unwrap_or(&[])
    }

    /// Whether the pseudo-header for `addrs` and the whole segment sum to
    /// 0xffff, i.e. the stored checksum is right (RFC 9293 §3.1).
    pub fn verify_checksum(&self, addrs: &IpPair) -> bool {
        let b = self.b();
        let pseudo = addrs.pseudo_header(PROTOCOL, b.len() as u32);
        checksum::combine(pseudo, checksum::ones_complement_sum(b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.bm(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.bm(), field::DST_PORT, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        self.bm()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.bm()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60); the
    /// reserved bits beside the data offset are kept.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.bm()[field::DATA_OFF];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.bm()[field::FLAGS] = flags.0;
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, v: u16) {
        write_u16(self.bm(), field::WINDOW, v);
    }

    /// Stores `v` as the checksum (see [`fill_checksum`](Self::fill_checksum)).
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.bm(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        write_u16(self.bm(), field::URGENT, v);
    }

    /// Mutable options area (see [`options`](Self::options)).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let b = self.bm();
        let end = data_offset(b).map_or(0, |h| h.min(b.len()));
        b.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }

    /// Rewrites the value of the MSS option that [`mss`](Self::mss) reads, in
    /// place, and returns the value it held; `None`, and nothing written, if
    /// there is no such option. The checksum is not updated: fill it again
    /// if it has to be right. Never panics, even on an unchecked view.
    pub fn set_mss(&mut self, mss: u16) -> Option<u16> {
        let opts = self.options_mut();
        let at = mss_at(opts)?;
        let old = u16::from_be_bytes([opts[at], opts[at + 1]]);
        opts[at..at + 2].copy_from_slice(&mss.to_be_bytes());
        Some(old)
    }

    /// Mutable payload (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.bm();
        match data_offset(b) {
            Some(h) => b.get_mut(h..).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    /// Computes and stores the checksum over the whole buffer and the
    /// pseudo-header for `addrs` (RFC 9293 §3.1).
    pub fn fill_checksum(&mut self, addrs: &IpPair) {
        let len = self.b().len() as u32;
        self.fill_checksum_with(addrs.pseudo_header(PROTOCOL, len));
    }

    /// Computes and stores the checksum over the whole buffer and a
    /// pseudo-header whose sum the caller has, the TCP length included (see
    /// [`checksum::pseudo_header_v4`]): for a caller that sums the addresses
    /// once for many segments.
    pub fn fill_checksum_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let sum = checksum::combine(pseudo, checksum::ones_complement_sum(self.b()));
        self.set_checksum(checksum::finish(sum));
    }
}

/// The meaning of a TCP segment: the header fields, the MSS option, and the
/// payload borrowed from the packet. Other options are not represented:
/// `parse` checks and skips them, `emit` writes only the MSS option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// Maximum segment size option (RFC 9293 §3.7.1), if any.
    pub mss: Option<u16>,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Validates and lifts a segment sent from `addrs.src` to `addrs.dst`:
    /// `Truncated` / `Malformed` as [`TcpPacket::check_len`] says,
    /// `Checksum` if the checksum does not verify, `Malformed` if an option's
    /// length is wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        addrs: &IpPair,
    ) -> Result<TcpRepr<'a>, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(addrs) {
            return Err(WireError::Checksum);
        }
        let mut mss = None;
        for opt in packet.options_iter() {
            if let (TcpOption::MaxSegmentSize(m), None) = (opt?, mss) {
                mss = Some(m);
            }
        }
        let b: &'a [u8] = packet.buffer.as_ref();
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            mss,
            payload: &b[packet.header_len()..],
        })
    }

    /// Header bytes [`emit`](Self::emit) writes: 20, or 24 with the MSS
    /// option.
    pub const fn header_len(&self) -> usize {
        match self.mss {
            Some(_) => HEADER_LEN + 4,
            None => HEADER_LEN,
        }
    }

    /// Bytes [`emit`](Self::emit) writes: the header and the payload.
    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment, payload included, with a correct checksum for
    /// `addrs`. The packet must be exactly [`buffer_len`](Self::buffer_len)
    /// bytes long (the checksum covers the whole buffer); a longer one is
    /// checksummed with its tail included.
    ///
    /// # Panics
    /// If the packet is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>, addrs: &IpPair) {
        let header_len = self.header_len();
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.bm()[field::DATA_OFF] = ((header_len / 4) as u8) << 4;
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(self.urgent_at);
        if let Some(mss) = self.mss {
            let [hi, lo] = mss.to_be_bytes();
            packet.bm()[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&[option_kind::MSS, 4, hi, lo]);
        }
        packet.bm()[header_len..header_len + self.payload.len()].copy_from_slice(self.payload);
        packet.fill_checksum(addrs);
    }
}

#[cfg(test)]
mod tests;
