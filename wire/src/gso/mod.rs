//! Software segmentation (GSO) and checksum completion for egress ports without offloads.
//!
//! A TAP opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD(CSUM|TSO4|TSO6)` hands the engine TCP
//! superframes of up to 64 KiB whose TCP checksum is partial (see [`crate::vnet`]). Between
//! ports that accept the header the engine forwards it unchanged; towards a port that does not
//! (an in-memory port, a smaller MTU) it calls [`segment`] for superframes and
//! [`complete_checksum`] for plain frames that still carry a partial checksum.
//!
//! Linux is the model: `net/ipv4/tcp_offload.c` `tcp_gso_segment` for segmentation and
//! `net/core/dev.c` `skb_checksum_help` for checksum completion. Checksums are the Internet
//! checksum of RFC 1071, from [`crate::checksum`].
//!
//! A frame here starts at the Ethernet header (the virtio-net header already stripped), so
//! `csum_start` counts from the first byte of the destination MAC.

use crate::ethernet::{self, ethertype};
use crate::ipv4::{self, Ipv4Packet};
use crate::ipv6::{self, Ipv6Packet};
use crate::vnet::VnetHdr;
use crate::{checksum, write_u16};

mod tcp;

pub use tcp::{segment, segment_count, segment_headers};

/// Smallest `gso_size` (payload bytes per segment) [`segment`] accepts: a superframe
/// asking for less is refused ([`GsoDrop::GsoSizeTooSmall`]) instead of being cut into
/// thousands of frames (a `gso_size` of 1 would turn one 64 KiB superframe into 65,000).
///
/// RFC 9293 §3.7.1's 536 (IPv4) and 1220 (IPv6) bytes are only the MSS assumed when the
/// peer sends no MSS option; a peer may ask for less, and Linux sends segments down to
/// `tcp_min_snd_mss` (48) less its options. 64 is below any MSS seen on real paths (MSS
/// clamping stops around 1200, RFC 879's 576-byte datagram gives 536) and keeps the
/// fan-out of one superframe at [`MAX_GSO_SEGMENTS`]. Only software segmentation refuses
/// it: between ports that take offloads the superframe passes intact.
pub const MIN_GSO_SIZE: u16 = 64;

/// Most segments [`segment`] cuts one superframe into: 64 KiB / [`MIN_GSO_SIZE`]. A
/// superframe that would need more (an egress MTU leaving under 64 bytes of payload per
/// segment) is refused ([`GsoDrop::TooManySegments`]) before any buffer is asked for.
pub const MAX_GSO_SEGMENTS: usize = 65_536 / MIN_GSO_SIZE as usize;

/// Where segments are written: the caller hands out one buffer per segment (from its pool).
pub trait SegmentSink {
    /// A buffer of exactly `len` bytes for the next segment, or `None` when none can be had
    /// (then segmentation stops with [`GsoDrop::NoBuffer`]). A buffer shorter than `len`
    /// counts as `None`; of a longer one only the first `len` bytes are written.
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]>;
}

/// Where [`segment_headers`] writes: each segment's headers go to a buffer the caller
/// hands out, its payload stays in the superframe.
pub trait HeaderSink {
    /// A buffer of exactly `len` bytes for the headers of the next segment, whose payload
    /// is `payload` (a range of the superframe), or `None` when none can be had (then
    /// segmentation stops with [`GsoDrop::NoBuffer`]). A buffer shorter than `len` counts
    /// as `None`; of a longer one only the first `len` bytes are written.
    fn next_headers(&mut self, len: usize, payload: core::ops::Range<usize>) -> Option<&mut [u8]>;
}

/// Why a frame could not be segmented or its checksum completed: each is a drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GsoDrop {
    /// Ethernet, VLAN, IP or TCP header truncated or inconsistent: an IP length beyond the
    /// frame, an IPv4 IHL or TCP data offset below 5, a wrong IP version nibble, an IPv6
    /// extension header running past the packet.
    #[error("malformed frame: truncated or inconsistent Ethernet/IP/TCP headers")]
    Malformed,
    /// [`segment`] was called on a frame whose header says `GSO_NONE`; plain frames only need
    /// [`complete_checksum`].
    #[error("not a GSO frame")]
    NotGso,
    /// A GSO kind other than TCPv4/TCPv6 (UFO `GSO_UDP`, USO `GSO_UDP_L4`, unknown values).
    #[error("unsupported GSO type")]
    UnsupportedGso,
    /// The frame is not what its `gso_type` says: not IPv4 for `GSO_TCPV4`, not IPv6 for
    /// `GSO_TCPV6`, not TCP, or an IPv6 extension header this module does not walk.
    #[error("frame does not match its GSO type")]
    GsoTypeMismatch,
    /// An IPv4 fragment (MF set or non-zero offset) or an IPv6 fragment header: a fragment is
    /// never a TCP superframe.
    #[error("IP fragment cannot be a GSO superframe")]
    Fragmented,
    /// `gso_size` is 0, so there is no segment size.
    #[error("GSO size is zero")]
    ZeroGsoSize,
    /// The egress MTU leaves no room for the IP and TCP headers plus one byte of payload.
    #[error("egress MTU too small for the headers")]
    MtuTooSmall,
    /// `csum_start + csum_offset` (plus the 2-byte field) lies beyond the frame.
    #[error("checksum start/offset beyond the frame")]
    CsumOutOfRange,
    /// A TCP superframe with `F_NEEDS_CSUM` whose `csum_start`/`csum_offset` do not point at
    /// the TCP checksum field (Linux drops these in `virtio_net_hdr_to_skb` too).
    #[error("partial checksum does not point at the TCP checksum")]
    CsumMisplaced,
    /// The sink had no buffer for a segment; the segments already handed out are complete.
    #[error("no buffer for a segment")]
    NoBuffer,
    /// `gso_size` is below [`MIN_GSO_SIZE`]: segmenting would fan one superframe out to
    /// thousands of frames.
    #[error("GSO size below the floor of {MIN_GSO_SIZE} bytes")]
    GsoSizeTooSmall,
    /// The superframe would need more than [`MAX_GSO_SEGMENTS`] segments at this MTU.
    #[error("superframe would need more than {MAX_GSO_SEGMENTS} segments")]
    TooManySegments,
}

impl GsoDrop {
    /// Every reason, in declaration order (for counter tables).
    pub const ALL: [GsoDrop; 12] = [
        GsoDrop::Malformed,
        GsoDrop::NotGso,
        GsoDrop::UnsupportedGso,
        GsoDrop::GsoTypeMismatch,
        GsoDrop::Fragmented,
        GsoDrop::ZeroGsoSize,
        GsoDrop::MtuTooSmall,
        GsoDrop::CsumOutOfRange,
        GsoDrop::CsumMisplaced,
        GsoDrop::NoBuffer,
        GsoDrop::GsoSizeTooSmall,
        GsoDrop::TooManySegments,
    ];

    /// A stable snake_case name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            GsoDrop::Malformed => "malformed",
            GsoDrop::NotGso => "not_gso",
            GsoDrop::UnsupportedGso => "unsupported_gso",
            GsoDrop::GsoTypeMismatch => "gso_type_mismatch",
            GsoDrop::Fragmented => "fragmented",
            GsoDrop::ZeroGsoSize => "zero_gso_size",
            GsoDrop::MtuTooSmall => "mtu_too_small",
            GsoDrop::CsumOutOfRange => "csum_out_of_range",
            GsoDrop::CsumMisplaced => "csum_misplaced",
            GsoDrop::NoBuffer => "no_buffer",
            GsoDrop::GsoSizeTooSmall => "gso_size_too_small",
            GsoDrop::TooManySegments => "too_many_segments",
        }
    }

    /// Whether the frame was refused by a bound on segmentation ([`MIN_GSO_SIZE`],
    /// [`MAX_GSO_SEGMENTS`]) rather than for being malformed or unsupported.
    pub const fn is_bound(self) -> bool {
        matches!(self, GsoDrop::GsoSizeTooSmall | GsoDrop::TooManySegments)
    }
}

/// At most this many VLAN tags (802.1Q, or 802.1ad + 802.1Q) are skipped.
const MAX_VLAN_TAGS: usize = 2;
/// Length of one VLAN tag: TPID and TCI (IEEE 802.1Q-2018 §9.4).
const VLAN_TAG_LEN: usize = 4;

/// Offset of the L3 header and its ethertype, after up to [`MAX_VLAN_TAGS`] VLAN tags.
fn l3_start(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = ethernet::HEADER_LEN - 2;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
            break;
        }
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += VLAN_TAG_LEN;
    }
    Some((off, ethertype))
}

/// The L3 length (IPv4 total length, or 40 + IPv6 payload length) of an Ethernet frame
/// carrying IPv4 or IPv6, optionally behind one or two VLAN tags.
///
/// `None` if the frame is not IP, its IP header is truncated or has the wrong version, or the
/// length it claims does not fit in the frame. The caller compares this against the egress
/// MTU: a non-GSO frame that is too big is dropped, never fragmented here.
pub fn ip_len(frame: &[u8]) -> Option<usize> {
    let (l3, ethertype) = l3_start(frame)?;
    let ip = frame.get(l3..)?;
    let len = match ethertype {
        ethertype::IPV4 => {
            if ip.len() < ipv4::HEADER_LEN {
                return None;
            }
            let ip = Ipv4Packet::new_unchecked(ip);
            let len = usize::from(ip.total_len());
            if ip.version() != 4 || len < ip.header_len() {
                return None;
            }
            len
        }
        ethertype::IPV6 => {
            if ip.len() < ipv6::HEADER_LEN {
                return None;
            }
            let ip = Ipv6Packet::new_unchecked(ip);
            if ip.version() != 6 {
                return None;
            }
            ipv6::HEADER_LEN + usize::from(ip.payload_len())
        }
        _ => return None,
    };
    (len <= ip.len()).then_some(len)
}

/// Fills in the checksum that a `F_NEEDS_CSUM` frame carries as partial, in place: the
/// one's-complement sum from `csum_start` to the end of `frame`, folded, complemented and
/// stored big-endian at `csum_start + csum_offset`. The pseudo-header part is already in the
/// field, as with Linux's `CHECKSUM_PARTIAL` (`skb_checksum_help`); like Linux, a result of 0
/// is stored as `0xffff` (0 would mean "no checksum" for UDP).
///
/// Sums to the end of `frame`: pass the frame without trailing padding. Without
/// `F_NEEDS_CSUM` there is nothing to do and the frame is left alone. The caller clears
/// `F_NEEDS_CSUM` in any header it forwards with the frame.
pub fn complete_checksum(hdr: &VnetHdr, frame: &mut [u8]) -> Result<(), GsoDrop> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() {
        return Err(GsoDrop::CsumOutOfRange);
    }
    let csum = checksum::non_zero(checksum::checksum(&frame[start..]));
    write_u16(frame, at, csum);
    Ok(())
}

#[cfg(test)]
mod tests;
