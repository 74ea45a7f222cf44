use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

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

/// A SYN 10.0.0.1:40000 → 10.0.0.2:5201, seq 1, window 64240, MSS 1460.
/// Checksum by hand: pseudo-header 0x0a00 + 0x0001 + 0x0a00 + 0x0002 +
/// 0x0006 + 0x0018 = 0x1421, header 0x9c40 + 0x1451 + 0x0000 + 0x0001 +
/// 0x0000 + 0x0000 + 0x6002 + 0xfaf0 + 0x0204 + 0x05b4 = 0x133e (folded);
/// together 0x275f, complement 0xd8a0.
const SYN: [u8; 24] = [
    0x9c, 0x40, 0x14, 0x51, // ports 40000, 5201
    0x00, 0x00, 0x00, 0x01, // seq 1
    0x00, 0x00, 0x00, 0x00, // ack 0
    0x60, 0x02, 0xfa, 0xf0, // data offset 6, SYN, window 64240
    0xd8, 0xa0, 0x00, 0x00, // checksum, urgent pointer
    0x02, 0x04, 0x05, 0xb4, // MSS 1460
];

/// Over IPv6 fd00::1 → fd00::2 the same header has checksum 0xf29e.
const SYN_V6_CHECKSUM: u16 = 0xf29e;

/// The reply's first data: 10.0.0.2:5201 → 10.0.0.1:40000, ACK|PSH, seq
/// 0x1000, ack 2, window 502, "hello"; checksum 0x9569.
const DATA: [u8; 25] = [
    0x14, 0x51, 0x9c, 0x40, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x02, 0x50, 0x18, 0x01, 0xf6,
    0x95, 0x69, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o',
];

fn syn_repr() -> TcpRepr<'static> {
    TcpRepr {
        src_port: 40000,
        dst_port: 5201,
        seq_number: 1,
        ack_number: 0,
        flags: TcpFlags::SYN,
        window_len: 64240,
        urgent_at: 0,
        mss: Some(1460),
        payload: &[],
    }
}

fn data_repr() -> TcpRepr<'static> {
    TcpRepr {
        src_port: 5201,
        dst_port: 40000,
        seq_number: 0x1000,
        ack_number: 2,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window_len: 502,
        urgent_at: 0,
        mss: None,
        payload: b"hello",
    }
}

fn swapped(addrs: IpPair) -> IpPair {
    match addrs {
        IpPair::V4 { src, dst } => IpPair::V4 { src: dst, dst: src },
        IpPair::V6 { src, dst } => IpPair::V6 { src: dst, dst: src },
    }
}

#[test]
fn parse_known_bytes() {
    let p = TcpPacket::new_checked(&SYN[..]).unwrap();
    assert_eq!((p.src_port(), p.dst_port()), (40000, 5201));
    assert_eq!((p.seq_number(), p.ack_number()), (1, 0));
    assert_eq!(p.header_len(), 24);
    assert_eq!(p.flags(), TcpFlags::SYN);
    assert!(p.flags().contains(TcpFlags::SYN) && !p.flags().contains(TcpFlags::ACK));
    assert_eq!(p.window_len(), 64240);
    assert_eq!(p.checksum(), 0xd8a0);
    assert_eq!(p.urgent_at(), 0);
    assert_eq!(p.options(), &[2, 4, 0x05, 0xb4]);
    assert_eq!(p.mss(), Some(1460));
    assert!(p.payload().is_empty());
    assert!(p.verify_checksum(&V4));
    assert_eq!(TcpRepr::parse(&p, &V4), Ok(syn_repr()));

    let p = TcpPacket::new_checked(&DATA[..]).unwrap();
    assert_eq!(p.payload(), b"hello");
    assert_eq!(p.mss(), None);
    assert_eq!(TcpRepr::parse(&p, &swapped(V4)), Ok(data_repr()));
}

#[test]
fn emit_round_trip() {
    let r = syn_repr();
    assert_eq!(r.buffer_len(), 24);
    let mut buf = [0xeeu8; 24];
    r.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &V4);
    assert_eq!(buf, SYN);

    let r = data_repr();
    assert_eq!((r.header_len(), r.buffer_len()), (20, 25));
    let mut buf = [0xeeu8; 25];
    r.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &swapped(V4));
    assert_eq!(buf, DATA);
}

#[test]
fn ipv6_checksum() {
    let mut buf = [0u8; 24];
    syn_repr().emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &v6());
    let p = TcpPacket::new_checked(&buf[..]).unwrap();
    assert_eq!(p.checksum(), SYN_V6_CHECKSUM);
    assert!(p.verify_checksum(&v6()));
    assert!(!p.verify_checksum(&V4));
    assert_eq!(TcpRepr::parse(&p, &v6()), Ok(syn_repr()));
    assert_eq!(TcpRepr::parse(&p, &V4), Err(WireError::Checksum));
}

#[test]
fn options_iter_reads_every_kind() {
    // MSS, NOP, WS 7, SACK-permitted, timestamps, SACK block, unknown kind 30, EOL, junk.
    let opts: &[u8] = &[
        2, 4, 0x23, 0x28, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 5, 10, 1, 2, 3, 4, 5, 6,
        7, 8, 30, 3, 9, 0, 0xff, 0xff,
    ];
    let got: Vec<_> = TcpOptions::new(opts).collect();
    assert_eq!(
        got,
        [
            Ok(TcpOption::MaxSegmentSize(9000)),
            Ok(TcpOption::NoOperation),
            Ok(TcpOption::WindowScale(7)),
            Ok(TcpOption::SackPermitted),
            Ok(TcpOption::Timestamp { tsval: 1, tsecr: 2 }),
            Ok(TcpOption::Other {
                kind: option_kind::SACK,
                data: &[1, 2, 3, 4, 5, 6, 7, 8],
            }),
            Ok(TcpOption::Other {
                kind: 30,
                data: &[9],
            }),
        ]
    );
    // A known kind with the wrong length is Other; a bad length ends the walk.
    let got: Vec<_> = TcpOptions::new(&[2, 3, 9, 1, 5, 1, 1]).collect();
    assert_eq!(
        got,
        [
            Ok(TcpOption::Other {
                kind: 2,
                data: &[9]
            }),
            Ok(TcpOption::NoOperation),
            Err(WireError::Malformed),
        ]
    );
    for bad in [&[2][..], &[2, 0], &[2, 1], &[8, 10, 0, 0]] {
        let got: Vec<_> = TcpOptions::new(bad).collect();
        assert_eq!(got, [Err(WireError::Malformed)], "{bad:?}");
    }
    assert_eq!(TcpOptions::new(&[]).count(), 0);
    assert_eq!(TcpOptions::new(&[0, 2, 4, 5, 0xb4]).count(), 0);
}

/// A SYN header with `opts` as options (padded with EOL to a multiple of 4).
fn syn_with(opts: &[u8]) -> Vec<u8> {
    let mut b = SYN[..20].to_vec();
    b.extend_from_slice(opts);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b[12] = ((b.len() / 4) as u8) << 4;
    b
}

#[test]
fn mss_read_and_rewritten_in_place() {
    // Behind NOPs and a window scale, as Linux sends it.
    let mut b = syn_with(&[1, 3, 3, 7, 2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
    let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
    assert_eq!(p.mss(), Some(1460));
    assert_eq!(p.set_mss(65495), Some(1460));
    assert_eq!(p.mss(), Some(65495));
    assert_eq!(&b[24..28], &[2, 4, 0xff, 0xd7]);
    assert_eq!(&b[20..24], &[1, 3, 3, 7], "other options untouched");

    // No MSS, MSS after EOL, MSS after a broken option, wrong-length MSS:
    // nothing read, nothing written.
    for opts in [
        &[1, 1, 4, 2][..],
        &[0, 0, 0, 0, 2, 4, 1, 0],
        &[30, 9, 0, 0, 2, 4, 1, 0],
        &[30, 0, 2, 4, 1, 0],
        &[2, 3, 5, 1],
    ] {
        let mut b = syn_with(opts);
        let before = b.clone();
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        assert_eq!(p.mss(), None, "{opts:?}");
        assert_eq!(p.set_mss(1), None, "{opts:?}");
        assert_eq!(b, before);
    }
    // The first of two MSS options counts; a wrong-length one is skipped.
    let b = syn_with(&[2, 3, 5, 2, 4, 0, 100, 2, 4, 0, 200]);
    assert_eq!(TcpPacket::new_unchecked(&b[..]).mss(), Some(100));
}

#[test]
fn mss_never_panics_on_short_or_lying_headers() {
    // The data offset claims more than the buffer: options are cut at its end.
    let mut b = SYN;
    b[12] = 0xf0;
    let mut p = TcpPacket::new_unchecked(&mut b[..]);
    assert_eq!(p.check_len(), Err(WireError::Truncated));
    assert_eq!(p.mss(), Some(1460));
    assert_eq!(p.set_mss(9000), Some(1460));
    assert!(p.payload().is_empty());
    for cut in 0..SYN.len() {
        let p = TcpPacket::new_unchecked(&SYN[..cut]);
        let want = if cut == 24 { Some(1460) } else { None };
        assert_eq!(p.mss(), want, "cut {cut}");
        assert_eq!(p.options_iter().count() > 0, cut > 20, "cut {cut}");
    }
}

#[test]
fn length_errors() {
    for cut in 0..20 {
        assert_eq!(
            TcpPacket::new_checked(&SYN[..cut]).unwrap_err(),
            WireError::Truncated,
            "cut {cut}"
        );
    }
    // Data offset 6 needs 24 bytes.
    for cut in 20..24 {
        assert_eq!(
            TcpPacket::new_checked(&SYN[..cut]).unwrap_err(),
            WireError::Truncated
        );
    }
    let mut b = SYN;
    b[12] = 0x40; // data offset 4
    assert_eq!(
        TcpPacket::new_checked(&b[..]).unwrap_err(),
        WireError::Malformed
    );
}

#[test]
fn parse_errors() {
    let mut b = SYN;
    b[23] ^= 1;
    let p = TcpPacket::new_unchecked(&b[..]);
    assert_eq!(TcpRepr::parse(&p, &V4), Err(WireError::Checksum));
    // A broken option list with a right checksum.
    let mut b = syn_with(&[30, 1, 0, 0]);
    TcpPacket::new_unchecked(&mut b[..]).fill_checksum(&V4);
    let p = TcpPacket::new_unchecked(&b[..]);
    assert!(p.verify_checksum(&V4));
    assert_eq!(TcpRepr::parse(&p, &V4), Err(WireError::Malformed));
}

#[test]
fn setters_rewrite_in_place() {
    let mut b = DATA;
    let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
    p.set_src_port(1);
    p.set_dst_port(2);
    p.set_seq_number(0xdead_beef);
    p.set_ack_number(0x0102_0304);
    let mut f = p.flags();
    f.remove(TcpFlags::PSH);
    f.insert(TcpFlags::FIN);
    p.set_flags(f);
    p.set_window_len(0x0506);
    p.set_urgent_at(7);
    p.payload_mut()[0] = b'j';
    assert!(!p.verify_checksum(&V4));
    p.fill_checksum(&V4);
    assert!(p.verify_checksum(&V4));
    assert_eq!(
        &b[..20],
        &[
            0, 1, 0, 2, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0x50, 0x11, 5, 6, b[16], b[17], 0, 7
        ]
    );
    assert_eq!(&b[20..], b"jello");
    // The reserved bits beside the data offset survive a length change.
    let mut b = DATA;
    b[12] = 0x51;
    let mut p = TcpPacket::new_unchecked(&mut b[..]);
    p.set_header_len(24);
    assert_eq!(b[12], 0x61);
}

#[test]
fn fill_checksum_with_a_pseudo_sum() {
    let mut b = DATA;
    let mut p = TcpPacket::new_unchecked(&mut b[..]);
    p.set_checksum(0x1234);
    let pseudo = swapped(V4).pseudo_header(PROTOCOL, DATA.len() as u32);
    p.fill_checksum_with(pseudo);
    assert_eq!(b, DATA);
}

#[test]
fn flags_debug_names_bits() {
    assert_eq!(
        format!("{:?}", TcpFlags::SYN | TcpFlags::ACK | TcpFlags::CWR),
        "TcpFlags(SYN|ACK|CWR)"
    );
    assert_eq!(format!("{:?}", TcpFlags::empty()), "TcpFlags()");
    assert_eq!(TcpFlags::from_bits(0x12).bits(), 0x12);
    assert_eq!(TcpFlags::from_bits(0x12), TcpFlags::SYN | TcpFlags::ACK);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
        mss in any::<u16>(),
    ) {
        let mut b = bytes.clone();
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        let _ = p.mss();
        let _ = p.set_mss(mss);
        let _ = p.options_iter().count();
        let _ = p.payload().len();
        let _ = p.payload_mut().len();
        let _ = p.options_mut().len();
        if let Ok(p) = TcpPacket::new_checked(&bytes[..]) {
            let _ = TcpRepr::parse(&p, &V4);
            let _ = TcpRepr::parse(&p, &v6());
            let _ = (p.src_port(), p.seq_number(), p.ack_number(), p.flags());
            let _ = (p.window_len(), p.checksum(), p.urgent_at());
        }
    }

    #[test]
    fn emit_then_parse(
        ports in any::<(u16, u16)>(),
        seq in any::<(u32, u32)>(),
        flags in any::<u8>(),
        window in any::<u16>(),
        urgent in any::<u16>(),
        mss in proptest::option::of(any::<u16>()),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        on_v6 in any::<bool>(),
    ) {
        let addrs = if on_v6 { v6() } else { V4 };
        let r = TcpRepr {
            src_port: ports.0,
            dst_port: ports.1,
            seq_number: seq.0,
            ack_number: seq.1,
            flags: TcpFlags::from_bits(flags),
            window_len: window,
            urgent_at: urgent,
            mss,
            payload: &payload,
        };
        let mut buf = vec![0x5a; r.buffer_len()];
        r.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &addrs);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(TcpRepr::parse(&p, &addrs), Ok(r));
    }
}

#[test]
fn checksums_agree_with_etherparse() {
    let (h, payload) = etherparse::TcpHeader::from_slice(&DATA).unwrap();
    let c = h.calc_checksum_ipv4_raw([10, 0, 0, 2], [10, 0, 0, 1], payload);
    assert_eq!(c, Ok(0x9569));
    let (h, payload) = etherparse::TcpHeader::from_slice(&SYN).unwrap();
    let c = h.calc_checksum_ipv4_raw([10, 0, 0, 1], [10, 0, 0, 2], payload);
    assert_eq!(c, Ok(0xd8a0));
    let (src, dst) = match v6() {
        IpPair::V6 { src, dst } => (src.octets(), dst.octets()),
        IpPair::V4 { .. } => unreachable!(),
    };
    assert_eq!(
        h.calc_checksum_ipv6_raw(src, dst, payload),
        Ok(SYN_V6_CHECKSUM)
    );
}

/// What the NAT relay does to a SYN today, by hand: raise its MSS option to
/// at least `big`, return the one asked for.
fn relay_raise_mss(tcp: &mut [u8], big: u16) -> Option<u16> {
    let thl = (usize::from(tcp.get(12)? >> 4) * 4).min(tcp.len());
    let mut i = 20;
    while i < thl {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*tcp.get(i + 1)?);
                if len < 2 || i + len > thl {
                    return None;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    tcp[i + 2..i + 4].copy_from_slice(&big.max(mss).to_be_bytes());
                    return Some(mss);
                }
                i += len;
            }
        }
    }
    None
}

/// The same with the view: what the relay's `raise_mss` becomes.
fn view_raise_mss(tcp: &mut [u8], big: u16) -> Option<u16> {
    let mut tcp = TcpPacket::new_unchecked(tcp);
    let mss = tcp.mss()?;
    tcp.set_mss(big.max(mss));
    Some(mss)
}

proptest! {
    #[test]
    fn raise_mss_as_the_relay_does(
        cut in proptest::option::weighted(0.2, 0usize..64),
        opts in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(2), Just(3), Just(4), any::<u8>()],
            0..44,
        ),
        doff in proptest::option::of(0u8..16),
        big in any::<u16>(),
    ) {
        let mut a = SYN[..20].to_vec();
        a.extend_from_slice(&opts);
        if let Some(d) = doff {
            a[12] = d << 4;
        }
        // Sometimes a buffer cut anywhere, header included.
        if let Some(cut) = cut {
            a.truncate(cut);
        }
        let mut b = a.clone();
        prop_assert_eq!(view_raise_mss(&mut b, big), relay_raise_mss(&mut a, big));
        prop_assert_eq!(a, b);
    }
}
