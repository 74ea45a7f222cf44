//! Segmentation of TCP superframes: validation and planning first, then each segment's
//! headers, with its payload copied after them ([`segment`]) or left where it is
//! ([`segment_headers`]).

use core::ops::Range;

use super::{GsoDrop, HeaderSink, MAX_GSO_SEGMENTS, MIN_GSO_SIZE, SegmentSink, l3_start};
use crate::checksum::{self, combine};
use crate::ethernet::ethertype;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet};
use crate::tcp::{self, TcpFlags, TcpPacket};
use crate::vnet::VnetHdr;

/// IPv6 extension headers walked to the TCP header (RFC 8200 §4, IANA protocol numbers).
const IPV6_EXT_HOP_BY_HOP: u8 = 0;
const IPV6_EXT_ROUTING: u8 = 43;
const IPV6_EXT_FRAGMENT: u8 = 44;
const IPV6_EXT_DEST_OPTS: u8 = 60;

/// Where the headers of a validated TCP superframe are, and how it splits.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP header (after IPv4 options or IPv6 extension headers).
    l4: usize,
    /// Offset of the TCP payload: everything before it is copied into every segment.
    payload: usize,
    /// End of the IP packet; bytes after it (padding) are not copied.
    end: usize,
    is_v4: bool,
    /// Payload bytes per segment.
    mss: usize,
    /// Number of segments (at least 1).
    count: usize,
}

/// Validates a TCP superframe and works out its segments; all checks happen here, before any
/// buffer is asked for.
fn plan(hdr: &VnetHdr, frame: &[u8], max_ip_len: usize) -> Result<Plan, GsoDrop> {
    let is_v4 = match hdr.gso_kind() {
        VnetHdr::GSO_NONE => return Err(GsoDrop::NotGso),
        VnetHdr::GSO_TCPV4 => true,
        VnetHdr::GSO_TCPV6 => false,
        _ => return Err(GsoDrop::UnsupportedGso),
    };
    if hdr.gso_size == 0 {
        return Err(GsoDrop::ZeroGsoSize);
    }
    if hdr.gso_size < MIN_GSO_SIZE {
        return Err(GsoDrop::GsoSizeTooSmall);
    }
    let (l3, ethertype) = l3_start(frame).ok_or(GsoDrop::Malformed)?;
    let ip = frame.get(l3..).ok_or(GsoDrop::Malformed)?;
    let (l4, end) = match (ethertype, is_v4) {
        (ethertype::IPV4, true) => {
            // Header, IHL >= 5 and total length within the frame (padding allowed).
            let ip = Ipv4Packet::new_checked(ip).map_err(|_| GsoDrop::Malformed)?;
            if ip.version() != 4 {
                return Err(GsoDrop::Malformed);
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(GsoDrop::Fragmented);
            }
            if ip.protocol() != tcp::PROTOCOL {
                return Err(GsoDrop::GsoTypeMismatch);
            }
            (l3 + ip.header_len(), l3 + usize::from(ip.total_len()))
        }
        (ethertype::IPV6, false) => {
            // Header and payload length within the frame.
            let ip = Ipv6Packet::new_checked(ip).map_err(|_| GsoDrop::Malformed)?;
            if ip.version() != 6 {
                return Err(GsoDrop::Malformed);
            }
            let end = l3 + ipv6::HEADER_LEN + usize::from(ip.payload_len());
            let mut next = ip.next_header();
            let mut off = l3 + ipv6::HEADER_LEN;
            // Each extension header is at least 8 bytes, so this ends within the packet.
            while next != tcp::PROTOCOL {
                match next {
                    IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_DEST_OPTS => {
                        if off + 8 > end {
                            return Err(GsoDrop::Malformed);
                        }
                        next = frame[off];
                        off += (usize::from(frame[off + 1]) + 1) * 8;
                    }
                    IPV6_EXT_FRAGMENT => return Err(GsoDrop::Fragmented),
                    _ => return Err(GsoDrop::GsoTypeMismatch),
                }
            }
            (off, end)
        }
        _ => return Err(GsoDrop::GsoTypeMismatch),
    };
    // The fixed header and the options the data offset claims, within the IP packet.
    let th = frame
        .get(l4..end)
        .and_then(|t| TcpPacket::new_checked(t).ok())
        .ok_or(GsoDrop::Malformed)?;
    if hdr.needs_csum()
        && (usize::from(hdr.csum_start) != l4
            || usize::from(hdr.csum_offset) != tcp::CHECKSUM_OFFSET)
    {
        return Err(GsoDrop::CsumMisplaced);
    }
    let payload = l4 + th.header_len();
    let payload_len = end - payload;
    let headers = payload - l3;
    let room = max_ip_len
        .checked_sub(headers)
        .ok_or(GsoDrop::MtuTooSmall)?;
    let mss = room.min(usize::from(hdr.gso_size));
    let count = match (payload_len, mss) {
        (0, _) => 1,
        (_, 0) => return Err(GsoDrop::MtuTooSmall),
        (n, mss) => n.div_ceil(mss),
    };
    if count > MAX_GSO_SEGMENTS {
        return Err(GsoDrop::TooManySegments);
    }
    Ok(Plan {
        l3,
        l4,
        payload,
        end,
        is_v4,
        mss,
        count,
    })
}

/// How many segments [`segment`] would write for this frame, without writing any: for
/// taking that many buffers from a pool up front.
pub fn segment_count(hdr: &VnetHdr, frame: &[u8], max_ip_len: usize) -> Result<usize, GsoDrop> {
    plan(hdr, frame, max_ip_len).map(|p| p.count)
}

/// Splits a TCP superframe (`gso_type` `GSO_TCPV4` or `GSO_TCPV6`, optionally with
/// `GSO_ECN`, possibly behind one or two VLAN tags, IPv4 options and IPv6 hop-by-hop /
/// routing / destination-options headers allowed) into frames whose IP packet is at most
/// `max_ip_len` bytes (the egress MTU) and whose TCP payload is at most
/// `min(hdr.gso_size, max_ip_len - IP headers - TCP header)`.
///
/// Each segment gets a copy of the L2, L3 and L4 headers (IP and TCP options included) and:
/// - IPv4: total length, identification + 1 per segment (wrapping), header checksum
///   (RFC 791 §3.1); IPv6: payload length (RFC 8200 §3);
/// - TCP: sequence number advanced by the payload before it; FIN and PSH only on the last
///   segment, CWR only on the first (RFC 3168 §6.1.2, as Linux `tcp_gso_segment`); the full
///   checksum over pseudo-header, header and payload (RFC 9293 §3.1), so the segments need no
///   `F_NEEDS_CSUM`.
///
/// The pseudo-header sum comes from the superframe's checksum field when `F_NEEDS_CSUM` is
/// set (the kernel put it there for the whole length; it is adjusted per segment as Linux
/// does), otherwise from the IP addresses. `hdr_len` is ignored. A superframe whose payload
/// already fits gives one segment (its checksum completed); one without payload gives one
/// header-only segment.
///
/// A `gso_size` below [`MIN_GSO_SIZE`](super::MIN_GSO_SIZE), or a split into more than
/// [`MAX_GSO_SEGMENTS`](super::MAX_GSO_SEGMENTS) segments, is refused: those bound how many
/// buffers one superframe can take.
///
/// Every check happens before the first buffer is asked for, and every buffer handed out is
/// completely written. Returns the number of segments written, or the reason for the drop;
/// with [`GsoDrop::NoBuffer`] the segments already handed out are complete and may be sent,
/// the rest is lost.
pub fn segment(
    hdr: &VnetHdr,
    frame: &[u8],
    max_ip_len: usize,
    sink: &mut impl SegmentSink,
) -> Result<usize, GsoDrop> {
    segment_headers(hdr, frame, max_ip_len, &mut Copying { frame, sink })
}

/// [`segment`]'s buffers from [`segment_headers`]: the payload is copied behind the
/// headers' room.
struct Copying<'a, S> {
    frame: &'a [u8],
    sink: &'a mut S,
}

impl<S: SegmentSink> HeaderSink for Copying<'_, S> {
    fn next_headers(&mut self, len: usize, payload: Range<usize>) -> Option<&mut [u8]> {
        let total = len + payload.len();
        let buf = self.sink.next_segment(total)?.get_mut(..total)?;
        let (headers, body) = buf.split_at_mut(len);
        body.copy_from_slice(&self.frame[payload]);
        Some(headers)
    }
}

/// [`segment`] without copying the payload: for each segment the sink gets the range of
/// `frame` that is its payload and hands out room for its headers (L2 to TCP, options
/// included), which are written completely, checksums included (the TCP checksum is over
/// the headers written and the payload where it lies). The caller sends each segment as
/// its headers followed by its payload range, e.g. as two I/O vectors.
///
/// Same checks, limits and errors as [`segment`].
pub fn segment_headers(
    hdr: &VnetHdr,
    frame: &[u8],
    max_ip_len: usize,
    sink: &mut impl HeaderSink,
) -> Result<usize, GsoDrop> {
    let p = plan(hdr, frame, max_ip_len)?;
    let headers = &frame[..p.payload];

    let th = TcpPacket::new_unchecked(&frame[p.l4..p.end]);

    // Pseudo-header sum without the TCP length, which differs per segment.
    let pseudo = if hdr.needs_csum() {
        // The field holds the sum with the superframe's TCP length (< 2^16): take it out.
        combine(th.checksum(), !((p.end - p.l4) as u16))
    } else if p.is_v4 {
        let ip = Ipv4Packet::new_unchecked(&frame[p.l3..p.l4]);
        checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), tcp::PROTOCOL, 0)
    } else {
        let ip = Ipv6Packet::new_unchecked(&frame[p.l3..p.l4]);
        checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), tcp::PROTOCOL, 0)
    };
    let ident = if p.is_v4 {
        Ipv4Packet::new_unchecked(&frame[p.l3..p.l4]).ident()
    } else {
        0
    };
    let first_seq = th.seq_number();
    let flags = th.flags();

    let mut offset = 0;
    for i in 0..p.count {
        let chunk = p.payload + offset..p.end.min(p.payload + offset + p.mss);
        let chunk_len = chunk.len();
        // The TCP header is a multiple of 4 bytes long, so the payload starts at an even
        // offset of the segment and its sum adds to the header's as it is.
        let chunk_sum = checksum::ones_complement_sum(&frame[chunk.clone()]);
        let buf = match sink.next_headers(p.payload, chunk) {
            Some(buf) if buf.len() >= p.payload => &mut buf[..p.payload],
            _ => return Err(GsoDrop::NoBuffer),
        };
        buf.copy_from_slice(headers);

        // ip_len <= the superframe's IP length, so it fits in 16 bits.
        let ip_len = p.payload + chunk_len - p.l3;
        if p.is_v4 {
            let mut ip = Ipv4Packet::new_unchecked(&mut buf[p.l3..p.l4]);
            ip.set_total_len(ip_len as u16);
            ip.set_ident(ident.wrapping_add(i as u16));
            ip.fill_checksum();
        } else {
            let mut ip = Ipv6Packet::new_unchecked(&mut buf[p.l3..p.l4]);
            ip.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
        }

        let tcp_len = p.payload + chunk_len - p.l4;
        let mut th = TcpPacket::new_unchecked(&mut buf[p.l4..]);
        th.set_seq_number(first_seq.wrapping_add(offset as u32));
        let mut f = flags;
        if i + 1 < p.count {
            f.remove(TcpFlags::FIN | TcpFlags::PSH);
        }
        if i > 0 {
            f.remove(TcpFlags::CWR);
        }
        th.set_flags(f);
        th.fill_checksum_with(combine(combine(pseudo, tcp_len as u16), chunk_sum));

        offset += chunk_len;
    }
    Ok(p.count)
}
