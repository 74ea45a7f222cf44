use super::*;

/// A UDP datagram header 192.168.0.1 → 192.168.0.199, total length 115, DF,
/// TTL 64: the worked example of the IPv4 header checksum (0xb861) that is
/// commonly used to illustrate RFC 1071.
const HEADER: [u8; 20] = [
    0x45, 0x00, 0x00, 0x73, // v4, IHL 5, DSCP/ECN 0, total length 115
    0x00, 0x00, 0x40, 0x00, // ident 0, DF, offset 0
    0x40, 0x11, 0xb8, 0x61, // TTL 64, UDP, checksum
    0xc0, 0xa8, 0x00, 0x01, // 192.168.0.1
    0xc0, 0xa8, 0x00, 0xc7, // 192.168.0.199
];

fn packet_bytes() -> Vec<u8> {
    let mut b = vec![0u8; 115];
    b[..20].copy_from_slice(&HEADER);
    b
}

fn repr() -> Ipv4Repr {
    Ipv4Repr {
        src_addr: Ipv4Addr::new(192, 168, 0, 1),
        dst_addr: Ipv4Addr::new(192, 168, 0, 199),
        protocol: 17,
        payload_len: 95,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
}

#[test]
fn known_checksum() {
    let mut h = HEADER;
    h[10] = 0;
    h[11] = 0;
    assert_eq!(checksum(&h), 0xb861);
    assert_eq!(ones_complement_sum(&HEADER), 0xffff);
    // Odd length: the last byte is the high half of a zero-padded word.
    assert_eq!(ones_complement_sum(&[0x01]), 0x0100);
    assert_eq!(ones_complement_sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
}

#[test]
fn parse_known_bytes() {
    let b = packet_bytes();
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(p.checksum(), 0xb861);
    assert_eq!(Ipv4Repr::parse(&p), Ok(repr()));
    assert_eq!(p.payload().len(), 95);
}

#[test]
fn emit_round_trip() {
    let r = repr();
    let mut b = [0xaau8; 115];
    r.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
    assert_eq!(&b[..20], &HEADER);
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert_eq!(Ipv4Repr::parse(&p), Ok(r));
    assert_eq!(r.buffer_len(), 20);

    let frag = Ipv4Repr {
        dscp: 46,
        ecn: 2,
        ident: 0xbeef,
        dont_frag: false,
        more_frags: true,
        frag_offset: 1480,
        ttl: 1,
        protocol: 6,
        payload_len: 8,
        ..r
    };
    let mut b = [0u8; 28];
    frag.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert_eq!(b[1], (46 << 2) | 2);
    assert_eq!(&b[6..8], &[0x20, 0xb9]); // MF, 1480 / 8 = 185
    assert_eq!(Ipv4Repr::parse(&p), Ok(frag));
}

#[test]
fn padding_after_total_length_is_ignored() {
    let mut b = [0u8; 60];
    let r = Ipv4Repr {
        payload_len: 8,
        ..repr()
    };
    r.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.payload().len(), 8);
    assert_eq!(Ipv4Repr::parse(&p), Ok(r));
}

#[test]
fn options_are_skipped() {
    // IHL 6 with a 4-byte NOP/EOL option word, then 4 payload bytes.
    let mut b = [0u8; 28];
    b[0] = 0x46;
    b[3] = 28;
    b[8] = 64;
    b[9] = 17;
    b[20..24].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]);
    b[24..28].copy_from_slice(&[1, 2, 3, 4]);
    let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
    p.fill_checksum();
    assert!(p.verify_checksum());
    assert_eq!(p.header_len(), 24);
    assert_eq!(p.payload(), &[1, 2, 3, 4]);
    assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 4);
}

#[test]
fn length_errors() {
    let b = packet_bytes();
    assert_eq!(
        Ipv4Packet::new_checked(&b[..19]).unwrap_err(),
        WireError::Truncated
    );
    // Total length 115 but only 100 bytes.
    assert_eq!(
        Ipv4Packet::new_checked(&b[..100]).unwrap_err(),
        WireError::Truncated
    );
    let mut short_ihl = b.clone();
    short_ihl[0] = 0x44;
    assert_eq!(
        Ipv4Packet::new_checked(&short_ihl[..]).unwrap_err(),
        WireError::Malformed
    );
    let mut small_total = b.clone();
    small_total[2..4].copy_from_slice(&[0, 19]);
    assert_eq!(
        Ipv4Packet::new_checked(&small_total[..]).unwrap_err(),
        WireError::Malformed
    );
    let mut long_ihl = b[..40].to_vec();
    long_ihl[0] = 0x4f; // 60-byte header in a 40-byte buffer
    long_ihl[2..4].copy_from_slice(&[0, 60]);
    assert_eq!(
        Ipv4Packet::new_checked(&long_ihl[..]).unwrap_err(),
        WireError::Truncated
    );
}

#[test]
fn parse_errors() {
    let mut b = packet_bytes();
    b[15] ^= 1; // corrupt the source address
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Checksum));
    let mut b = packet_bytes();
    let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
    p.set_version(6);
    p.fill_checksum();
    assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Malformed));
}

#[test]
fn setters_rewrite_in_place() {
    let mut b = packet_bytes();
    let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
    p.set_ttl(63);
    p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 1));
    assert!(!p.verify_checksum());
    p.fill_checksum();
    assert!(p.verify_checksum());
    assert_eq!(p.ttl(), 63);
    assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
    p.payload_mut()[0] = 0x42;
    assert_eq!(b[20], 0x42);
}

#[test]
fn payload_never_panics_after_bad_setter() {
    let mut b = packet_bytes();
    let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
    p.set_total_len(u16::MAX);
    assert!(p.payload().is_empty());
    assert!(p.payload_mut().is_empty());
    p.set_header_len(60);
    p.set_total_len(30);
    assert!(p.payload().is_empty());
}

#[test]
fn new_builds_a_whole_originated_header() {
    // The worked example is such a header: DF, TTL 64, ident 0.
    let r = Ipv4Repr::new(
        Ipv4Addr::new(192, 168, 0, 1),
        Ipv4Addr::new(192, 168, 0, 199),
        17,
        95,
    );
    assert_eq!(r, repr());
    // Every header byte is written, whatever the buffer held.
    for fill in [0x00, 0xff, 0x5a] {
        let mut b = [fill; 24];
        r.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
        assert_eq!(b[..20], HEADER);
        assert_eq!(b[20..], [fill; 4], "payload left alone");
    }
}
