//! ARP for IPv4 over Ethernet (RFC 826; operation codes per RFC 5494).
//!
//! The view has fixed offsets for 6-byte hardware and 4-byte protocol
//! addresses. [`ArpRepr::parse`] rejects any other combination, so read the
//! address getters only after it (or after checking `hardware_len` /
//! `protocol_len` yourself).

use std::net::Ipv4Addr;

use crate::{EtherType, Field, MacAddr, WireError, ethertype, read_u16, write_u16};

mod field {
    use super::Field;
    pub(super) const HTYPE: usize = 0;
    pub(super) const PTYPE: usize = 2;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: usize = 6;
    pub(super) const SHA: Field = 8..14;
    pub(super) const SPA: Field = 14..18;
    pub(super) const THA: Field = 18..24;
    pub(super) const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// Hardware type for Ethernet (RFC 826 `ar$hrd`, IANA "Ethernet (10Mb)").
pub const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation (`ar$op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1, "who has".
    Request,
    /// 2, "is at".
    Reply,
    /// Any other code (RARP, InARP, …).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> Self {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view of an ARP packet (the Ethernet payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if shorter than the 28 bytes of an Ethernet/IPv4 ARP
    /// packet (frames padded to 60 bytes are fine; the padding is ignored).
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `ar$hrd`: 1 for Ethernet.
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// `ar$pro`: an EtherType, 0x0800 for IPv4.
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// `ar$hln`: hardware address length, 6 for Ethernet.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// `ar$pln`: protocol address length, 4 for IPv4.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// `ar$op`.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// `ar$sha`: sender hardware address.
    pub fn source_hardware_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA)
    }

    /// `ar$spa`: sender protocol address.
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA)
    }

    /// `ar$tha`: target hardware address (zero in a request).
    pub fn target_hardware_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA)
    }

    /// `ar$tpa`: target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA)
    }
}

fn mac_at(b: &[u8], f: Field) -> MacAddr {
    let mut a = [0u8; 6];
    a.copy_from_slice(&b[f]);
    MacAddr(a)
}

fn ip_at(b: &[u8], f: Field) -> Ipv4Addr {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    Ipv4Addr::from(a)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets `ar$hrd`.
    pub fn set_hardware_type(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, v);
    }

    /// Sets `ar$pro`.
    pub fn set_protocol_type(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, t.into());
    }

    /// Sets `ar$hln`.
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets `ar$pln`.
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets `ar$op`.
    pub fn set_operation(&mut self, op: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, op.into());
    }

    /// Sets `ar$sha`.
    pub fn set_source_hardware_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a.0);
    }

    /// Sets `ar$spa`.
    pub fn set_source_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    /// Sets `ar$tha`.
    pub fn set_target_hardware_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a.0);
    }

    /// Sets `ar$tpa`.
    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Request, reply, or another code.
    pub operation: ArpOperation,
    /// Sender MAC.
    pub source_hardware_addr: MacAddr,
    /// Sender IPv4 address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target MAC (zero in requests).
    pub target_hardware_addr: MacAddr,
    /// Target IPv4 address.
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Lifts the packet out of its view. `Err(Unsupported)` unless it is
    /// Ethernet (hrd 1, hln 6) / IPv4 (pro 0x0800, pln 4).
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        packet.check_len()?;
        if packet.hardware_type() != HTYPE_ETHERNET
            || u16::from(packet.protocol_type()) != ethertype::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: 28.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet, fixed fields included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 172.17.0.2 (02:42:ac:11:00:02) asks who has 172.17.0.1, the docker0
    /// gateway: the ARP payload of a container's first packet.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, // hrd: Ethernet
        0x08, 0x00, // pro: IPv4
        0x06, 0x04, // hln, pln
        0x00, 0x01, // op: request
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // sha
        0xac, 0x11, 0x00, 0x02, // spa 172.17.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha: unknown
        0xac, 0x11, 0x00, 0x01, // tpa 172.17.0.1
    ];

    fn request() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            source_protocol_addr: Ipv4Addr::new(172, 17, 0, 2),
            target_hardware_addr: MacAddr::ZERO,
            target_protocol_addr: Ipv4Addr::new(172, 17, 0, 1),
        }
    }

    #[test]
    fn parse_known_bytes() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Ok(request()));
    }

    #[test]
    fn emit_round_trip() {
        let r = request();
        let mut buf = [0xeeu8; 28];
        r.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);

        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: MacAddr([0x02, 0x42, 0x5e, 0x1f, 0x3c, 0x8a]),
            source_protocol_addr: r.target_protocol_addr,
            target_hardware_addr: r.source_hardware_addr,
            target_protocol_addr: r.source_protocol_addr,
        };
        reply.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[6..8], &[0x00, 0x02]);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Ok(reply));
        assert_eq!(reply.buffer_len(), 28);
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut ipv6_over_arp = REQUEST;
        ipv6_over_arp[2..4].copy_from_slice(&[0x86, 0xdd]);
        let p = ArpPacket::new_unchecked(&ipv6_over_arp[..]);
        assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported));
        let mut bad_hlen = REQUEST;
        bad_hlen[4] = 8;
        let p = ArpPacket::new_unchecked(&bad_hlen[..]);
        assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported));
    }

    #[test]
    fn unknown_operation_survives() {
        let mut b = REQUEST;
        b[7] = 9; // InARP request
        let r = ArpRepr::parse(&ArpPacket::new_unchecked(&b[..])).unwrap();
        assert_eq!(r.operation, ArpOperation::Unknown(9));
        assert_eq!(u16::from(r.operation), 9);
    }
}
