//! Software receive-offload merging throughput: 45 TCP segments of 1398 payload bytes each
//! (a 1450-byte inner MTU, timestamps on), laid out as a VXLAN UDP GRO buffer leaves them
//! (an 8-byte gap before each frame), merged back into one superframe in place.

use criterion::{BatchSize, Criterion, Throughput, criterion_main};
use etherparse::{IpNumber, Ipv4Header, TcpHeader, TcpOptionElement};
use std::hint::black_box;
use std::ops::Range;
use tapnet_wire::checksum;
use tapnet_wire::gro::merge_in_place;
use tapnet_wire::gso::{SegmentSink, segment};
use tapnet_wire::vnet::VnetHdr;

/// Payload bytes per segment.
const MSS: usize = 1398;
/// Segments per buffer.
const SEGMENTS: usize = 45;

/// Collects segments in fresh vectors (setup only).
struct VecSink(Vec<Vec<u8>>);

impl SegmentSink for VecSink {
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]> {
        self.0.push(vec![0; len]);
        self.0.last_mut().map(|v| v.as_mut_slice())
    }
}

/// The segments of an Ethernet + IPv4 + TCP (timestamps) superframe, cut by `wire::gso`.
fn segments(payload_len: usize) -> Vec<Vec<u8>> {
    let mut tcp = TcpHeader::new(40000, 5201, 1, 501);
    tcp.ack = true;
    tcp.psh = true;
    tcp.set_options(&[
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(1, 2),
    ])
    .expect("options fit");
    let tcp_len = tcp.header_len() + payload_len;
    let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut ip =
        Ipv4Header::new(tcp_len as u16, 64, IpNumber::TCP, src, dst).expect("payload fits");
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len as u16);
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&ip.to_bytes());
    frame.extend_from_slice(&tcp.to_bytes());
    frame.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut sink = VecSink(Vec::new());
    segment(&hdr, &frame, 1450, &mut sink).expect("segments");
    sink.0
}

fn bench_merge(c: &mut Criterion) {
    let segs = segments(SEGMENTS * MSS);
    assert_eq!(segs.len(), SEGMENTS);
    let mut buf = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for s in &segs {
        buf.extend_from_slice(&[0; 8]);
        ranges.push(buf.len()..buf.len() + s.len());
        buf.extend_from_slice(s);
    }
    let bytes: usize = segs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(SEGMENTS);

    let mut group = c.benchmark_group("gro");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("merge_{SEGMENTS}x{MSS}"), |b| {
        // Merging is in place: each iteration gets a fresh copy (not timed).
        b.iter_batched_ref(
            || buf.clone(),
            |work| {
                out.clear();
                let n = merge_in_place(black_box(work), &ranges, 64, &mut out);
                assert_eq!(n, SEGMENTS - 1);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs, unreachable_pub)]
mod group {
    criterion::criterion_group!(benches, super::bench_merge);
}
criterion_main!(group::benches);
