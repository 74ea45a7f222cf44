//! UDP headers (RFC 768).
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |     Source      |   Destination   |
//! |      Port       |      Port       |
//! +--------+--------+--------+--------+
//! |                 |                 |
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! +---------------- ...
//! ```
//!
//! The length field counts header and data; bytes after it in the buffer
//! (Ethernet padding) are not part of the datagram. The checksum covers a
//! pseudo-header made of the IP addresses ([`IpPair`]), the protocol and the
//! length, then the datagram. A checksum of 0 means none was computed (IPv4
//! only, RFC 768; IPv6 requires one, RFC 8200 §8.1), so a computed 0 is sent
//! as `0xffff`.

use crate::checksum::{self, IpPair};
use crate::{WireError, read_u16, write_u16};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
    pub(super) const PAYLOAD: usize = 8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// IANA protocol number of UDP, for the pseudo-header and IP headers.
pub const PROTOCOL: u8 = 17;

/// A view of one UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header and the length the length
    /// field gives: `Truncated` if not, `Malformed` if the length field is
    /// below 8. Bytes after the length (padding) are allowed.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.b().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let udp_len = usize::from(self.length());
        if udp_len < HEADER_LEN {
            Err(WireError::Malformed)
        } else if udp_len > len {
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

    /// Source port (0: none, RFC 768).
    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), field::DST_PORT)
    }

    /// Length field: header and data, in bytes.
    pub fn length(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    /// Checksum as stored (0: none computed).
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// The datagram as the length field gives it, cut at the end of the
    /// buffer.
    fn datagram(&self) -> &[u8] {
        let b = self.b();
        let end = b
            .get(field::LENGTH..field::LENGTH + 2)
            .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
        &b[..end.min(b.len())]
    }

    /// The data: bytes 8 up to the length field (trailing padding
    /// excluded). Empty if the length field is below 8; cut at the end of the
    /// buffer if it claims more. Never panics, even on an unchecked view.
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Whether the pseudo-header for `addrs` and the datagram (up to the
    /// length field) sum to 0xffff, i.e. the stored checksum is right. A
    /// checksum of 0 (none computed) passes over IPv4 (RFC 768) and fails
    /// over IPv6 (RFC 8200 §8.1).
    pub fn verify_checksum(&self, addrs: &IpPair) -> bool {
        if self.b().len() >= HEADER_LEN && self.checksum() == 0 {
            return matches!(addrs, IpPair::V4 { .. });
        }
        let d = self.datagram();
        let pseudo = addrs.pseudo_header(PROTOCOL, d.len() as u32);
        checksum::combine(pseudo, checksum::ones_complement_sum(d)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
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

    /// Sets the length field.
    pub fn set_length(&mut self, v: u16) {
        write_u16(self.bm(), field::LENGTH, v);
    }

    /// Stores `v` as the checksum (see [`fill_checksum`](Self::fill_checksum)).
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.bm(), field::CHECKSUM, v);
    }

    /// Mutable data (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.datagram().len();
        self.bm().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }

    /// Computes and stores the checksum over the pseudo-header for `addrs`
    /// and the datagram up to the length field; a computed 0 is stored as
    /// `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, addrs: &IpPair) {
        self.set_checksum(0);
        let d = self.datagram();
        let pseudo = addrs.pseudo_header(PROTOCOL, d.len() as u32);
        let sum = checksum::combine(pseudo, checksum::ones_complement_sum(d));
        self.set_checksum(checksum::non_zero(checksum::finish(sum)));
    }
}

/// The meaning of a UDP datagram: ports and the data, borrowed from the
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Data.
    pub payload: &'a [u8],
}

impl<'a> UdpRepr<'a> {
    /// Validates and lifts a datagram sent from `addrs.src` to `addrs.dst`:
    /// `Truncated` / `Malformed` as [`UdpPacket::check_len`] says, `Checksum`
    /// unless [`UdpPacket::verify_checksum`] passes.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &UdpPacket<&'a T>,
        addrs: &IpPair,
    ) -> Result<UdpRepr<'a>, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(addrs) {
            return Err(WireError::Checksum);
        }
        let b: &'a [u8] = packet.buffer.as_ref();
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload: &b[HEADER_LEN..usize::from(packet.length())],
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the header and the data. The
    /// length field holds it, so it must not exceed 65535 (over IPv4, 65507:
    /// the IPv4 total length is 16 bits too).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the datagram, data included, with its length and a checksum
    /// for `addrs` (0 sent as `0xffff`). Bytes of the packet after
    /// [`buffer_len`](Self::buffer_len) are left alone.
    ///
    /// # Panics
    /// If the packet is shorter than [`buffer_len`](Self::buffer_len), or
    /// that is more than 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>, addrs: &IpPair) {
        let len = u16::try_from(self.buffer_len()).expect("UDP datagram over 65535 bytes");
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_length(len);
        packet.bm()[HEADER_LEN..usize::from(len)].copy_from_slice(self.payload);
        packet.fill_checksum(addrs);
    }
}

#[cfg(test)]
mod tests;
