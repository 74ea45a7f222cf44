//! Virtio-net headers with software segmentation and checksum completion
//! (`tapnet_wire::vnet`, `tapnet_wire::gso`): what the engine does with a TAP's
//! superframe before a port without offloads.
//!
//! The input is a virtio-net header (parsed by `VnetHdr::parse`, as read from a TAP),
//! an egress MTU, and either raw frame bytes or a TCP superframe built from the input:
//! IPv4 (with options) or IPv6 (with an extension header), behind zero to two VLAN
//! tags, TCP options, flags and a payload of up to 64 KiB, with the partial checksum a
//! kernel leaves. A sink hands out buffers, and now and then runs out.
//!
//! Invariants: `segment` writes as many segments as `segment_count` says (or fails the
//! same way); every segment's IP packet is at most the MTU and its `ip_len` is
//! consistent; for built superframes, the segments carry exactly the payload in order,
//! each at most `gso_size` bytes, with consecutive sequence numbers, FIN/PSH only on the
//! last, valid IP and TCP checksums; `complete_checksum` never writes outside the frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_wire::VnetHdr;
use tapnet_wire::checksum::{combine, ones_complement_sum, pseudo_header_v4, pseudo_header_v6};
use tapnet_wire::gso::{self, GsoDrop, SegmentSink};

/// Segments into owned buffers, refusing after `limit`.
struct Sink {
    segs: Vec<Vec<u8>>,
    limit: usize,
}

impl SegmentSink for Sink {
    fn next_segment(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.segs.len() >= self.limit {
            return None;
        }
        // Fill with garbage: every byte must be written.
        self.segs.push(vec![0xa5; len]);
        self.segs.last_mut().map(Vec::as_mut_slice)
    }
}

/// A built superframe and where its parts are.
struct Built {
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    payload: usize,
    v4: bool,
}

fn build(input: &mut Input<'_>, hdr: &mut VnetHdr) -> Built {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let tags = input.u8() % 3;
    for i in 0..tags {
        f.extend_from_slice(&if i == 0 && tags == 2 {
            [0x88, 0xa8]
        } else {
            [0x81, 0x00]
        });
        f.extend_from_slice(&input.u16().to_be_bytes());
    }
    let v4 = input.u8() & 1 == 0;
    f.extend_from_slice(&if v4 { [0x08, 0x00] } else { [0x86, 0xdd] });
    let l3 = f.len();
    let src = [10, 0, 0, 2];
    let dst = [203, 0, 113, 5];
    let tcp_opts = usize::from(input.u8() % 11) * 4;
    let payload_len = usize::from(input.u16());
    if v4 {
        let opts = usize::from(input.u8() % 11) * 4;
        let ihl = 20 + opts;
        let total = (ihl + 20 + tcp_opts + payload_len).min(65535);
        let mut ip = vec![0x40 | (ihl / 4) as u8, input.u8(), 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&input.u16().to_be_bytes()); // ident
        ip.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend((0..opts).map(|_| 1)); // NOPs
        f.extend_from_slice(&ip);
    } else {
        let ext = input.u8() & 1 == 1;
        let ext_len = if ext { 8 } else { 0 };
        let plen = (ext_len + 20 + tcp_opts + payload_len).min(65535 - 40);
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(plen as u16).to_be_bytes());
        ip.extend_from_slice(&[if ext { 0 } else { 6 }, 64]);
        ip.extend_from_slice(&[0xfd; 16]);
        ip.extend_from_slice(&[0xfe; 16]);
        if ext {
            ip.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN
        }
        f.extend_from_slice(&ip);
    }
    let l4 = f.len();
    let mut t = vec![0u8; 20 + tcp_opts];
    t[0..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
    t[4..8].copy_from_slice(&input.u32().to_be_bytes());
    t[8..12].copy_from_slice(&input.u32().to_be_bytes());
    t[12] = (((20 + tcp_opts) / 4) as u8) << 4;
    t[13] = input.u8();
    t[14..16].copy_from_slice(&input.u16().to_be_bytes());
    t[20..].fill(1);
    f.extend_from_slice(&t);
    let payload = f.len();
    let ip_end = if v4 {
        l3 + usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]))
    } else {
        l3 + 40 + usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]))
    };
    f.extend((0..ip_end.saturating_sub(payload)).map(|i| (i % 251) as u8));
    if v4 {
        let ihl = usize::from(f[l3] & 0xf) * 4;
        let c = !ones_complement_sum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    // The partial checksum the kernel leaves: the pseudo-header sum with the length.
    let tcp_len = (ip_end - l4) as u16;
    let pseudo = if v4 {
        pseudo_header_v4(src.into(), dst.into(), 6, tcp_len)
    } else {
        pseudo_header_v6(&[0xfd; 16].into(), &[0xfe; 16].into(), 6, tcp_len.into())
    };
    if hdr.needs_csum() {
        f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        if input.u8() & 7 != 0 {
            hdr.csum_start = l4 as u16;
            hdr.csum_offset = 16;
        }
    } else {
        let c = !combine(ones_complement_sum(&f[l4..ip_end]), pseudo);
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    }
    if input.u8() & 7 != 0 {
        hdr.gso_type = (hdr.gso_type & VnetHdr::GSO_ECN)
            | if v4 {
                VnetHdr::GSO_TCPV4
            } else {
                VnetHdr::GSO_TCPV6
            };
    }
    Built {
        frame: f,
        l3,
        l4,
        payload,
        v4,
    }
}

/// The checks on segments of a built superframe.
fn check_built(b: &Built, hdr: &VnetHdr, mtu: usize, segs: &[Vec<u8>]) {
    let payload = &b.frame[b.payload..];
    let seq0 = u32::from_be_bytes(b.frame[b.l4 + 4..b.l4 + 8].try_into().unwrap());
    let flags0 = b.frame[b.l4 + 13];
    let mut offset = 0;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s[..b.l3 - 2], b.frame[..b.l3 - 2], "L2 header copied");
        let chunk = &s[b.payload..];
        assert!(
            chunk.len() <= usize::from(hdr.gso_size),
            "payload within gso_size"
        );
        assert!(s.len() - b.l3 <= mtu, "IP packet within the MTU");
        assert_eq!(
            chunk,
            &payload[offset..offset + chunk.len()],
            "payload in order"
        );
        let seq = u32::from_be_bytes(s[b.l4 + 4..b.l4 + 8].try_into().unwrap());
        assert_eq!(
            seq,
            seq0.wrapping_add(offset as u32),
            "consecutive sequence numbers"
        );
        let flags = s[b.l4 + 13];
        if i + 1 < segs.len() {
            assert_eq!(flags & 0x09, 0, "FIN and PSH only on the last segment");
        } else {
            assert_eq!(flags & 0x09, flags0 & 0x09, "FIN and PSH kept on the last");
        }
        let tcp = &s[b.l4..];
        let pseudo = if b.v4 {
            let ip = &s[b.l3..b.l4];
            assert_eq!(ones_complement_sum(ip), 0xffff, "IPv4 header checksum");
            pseudo_header_v4(
                [ip[12], ip[13], ip[14], ip[15]].into(),
                [ip[16], ip[17], ip[18], ip[19]].into(),
                6,
                tcp.len() as u16,
            )
        } else {
            pseudo_header_v6(&[0xfd; 16].into(), &[0xfe; 16].into(), 6, tcp.len() as u32)
        };
        assert_eq!(
            combine(ones_complement_sum(tcp), pseudo),
            0xffff,
            "TCP checksum"
        );
        offset += chunk.len();
    }
    assert_eq!(offset, payload.len(), "every payload byte is sent once");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(mut hdr) = VnetHdr::parse(input.bytes(12)) else {
        return;
    };
    let mtu = usize::from(input.u16());
    let limit = usize::from(input.u8());
    let built = if input.u8() & 3 == 0 {
        None
    } else {
        Some(build(&mut input, &mut hdr))
    };
    let frame = match &built {
        Some(b) => b.frame.clone(),
        None => input.rest().to_vec(),
    };

    let _ = gso::ip_len(&frame);
    let mut copy = frame.clone();
    let _ = gso::complete_checksum(&hdr, &mut copy);
    assert_eq!(copy.len(), frame.len());

    let count = gso::segment_count(&hdr, &frame, mtu);
    let mut sink = Sink {
        segs: Vec::new(),
        limit,
    };
    let written = gso::segment(&hdr, &frame, mtu, &mut sink);
    match (count, written) {
        (Ok(n), Ok(w)) => {
            assert_eq!(n, w);
            assert_eq!(sink.segs.len(), n);
        }
        (Ok(n), Err(GsoDrop::NoBuffer)) => {
            assert!(n > limit, "ran out of buffers only past the limit");
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (c, w) => panic!("segment_count {c:?} but segment {w:?}"),
    }
    for s in &sink.segs {
        let ip = gso::ip_len(s).expect("a segment is IP");
        assert!(ip <= mtu, "segment IP length {ip} over the MTU {mtu}");
    }
    if let (Some(b), Ok(_)) = (&built, written) {
        check_built(b, &hdr, mtu, &sink.segs);
    }
});
