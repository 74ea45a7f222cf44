use super::*;
use crate::gso::{SegmentSink, segment};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType};
use etherparse::{IpNumber, Ipv4Header, PacketBuilder, TcpHeader, TcpOptionElement};
use proptest::prelude::*;

/// Collects segments in fresh vectors.
struct VecSink(Vec<Vec<u8>>);

impl SegmentSink for VecSink {
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]> {
        self.0.push(vec![0; len]);
        self.0.last_mut().map(|v| v.as_mut_slice())
    }
}

const SRC: [u8; 4] = [10, 0, 0, 1];
const DST: [u8; 4] = [10, 0, 0, 2];
/// The payload of a 1450-byte inner IP packet (VXLAN over a 1500 MTU) with timestamps.
const MSS: u16 = 1398;
/// The 8-byte VXLAN header left between inner frames.
const GAP: usize = 8;

/// An Ethernet + IPv4 (DF) + TCP (timestamps, ACK, PSH) superframe as a TAP hands it out,
/// with its virtio-net header.
fn superframe(payload_len: usize, sport: u16, seq: u32, ident: u16) -> (VnetHdr, Vec<u8>) {
    let mut tcp = TcpHeader::new(sport, 5201, seq, 501);
    tcp.ack = true;
    tcp.psh = true;
    tcp.acknowledgment_number = 0xdead_beef;
    tcp.set_options(&[
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(0x0102_0304, 0x0506_0708),
    ])
    .unwrap();
    let tcp_len = tcp.header_len() + payload_len;
    let mut ip = Ipv4Header::new(tcp_len as u16, 64, IpNumber::TCP, SRC, DST).unwrap();
    ip.identification = ident;
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = checksum::pseudo_header_v4(SRC.into(), DST.into(), 6, tcp_len as u16);
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&ip.to_bytes());
    frame.extend_from_slice(&tcp.to_bytes());
    frame.extend((0..payload_len).map(|i| (i.wrapping_mul(131) ^ (i >> 7)) as u8));
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: MSS,
        csum_start: 34,
        csum_offset: 16,
    };
    (hdr, frame)
}

/// Segments with `wire::gso` at the 1450-byte inner MTU.
fn segments(hdr: &VnetHdr, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut sink = VecSink(Vec::new());
    segment(hdr, frame, 1450, &mut sink).unwrap();
    sink.0
}

/// One flow of `payload_len` bytes: the superframe and its segments.
fn flow(payload_len: usize, sport: u16) -> (VnetHdr, Vec<u8>, Vec<Vec<u8>>) {
    let (hdr, frame) = superframe(payload_len, sport, 0x1000_0000, 0x4242);
    let segs = segments(&hdr, &frame);
    (hdr, frame, segs)
}

/// Lays frames out in one buffer, each behind an 8-byte gap (a VXLAN header) of 0xEE.
fn layout(frames: &[Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for f in frames {
        buf.extend_from_slice(&[0xee; GAP]);
        ranges.push(buf.len()..buf.len() + f.len());
        buf.extend_from_slice(f);
    }
    (buf, ranges)
}

/// Output frames: header and bytes.
type Out = Vec<(VnetHdr, Vec<u8>)>;

/// Merges `frames` laid out with gaps; returns the output frames' headers and bytes, the
/// count merged and the reasons reported.
fn merge(frames: &[Vec<u8>], max_segs: usize) -> (Out, usize, Vec<Unmerged>) {
    let (mut buf, ranges) = layout(frames);
    let mut out = Vec::new();
    let mut why = Vec::new();
    let n = merge_in_place_with(&mut buf, &ranges, max_segs, &mut out, &mut |w| why.push(w));
    assert_eq!(n, merge_in_place_count(frames, max_segs));
    let frames = out
        .iter()
        .map(|f| (f.vnet, buf[f.range.clone()].to_vec()))
        .collect();
    (frames, n, why)
}

/// The same merge through [`merge_in_place`], for its return value.
fn merge_in_place_count(frames: &[Vec<u8>], max_segs: usize) -> usize {
    let (mut buf, ranges) = layout(frames);
    let mut out = Vec::new();
    merge_in_place(&mut buf, &ranges, max_segs, &mut out)
}

const VALID: VnetHdr = VnetHdr {
    flags: VnetHdr::F_DATA_VALID,
    gso_type: 0,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
};

/// Checks that the output, with every superframe segmented again, gives back `input` frame
/// for frame, and that the superframes hold `groups` segments each (1 for a frame passed
/// on). Returns the output.
fn round_trip(input: &[Vec<u8>], max_segs: usize, groups: &[usize]) -> Out {
    let (out, n, _) = merge(input, max_segs);
    let mut again = Vec::new();
    let mut sizes = Vec::new();
    for (vnet, bytes) in &out {
        if vnet.is_gso() {
            let segs = segments(vnet, bytes);
            sizes.push(segs.len());
            again.extend(segs);
        } else {
            sizes.push(1);
            again.push(bytes.clone());
        }
    }
    assert_eq!(sizes, groups, "segments per output frame");
    assert_eq!(n, input.len() - out.len());
    assert_eq!(again.len(), input.len());
    for (i, (a, b)) in again.iter().zip(input).enumerate() {
        assert!(a == b, "frame {i} differs after the round trip");
    }
    out
}

/// Sets TCP flags on a segment and fixes its checksum.
fn set_flags(seg: &mut [u8], flags: TcpFlags) {
    let mut th = TcpPacket::new_unchecked(&mut seg[L4..]);
    th.set_flags(flags);
    th.fill_checksum(&IpPair::V4 {
        src: SRC.into(),
        dst: DST.into(),
    });
}

/// Fixes the IPv4 header checksum of a segment.
fn fix_ip(seg: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut seg[L3..L4]).fill_checksum();
}

#[test]
fn one_flow_of_45_segments_merges_back() {
    let payload = 45 * usize::from(MSS);
    let (hdr, frame, segs) = flow(payload, 40000);
    assert_eq!(segs.len(), 45);
    let out = round_trip(&segs, 64, &[45]);
    assert_eq!(out[0].0, hdr);
    assert!(out[0].1 == frame, "merged frame is the original superframe");
}

#[test]
fn short_last_segment() {
    let payload = 44 * usize::from(MSS) + 100;
    let (hdr, frame, segs) = flow(payload, 40000);
    assert_eq!(segs.len(), 45);
    let out = round_trip(&segs, 64, &[45]);
    assert_eq!(out[0].0, hdr);
    assert!(out[0].1 == frame);
}

#[test]
fn two_segments_and_a_single_one() {
    let (hdr, frame, segs) = flow(2 * usize::from(MSS), 40000);
    let out = round_trip(&segs, 64, &[2]);
    assert_eq!(out[0].0, hdr);
    assert!(out[0].1 == frame);
    // A lone segment passes on untouched, its checksums verified.
    let out = round_trip(&segs[..1], 64, &[1]);
    assert_eq!(out[0].0, VALID);
}

#[test]
fn interleaved_flows_do_not_merge() {
    let (_, _, a) = flow(10 * usize::from(MSS), 40000);
    let (_, _, b) = flow(10 * usize::from(MSS), 40001);
    let mixed: Vec<Vec<u8>> = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| [x.clone(), y.clone()])
        .collect();
    let out = round_trip(&mixed, 64, &[1; 20]);
    assert!(out.iter().all(|(v, _)| *v == VALID));
    let (_, _, why) = merge(&mixed, 64);
    assert_eq!(why, vec![Unmerged::DifferentFlow; 19]);
    // One flow after the other: two superframes.
    let runs: Vec<Vec<u8>> = a.iter().chain(&b).cloned().collect();
    round_trip(&runs, 64, &[10, 10]);
}

#[test]
fn gap_in_sequence_splits_the_run() {
    let (_, _, mut segs) = flow(45 * usize::from(MSS), 40000);
    segs.remove(10);
    round_trip(&segs, 64, &[10, 34]);
    let (_, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::OutOfOrder]);
    // Reordered: 0 1 3 2 4 5 gives [0 1] [3] [2] [4 5].
    let (_, _, mut segs) = flow(6 * usize::from(MSS), 40000);
    segs.swap(2, 3);
    let (out, _, why) = merge(&segs, 64);
    assert_eq!(out.len(), 4);
    assert_eq!(why, vec![Unmerged::OutOfOrder; 3]);
}

#[test]
fn fin_rst_syn_urg_segments_pass_alone() {
    let ack = TcpFlags::ACK;
    for (extra, expect) in [
        (TcpFlags::FIN, Unmerged::Flags),
        (TcpFlags::RST, Unmerged::Flags),
        (TcpFlags::SYN, Unmerged::Flags),
        (TcpFlags::URG, Unmerged::Flags),
        (TcpFlags::CWR, Unmerged::Flags),
        (TcpFlags::ECE, Unmerged::Flags),
    ] {
        let (_, _, mut segs) = flow(45 * usize::from(MSS), 40000);
        set_flags(
            &mut segs[20],
            TcpFlags::from_bits(ack.bits() | extra.bits()),
        );
        // The segment after it starts a new run with the identification it has.
        let (out, n, why) = merge(&segs, 64);
        assert_eq!(out.len(), 3, "{extra:?}");
        assert_eq!(n, 42);
        assert_eq!(out[1].0, VALID);
        assert!(out[1].1 == segs[20]);
        assert_eq!(why, vec![expect]);
        round_trip(&segs, 64, &[20, 1, 24]);
    }
    // No ACK at all.
    let (_, _, mut segs) = flow(3 * usize::from(MSS), 40000);
    set_flags(&mut segs[1], TcpFlags::empty());
    round_trip(&segs, 64, &[1, 1, 1]);
}

#[test]
fn psh_in_the_middle_ends_the_run() {
    let (_, _, mut segs) = flow(10 * usize::from(MSS), 40000);
    set_flags(&mut segs[4], TcpFlags::ACK | TcpFlags::PSH);
    let (out, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::RunEnd]);
    assert_eq!(out.len(), 2);
    // The first superframe carries PSH, as its last segment did.
    let th = TcpPacket::new_unchecked(&out[0].1[L4..]);
    assert!(th.flags().contains(TcpFlags::PSH));
    round_trip(&segs, 64, &[5, 5]);
}

#[test]
fn different_options_split_the_run() {
    let (_, _, mut segs) = flow(45 * usize::from(MSS), 40000);
    // Another timestamp value in segment 30 (NOP NOP kind len TSval TSecr: TSval at 24).
    segs[30][L4 + 24 + 3] ^= 1;
    set_flags(&mut segs[30], TcpFlags::ACK);
    round_trip(&segs, 64, &[30, 1, 14]);
    let (_, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::HeaderMismatch; 2]);
}

#[test]
fn different_window_ttl_and_ack_split_the_run() {
    for (at, l3) in [
        (L4 + 14, false),
        (L4 + 9, false),
        (L3 + 8, true),
        (L3 + 1, true),
    ] {
        let (_, _, mut segs) = flow(4 * usize::from(MSS), 40000);
        segs[3][at] ^= 0x10;
        if l3 {
            fix_ip(&mut segs[3]);
        }
        set_flags(&mut segs[3], TcpFlags::ACK | TcpFlags::PSH);
        let (_, _, why) = merge(&segs, 64);
        assert_eq!(why, vec![Unmerged::HeaderMismatch], "byte {at}");
        round_trip(&segs, 64, &[3, 1]);
    }
}

#[test]
fn bad_checksum_in_the_middle() {
    let (_, _, mut segs) = flow(45 * usize::from(MSS), 40000);
    segs[15][200] ^= 0x40;
    let (out, n, why) = merge(&segs, 64);
    assert_eq!(out.len(), 3);
    assert_eq!(n, 42);
    assert_eq!(why, vec![Unmerged::BadChecksum]);
    assert_eq!(out[1].0, VnetHdr::default());
    assert!(out[1].1 == segs[15]);
    // The run after it starts at segment 16: its identification and sequence are its own.
    round_trip(&segs, 64, &[15, 1, 29]);
    // A bad IPv4 header checksum likewise.
    let (_, _, mut segs) = flow(3 * usize::from(MSS), 40000);
    segs[1][L3 + 10] ^= 1;
    let (_, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::BadChecksum]);
    round_trip(&segs, 64, &[1, 1, 1]);
}

#[test]
fn ipv4_fragment_passes_through() {
    let (_, _, mut segs) = flow(5 * usize::from(MSS), 40000);
    Ipv4Packet::new_unchecked(&mut segs[2][L3..L4]).set_more_frags(true);
    fix_ip(&mut segs[2]);
    let (out, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::Fragment]);
    assert_eq!(out[1].0, VnetHdr::default());
    round_trip(&segs, 64, &[2, 1, 2]);
    // IP options: passed on too.
    let (_, _, segs) = flow(2 * usize::from(MSS), 40000);
    let mut opt = segs[0].clone();
    opt[L3] = 0x46;
    opt.splice(L4..L4, [1, 1, 1, 0]);
    let (_, _, why) = merge(&[opt], 64);
    assert_eq!(why, vec![Unmerged::IpOptions]);
}

/// A UDP datagram and an ARP request, as frames.
fn udp_and_arp() -> (Vec<u8>, Vec<u8>) {
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(SRC, DST, 64)
        .udp(5353, 53)
        .write(&mut udp, &[7; 300])
        .unwrap();
    let mut arp = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06,
    ];
    let req = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &[2, 0, 0, 0, 0, 2],
        &SRC,
        &[0; 6],
        &DST,
    )
    .unwrap();
    arp.extend_from_slice(&req.to_bytes());
    (udp, arp)
}

#[test]
fn non_tcp_frames_pass_through() {
    let (udp, arp) = udp_and_arp();
    let (_, _, segs) = flow(6 * usize::from(MSS), 40000);
    let mut frames = vec![udp.clone()];
    frames.extend_from_slice(&segs[..3]);
    frames.push(arp.clone());
    frames.extend_from_slice(&segs[3..]);
    frames.push(udp.clone());
    let (out, n, why) = merge(&frames, 64);
    assert_eq!(n, 4);
    assert_eq!(why, vec![Unmerged::NotTcp; 3]);
    assert_eq!(out.len(), 5);
    for i in [0, 2, 4] {
        assert_eq!(out[i].0, VnetHdr::default());
    }
    assert!(out[0].1 == udp && out[2].1 == arp && out[4].1 == udp);
    round_trip(&frames, 64, &[1, 3, 1, 3, 1]);
    // Truncated and empty frames too.
    let (out, _, why) = merge(&[vec![], vec![0; 13], segs[0][..40].to_vec()], 64);
    assert_eq!(out.len(), 3);
    assert_eq!(
        why,
        vec![Unmerged::NotTcp, Unmerged::NotTcp, Unmerged::Malformed]
    );
}

#[test]
fn out_of_bounds_ranges_are_skipped() {
    let (_, _, segs) = flow(4 * usize::from(MSS), 40000);
    let (mut buf, mut ranges) = layout(&segs);
    let len = buf.len();
    ranges.insert(2, len - 10..len + 10);
    ranges.push(len + 1..len + 2);
    #[allow(clippy::reversed_empty_ranges)]
    ranges.push(10..5);
    let mut out = Vec::new();
    let mut why = Vec::new();
    let n = merge_in_place_with(&mut buf, &ranges, 64, &mut out, &mut |w| why.push(w));
    assert_eq!(why, vec![Unmerged::OutOfBounds; 3]);
    assert_eq!(n, 2);
    assert_eq!(out.len(), 2);
    // The skipped range ends the first run; both halves merge on their own.
    assert!(segments(&out[0].vnet, &buf[out[0].range.clone()]) == segs[..2]);
    assert!(segments(&out[1].vnet, &buf[out[1].range.clone()]) == segs[2..]);
}

#[test]
fn overlapping_ranges_pass_alone() {
    let (_, _, segs) = flow(4 * usize::from(MSS), 40000);
    let (mut buf, mut ranges) = layout(&segs);
    let again = ranges[1].clone();
    ranges.insert(2, again.clone());
    let mut out = Vec::new();
    let mut why = Vec::new();
    let n = merge_in_place_with(&mut buf, &ranges, 64, &mut out, &mut |w| why.push(w));
    assert_eq!(why, vec![Unmerged::Overlap]);
    assert_eq!(n, 2);
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[1],
        Frame {
            range: again,
            vnet: VnetHdr::default()
        }
    );
}

#[test]
fn max_segs_and_64k_bound_the_run() {
    let (_, _, segs) = flow(45 * usize::from(MSS), 40000);
    round_trip(&segs, 16, &[16, 16, 13]);
    let (_, _, why) = merge(&segs, 16);
    assert_eq!(why, vec![Unmerged::MaxSegs; 2]);
    round_trip(&segs, 1, &[1; 45]);
    round_trip(&segs, 0, &[1; 45]);
    // 50 segments hold more than 65535 - 52 bytes: 46 fit. A superframe that big cannot
    // be built: segment two halves, the first without its PSH.
    let half = 25 * usize::from(MSS);
    let (h1, f1) = superframe(half, 40000, 7, 0xfff0);
    let (h2, f2) = superframe(half, 40000, 7 + half as u32, 0xfff0u16.wrapping_add(25));
    let mut segs = segments(&h1, &f1);
    for seg in &mut segs {
        set_flags(seg, TcpFlags::ACK);
    }
    segs.extend(segments(&h2, &f2));
    assert_eq!(segs.len(), 50);
    round_trip(&segs, 64, &[46, 4]);
    let (out, _, why) = merge(&segs, 64);
    assert_eq!(why, vec![Unmerged::TooBig]);
    assert_eq!(out[0].1.len(), 14 + 52 + 46 * usize::from(MSS));
}

#[test]
fn small_segments_do_not_merge() {
    let (hdr, frame) = superframe(3 * 40, 40000, 1, 1);
    let hdr = VnetHdr {
        gso_size: 64,
        ..hdr
    };
    // Cut at 40 bytes by the MTU.
    let mut sink = VecSink(Vec::new());
    segment(&hdr, &frame, 52 + 40, &mut sink).unwrap();
    assert_eq!(sink.0.len(), 3);
    let (_, _, why) = merge(&sink.0, 64);
    assert_eq!(why, vec![Unmerged::SmallSegment; 2]);
}

#[test]
fn ip_id_fixed_with_df_or_incrementing() {
    let (_, _, segs) = flow(4 * usize::from(MSS), 40000);
    // Fixed identification with DF: merges.
    let mut fixed = segs.clone();
    for seg in &mut fixed {
        Ipv4Packet::new_unchecked(&mut seg[L3..L4]).set_ident(9);
        fix_ip(seg);
    }
    let (out, n, _) = merge(&fixed, 64);
    assert_eq!((out.len(), n), (1, 3));
    // Fixed without DF: does not.
    let mut no_df = fixed.clone();
    for seg in &mut no_df {
        Ipv4Packet::new_unchecked(&mut seg[L3..L4]).set_dont_frag(false);
        fix_ip(seg);
    }
    let (_, n, why) = merge(&no_df, 64);
    assert_eq!(n, 0);
    assert_eq!(why, vec![Unmerged::IpId; 3]);
    // Incrementing without DF: merges.
    let mut inc = segs.clone();
    for seg in &mut inc {
        Ipv4Packet::new_unchecked(&mut seg[L3..L4]).set_dont_frag(false);
        fix_ip(seg);
    }
    round_trip(&inc, 64, &[4]);
    // Fixed then incrementing: the second segment decided.
    let mut mixed = segs.clone();
    Ipv4Packet::new_unchecked(&mut mixed[1][L3..L4]).set_ident(0x4242);
    fix_ip(&mut mixed[1]);
    let (_, _, why) = merge(&mixed, 64);
    assert_eq!(why, vec![Unmerged::IpId]);
}

#[test]
fn padded_last_segment() {
    // A 3-byte last segment padded to the 60-byte Ethernet minimum... with timestamps the
    // frame is 69 bytes, so pad it by hand: padding is dropped from the merged frame.
    let payload = 2 * usize::from(MSS) + 3;
    let (hdr, frame, mut segs) = flow(payload, 40000);
    segs[2].extend_from_slice(&[0; 6]);
    let (out, n, _) = merge(&segs, 64);
    assert_eq!(n, 2);
    assert_eq!(out[0].0, hdr);
    assert!(out[0].1 == frame);
}

#[test]
fn merged_checksum_completes_right() {
    let (_, frame, segs) = flow(10 * usize::from(MSS) + 1, 40000);
    let (out, _, _) = merge(&segs, 64);
    let (vnet, mut bytes) = out[0].clone();
    crate::gso::complete_checksum(&vnet, &mut bytes).unwrap();
    let th = TcpPacket::new_unchecked(&bytes[L4..]);
    let addrs = IpPair::V4 {
        src: SRC.into(),
        dst: DST.into(),
    };
    assert!(th.verify_checksum(&addrs));
    assert!(Ipv4Packet::new_unchecked(&bytes[L3..]).verify_checksum());
    assert_eq!(bytes.len(), frame.len());
}

#[test]
fn reason_names_are_distinct() {
    let mut names: Vec<_> = Unmerged::ALL.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Unmerged::ALL.len());
}

/// Arbitrary ranges over `len` bytes, in order or not, some beyond the end.
fn ranges_strategy(len: usize) -> impl Strategy<Value = Vec<Range<usize>>> {
    proptest::collection::vec((0..len + 64, 0..len + 64), 0..24)
        .prop_map(|v| v.into_iter().map(|(a, b)| a..b).collect())
}

/// Output ranges lie in `buf` and within the span of the in-bounds input ranges.
fn check_output(buf_len: usize, ranges: &[Range<usize>], out: &[Frame]) {
    let valid: Vec<&Range<usize>> = ranges
        .iter()
        .filter(|r| r.start <= r.end && r.end <= buf_len)
        .collect();
    assert!(out.len() <= valid.len());
    let lo = valid.iter().map(|r| r.start).min().unwrap_or(0);
    let hi = valid.iter().map(|r| r.end).max().unwrap_or(0);
    for f in out {
        assert!(f.range.start <= f.range.end);
        assert!(f.range.start >= lo && f.range.end <= hi, "{:?}", f.range);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        (bytes, ranges) in proptest::collection::vec(any::<u8>(), 0..3000)
            .prop_flat_map(|b| { let n = b.len(); (Just(b), ranges_strategy(n)) }),
        max_segs in 0usize..70,
    ) {
        let mut buf = bytes;
        let mut out = Vec::new();
        merge_in_place(&mut buf, &ranges, max_segs, &mut out);
        check_output(buf.len(), &ranges, &out);
    }

    #[test]
    fn mutated_segments_never_panic(
        n in 1usize..12,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        fix in any::<bool>(),
    ) {
        let (_, _, segs) = flow(n * 200, 40000);
        let (mut buf, ranges) = layout(&segs);
        let len = buf.len();
        for (at, x) in &flips {
            buf[at.index(len)] ^= x;
        }
        if fix {
            // Keep the checksums right so the mutated headers are looked at.
            for r in &ranges {
                if let Ok(ip) = Ipv4Packet::new_checked(&buf[r.start + L3..r.end]) {
                    let tcp_end = r.start + L3 + usize::from(ip.total_len());
                    if ip.header_len() == 20 && tcp_end >= r.start + L4 + 20 {
                        let addrs = IpPair::V4 { src: ip.src_addr(), dst: ip.dst_addr() };
                        fix_ip(&mut buf[r.clone()]);
                        let mut th = TcpPacket::new_unchecked(&mut buf[r.start + L4..tcp_end]);
                        if th.check_len().is_ok() {
                            th.fill_checksum(&addrs);
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        merge_in_place(&mut buf, &ranges, 64, &mut out);
        check_output(len, &ranges, &out);
    }
}
