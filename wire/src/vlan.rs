//! IEEE 802.1Q VLAN tags (802.1Q-2018 §9.6): the 4 bytes after a 0x8100
//! (C-TAG) or 0x88a8 (S-TAG, 802.1ad) TPID.
//!
//! The view starts *after* the TPID, at the Tag Control Information, so that
//! `VlanTag::new_checked(frame.payload())` works on a frame whose
//! [`EtherType`] is `Vlan` or `QinQ`:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | PCP |D|         VID           |    inner EtherType / TPID     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::{EtherType, Field, WireError, read_u16, write_u16};

mod field {
    use super::Field;
    pub(super) const TCI: usize = 0;
    pub(super) const ETHERTYPE: Field = 2..4;
    pub(super) const PAYLOAD: usize = 4;
}

/// Length of the part of a tag this view covers (TCI + inner EtherType).
pub const HEADER_LEN: usize = field::PAYLOAD;

/// VID 0xFFF is reserved and must not be transmitted (802.1Q-2018 Table 9-2).
pub const VID_RESERVED: u16 = 0x0fff;

/// A view of one VLAN tag's TCI and the EtherType that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// `Err(Truncated)` if fewer than 4 bytes.
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

    /// The raw 16-bit Tag Control Information.
    pub fn tci(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority Code Point (3 bits, 802.1Q §6.9.3).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop Eligible Indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits). 0 means priority-tagged, no VLAN.
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType (or next TPID) after this tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// Bytes after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the raw TCI.
    pub fn set_tci(&mut self, tci: u16) {
        write_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the PCP; only the low 3 bits of `pcp` are used.
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 0x7) << 13);
        self.set_tci(tci);
    }

    /// Sets the DEI bit.
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VID; only the low 12 bits of `vid` are used.
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the EtherType after the tag.
    pub fn set_ethertype(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, t.into());
    }

    /// Mutable bytes after the tag.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The meaning of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRepr {
    /// Priority Code Point, 0..=7.
    pub pcp: u8,
    /// Drop Eligible Indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4094 (0 = priority tag only).
    pub vid: u16,
    /// What follows the tag.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Lifts a tag out of its view. `Err(Malformed)` for the reserved VID 0xFFF.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<VlanRepr, WireError> {
        tag.check_len()?;
        if tag.vid() == VID_RESERVED {
            return Err(WireError::Malformed);
        }
        Ok(VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: 4.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag; out-of-range `pcp`/`vid` bits are masked off.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        let tci = (u16::from(self.pcp & 0x7) << 13)
            | if self.dei { 0x1000 } else { 0 }
            | (self.vid & 0x0fff);
        tag.set_tci(tci);
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EthernetFrame, ethertype};

    /// A C-tagged ARP request: VID 10, PCP 5, DEI clear (TCI 0xa00a).
    const TAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src
        0x81, 0x00, // TPID 802.1Q
        0xa0, 0x0a, // PCP 5, DEI 0, VID 10
        0x08, 0x06, // inner: ARP
    ];

    #[test]
    fn parse_known_bytes() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::Vlan);
        let tag = VlanTag::new_checked(f.payload()).unwrap();
        let r = VlanRepr::parse(&tag).unwrap();
        assert_eq!(
            r,
            VlanRepr {
                pcp: 5,
                dei: false,
                vid: 10,
                ethertype: EtherType::Arp
            }
        );
        assert_eq!(f.payload_ethertype(), Some((ethertype::ARP, 18)));
    }

    #[test]
    fn emit_round_trip() {
        let r = VlanRepr {
            pcp: 3,
            dei: true,
            vid: 4094,
            ethertype: EtherType::Ipv6,
        };
        let mut buf = [0u8; 4];
        r.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x7f, 0xfe, 0x86, 0xdd]);
        let tag = VlanTag::new_checked(&buf[..]).unwrap();
        assert_eq!(VlanRepr::parse(&tag), Ok(r));
        assert_eq!(r.buffer_len(), 4);
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut buf = [0xa0, 0x0a, 0x08, 0x06];
        let mut tag = VlanTag::new_checked(&mut buf[..]).unwrap();
        tag.set_vid(0xfff7 & 0x0fff);
        tag.set_dei(true);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (5, true, 0x0ff7));
        tag.set_pcp(0xff);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (7, true, 0x0ff7));
    }

    #[test]
    fn reserved_vid_and_short_tag_rejected() {
        let tag = VlanTag::new_unchecked(&[0x0f, 0xff, 0x08, 0x00][..]);
        assert_eq!(VlanRepr::parse(&tag), Err(WireError::Malformed));
        assert_eq!(
            VlanTag::new_checked(&[0x00, 0x01, 0x08][..]).unwrap_err(),
            WireError::Truncated
        );
    }
}
