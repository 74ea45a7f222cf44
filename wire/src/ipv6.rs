//! IPv6 fixed headers (RFC 8200 §3). Extension headers are payload here.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                  Source Address (128 bits)                    |
//! |               Destination Address (128 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv6Addr;

use crate::{Field, WireError, read_u16, write_u16};

mod field {
    use super::Field;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: usize = 4;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` unless the buffer holds the 40-byte header and the
    /// payload length it announces. Trailing padding is allowed.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || HEADER_LEN + usize::from(self.payload_len()) > len {
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

    fn first_word(&self) -> u32 {
        let w: [u8; 4] = self.b()[field::VER_TC_FLOW].try_into().unwrap_or([0; 4]);
        u32::from_be_bytes(w)
    }

    /// Version field; 6 for IPv6.
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// Traffic Class (DSCP and ECN, RFC 8200 §7).
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// Flow Label, 20 bits (RFC 6437).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    /// Next Header (first extension header or upper-layer protocol).
    pub fn next_header(&self) -> u8 {
        self.b()[field::NXT_HDR]
    }

    /// Hop Limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let a: [u8; 16] = self.b()[field::SRC_ADDR].try_into().unwrap_or([0; 16]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let a: [u8; 16] = self.b()[field::DST_ADDR].try_into().unwrap_or([0; 16]);
        Ipv6Addr::from(a)
    }

    /// The payload (`payload_len` bytes after the header; padding excluded).
    /// Empty if the length field was changed to more than the buffer holds.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.b().get(HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_first_word(&mut self, w: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the version nibble.
    pub fn set_version(&mut self, v: u8) {
        let w = (self.first_word() & 0x0fff_ffff) | (u32::from(v & 0x0f) << 28);
        self.set_first_word(w);
    }

    /// Sets the Traffic Class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.first_word() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_first_word(w);
    }

    /// Sets the Flow Label; only the low 20 bits are used.
    pub fn set_flow_label(&mut self, label: u32) {
        let w = (self.first_word() & 0xfff0_0000) | (label & 0x000f_ffff);
        self.set_first_word(w);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets Next Header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets Hop Limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Mutable payload (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// The meaning of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next Header.
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop Limit.
    pub hop_limit: u8,
    /// Traffic Class.
    pub traffic_class: u8,
    /// Flow Label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Validates and lifts a header: `Malformed` unless the version is 6.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Ipv6Repr, WireError> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header bytes [`emit`](Self::emit) writes: 40.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header. `payload_len` saturates at 65535 (jumbograms,
    /// RFC 2675, are not supported) and `flow_label` is masked to 20 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        packet.set_first_word(0x6000_0000);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(self.payload_len.min(usize::from(u16::MAX)) as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMPv6 echo request fe80::42:acff:fe11:2 → ff02::1 (all nodes),
    /// hop limit 1, traffic class 0, flow label 0x2f7b1, 64-byte payload.
    const HEADER: [u8; 40] = [
        0x60, 0x02, 0xf7, 0xb1, // v6, TC 0, flow 0x2f7b1
        0x00, 0x40, 0x3a, 0x01, // payload 64, ICMPv6, hop limit 1
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // src
        0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, //
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // dst
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "fe80::42:acff:fe11:2".parse().unwrap(),
            dst_addr: "ff02::1".parse().unwrap(),
            next_header: 58,
            payload_len: 64,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0x2f7b1,
        }
    }

    fn packet_bytes() -> Vec<u8> {
        let mut b = vec![0u8; 104];
        b[..40].copy_from_slice(&HEADER);
        b
    }

    #[test]
    fn parse_known_bytes() {
        let b = packet_bytes();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), Ok(repr()));
        assert_eq!(p.payload().len(), 64);
    }

    #[test]
    fn emit_round_trip() {
        let r = repr();
        let mut b = [0xffu8; 104];
        r.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..40], &HEADER);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), Ok(r));
        assert_eq!(r.buffer_len(), 40);

        let tc = Ipv6Repr {
            traffic_class: 0xb9,
            flow_label: 0xfffff,
            payload_len: 0,
            ..r
        };
        let mut b = [0u8; 40];
        tc.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..4], &[0x6b, 0x9f, 0xff, 0xff]);
        assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&b[..])), Ok(tc));
    }

    #[test]
    fn errors() {
        let b = packet_bytes();
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..103]).unwrap_err(),
            WireError::Truncated
        );
        let mut v4 = b.clone();
        v4[0] = 0x40;
        let p = Ipv6Packet::new_checked(&v4[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), Err(WireError::Malformed));
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut b = packet_bytes();
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_traffic_class(0xff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xff, 0x2f7b1)
        );
        p.set_flow_label(0xfff_ffff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xff, 0xfffff)
        );
        p.set_hop_limit(255);
        p.set_payload_len(1000);
        assert!(p.payload().is_empty());
        assert!(p.payload_mut().is_empty());
    }
}
