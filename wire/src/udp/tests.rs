use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use proptest::prelude::*;

use super::*;
use crate::checksum::ones_complement_sum;
use crate::ipv4::{self, Ipv4Packet, Ipv4Repr};

const V4: IpPair = IpPair::V4 {
    src: Ipv4Addr::new(10, 0, 0, 1),
    dst: Ipv4Addr::new(10, 0, 0, 2),
};

fn v6() -> IpPair {
    IpPair::V6 {
        src: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        dst: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    }
}

/// 10.0.0.1:53 → 10.0.0.2:5353, "hi!". Checksum by hand: pseudo-header
/// 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 0x0011 + 0x000b = 0x141f, datagram
/// 0x0035 + 0x14e9 + 0x000b + 0x0000 + 0x6869 + 0x2100 = 0x9e92; together
/// 0xb2b1, complement 0x4d4e.
const DATAGRAM: [u8; 11] = [
    0x00, 0x35, 0x14, 0xe9, // ports 53, 5353
    0x00, 0x0b, 0x4d, 0x4e, // length 11, checksum
    b'h', b'i', b'!',
];

/// Over IPv6 fd00::1 → fd00::2 the same datagram has checksum 0x674c.
const DATAGRAM_V6_CHECKSUM: u16 = 0x674c;

fn repr() -> UdpRepr<'static> {
    UdpRepr {
        src_port: 53,
        dst_port: 5353,
        payload: b"hi!",
    }
}

#[test]
fn parse_known_bytes() {
    let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
    assert_eq!((p.src_port(), p.dst_port()), (53, 5353));
    assert_eq!(p.length(), 11);
    assert_eq!(p.checksum(), 0x4d4e);
    assert_eq!(p.payload(), b"hi!");
    assert!(p.verify_checksum(&V4));
    assert!(!p.verify_checksum(&v6()));
    assert_eq!(UdpRepr::parse(&p, &V4), Ok(repr()));
    assert_eq!(UdpRepr::parse(&p, &v6()), Err(WireError::Checksum));
}

#[test]
fn emit_round_trip() {
    let r = repr();
    assert_eq!(r.buffer_len(), 11);
    let mut buf = [0xeeu8; 11];
    r.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), &V4);
    assert_eq!(buf, DATAGRAM);

    r.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), &v6());
    let p = UdpPacket::new_checked(&buf[..]).unwrap();
    assert_eq!(p.checksum(), DATAGRAM_V6_CHECKSUM);
    assert_eq!(UdpRepr::parse(&p, &v6()), Ok(r));
}

#[test]
fn padding_after_the_length_is_not_the_datagram() {
    let mut b = DATAGRAM.to_vec();
    b.extend_from_slice(&[0xaa; 7]);
    let p = UdpPacket::new_checked(&b[..]).unwrap();
    assert_eq!(p.payload(), b"hi!");
    assert!(p.verify_checksum(&V4));
    assert_eq!(UdpRepr::parse(&p, &V4), Ok(repr()));
    // emit leaves bytes past buffer_len alone.
    let mut b = [0x77u8; 16];
    repr().emit(&mut UdpPacket::new_unchecked(&mut b[..]), &V4);
    assert_eq!(b[..11], DATAGRAM);
    assert_eq!(b[11..], [0x77; 5]);
}

#[test]
fn zero_checksum() {
    // None computed: fine over IPv4, not over IPv6.
    let mut b = DATAGRAM;
    b[6..8].copy_from_slice(&[0, 0]);
    let p = UdpPacket::new_checked(&b[..]).unwrap();
    assert!(p.verify_checksum(&V4));
    assert_eq!(UdpRepr::parse(&p, &V4), Ok(repr()));
    assert_eq!(UdpRepr::parse(&p, &v6()), Err(WireError::Checksum));

    // A computed 0 goes out as 0xffff: choose the last two data bytes (a
    // whole word: offset 12) so the sum comes out at 0xffff.
    let mut data = *b"hi!\0\0\0";
    let probe = UdpRepr {
        payload: &data,
        ..repr()
    };
    let mut buf = [0u8; 14];
    probe.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), &V4);
    let c = UdpPacket::new_unchecked(&buf[..]).checksum();
    data[4..6].copy_from_slice(&c.to_be_bytes());
    let r = UdpRepr {
        payload: &data,
        ..repr()
    };
    r.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), &V4);
    let p = UdpPacket::new_checked(&buf[..]).unwrap();
    assert_eq!(p.checksum(), 0xffff);
    assert!(p.verify_checksum(&V4));
    assert_eq!(UdpRepr::parse(&p, &V4), Ok(r));
}

#[test]
fn length_errors() {
    for cut in 0..8 {
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..cut]).unwrap_err(),
            WireError::Truncated
        );
    }
    // Length 11 but only 10 bytes.
    assert_eq!(
        UdpPacket::new_checked(&DATAGRAM[..10]).unwrap_err(),
        WireError::Truncated
    );
    let mut b = DATAGRAM;
    b[5] = 7;
    assert_eq!(
        UdpPacket::new_checked(&b[..]).unwrap_err(),
        WireError::Malformed
    );
    // Unchecked views of lying lengths never panic.
    let p = UdpPacket::new_unchecked(&b[..]);
    assert!(p.payload().is_empty());
    b[5] = 200;
    let mut p = UdpPacket::new_unchecked(&mut b[..]);
    assert_eq!(p.payload(), b"hi!");
    assert_eq!(p.payload_mut().len(), 3);
    p.fill_checksum(&V4);
}

#[test]
fn setters_rewrite_in_place() {
    let mut b = DATAGRAM;
    let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
    p.set_src_port(1);
    p.set_dst_port(2);
    p.payload_mut()[0] = b'H';
    assert!(!p.verify_checksum(&V4));
    p.fill_checksum(&V4);
    assert!(p.verify_checksum(&V4));
    p.set_length(10);
    assert_eq!(p.payload(), b"Hi");
    assert_eq!(&b[..6], &[0, 1, 0, 2, 0, 10]);
}

/// The datagram the NAT relay builds for a reply from a host socket, as it
/// builds it today by hand: UDP header, checksum over pseudo-header and
/// datagram, then an IPv4 header with DF and TTL 64 in front.
fn relay_emit_udp(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let ulen = 8 + data.len();
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let mut ph = [0u8; 12];
    ph[..4].copy_from_slice(&src.ip().octets());
    ph[4..8].copy_from_slice(&dst.ip().octets());
    ph[9] = PROTOCOL;
    ph[10..12].copy_from_slice(&(ulen as u16).to_be_bytes());
    let s = u32::from(ones_complement_sum(&ph)) + u32::from(ones_complement_sum(&udp));
    let s = ((s & 0xffff) + (s >> 16)) as u16;
    let c = match !s {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let total = 20 + udp.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = PROTOCOL;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let c = crate::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(&udp);
    p
}

/// The same packet from the views: what the relay's `emit_udp` becomes.
fn views_emit_udp(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload: data,
    };
    let ip = Ipv4Repr::new(*src.ip(), *dst.ip(), PROTOCOL, udp.buffer_len());
    let mut p = vec![0u8; ip.buffer_len() + udp.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
    let addrs = IpPair::from((*src.ip(), *dst.ip()));
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut p[ipv4::HEADER_LEN..]),
        &addrs,
    );
    p
}

#[test]
fn builds_what_the_relay_builds() {
    let src = SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 53);
    let dst = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 41234);
    for len in [0, 1, 2, 3, 100, 1472, 9000] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
        assert_eq!(
            views_emit_udp(src, dst, &data),
            relay_emit_udp(src, dst, &data),
            "{len} bytes"
        );
    }
}

proptest! {
    #[test]
    fn relay_equivalence(
        src in any::<([u8; 4], u16)>(),
        dst in any::<([u8; 4], u16)>(),
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let src = SocketAddrV4::new(src.0.into(), src.1);
        let dst = SocketAddrV4::new(dst.0.into(), dst.1);
        let built = views_emit_udp(src, dst, &data);
        prop_assert_eq!(&built, &relay_emit_udp(src, dst, &data));
        let ip = Ipv4Packet::new_checked(&built[..]).unwrap();
        prop_assert!(Ipv4Repr::parse(&ip).is_ok());
        let addrs = IpPair::V4 { src: *src.ip(), dst: *dst.ip() };
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        prop_assert_eq!(UdpRepr::parse(&udp, &addrs).map(|r| r.payload), Ok(&data[..]));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut b = bytes.clone();
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        let _ = p.payload().len();
        let _ = p.payload_mut().len();
        let _ = p.verify_checksum(&V4);
        let _ = p.verify_checksum(&v6());
        if let Ok(p) = UdpPacket::new_checked(&bytes[..]) {
            let _ = UdpRepr::parse(&p, &V4);
            let _ = UdpRepr::parse(&p, &v6());
        }
    }
}

#[test]
fn checksums_agree_with_etherparse() {
    let (h, _) = etherparse::UdpHeader::from_slice(&DATAGRAM).unwrap();
    let c = h.calc_checksum_ipv4_raw([10, 0, 0, 1], [10, 0, 0, 2], b"hi!");
    assert_eq!(c, Ok(0x4d4e));
    let (src, dst) = match v6() {
        IpPair::V6 { src, dst } => (src.octets(), dst.octets()),
        IpPair::V4 { .. } => unreachable!(),
    };
    let c = h.calc_checksum_ipv6_raw(src, dst, b"hi!");
    assert_eq!(c, Ok(DATAGRAM_V6_CHECKSUM));
}
