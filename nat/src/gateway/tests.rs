use proptest::prelude::*;
use tapnet_wire::checksum::checksum;

use super::*;
use crate::GatewayCountersSnapshot;

const GW_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const GW_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

fn config(internal: bool) -> GatewayConfig {
    GatewayConfig {
        mac: MacAddr(GW_MAC),
        ip: GW_IP,
        prefix_len: 16,
        internal,
    }
}

fn gateway() -> Gateway {
    Gateway::new(config(false))
}

/// 172.17.0.2 asks by broadcast who has 172.17.0.1 (60 bytes: padded as on a
/// wire).
const ARP_REQUEST: [u8; 60] = {
    let mut f = [0u8; 60];
    let head: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
        0x00, 0x01, // request
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // sha
        0xac, 0x11, 0x00, 0x02, // spa 172.17.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0xac, 0x11, 0x00, 0x01, // tpa 172.17.0.1
    ];
    let mut i = 0;
    while i < head.len() {
        f[i] = head[i];
        i += 1;
    }
    f
};

/// The answer, byte by byte (RFC 826: swap, fill in our addresses, op 2).
const ARP_REPLY: [u8; 42] = [
    0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // dst: the asker
    0x02, 0x42, 0xac, 0x11, 0x00, 0x01, // src: the gateway
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x02, // reply
    0x02, 0x42, 0xac, 0x11, 0x00, 0x01, // sha: gateway MAC
    0xac, 0x11, 0x00, 0x01, // spa: 172.17.0.1
    0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // tha: the asker
    0xac, 0x11, 0x00, 0x02, // tpa: 172.17.0.2
];

/// 172.17.0.2 pings 172.17.0.1: IP ID 0x1234, DF, TTL 64; echo id 0x1c2b,
/// seq 1, data "aaaa". IP checksum by hand: 0x4500 + 0x0020 + 0x1234 +
/// 0x4000 + 0x4001 + 0xac11 + 0x0002 + 0xac11 + 0x0001 = 0x22f7a, folded
/// 0x2f7c, complement 0xd083. ICMP checksum: see `wire::icmpv4` (0x1911).
const ECHO_REQUEST: [u8; 46] = [
    0x02, 0x42, 0xac, 0x11, 0x00, 0x01, // dst: the gateway
    0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src
    0x08, 0x00, // IPv4
    0x45, 0x00, 0x00, 0x20, // v4, IHL 5, total length 32
    0x12, 0x34, 0x40, 0x00, // ID, DF
    0x40, 0x01, 0xd0, 0x83, // TTL 64, ICMP, checksum
    0xac, 0x11, 0x00, 0x02, // 172.17.0.2
    0xac, 0x11, 0x00, 0x01, // 172.17.0.1
    0x08, 0x00, 0x19, 0x11, // echo request, checksum
    0x1c, 0x2b, 0x00, 0x01, // id, seq
    0x61, 0x61, 0x61, 0x61, // data
];

/// The reply. IP checksum by hand: 0x4500 + 0x0020 + 0x0000 + 0x4000 +
/// 0x4001 + 0xac11 + 0x0001 + 0xac11 + 0x0002 = 0x21d46, folded 0x1d48,
/// complement 0xe2b7. ICMP: type 0 raises the checksum by 0x0800 (RFC 1624).
const ECHO_REPLY: [u8; 46] = [
    0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // dst: the pinger
    0x02, 0x42, 0xac, 0x11, 0x00, 0x01, // src: the gateway
    0x08, 0x00, // IPv4
    0x45, 0x00, 0x00, 0x20, // v4, IHL 5, total length 32
    0x00, 0x00, 0x40, 0x00, // ID 0, DF
    0x40, 0x01, 0xe2, 0xb7, // TTL 64, ICMP, checksum
    0xac, 0x11, 0x00, 0x01, // 172.17.0.1
    0xac, 0x11, 0x00, 0x02, // 172.17.0.2
    0x00, 0x00, 0x21, 0x11, // echo reply, checksum
    0x1c, 0x2b, 0x00, 0x01, // id, seq
    0x61, 0x61, 0x61, 0x61, // data
];

fn handle(gw: &mut Gateway, frame: &[u8]) -> (Outcome, Vec<u8>) {
    let mut out = [0u8; 1600];
    let o = gw.handle(frame, &mut out);
    let reply = match o {
        Outcome::Reply(n) => out[..n].to_vec(),
        _ => Vec::new(),
    };
    (o, reply)
}

/// An echo request from `src` to `dst` with `options` in the IP header and
/// `data`, checksums right.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, options: &[u8], data: &[u8]) -> Vec<u8> {
    let hl = 20 + options.len();
    let mut f = vec![0u8; 14 + hl + 8 + data.len()];
    f[..14].copy_from_slice(&ECHO_REQUEST[..14]);
    let total = (hl + 8 + data.len()) as u16;
    {
        let ip = &mut f[14..14 + hl];
        ip[0] = 0x40 | (hl / 4) as u8;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 1;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        ip[20..].copy_from_slice(options);
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let icmp = &mut f[14 + hl..];
    icmp[0] = 8;
    icmp[4..8].copy_from_slice(&[0x1c, 0x2b, 0x00, 0x07]);
    icmp[8..].copy_from_slice(data);
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

fn host() -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, 2)
}

#[test]
fn arp_reply_is_byte_exact() {
    let mut gw = gateway();
    let (o, reply) = handle(&mut gw, &ARP_REQUEST);
    assert_eq!(o, Outcome::Reply(42));
    assert_eq!(reply, ARP_REPLY);
    // Unicast requests (a cache refresh) are answered too.
    let mut unicast = ARP_REQUEST;
    unicast[..6].copy_from_slice(&GW_MAC);
    assert_eq!(handle(&mut gw, &unicast).1, ARP_REPLY);
    // Unpadded, 42 bytes.
    assert_eq!(handle(&mut gw, &ARP_REQUEST[..42]).1, ARP_REPLY);
    assert_eq!(
        gw.snapshot(),
        GatewayCountersSnapshot {
            received: 3,
            arp_replies: 3,
            ..Default::default()
        }
    );
}

#[test]
fn echo_reply_is_byte_exact() {
    let mut gw = gateway();
    let (o, reply) = handle(&mut gw, &ECHO_REQUEST);
    assert_eq!(o, Outcome::Reply(46));
    assert_eq!(reply, ECHO_REPLY);
    // Ethernet padding after the IP total length is ignored.
    let mut padded = ECHO_REQUEST.to_vec();
    padded.resize(60, 0xee);
    assert_eq!(handle(&mut gw, &padded).1, ECHO_REPLY);
    assert_eq!(gw.snapshot().echo_replies, 2);
}

#[test]
fn echo_reply_keeps_dscp_and_large_payloads() {
    let mut gw = gateway();
    let data: Vec<u8> = (0..1472u32).map(|i| (i * 7) as u8).collect();
    let mut f = echo(host(), GW_IP, &[], &data);
    f[15] = (46 << 2) | 1; // EF, ECT(1)
    let c = checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (o, reply) = handle(&mut gw, &f);
    assert_eq!(o, Outcome::Reply(f.len()));
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.dscp(), ip.ecn(), ip.ttl()), (46, 0, 64));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        Icmpv4Repr::parse(&icmp),
        Ok(Icmpv4Repr::EchoReply {
            ident: 0x1c2b,
            seq_no: 7,
            data: &data
        })
    );
}

#[test]
fn options_are_dropped_from_the_reply_and_source_routes_refused() {
    let mut gw = gateway();
    // NOP, NOP, NOP, EOL; then a record route option (type 7, length 7,
    // pointer 4, one empty slot) padded with EOL.
    for opts in [
        &[1u8, 1, 1, 0][..],
        &[7, 7, 4, 0, 0, 0, 0, 0][..],
        &[148, 4, 0, 0][..], // router alert
    ] {
        let (o, reply) = handle(&mut gw, &echo(host(), GW_IP, opts, b"aaaa"));
        assert_eq!(o, Outcome::Reply(46), "{opts:?}");
        assert_eq!(reply, seq7_reply(), "{opts:?}");
    }
    // LSRR and SSRR via another hop.
    for kind in [131u8, 137] {
        let opts = [kind, 7, 4, 172, 17, 0, 9, 0];
        assert_eq!(
            handle(&mut gw, &echo(host(), GW_IP, &opts, b"aaaa")).0,
            Outcome::Drop(GatewayDrop::SourceRoute)
        );
    }
    // An option running past the header, a zero length, a lone type byte.
    for opts in [&[7u8, 9, 4, 0][..], &[7, 0, 0, 0][..], &[1, 1, 1, 7][..]] {
        assert_eq!(
            handle(&mut gw, &echo(host(), GW_IP, opts, b"aaaa")).0,
            Outcome::Drop(GatewayDrop::Malformed),
            "{opts:?}"
        );
    }
    let c = gw.snapshot();
    assert_eq!(
        (c.echo_replies, c.drop_source_route, c.drop_malformed),
        (3, 2, 3)
    );
}

/// The reply to `echo(host(), GW_IP, _, b"aaaa")`: `ECHO_REPLY` with
/// sequence number 7, so the ICMP checksum is 6 lower (RFC 1624).
fn seq7_reply() -> Vec<u8> {
    let mut f = ECHO_REPLY.to_vec();
    f[41] = 7;
    f[37] = 0x0b;
    f
}

#[test]
fn arp_not_for_us_gratuitous_and_odd() {
    let mut gw = gateway();
    let mut other = ARP_REQUEST;
    other[41] = 9; // who has 172.17.0.9
    assert_eq!(
        handle(&mut gw, &other).0,
        Outcome::Drop(GatewayDrop::NotForUs)
    );
    // Gratuitous announcements (Docker sends them since v28), even of our
    // own address, are ignored.
    let mut gratuitous = ARP_REQUEST;
    gratuitous[38..42].copy_from_slice(&[0xac, 0x11, 0x00, 0x02]);
    assert_eq!(handle(&mut gw, &gratuitous).0, Outcome::Consumed);
    let mut conflict = ARP_REQUEST;
    conflict[28..32].copy_from_slice(&[0xac, 0x11, 0x00, 0x01]);
    assert_eq!(handle(&mut gw, &conflict).0, Outcome::Consumed);
    // A reply to us: nothing to answer.
    let mut reply = ARP_REQUEST;
    reply[21] = 2;
    reply[..6].copy_from_slice(&GW_MAC);
    assert_eq!(handle(&mut gw, &reply).0, Outcome::Consumed);
    // An RFC 5227 probe (sender 0.0.0.0) is answered.
    let mut probe = ARP_REQUEST;
    probe[28..32].copy_from_slice(&[0, 0, 0, 0]);
    let (o, r) = handle(&mut gw, &probe);
    assert_eq!(o, Outcome::Reply(42));
    assert_eq!(&r[38..42], &[0, 0, 0, 0]);
    // InARP, IPv6-over-ARP, truncated, multicast sender, to another MAC.
    let mut inarp = ARP_REQUEST;
    inarp[21] = 8;
    assert_eq!(
        handle(&mut gw, &inarp).0,
        Outcome::Drop(GatewayDrop::Unsupported)
    );
    let mut foreign = ARP_REQUEST;
    foreign[16..18].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(
        handle(&mut gw, &foreign).0,
        Outcome::Drop(GatewayDrop::Unsupported)
    );
    assert_eq!(
        handle(&mut gw, &ARP_REQUEST[..41]).0,
        Outcome::Drop(GatewayDrop::Malformed)
    );
    let mut mcast = ARP_REQUEST;
    mcast[22] = 0x01;
    assert_eq!(
        handle(&mut gw, &mcast).0,
        Outcome::Drop(GatewayDrop::BadSource)
    );
    let mut elsewhere = ARP_REQUEST;
    elsewhere[..6].copy_from_slice(&HOST_MAC);
    assert_eq!(
        handle(&mut gw, &elsewhere).0,
        Outcome::Drop(GatewayDrop::NotForUs)
    );
    assert_eq!(
        gw.snapshot(),
        GatewayCountersSnapshot {
            received: 10,
            arp_replies: 1,
            arp_ignored: 3,
            drop_not_for_us: 2,
            drop_unsupported: 2,
            drop_malformed: 1,
            drop_bad_source: 1,
            ..Default::default()
        }
    );
}

#[test]
fn ipv4_destinations() {
    let mut gw = gateway();
    let cases = [
        // Another container: the switch flooded it here, or it was mis-sent.
        (Ipv4Addr::new(172, 17, 3, 4), GatewayDrop::NotForUs),
        (Ipv4Addr::new(172, 17, 255, 255), GatewayDrop::NotForUs),
        (Ipv4Addr::BROADCAST, GatewayDrop::NotForUs),
        (Ipv4Addr::new(224, 0, 0, 251), GatewayDrop::NotForUs),
        (Ipv4Addr::UNSPECIFIED, GatewayDrop::NotForUs),
        // The world: NAT comes later.
        (Ipv4Addr::new(1, 1, 1, 1), GatewayDrop::NoRoute),
        (Ipv4Addr::new(172, 18, 0, 1), GatewayDrop::NoRoute),
    ];
    for (dst, want) in cases {
        assert_eq!(
            handle(&mut gw, &echo(host(), dst, &[], b"x")).0,
            Outcome::Drop(want),
            "{dst}"
        );
    }
    let c = gw.snapshot();
    assert_eq!((c.drop_not_for_us, c.drop_no_route), (5, 2));

    let mut internal = Gateway::new(config(true));
    assert_eq!(
        handle(&mut internal, &ECHO_REQUEST),
        (Outcome::Reply(46), ECHO_REPLY.to_vec())
    );
    for (dst, want) in cases {
        let want = match want {
            GatewayDrop::NoRoute => GatewayDrop::Internal,
            w => w,
        };
        assert_eq!(
            handle(&mut internal, &echo(host(), dst, &[], b"x")).0,
            Outcome::Drop(want),
            "{dst}"
        );
    }
    // A source outside the subnet cannot talk to an internal gateway either.
    assert_eq!(
        handle(
            &mut internal,
            &echo(Ipv4Addr::new(8, 8, 8, 8), GW_IP, &[], b"x")
        )
        .0,
        Outcome::Drop(GatewayDrop::Internal)
    );
    let c = internal.snapshot();
    assert_eq!(
        (c.echo_replies, c.drop_internal, c.drop_no_route),
        (1, 3, 0)
    );
}

#[test]
fn ipv4_errors() {
    let mut gw = gateway();
    let drop = |gw: &mut Gateway, f: &[u8]| match gw.handle(f, &mut [0u8; 1600]) {
        Outcome::Drop(r) => r,
        o => panic!("{o:?}"),
    };
    // Header checksum.
    let mut bad = ECHO_REQUEST;
    bad[25] ^= 0x40;
    assert_eq!(drop(&mut gw, &bad), GatewayDrop::Malformed);
    // ICMP checksum.
    let mut bad = ECHO_REQUEST;
    bad[45] = b'b';
    assert_eq!(drop(&mut gw, &bad), GatewayDrop::Malformed);
    // Truncated: IP total length beyond the frame, ICMP shorter than 8.
    assert_eq!(drop(&mut gw, &ECHO_REQUEST[..45]), GatewayDrop::Malformed);
    assert_eq!(drop(&mut gw, &ECHO_REQUEST[..20]), GatewayDrop::Malformed);
    let mut short = echo(host(), GW_IP, &[], b"");
    short[16..18].copy_from_slice(&24u16.to_be_bytes());
    short[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&short[14..34]);
    short[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(drop(&mut gw, &short), GatewayDrop::Malformed);
    // Version 6 in an IPv4 EtherType.
    let mut v6 = ECHO_REQUEST;
    v6[14] = 0x65;
    assert_eq!(drop(&mut gw, &v6), GatewayDrop::Malformed);
    // Fragments: first (MF) and later (offset).
    for flags in [[0x20, 0x00], [0x00, 0x10]] {
        let mut frag = ECHO_REQUEST;
        frag[20..22].copy_from_slice(&flags);
        frag[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&frag[14..34]);
        frag[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(drop(&mut gw, &frag), GatewayDrop::Fragment);
    }
    // Sources no reply can go to.
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(172, 17, 255, 255),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 1),
        GW_IP,
    ] {
        assert_eq!(
            drop(&mut gw, &echo(src, GW_IP, &[], b"x")),
            GatewayDrop::BadSource,
            "{src}"
        );
    }
    // UDP to the gateway (DNS comes later), an echo reply, a timestamp request.
    let mut udp = ECHO_REQUEST;
    udp[23] = 17;
    udp[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&udp[14..34]);
    udp[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(drop(&mut gw, &udp), GatewayDrop::Unsupported);
    assert_eq!(drop(&mut gw, &ECHO_REPLY_TO_GW), GatewayDrop::Unsupported);
    let mut ts = ECHO_REQUEST;
    ts[34] = 13;
    ts[36] = 0x14; // 0x1911 - 0x0500
    assert_eq!(drop(&mut gw, &ts), GatewayDrop::Unsupported);
    let mut code = ECHO_REQUEST;
    code[35] = 1;
    code[37] = 0x10; // 0x1911 - 0x0001
    assert_eq!(drop(&mut gw, &code), GatewayDrop::Malformed);
    // IPv6, VLAN-tagged, unknown EtherType, and a short frame.
    for et in [[0x86, 0xdd], [0x81, 0x00], [0x88, 0xb5]] {
        let mut f = ECHO_REQUEST;
        f[12..14].copy_from_slice(&et);
        assert_eq!(drop(&mut gw, &f), GatewayDrop::Unsupported);
    }
    assert_eq!(drop(&mut gw, &ECHO_REQUEST[..13]), GatewayDrop::Malformed);
    // IPv4 to another MAC, or broadcast.
    let mut f = ECHO_REQUEST;
    f[..6].copy_from_slice(&HOST_MAC);
    assert_eq!(drop(&mut gw, &f), GatewayDrop::NotForUs);
    f[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(drop(&mut gw, &f), GatewayDrop::NotForUs);
    // Multicast Ethernet source.
    let mut f = ECHO_REQUEST;
    f[6] = 0x03;
    assert_eq!(drop(&mut gw, &f), GatewayDrop::BadSource);
    let c = gw.snapshot();
    assert_eq!(c.echo_replies + c.arp_replies + c.arp_ignored, 0);
    assert_eq!(c.received, 25);
}

/// `ECHO_REPLY` turned around: an echo reply addressed to the gateway.
const ECHO_REPLY_TO_GW: [u8; 46] = {
    let mut f = ECHO_REQUEST;
    f[34] = 0;
    f[36] = 0x21;
    f
};

#[test]
fn no_room_for_the_reply() {
    let mut gw = gateway();
    let mut out = [0u8; 45];
    assert_eq!(
        gw.handle(&ECHO_REQUEST, &mut out),
        Outcome::Drop(GatewayDrop::NoRoom)
    );
    assert_eq!(out, [0u8; 45]);
    assert_eq!(
        gw.handle(&ARP_REQUEST, &mut out[..41]),
        Outcome::Drop(GatewayDrop::NoRoom)
    );
    assert_eq!(gw.handle(&ARP_REQUEST, &mut out[..42]), Outcome::Reply(42));
    // No reply due: no room needed.
    assert_eq!(
        gw.handle(&echo(host(), Ipv4Addr::new(1, 1, 1, 1), &[], b""), &mut []),
        Outcome::Drop(GatewayDrop::NoRoute)
    );
    assert_eq!(gw.snapshot().drop_no_room, 2);
}

#[test]
fn subnet_arithmetic() {
    let mut cfg = config(false);
    assert!(cfg.contains(Ipv4Addr::new(172, 17, 200, 3)));
    assert!(!cfg.contains(Ipv4Addr::new(172, 16, 0, 1)));
    assert_eq!(cfg.broadcast(), Some(Ipv4Addr::new(172, 17, 255, 255)));
    cfg.prefix_len = 31;
    assert_eq!(cfg.broadcast(), None);
    cfg.prefix_len = 0;
    assert!(cfg.contains(Ipv4Addr::new(8, 8, 8, 8)));
    cfg.prefix_len = 200;
    let gw = Gateway::new(cfg);
    assert_eq!(gw.config().prefix_len, 32);
    assert!(gw.config().contains(GW_IP));
    assert!(!gw.config().contains(host()));
}

/// Checks what a reply must be: a frame from the gateway to a unicast MAC,
/// with valid ARP, or IPv4 and ICMP checksums.
fn check_reply(reply: &[u8]) -> Result<(), TestCaseError> {
    let eth = EthernetFrame::new_checked(reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(eth.src_addr(), MacAddr(GW_MAC));
    prop_assert!(eth.dst_addr().is_unicast());
    match eth.ethertype() {
        EtherType::Arp => {
            let a = ArpRepr::parse(&ArpPacket::new_unchecked(eth.payload()));
            let is_reply = matches!(a, Ok(r) if r.operation == ArpOperation::Reply);
            prop_assert!(is_reply, "not an ARP reply");
        }
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(Ipv4Repr::parse(&ip).is_ok());
            prop_assert_eq!(ip.src_addr(), GW_IP);
            let icmp = Icmpv4Packet::new_checked(ip.payload())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let is_reply = matches!(Icmpv4Repr::parse(&icmp), Ok(Icmpv4Repr::EchoReply { .. }));
            prop_assert!(is_reply, "not an echo reply");
        }
        other => prop_assert!(false, "reply of type {:?}", other),
    }
    Ok(())
}

fn total(c: &GatewayCountersSnapshot) -> u64 {
    c.arp_replies
        + c.echo_replies
        + c.arp_ignored
        + c.drop_not_for_us
        + c.drop_malformed
        + c.drop_bad_source
        + c.drop_fragment
        + c.drop_source_route
        + c.drop_no_route
        + c.drop_internal
        + c.drop_unsupported
        + c.drop_no_room
}

proptest! {
    /// Random bytes, random output room: no panic, replies fit and are valid,
    /// every frame is counted exactly once.
    #[test]
    fn random_frames_never_panic(
        frame in proptest::collection::vec(any::<u8>(), 0..200),
        room in 0usize..128,
        internal in any::<bool>(),
    ) {
        let mut gw = Gateway::new(config(internal));
        let mut out = vec![0u8; room];
        if let Outcome::Reply(n) = gw.handle(&frame, &mut out) {
            prop_assert!(n <= room);
            check_reply(&out[..n])?;
        }
        let c = gw.snapshot();
        prop_assert_eq!(c.received, 1);
        prop_assert_eq!(total(&c), 1);
    }

    /// Valid requests with random bytes overwritten and random truncation:
    /// the parsers meet nearly-right input at every field.
    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut f = match which {
            0 => ARP_REQUEST.to_vec(),
            1 => ECHO_REQUEST.to_vec(),
            _ => echo(host(), GW_IP, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], b"payload"),
        };
        for (at, v) in edits {
            let i = at % f.len();
            f[i] = v;
        }
        f.truncate(cut % (f.len() + 1));
        let mut gw = gateway();
        let mut out = [0u8; 256];
        if let Outcome::Reply(n) = gw.handle(&f, &mut out) {
            check_reply(&out[..n])?;
        }
        prop_assert_eq!(total(&gw.snapshot()), 1);
    }

    /// Echo requests with random option bytes (checksums fixed up so the
    /// option parser is reached): no panic; answered unless the options are
    /// malformed or a source route.
    #[test]
    fn random_options_never_panic(
        words in proptest::collection::vec(any::<[u8; 4]>(), 0..11),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let opts: Vec<u8> = words.concat();
        let f = echo(host(), GW_IP, &opts, &data);
        let mut gw = gateway();
        let mut out = [0u8; 256];
        match gw.handle(&f, &mut out) {
            Outcome::Reply(n) => {
                prop_assert_eq!(n, 14 + 20 + 8 + data.len());
                check_reply(&out[..n])?;
            }
            Outcome::Drop(GatewayDrop::Malformed | GatewayDrop::SourceRoute) => {}
            o => prop_assert!(false, "{:?}", o),
        }
    }
}

/// A UDP (17) or TCP (6) packet from `src` to `dst`:`port`, in a frame to the gateway.
fn transport(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let l4_len = if proto == 6 { 20 } else { 8 };
    let mut f = echo(src, dst, &[], &[]);
    f.truncate(14 + 20);
    f.resize(14 + 20 + l4_len, 0);
    {
        let ip = &mut f[14..34];
        ip[9] = proto;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    f
}

#[test]
fn a_gateway_with_a_relay_hands_dns_to_it_on_internal_networks_and_nothing_else() {
    let mut internal = Gateway::with_relay(config(true));
    for proto in [6u8, 17] {
        assert_eq!(
            handle(&mut internal, &transport(proto, host(), GW_IP, 53)).0,
            Outcome::Forward,
            "{proto}"
        );
        // Any other port of the gateway, as without a relay.
        assert_eq!(
            handle(&mut internal, &transport(proto, host(), GW_IP, 54)).0,
            Outcome::Drop(GatewayDrop::Unsupported)
        );
        // Port 53 of anything beyond the subnet: still nothing leaves.
        assert_eq!(
            handle(
                &mut internal,
                &transport(proto, host(), Ipv4Addr::new(8, 8, 8, 8), 53)
            )
            .0,
            Outcome::Drop(GatewayDrop::Internal)
        );
    }
    // A source outside the subnet gets no DNS either.
    assert_eq!(
        handle(
            &mut internal,
            &transport(17, Ipv4Addr::new(8, 8, 8, 8), GW_IP, 53)
        )
        .0,
        Outcome::Drop(GatewayDrop::Internal)
    );
    let c = internal.snapshot();
    assert_eq!(
        (c.forwarded, c.drop_unsupported, c.drop_internal),
        (2, 2, 3)
    );
    // Without a relay (`Gateway::new`, `with_egress`) an internal gateway keeps
    // dropping DNS, as before.
    for mut g in [
        Gateway::new(config(true)),
        Gateway::with_egress(config(true)),
    ] {
        assert_eq!(
            handle(&mut g, &transport(17, host(), GW_IP, 53)).0,
            Outcome::Drop(GatewayDrop::Unsupported)
        );
    }
    // With egress, the relay has every TCP and UDP port of the gateway address.
    let mut egress = Gateway::with_relay(config(false));
    assert_eq!(
        handle(&mut egress, &transport(6, host(), GW_IP, 80)).0,
        Outcome::Forward
    );
}
