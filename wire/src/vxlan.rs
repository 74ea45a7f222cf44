//! VXLAN headers (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header rides in a UDP datagram to port [`VXLAN_PORT`] and is followed by
//! the inner Ethernet frame (no FCS). The I flag (0x08) must be set for the VNI
//! to be valid; every `R` bit must be zero on transmission and is ignored on
//! receipt (§5), which is what [`Packet::set_vni`] and [`Repr::parse`] do.

use std::fmt;

use crate::{Field, WireError};

mod field {
    use super::Field;
    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: Field = 1..4;
    pub(super) const VNI: Field = 4..7;
    pub(super) const RESERVED2: usize = 7;
    pub(super) const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = field::PAYLOAD;

/// The IANA-assigned UDP destination port of VXLAN (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;

/// The I flag: the VNI field is valid (RFC 7348 §5). The only flag defined.
pub const FLAG_VNI: u8 = 0x08;

/// The largest VNI: the field is 24 bits.
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// A VXLAN Network Identifier: 24 bits naming one overlay network (RFC 7348 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// `v` as a VNI, or `None` if it does not fit in 24 bits.
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= VNI_MAX { Some(Vni(v)) } else { None }
    }

    /// The VNI's value (at most [`VNI_MAX`]).
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The three bytes of the VNI field, big-endian.
    const fn to_be_bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> Self {
        v.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = WireError;

    /// `Err(Malformed)` above [`VNI_MAX`].
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Vni::new(v).ok_or(WireError::Malformed)
    }
}

/// A view of a VXLAN header and the inner frame after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if the buffer is shorter than the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.b().len() < VXLAN_HEADER_LEN {
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

    /// The flags byte as received (reserved bits included).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }

    /// Whether the I flag is set, i.e. the VNI is valid (RFC 7348 §5).
    pub fn has_vni_flag(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The 24-bit VNI field, whatever the I flag says.
    pub fn vni(&self) -> Vni {
        let v = &self.b()[field::VNI];
        Vni(u32::from_be_bytes([0, v[0], v[1], v[2]]))
    }

    /// The inner Ethernet frame: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.b()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Writes a whole header for `vni`: flags `0x08` (only the I flag), the VNI,
    /// and every reserved bit zero (RFC 7348 §5).
    pub fn set_vni(&mut self, vni: Vni) {
        let b = self.bm();
        b[field::FLAGS] = FLAG_VNI;
        b[field::RESERVED1].fill(0);
        b[field::VNI].copy_from_slice(&vni.to_be_bytes());
        b[field::RESERVED2] = 0;
    }

    /// Mutable inner frame (everything after the header).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.bm()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of a VXLAN header: its VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The overlay network.
    pub vni: Vni,
}

impl Repr {
    /// Lifts the header out of its view: `Truncated` if shorter than 8 bytes,
    /// `Malformed` if the I flag is clear (no valid VNI). Reserved bits are
    /// ignored (RFC 7348 §5).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        if !packet.has_vni_flag() {
            return Err(WireError::Malformed);
        }
        Ok(Repr { vni: packet.vni() })
    }

    /// Header bytes [`emit`](Self::emit) writes: 8.
    pub const fn buffer_len(&self) -> usize {
        VXLAN_HEADER_LEN
    }

    /// Writes the header (see [`Packet::set_vni`]); the packet must hold at
    /// least [`buffer_len`](Self::buffer_len) bytes (a checked view does).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VXLAN header of a datagram Linux's `vxlan` driver sent for a device
    /// with `id 42`: flags 0x08, VNI 42, followed by the inner frame.
    const LINUX_VNI_42: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn vni_bounds() {
        assert_eq!(Vni::new(0).map(Vni::get), Some(0));
        assert_eq!(Vni::new(0xff_ffff).map(Vni::get), Some(0xff_ffff));
        assert_eq!(Vni::new(0x100_0000), None);
        assert_eq!(Vni::new(u32::MAX), None);
        assert_eq!(Vni::try_from(0x100_0000), Err(WireError::Malformed));
        assert_eq!(u32::from(vni(7)), 7);
        assert_eq!(vni(4096).to_string(), "4096");
        assert_eq!(format!("{:?}", vni(42)), "Vni(42)");
        assert!(vni(1) < vni(2));
    }

    #[test]
    fn parse_linux_bytes() {
        let mut datagram = LINUX_VNI_42.to_vec();
        datagram.extend_from_slice(&[0xff; 14]);
        let p = Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(p.flags(), 0x08);
        assert!(p.has_vni_flag());
        assert_eq!(p.vni(), vni(42));
        assert_eq!(p.payload(), &[0xff; 14]);
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: vni(42) }));
    }

    #[test]
    fn emit_matches_linux() {
        let mut buf = [0xeeu8; 8];
        let r = Repr { vni: vni(42) };
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, LINUX_VNI_42);
        assert_eq!(r.buffer_len(), 8);
    }

    #[test]
    fn set_vni_zeroes_reserved_and_keeps_payload() {
        let mut buf = [0xffu8; 10];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_vni(vni(0x12_3456));
        p.payload_mut()[0] = 0xab;
        assert_eq!(buf, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xab, 0xff]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.vni(), vni(0x12_3456));
        assert_eq!(p.payload(), &[0xab, 0xff]);
    }

    #[test]
    fn reserved_bits_ignored_on_receipt() {
        let b = [0xff, 0xff, 0xff, 0xff, 0x00, 0x10, 0x00, 0xff];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.flags(), 0xff);
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: vni(0x1000) }));
    }

    #[test]
    fn rejects_short_and_flagless() {
        assert_eq!(
            Packet::new_checked(&LINUX_VNI_42[..7]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&LINUX_VNI_42[..3])),
            Err(WireError::Truncated)
        );
        let mut b = LINUX_VNI_42;
        b[0] = 0xf7; // every bit but I
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.has_vni_flag());
        assert_eq!(p.vni(), vni(42));
        assert_eq!(Repr::parse(&p), Err(WireError::Malformed));
    }

    #[test]
    fn header_only_has_empty_payload() {
        let p = Packet::new_checked(&LINUX_VNI_42[..]).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.as_ref().len(), 8);
        assert_eq!(p.into_inner(), &LINUX_VNI_42[..]);
    }
}
