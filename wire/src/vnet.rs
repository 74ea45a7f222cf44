//! The virtio-net header that TAP devices opened with `IFF_VNET_HDR` put in front of every
//! frame (virtio spec 1.x §5.1.6 "Device Operation", `struct virtio_net_hdr_v1`; Linux
//! `include/uapi/linux/virtio_net.h`).
//!
//! Layout, 12 bytes, every multi-byte field little-endian:
//!
//! ```text
//!  0       1          2         4          6            8             10            12
//!  | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset | num_buffers |
//! ```
//!
//! The legacy header is the first 10 bytes; `num_buffers` only matters with mergeable receive
//! buffers, which a TAP never uses, so it is ignored on parse and written as 0. The fields are
//! little-endian as in virtio 1.x and as a TAP uses them on little-endian hosts (a big-endian
//! host must set `TUNSETVNETLE` on the TAP for this layout to hold).

/// Length of the header this crate reads and writes (`virtio_net_hdr_v1`, `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 12;

/// Length of the legacy header (`virtio_net_hdr`): the shortest input [`VnetHdr::parse`]
/// accepts.
pub const VNET_HDR_LEGACY_LEN: usize = 10;

/// Byte ranges of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
    pub(super) const NUM_BUFFERS: Range<usize> = 10..12;
}

/// The meaning of a virtio-net header (`num_buffers` left out: always 0 for a TAP).
///
/// `Default` is the header of a plain frame: no offload, checksum already complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID` bits.
    pub flags: u8,
    /// One of the `GSO_*` kinds, optionally or-ed with [`VnetHdr::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (L2 to L4) of a GSO frame; a hint only, never trusted here.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP) of a GSO frame.
    pub gso_size: u16,
    /// Offset from the start of the frame where the partial checksum starts.
    pub csum_start: u16,
    /// Offset from `csum_start` of the 16-bit field where the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The checksum is partial: sum from `csum_start` to the end and store the folded
    /// complement at `csum_start + csum_offset` (Linux `CHECKSUM_PARTIAL`).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum has already been validated (receive side, Linux `CHECKSUM_UNNECESSARY`).
    pub const F_DATA_VALID: u8 = 2;

    /// Not a GSO frame.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 superframe (TSO4).
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO, deprecated).
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 superframe (TSO6).
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation offload (USO, `UDP_SEGMENT`).
    pub const GSO_UDP_L4: u8 = 5;
    /// Flag bit: the TCP superframe carries CWR (RFC 3168), to be set on the first segment
    /// only.
    pub const GSO_ECN: u8 = 0x80;

    /// Reads a header from the first bytes of `bytes`; `None` if there are fewer than the
    /// 10 bytes of the legacy header. Values are not checked: that is for whoever acts on
    /// them.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEGACY_LEN)?;
        let u16_at = |r: core::ops::Range<usize>| u16::from_le_bytes([b[r.start], b[r.start + 1]]);
        Some(VnetHdr {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: u16_at(field::HDR_LEN),
            gso_size: u16_at(field::GSO_SIZE),
            csum_start: u16_at(field::CSUM_START),
            csum_offset: u16_at(field::CSUM_OFFSET),
        })
    }

    /// Writes the header as `virtio_net_hdr_v1` with `num_buffers` = 0.
    pub fn emit(&self, out: &mut [u8; VNET_HDR_LEN]) {
        out[field::FLAGS] = self.flags;
        out[field::GSO_TYPE] = self.gso_type;
        out[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        out[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        out[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[field::NUM_BUFFERS].copy_from_slice(&0u16.to_le_bytes());
    }

    /// The header as bytes (see [`VnetHdr::emit`]).
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut out = [0; VNET_HDR_LEN];
        self.emit(&mut out);
        out
    }

    /// The GSO kind without the ECN bit (`GSO_NONE`, `GSO_TCPV4`, ...).
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }

    /// Whether the frame is a superframe to be segmented (any kind other than `GSO_NONE`).
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != Self::GSO_NONE
    }

    /// Whether the ECN bit is set in `gso_type`.
    pub fn has_ecn(&self) -> bool {
        self.gso_type & Self::GSO_ECN != 0
    }

    /// Whether the frame carries a partial checksum to be completed (`F_NEEDS_CSUM`).
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSO4 header as a TAP hands it out: NEEDS_CSUM, TCPV4, 66 bytes of headers,
    /// MSS 1448, checksum at 34 + 16.
    const TSO4: [u8; VNET_HDR_LEN] = [
        0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn parse_known_bytes() {
        let h = VnetHdr::parse(&TSO4).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                gso_type: VnetHdr::GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert!(h.is_gso());
        assert!(h.needs_csum());
        assert!(!h.has_ecn());
        assert_eq!(h.gso_kind(), VnetHdr::GSO_TCPV4);
    }

    #[test]
    fn emit_round_trips() {
        let h = VnetHdr::parse(&TSO4).unwrap();
        let mut out = [0xff; VNET_HDR_LEN];
        h.emit(&mut out);
        assert_eq!(out, TSO4);
        assert_eq!(h.to_bytes(), TSO4);
    }

    #[test]
    fn little_endian_fields() {
        let h = VnetHdr {
            flags: VnetHdr::F_DATA_VALID,
            gso_type: VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
        };
        assert_eq!(
            h.to_bytes(),
            [
                0x02, 0x84, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0, 0
            ]
        );
        assert!(h.is_gso());
        assert!(h.has_ecn());
        assert!(!h.needs_csum());
        assert_eq!(h.gso_kind(), VnetHdr::GSO_TCPV6);
    }

    #[test]
    fn legacy_length_and_num_buffers() {
        // 10 bytes are enough; num_buffers is ignored on parse and written as 0.
        let h = VnetHdr::parse(&TSO4[..VNET_HDR_LEGACY_LEN]).unwrap();
        assert_eq!(h.gso_size, 1448);
        let mut with_buffers = TSO4;
        with_buffers[10] = 7;
        assert_eq!(VnetHdr::parse(&with_buffers).unwrap().to_bytes(), TSO4);
        assert_eq!(VnetHdr::parse(&TSO4[..9]), None);
        assert_eq!(VnetHdr::parse(&[]), None);
    }

    #[test]
    fn default_is_plain_frame() {
        let h = VnetHdr::default();
        assert!(!h.is_gso());
        assert!(!h.needs_csum());
        assert_eq!(h.to_bytes(), [0; VNET_HDR_LEN]);
        // The ECN bit alone does not make a GSO frame.
        let ecn_only = VnetHdr {
            gso_type: VnetHdr::GSO_ECN,
            ..h
        };
        assert!(!ecn_only.is_gso());
    }
}
