//! Software receive-offload merging (GRO) of TCP/IPv4 segments, in place: the reverse of
//! [`crate::gso::segment`].
//!
//! A VXLAN underlay received with UDP GRO hands the engine a run of inner Ethernet frames in
//! one buffer, typically consecutive TCP segments of one flow. [`merge_in_place`] turns each
//! run of adjacent segments that Linux GRO would merge into one TCP superframe with a
//! virtio-net header (`GSO_TCPV4`, `F_NEEDS_CSUM`), as an offload-capable TAP expects it
//! (see [`crate::vnet`]), so the receiving stack sees large frames as on a bridge.
//!
//! Linux is the model: `net/ipv4/tcp_offload.c` `tcp_gro_receive` for the TCP conditions,
//! `net/ipv4/af_inet.c` `inet_gro_receive` and `net/core/gro.c` for the IP and Ethernet ones.
//! Differences, all on the conservative side (a frame not merged is still delivered):
//!
//! * Only *adjacent* frames merge: segments of two interleaved flows pass on unmerged, and
//!   the output keeps the input order. (Linux keeps a list of flows per NAPI poll; a UDP
//!   GRO buffer is one underlay 4-tuple, mostly one inner flow at a time.)
//! * Segments with FIN, SYN, RST, URG, CWR or ECE never merge (Linux merges a FIN as the last
//!   segment and a CWR as the first); only ACK, with PSH allowed on the last segment.
//! * IPv4 only, without IP options or VLAN tags; IPv6 frames pass on unmerged.
//! * A run whose first payload is below [`MIN_GSO_SIZE`] is not merged, so that
//!   [`crate::gso::segment`] never refuses a superframe made here.
//!
//! Every segment's IPv4 header checksum (RFC 791 §3.1) and TCP checksum (RFC 9293 §3.1) are
//! verified: the underlay may carry a zero UDP checksum, so the inner checksum is the only
//! guard. A segment that fails passes on unmerged and untouched, for the receiving stack to
//! drop.

use core::ops::Range;

use crate::checksum::{self, IpPair};
use crate::ethernet::{self, ethertype};
use crate::gso::MIN_GSO_SIZE;
use crate::ipv4::{self, Ipv4Packet};
use crate::tcp::{self, TcpFlags, TcpPacket};
use crate::vnet::VnetHdr;
use crate::{read_u16, write_u16};

/// One frame in a buffer: its byte range, and its virtio-net header (none for a plain frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the frame lies in the buffer, from the first byte of its Ethernet header.
    pub range: Range<usize>,
    /// Its virtio-net header: a `GSO_TCPV4` superframe, `F_DATA_VALID` for a TCP segment
    /// whose checksums were verified, or [`VnetHdr::default`].
    pub vnet: VnetHdr,
}

/// Why a frame was not merged, or why a run of segments ended: counters, not errors.
///
/// The first group is reported once per frame that cannot join any run; the second once per
/// boundary between two mergeable segments that were not merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unmerged {
    /// The range lies beyond the buffer or ends before it starts: skipped, no output.
    OutOfBounds,
    /// The range starts before the end of an earlier one: passed on alone, untouched.
    Overlap,
    /// Not Ethernet/IPv4/TCP (ARP, UDP, IPv6, a VLAN tag, a frame shorter than 14 bytes).
    NotTcp,
    /// IPv4 or TCP header truncated or inconsistent (version, lengths beyond the frame).
    Malformed,
    /// IPv4 header with options.
    IpOptions,
    /// IPv4 fragment (MF or an offset), or the reserved flag set.
    Fragment,
    /// IPv4 header checksum or TCP checksum wrong.
    BadChecksum,
    /// TCP flags other than ACK or ACK+PSH.
    Flags,
    /// No TCP payload (a pure ACK).
    Empty,
    /// Ethernet header, IP addresses or ports differ.
    DifferentFlow,
    /// The run had ended: the previous segment carried PSH or was shorter than the first.
    RunEnd,
    /// The first segment's payload is below [`MIN_GSO_SIZE`].
    SmallSegment,
    /// TOS, TTL, DF, acknowledgment number, window or TCP options differ from the first.
    HeaderMismatch,
    /// Sequence number is not the previous one plus its payload.
    OutOfOrder,
    /// IP identification neither incrementing by one nor (with DF) fixed.
    IpId,
    /// Payload longer than the first segment's.
    SizeMismatch,
    /// The merged IPv4 total length would exceed 65535.
    TooBig,
    /// The run already holds `max_segs` segments.
    MaxSegs,
}

impl Unmerged {
    /// Every reason, in declaration order (for counter tables).
    pub const ALL: [Unmerged; 18] = [
        Unmerged::OutOfBounds,
        Unmerged::Overlap,
        Unmerged::NotTcp,
        Unmerged::Malformed,
        Unmerged::IpOptions,
        Unmerged::Fragment,
        Unmerged::BadChecksum,
        Unmerged::Flags,
        Unmerged::Empty,
        Unmerged::DifferentFlow,
        Unmerged::RunEnd,
        Unmerged::SmallSegment,
        Unmerged::HeaderMismatch,
        Unmerged::OutOfOrder,
        Unmerged::IpId,
        Unmerged::SizeMismatch,
        Unmerged::TooBig,
        Unmerged::MaxSegs,
    ];

    /// A stable snake_case name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Unmerged::OutOfBounds => "out_of_bounds",
            Unmerged::Overlap => "overlap",
            Unmerged::NotTcp => "not_tcp",
            Unmerged::Malformed => "malformed",
            Unmerged::IpOptions => "ip_options",
            Unmerged::Fragment => "fragment",
            Unmerged::BadChecksum => "bad_checksum",
            Unmerged::Flags => "flags",
            Unmerged::Empty => "empty",
            Unmerged::DifferentFlow => "different_flow",
            Unmerged::RunEnd => "run_end",
            Unmerged::SmallSegment => "small_segment",
            Unmerged::HeaderMismatch => "header_mismatch",
            Unmerged::OutOfOrder => "out_of_order",
            Unmerged::IpId => "ip_id",
            Unmerged::SizeMismatch => "size_mismatch",
            Unmerged::TooBig => "too_big",
            Unmerged::MaxSegs => "max_segs",
        }
    }
}

/// Offset of the IPv4 header in a frame.
const L3: usize = ethernet::HEADER_LEN;
/// Offset of the TCP header in a frame whose IPv4 header has no options.
const L4: usize = L3 + ipv4::HEADER_LEN;
/// Largest IPv4 total length.
const MAX_IP_LEN: usize = u16::MAX as usize;
/// Bytes 1 (TOS) and 8 (TTL) of the IPv4 header, which must match.
const IP_TOS: usize = 1;
const IP_TTL: usize = 8;
/// Flags byte of the IPv4 header, and its reserved ("evil") bit.
const IP_FLAGS: usize = 6;
const IP_RESERVED: u8 = 0x80;
/// Bytes 12..20 of the IPv4 header: source and destination address.
const IP_ADDRS: Range<usize> = 12..20;
/// Bytes 0..4 of the TCP header: the ports; 8..12 the acknowledgment number; 14..16 the
/// window.
const TCP_PORTS: Range<usize> = 0..4;
const TCP_ACK: Range<usize> = 8..12;
const TCP_WINDOW: Range<usize> = 14..16;

/// A verified TCP/IPv4 segment (offsets absolute in the buffer).
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// First byte of the frame.
    start: usize,
    /// First byte of the TCP payload.
    payload: usize,
    /// End of the IP packet (before any Ethernet padding).
    ip_end: usize,
    /// End of the frame's range (padding included).
    end: usize,
    ident: u16,
    dont_frag: bool,
    seq: u32,
    flags: TcpFlags,
}

impl Seg {
    fn payload_len(&self) -> usize {
        self.ip_end - self.payload
    }

    fn psh(&self) -> bool {
        self.flags.contains(TcpFlags::PSH)
    }

    /// Whether this segment may join a run: ACK with PSH at most, and some payload.
    fn mergeable(&self) -> Result<(), Unmerged> {
        let ack = TcpFlags::ACK.bits();
        if self.flags.bits() & !TcpFlags::PSH.bits() != ack {
            Err(Unmerged::Flags)
        } else if self.payload_len() == 0 {
            Err(Unmerged::Empty)
        } else {
            Ok(())
        }
    }
}

/// Parses and verifies the frame at `start..end` (in bounds) as Ethernet/IPv4/TCP without
/// IP options, not a fragment, both checksums right.
fn parse(buf: &[u8], start: usize, end: usize) -> Result<Seg, Unmerged> {
    let frame = &buf[start..end];
    if frame.len() < L3 || read_u16(frame, L3 - 2) != ethertype::IPV4 {
        return Err(Unmerged::NotTcp);
    }
    let ip = Ipv4Packet::new_checked(&frame[L3..]).map_err(|_| Unmerged::Malformed)?;
    if ip.version() != 4 {
        return Err(Unmerged::Malformed);
    }
    if ip.protocol() != tcp::PROTOCOL {
        return Err(Unmerged::NotTcp);
    }
    if ip.header_len() != ipv4::HEADER_LEN {
        return Err(Unmerged::IpOptions);
    }
    if ip.more_frags() || ip.frag_offset() != 0 || frame[L3 + IP_FLAGS] & IP_RESERVED != 0 {
        return Err(Unmerged::Fragment);
    }
    if !ip.verify_checksum() {
        return Err(Unmerged::BadChecksum);
    }
    let ip_end = L3 + usize::from(ip.total_len());
    let th = TcpPacket::new_checked(&frame[L4..ip_end]).map_err(|_| Unmerged::Malformed)?;
    let addrs = IpPair::V4 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
    };
    if !th.verify_checksum(&addrs) {
        return Err(Unmerged::BadChecksum);
    }
    Ok(Seg {
        start,
        payload: start + L4 + th.header_len(),
        ip_end: start + ip_end,
        end,
        ident: ip.ident(),
        dont_frag: ip.dont_frag(),
        seq: th.seq_number(),
        flags: th.flags(),
    })
}

/// A run of segments being merged behind its first one.
#[derive(Debug)]
struct Run {
    first: Seg,
    /// Segments merged so far, the first included.
    count: usize,
    /// Where the next payload goes: the end of the merged frame so far.
    write: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// The first segment's payload length.
    gso_size: usize,
    /// The last merged segment's payload length.
    last_len: usize,
    /// Whether the last merged segment carried PSH.
    psh: bool,
    /// Whether the IP identification is fixed (decided by the second segment).
    fixed_id: bool,
    /// IPv4 total length of the merged packet so far.
    ip_len: usize,
}

impl Run {
    fn new(first: Seg) -> Run {
        let len = first.payload_len();
        Run {
            first,
            count: 1,
            write: first.ip_end,
            next_seq: first.seq.wrapping_add(len as u32),
            gso_size: len,
            last_len: len,
            psh: first.psh(),
            fixed_id: false,
            ip_len: first.ip_end - first.start - L3,
        }
    }

    /// Checks `seg` (mergeable, after the run in the buffer) against the run and, if it
    /// belongs, moves its payload behind the run's.
    fn extend(&mut self, buf: &mut [u8], seg: &Seg, max_segs: usize) -> Result<(), Unmerged> {
        let (f, s) = (self.first.start, seg.start);
        let same = |r: Range<usize>| buf[f + r.start..f + r.end] == buf[s + r.start..s + r.end];
        let ip = |r: Range<usize>| L3 + r.start..L3 + r.end;
        let tcp = |r: Range<usize>| L4 + r.start..L4 + r.end;
        if !same(0..L3) || !same(ip(IP_ADDRS)) || !same(tcp(TCP_PORTS)) {
            return Err(Unmerged::DifferentFlow);
        }
        if self.psh || self.last_len < self.gso_size {
            return Err(Unmerged::RunEnd);
        }
        if self.gso_size < usize::from(MIN_GSO_SIZE) {
            return Err(Unmerged::SmallSegment);
        }
        let tcp_hdr = self.first.payload - f - L4;
        if seg.payload - s - L4 != tcp_hdr
            || !same(ip(IP_TOS..IP_TOS + 1))
            || !same(ip(IP_TTL..IP_TTL + 1))
            || seg.dont_frag != self.first.dont_frag
            || !same(tcp(TCP_ACK))
            || !same(tcp(TCP_WINDOW))
            || !same(tcp(tcp::HEADER_LEN..tcp_hdr))
        {
            return Err(Unmerged::HeaderMismatch);
        }
        if seg.seq != self.next_seq {
            return Err(Unmerged::OutOfOrder);
        }
        // As Linux `inet_gro_flush`: the second segment decides between an identification
        // fixed (allowed with DF only) and one incrementing by one per segment.
        let offset = seg.ident.wrapping_sub(self.first.ident);
        let fixed = if self.count == 1 {
            offset == 0 && seg.dont_frag
        } else {
            self.fixed_id
        };
        let want = if fixed { 0 } else { self.count as u16 };
        if offset != want {
            return Err(Unmerged::IpId);
        }
        let len = seg.payload_len();
        if len > self.gso_size {
            return Err(Unmerged::SizeMismatch);
        }
        if self.ip_len + len > MAX_IP_LEN {
            return Err(Unmerged::TooBig);
        }
        if self.count >= max_segs {
            return Err(Unmerged::MaxSegs);
        }
        // `write` is at most the end of the previous segment, so the copy moves bytes down
        // over headers and gaps only, never over a frame still to be read.
        buf.copy_within(seg.payload..seg.ip_end, self.write);
        self.write += len;
        self.fixed_id = fixed;
        self.count += 1;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        self.last_len = len;
        self.psh = seg.psh();
        self.ip_len += len;
        Ok(())
    }

    /// Rewrites the first segment's headers for the merged frame and describes it.
    fn finish(self, buf: &mut [u8]) -> Frame {
        let f = self.first;
        if self.count == 1 {
            return Frame {
                range: f.start..f.end,
                vnet: VnetHdr {
                    flags: VnetHdr::F_DATA_VALID,
                    ..VnetHdr::default()
                },
            };
        }
        let frame = &mut buf[f.start..self.write];
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[L3..L4]);
        // ip_len <= MAX_IP_LEN, checked by `extend`.
        ip.set_total_len(self.ip_len as u16);
        ip.fill_checksum();
        let pseudo = checksum::pseudo_header_v4(
            ip.src_addr(),
            ip.dst_addr(),
            tcp::PROTOCOL,
            (self.ip_len - ipv4::HEADER_LEN) as u16,
        );
        let mut th = TcpPacket::new_unchecked(&mut frame[L4..]);
        if self.psh {
            let mut flags = th.flags();
            flags.insert(TcpFlags::PSH);
            th.set_flags(flags);
        }
        write_u16(&mut frame[L4..], tcp::CHECKSUM_OFFSET, pseudo);
        Frame {
            range: f.start..self.write,
            vnet: VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                gso_type: VnetHdr::GSO_TCPV4,
                hdr_len: (f.payload - f.start) as u16,
                gso_size: self.gso_size as u16,
                csum_start: L4 as u16,
                csum_offset: tcp::CHECKSUM_OFFSET as u16,
            },
        }
    }
}

/// Merge, in place, the frames at `ranges` of `buf` (ascending, non-overlapping, each a whole
/// Ethernet frame: no VLAN tag) into as few frames as possible, appending the result to `out`
/// in order.
///
/// Adjacent frames merge when, as in Linux GRO, they are Ethernet/IPv4 (no IP options, not a
/// fragment) /TCP with the same Ethernet header, addresses and ports, TOS, TTL and DF; the IP
/// identification increments by one per segment, or, with DF, stays fixed (RFC 6864 §4.1: an
/// atomic datagram's identification means nothing; the second segment decides which, and the
/// merged frame keeps the first's, as Linux); each TCP sequence
/// number is the previous one plus its payload; acknowledgment number, window, data offset
/// and options (timestamps included) are identical; the flags are ACK, with PSH allowed on
/// the last segment only (no SYN, FIN, RST, URG, CWR, ECE); every payload is non-empty and
/// every one but the last as long as the first's (the `gso_size`, at least
/// [`MIN_GSO_SIZE`]); each segment's IPv4 header checksum and TCP checksum verify; the
/// merged IP total length is at most 65535 and a run holds at most `max_segs` segments (0
/// and 1 mean no merging). Ethernet padding after a segment is allowed and dropped.
///
/// A merged frame starts where its first segment started: the first segment's headers, then
/// every payload back to back (moved with `copy_within`; bytes between the merged frame's
/// end and the last segment's end are left stale), IPv4 total length and header checksum
/// rewritten, TCP PSH set if the last segment had it, the TCP checksum field holding the
/// pseudo-header sum, and `vnet` = `F_NEEDS_CSUM`, `GSO_TCPV4`, `hdr_len` = Ethernet + IP +
/// TCP header length, `gso_size` = the first segment's payload length, `csum_start` = 34,
/// `csum_offset` = 16.
///
/// A frame that does not merge with a neighbour is passed on untouched (its whole range,
/// padding included): with `F_DATA_VALID` if it is a TCP/IPv4 segment whose checksums were
/// verified here, with [`VnetHdr::default`] otherwise.
///
/// Ranges the caller should not have given are handled without panicking: a range beyond
/// `buf` (or ending before it starts) is skipped, with no output; a range starting before
/// the end of an earlier one is passed on alone, untouched. Either ends the current run.
///
/// Allocates nothing but what pushing to `out` needs. Returns how many input frames were
/// merged into others (input segments minus merged frames).
pub fn merge_in_place(
    buf: &mut [u8],
    ranges: &[Range<usize>],
    max_segs: usize,
    out: &mut Vec<Frame>,
) -> usize {
    merge_in_place_with(buf, ranges, max_segs, out, &mut |_| {})
}

/// [`merge_in_place`], calling `unmerged` with the reason for every frame that could not
/// join a run and every boundary between two mergeable segments that were not merged (see
/// [`Unmerged`]).
pub fn merge_in_place_with(
    buf: &mut [u8],
    ranges: &[Range<usize>],
    max_segs: usize,
    out: &mut Vec<Frame>,
    unmerged: &mut impl FnMut(Unmerged),
) -> usize {
    let mut merged = 0;
    let mut run: Option<Run> = None;
    let mut flush = |run: &mut Option<Run>, buf: &mut [u8], out: &mut Vec<Frame>| {
        if let Some(r) = run.take() {
            merged += r.count - 1;
            out.push(r.finish(buf));
        }
    };
    // End of the furthest range seen so far: a range starting before it overlaps.
    let mut seen_end = 0;
    for r in ranges {
        if r.start > r.end || r.end > buf.len() {
            unmerged(Unmerged::OutOfBounds);
            flush(&mut run, buf, out);
            continue;
        }
        if r.start < seen_end {
            unmerged(Unmerged::Overlap);
            flush(&mut run, buf, out);
            out.push(Frame {
                range: r.clone(),
                vnet: VnetHdr::default(),
            });
            seen_end = seen_end.max(r.end);
            continue;
        }
        seen_end = r.end;
        let seg = match parse(buf, r.start, r.end) {
            Ok(seg) => seg,
            Err(why) => {
                unmerged(why);
                flush(&mut run, buf, out);
                out.push(Frame {
                    range: r.clone(),
                    vnet: VnetHdr::default(),
                });
                continue;
            }
        };
        if let Err(why) = seg.mergeable() {
            unmerged(why);
            flush(&mut run, buf, out);
            out.push(Frame {
                range: r.clone(),
                vnet: VnetHdr {
                    flags: VnetHdr::F_DATA_VALID,
                    ..VnetHdr::default()
                },
            });
            continue;
        }
        if let Some(current) = &mut run {
            match current.extend(buf, &seg, max_segs) {
                Ok(()) => continue,
                Err(why) => {
                    unmerged(why);
                    flush(&mut run, buf, out);
                }
            }
        }
        run = Some(Run::new(seg));
    }
    flush(&mut run, buf, out);
    merged
}

#[cfg(test)]
mod tests;
