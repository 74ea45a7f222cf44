//! Software segmentation and checksum completion throughput: a 64 KiB TSO superframe cut for
//! MTU 1500 and 9000, copying the payload into a buffer per segment (`segment`) or writing
//! only each segment's headers (`segment_headers`), and completing the partial checksum of
//! a plain frame.

use criterion::{Criterion, Throughput, criterion_main};
use etherparse::{IpNumber, Ipv4Header, TcpHeader, TcpOptionElement};
use std::hint::black_box;
use tapnet_wire::checksum;
use tapnet_wire::gso::{HeaderSink, SegmentSink, complete_checksum, segment, segment_headers};
use tapnet_wire::vnet::VnetHdr;

/// Reuses a fixed set of buffers, as a pool would: no allocation inside the measurement.
struct PoolSink {
    bufs: Vec<Vec<u8>>,
    next: usize,
}

impl SegmentSink for PoolSink {
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]> {
        let buf = self.bufs.get_mut(self.next)?;
        self.next += 1;
        buf.get_mut(..len)
    }
}

/// One fixed header buffer per segment, as the overlay port's header area.
struct HeadSink {
    heads: Vec<[u8; 128]>,
    next: usize,
}

impl HeaderSink for HeadSink {
    fn next_headers(&mut self, len: usize, payload: std::ops::Range<usize>) -> Option<&mut [u8]> {
        black_box(payload);
        let buf = self.heads.get_mut(self.next)?;
        self.next += 1;
        buf.get_mut(..len)
    }
}

/// An Ethernet + IPv4 + TCP (timestamps) superframe with a kernel-style partial checksum.
fn superframe(payload_len: usize, gso_size: u16) -> (VnetHdr, Vec<u8>) {
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
    // Pseudo-header sum, folded and not complemented, as Linux leaves it for CHECKSUM_PARTIAL.
    tcp.checksum = checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len as u16);
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&ip.to_bytes());
    frame.extend_from_slice(&tcp.to_bytes());
    frame.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
    };
    (hdr, frame)
}

fn bench_segment(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment");
    for (mtu, gso_size) in [(1500usize, 1448u16), (9000, 8948)] {
        let (hdr, frame) = superframe(65_000 - 52, gso_size);
        let mut sink = PoolSink {
            bufs: vec![vec![0; mtu + 18]; 64],
            next: 0,
        };
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("ipv4_64k_mtu{mtu}"), |b| {
            b.iter(|| {
                sink.next = 0;
                segment(&hdr, black_box(&frame), mtu, &mut sink).expect("segments")
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("segment_headers");
    for (mtu, gso_size) in [(1500usize, 1448u16), (9000, 8948)] {
        let (hdr, frame) = superframe(65_000 - 52, gso_size);
        let mut sink = HeadSink {
            heads: vec![[0; 128]; 64],
            next: 0,
        };
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("ipv4_64k_mtu{mtu}"), |b| {
            b.iter(|| {
                sink.next = 0;
                segment_headers(&hdr, black_box(&frame), mtu, &mut sink).expect("segments")
            })
        });
    }
    group.finish();
}

fn bench_complete_checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("complete_checksum");
    for len in [1448usize, 65_000 - 52] {
        let (mut hdr, mut frame) = superframe(len, 1448);
        hdr.gso_type = VnetHdr::GSO_NONE;
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("tcp4_{}", frame.len()), |b| {
            b.iter(|| {
                // Same input every time: the field is overwritten with the same pseudo sum.
                frame[50] = 0;
                frame[51] = 0;
                complete_checksum(&hdr, black_box(&mut frame)).expect("in range")
            })
        });
    }
    group.finish();
}

/// `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs, unreachable_pub)]
mod group {
    criterion::criterion_group!(
        benches,
        super::bench_segment,
        super::bench_complete_checksum
    );
}
criterion_main!(group::benches);
