//! Ethernet II frames (IEEE 802.3-2018 §3.1.1 with the DIX EtherType), and the
//! EtherType registry subset tapnet needs.

use crate::{Field, MacAddr, WireError, read_u16, write_u16};

/// Raw EtherType values (IEEE registry), for matching on a bare `u16`.
pub mod ethertype {
    /// Internet Protocol version 4 (RFC 894).
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol (RFC 826).
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag (C-TAG).
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (S-TAG, "QinQ").
    pub const QINQ: u16 = 0x88a8;
    /// Internet Protocol version 6 (RFC 2464).
    pub const IPV6: u16 = 0x86dd;
}

/// The protocol of an Ethernet payload (or of what follows a VLAN tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800, IPv4.
    Ipv4,
    /// 0x0806, ARP.
    Arp,
    /// 0x8100, an 802.1Q tag follows.
    Vlan,
    /// 0x88a8, an 802.1ad tag follows.
    QinQ,
    /// 0x86DD, IPv6.
    Ipv6,
    /// Anything else (values below 0x0600 are 802.3 lengths, not types).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            ethertype::IPV4 => EtherType::Ipv4,
            ethertype::ARP => EtherType::Arp,
            ethertype::VLAN => EtherType::Vlan,
            ethertype::QINQ => EtherType::QinQ,
            ethertype::IPV6 => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> Self {
        match t {
            EtherType::Ipv4 => ethertype::IPV4,
            EtherType::Arp => ethertype::ARP,
            EtherType::Vlan => ethertype::VLAN,
            EtherType::QinQ => ethertype::QINQ,
            EtherType::Ipv6 => ethertype::IPV6,
            EtherType::Unknown(v) => v,
        }
    }
}

mod field {
    use super::Field;
    pub(super) const DESTINATION: Field = 0..6;
    pub(super) const SOURCE: Field = 6..12;
    pub(super) const ETHERTYPE: usize = 12;
    pub(super) const PAYLOAD: usize = 14;
}

/// Length of an untagged Ethernet II header: two addresses and the EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// At most this many stacked VLAN tags are skipped by [`payload_ethertype`].
/// Real networks use one or two; a frame with more is treated as unparseable
/// rather than walked for up to a jumbo frame's length.
pub const MAX_VLAN_TAGS: usize = 8;

/// A view of an Ethernet II frame (no preamble, no FCS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(Truncated)` if the buffer is shorter than the 14-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length: always 14 (VLAN tags count as payload here).
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[field::DESTINATION]);
        MacAddr(a)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[field::SOURCE]);
        MacAddr(a)
    }

    /// The outer EtherType (`Vlan`/`QinQ` if tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the 14-byte header, tags included.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// The EtherType and offset of the payload past any VLAN tags; see
    /// [`payload_ethertype`].
    pub fn payload_ethertype(&self) -> Option<(u16, usize)> {
        payload_ethertype(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Sets the outer EtherType.
    pub fn set_ethertype(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, t.into());
    }

    /// Mutable payload (everything after the 14-byte header).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The EtherType of the payload and the byte offset where that payload starts,
/// after skipping any stacked 802.1Q (0x8100) and 802.1ad (0x88a8) tags
/// (IEEE 802.1Q-2018 §9.4: each tag is a 2-byte TPID then a 2-byte TCI).
///
/// `frame` is the whole frame from the destination address on (a byte slice
/// or an [`EthernetFrame`]). `None` if the frame ends inside the header or a
/// tag, or has more than [`MAX_VLAN_TAGS`] tags. The returned offset is at most
/// `frame.len()`.
///
/// ```
/// use tapnet_wire::{ethertype, payload_ethertype};
/// let mut f = [0u8; 22];
/// f[12..14].copy_from_slice(&[0x81, 0x00]); // 802.1Q, VID 5
/// f[14..16].copy_from_slice(&[0x00, 0x05]);
/// f[16..18].copy_from_slice(&[0x08, 0x00]); // inner: IPv4
/// assert_eq!(payload_ethertype(&f[..]), Some((ethertype::IPV4, 18)));
/// ```
pub fn payload_ethertype<B: AsRef<[u8]> + ?Sized>(frame: &B) -> Option<(u16, usize)> {
    let b = frame.as_ref();
    let mut at = field::ETHERTYPE;
    for _ in 0..=MAX_VLAN_TAGS {
        let t = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
        if t != ethertype::VLAN && t != ethertype::QINQ {
            return Some((t, at + 2));
        }
        // Skip this TPID and its TCI; the next EtherType/TPID follows.
        at += 4;
    }
    None
}

/// The meaning of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: MacAddr,
    /// Destination address.
    pub dst_addr: MacAddr,
    /// Outer EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Lifts the header out of a frame. Only the length can be wrong.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header bytes [`emit`](Self::emit) writes: 14.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `frame`, which must hold at least
    /// [`buffer_len`](Self::buffer_len) bytes (a checked view does).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Docker container (172.17.0.2) asking for its gateway's MAC: the
    /// Ethernet header of the broadcast ARP request it sends on docker0.
    const ARP_REQUEST_HEADER: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src: 02:42:ac:11:00:02
        0x08, 0x06, // ARP
    ];

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            dst_addr: MacAddr::BROADCAST,
            ethertype: EtherType::Arp,
        }
    }

    #[test]
    fn parse_known_bytes() {
        let f = EthernetFrame::new_checked(&ARP_REQUEST_HEADER[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f), Ok(repr()));
        assert!(f.payload().is_empty());
        assert_eq!(f.payload_ethertype(), Some((ethertype::ARP, 14)));
    }

    #[test]
    fn emit_round_trip() {
        let r = repr();
        let mut buf = [0u8; 14];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        r.emit(&mut f);
        assert_eq!(buf, ARP_REQUEST_HEADER);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f), Ok(r));
        assert_eq!(r.buffer_len(), 14);
    }

    #[test]
    fn short_frame_is_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP_REQUEST_HEADER[..13]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn ethertype_conversions() {
        for v in [0x0800, 0x0806, 0x8100, 0x88a8, 0x86dd, 0x1234, 0x0000] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(EtherType::from(0x88a8), EtherType::QinQ);
    }

    #[test]
    fn payload_ethertype_skips_tags() {
        // Untagged IPv6.
        let mut f = [0u8; 40];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(payload_ethertype(&f[..]), Some((ethertype::IPV6, 14)));
        // QinQ: S-TAG VID 100, C-TAG VID 200, then IPv4.
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        f[14..16].copy_from_slice(&[0x00, 0x64]);
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        f[18..20].copy_from_slice(&[0x00, 0xc8]);
        f[20..22].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(payload_ethertype(&f[..]), Some((ethertype::IPV4, 22)));
        // Works through the typed view too.
        let view = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(payload_ethertype(&view), Some((ethertype::IPV4, 22)));
        // Ends inside a tag.
        assert_eq!(payload_ethertype(&f[..21]), None);
        assert_eq!(payload_ethertype(&f[..22]), Some((ethertype::IPV4, 22)));
        assert_eq!(payload_ethertype(&f[..13]), None);
    }

    #[test]
    fn payload_ethertype_bounds_tag_depth() {
        let mut f = vec![0u8; 14 + 4 * 16];
        for i in 0..16 {
            f[12 + 4 * i..14 + 4 * i].copy_from_slice(&[0x81, 0x00]);
        }
        assert_eq!(payload_ethertype(&f), None);
        // Exactly MAX_VLAN_TAGS tags is fine.
        let at = 12 + 4 * MAX_VLAN_TAGS;
        f[at..at + 2].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(payload_ethertype(&f), Some((ethertype::ARP, at + 2)));
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut buf = ARP_REQUEST_HEADER;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr(MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]));
        f.set_ethertype(EtherType::Ipv4);
        assert_eq!(f.dst_addr().to_string(), "02:42:ac:11:00:01");
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
    }
}
