use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;
use tapnet_wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use tapnet_wire::ethernet::{EtherType, EthernetFrame, EthernetRepr};

use super::*;

const LOCAL_PORT: u32 = 7;
const PEER_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PEER_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A remote container behind PEER_A.
const REMOTE_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x00, 0x05]);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// A remote container behind PEER_B, without an address.
const REMOTE_B_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x00, 0x06]);
/// A local container.
const LOCAL_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x00, 0x02]);
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn entry_a() -> Entry {
    Entry {
        mac: REMOTE_MAC,
        ip: Some(REMOTE_IP),
        vtep: PEER_A,
    }
}

/// VNI 42 on local port 7 with peers A and B, REMOTE_MAC behind A and
/// REMOTE_B_MAC behind B.
fn tables() -> Tables {
    let mut t = Tables::default();
    t.add_vni(vni(42), LOCAL_PORT).unwrap();
    t.add_peer(vni(42), PEER_A).unwrap();
    t.add_peer(vni(42), PEER_B).unwrap();
    t.add_entry(vni(42), entry_a()).unwrap();
    t.add_entry(
        vni(42),
        Entry {
            mac: REMOTE_B_MAC,
            ip: None,
            vtep: PEER_B,
        },
    )
    .unwrap();
    t
}

/// An Ethernet frame: header, then `payload`.
fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A 20-byte IPv4 header (total length 20 + `l4.len()`) and `l4`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

/// A broadcast ARP request from the local container for `target`.
fn arp_request(dst: MacAddr, target: Ipv4Addr) -> Vec<u8> {
    let mut buf = vec![0u8; 42];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: LOCAL_MAC,
        dst_addr: dst,
        ethertype: EtherType::Arp,
    }
    .emit(&mut eth);
    ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: LOCAL_MAC,
        source_protocol_addr: LOCAL_IP,
        target_hardware_addr: MacAddr::ZERO,
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    buf
}

/// A VXLAN datagram (UDP payload) for `vni` carrying `inner`.
fn datagram(vni: Vni, inner: &[u8]) -> Vec<u8> {
    let mut hdr = [0u8; VXLAN_HEADER_LEN];
    write_header(&mut hdr, vni);
    let mut d = hdr.to_vec();
    d.extend_from_slice(inner);
    d
}

/// An IPv4 frame from the remote container to the local one.
fn remote_ipv4() -> Vec<u8> {
    frame(
        LOCAL_MAC,
        REMOTE_MAC,
        0x0800,
        &ipv4(
            REMOTE_IP,
            LOCAL_IP,
            17,
            &[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0],
        ),
    )
}

// ---------------------------------------------------------------------------------------
// The header
// ---------------------------------------------------------------------------------------

#[test]
fn header_bytes_match_linux() {
    let mut hdr = [0xffu8; VXLAN_HEADER_LEN];
    write_header(&mut hdr, vni(42));
    assert_eq!(hdr, [0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
    write_header(&mut hdr, vni(0xff_fffe));
    assert_eq!(hdr, [0x08, 0, 0, 0, 0xff, 0xff, 0xfe, 0]);
    assert_eq!(VXLAN_PORT, 4789);
    assert_eq!(OVERHEAD, 14 + 20 + 8 + 8);
}

// ---------------------------------------------------------------------------------------
// Ingress
// ---------------------------------------------------------------------------------------

#[test]
fn ingress_accepts_a_known_source() {
    let t = tables();
    let inner = remote_ipv4();
    let d = datagram(vni(42), &inner);
    let got = t.ingress(PEER_A, &d);
    assert_eq!(
        got,
        Ingress::Local {
            vni: vni(42),
            port: LOCAL_PORT,
            inner: 8..d.len()
        }
    );
    let Ingress::Local { inner: r, .. } = got else {
        unreachable!()
    };
    assert_eq!(&d[r], &inner[..]);
    // ARP from the remote, and a frame of another protocol.
    let mut arp = arp_request(MacAddr::BROADCAST, LOCAL_IP);
    arp[6..12].copy_from_slice(&REMOTE_MAC.0);
    arp[14 + 8..14 + 14].copy_from_slice(&REMOTE_MAC.0);
    arp[14 + 14..14 + 18].copy_from_slice(&REMOTE_IP.octets());
    assert!(matches!(
        t.ingress(PEER_A, &datagram(vni(42), &arp)),
        Ingress::Local { .. }
    ));
    let v6 = frame(LOCAL_MAC, REMOTE_MAC, 0x86dd, &[0x60; 4]);
    assert!(matches!(
        t.ingress(PEER_A, &datagram(vni(42), &v6)),
        Ingress::Local { .. }
    ));
}

#[test]
fn ingress_ignores_reserved_bits() {
    let t = tables();
    let mut d = datagram(vni(42), &remote_ipv4());
    d[0] = 0xff;
    d[1..4].fill(0xff);
    d[7] = 0xff;
    assert!(matches!(t.ingress(PEER_A, &d), Ingress::Local { .. }));
}

#[test]
fn ingress_drops_short() {
    let t = tables();
    let d = datagram(vni(42), &[]);
    for n in 0..8 {
        assert_eq!(t.ingress(PEER_A, &d[..n]), Ingress::Drop(RxDrop::Short));
    }
}

#[test]
fn ingress_drops_without_vni_flag() {
    let t = tables();
    let mut d = datagram(vni(42), &remote_ipv4());
    d[0] = 0xf7;
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::NoVniFlag));
    // Checked before the VNI: even an unknown VNI is NoVniFlag.
    d[4..7].copy_from_slice(&[0, 0, 9]);
    assert_eq!(t.ingress(STRANGER, &d), Ingress::Drop(RxDrop::NoVniFlag));
}

#[test]
fn ingress_drops_unknown_vni_then_unknown_vtep() {
    let t = tables();
    let d = datagram(vni(43), &remote_ipv4());
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::UnknownVni));
    // Unknown VNI comes before the sender and the inner frame.
    assert_eq!(
        t.ingress(STRANGER, &datagram(vni(43), &[])),
        Ingress::Drop(RxDrop::UnknownVni)
    );
    let d = datagram(vni(42), &remote_ipv4());
    assert_eq!(t.ingress(STRANGER, &d), Ingress::Drop(RxDrop::UnknownVtep));
    // Unknown VTEP comes before the inner frame's checks.
    assert_eq!(
        t.ingress(STRANGER, &datagram(vni(42), &[1, 2, 3])),
        Ingress::Drop(RxDrop::UnknownVtep)
    );
}

#[test]
fn ingress_drops_truncated_inner() {
    let t = tables();
    let inner = remote_ipv4();
    // Inner Ethernet header cut.
    for n in 0..14 {
        let d = datagram(vni(42), &inner[..n]);
        assert_eq!(
            t.ingress(PEER_A, &d),
            Ingress::Drop(RxDrop::InnerTruncated),
            "{n} bytes"
        );
    }
    // IPv4 shorter than its total length, than 20 bytes, or than its IHL.
    let d = datagram(vni(42), &inner[..inner.len() - 1]);
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerTruncated));
    let d = datagram(vni(42), &inner[..14 + 19]);
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerTruncated));
    let mut long_ihl = inner.clone();
    long_ihl[14] = 0x4f; // 60-byte header in a 28-byte packet
    let d = datagram(vni(42), &long_ihl);
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerTruncated));
    // ARP shorter than 28 bytes.
    let mut arp = arp_request(MacAddr::BROADCAST, LOCAL_IP);
    arp[6..12].copy_from_slice(&REMOTE_MAC.0);
    let d = datagram(vni(42), &arp[..41]);
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerTruncated));
    // Truncation is checked before the source.
    let mut spoofed = inner.clone();
    spoofed[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    let d = datagram(vni(42), &spoofed[..30]);
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerTruncated));
}

#[test]
fn ingress_drops_inner_vlan() {
    let t = tables();
    for tpid in [0x8100u16, 0x88a8, 0x9100] {
        let mut tagged = frame(LOCAL_MAC, REMOTE_MAC, tpid, &[0x00, 0x05, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4(REMOTE_IP, LOCAL_IP, 17, &[0; 8]));
        let d = datagram(vni(42), &tagged);
        assert_eq!(
            t.ingress(PEER_A, &d),
            Ingress::Drop(RxDrop::InnerVlan),
            "{tpid:#x}"
        );
    }
    // A bare tag header (14 bytes) is a VLAN frame, not a truncated one.
    let d = datagram(vni(42), &frame(LOCAL_MAC, REMOTE_MAC, 0x8100, &[]));
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::InnerVlan));
}

#[test]
fn ingress_drops_spoofed_source() {
    let t = tables();
    // A source MAC nobody holds.
    let mut f = remote_ipv4();
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    assert_eq!(
        t.ingress(PEER_A, &datagram(vni(42), &f)),
        Ingress::Drop(RxDrop::SpoofedSource)
    );
    // A MAC held by another VTEP: B may not send as A's container.
    let f = remote_ipv4();
    assert_eq!(
        t.ingress(PEER_B, &datagram(vni(42), &f)),
        Ingress::Drop(RxDrop::SpoofedSource)
    );
    // The local container's MAC, reflected back.
    let mut f = remote_ipv4();
    f[6..12].copy_from_slice(&LOCAL_MAC.0);
    assert_eq!(
        t.ingress(PEER_A, &datagram(vni(42), &f)),
        Ingress::Drop(RxDrop::SpoofedSource)
    );
    // B's own container is fine from B.
    let mut f = remote_ipv4();
    f[6..12].copy_from_slice(&REMOTE_B_MAC.0);
    assert!(matches!(
        t.ingress(PEER_B, &datagram(vni(42), &f)),
        Ingress::Local { .. }
    ));
}

#[test]
fn ingress_after_table_changes() {
    let mut t = tables();
    let d = datagram(vni(42), &remote_ipv4());
    let before = t.clone();
    t.remove_entry(vni(42), REMOTE_MAC).unwrap();
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::SpoofedSource));
    // The snapshot taken before is unchanged.
    assert!(matches!(before.ingress(PEER_A, &d), Ingress::Local { .. }));
    t.remove_peer(vni(42), PEER_A).unwrap();
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::UnknownVtep));
    t.remove_vni(vni(42)).unwrap();
    assert_eq!(t.ingress(PEER_A, &d), Ingress::Drop(RxDrop::UnknownVni));
}

#[test]
fn rx_drop_names() {
    let names: HashSet<_> = RxDrop::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(names.len(), RxDrop::ALL.len());
    assert_eq!(RxDrop::SpoofedSource.name(), "spoofed_source");
    assert_eq!(RxDrop::NoVniFlag.to_string(), "no_vni_flag");
    for d in RxDrop::ALL {
        assert!(
            d.name()
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c == b'_')
        );
    }
}

// ---------------------------------------------------------------------------------------
// Egress
// ---------------------------------------------------------------------------------------

#[test]
fn egress_unicast() {
    let t = tables();
    let f = frame(
        REMOTE_MAC,
        LOCAL_MAC,
        0x0800,
        &ipv4(LOCAL_IP, REMOTE_IP, 6, &[0; 20]),
    );
    assert_eq!(t.egress(vni(42), &f), Egress::Encap(PEER_A));
    let f = frame(REMOTE_B_MAC, LOCAL_MAC, 0x86dd, &[0; 40]);
    assert_eq!(t.egress(vni(42), &f), Egress::Encap(PEER_B));
    // No flood-and-learn: an unknown unicast is dropped.
    let f = frame(MacAddr([0x02, 0, 0, 0, 0, 0x77]), LOCAL_MAC, 0x0800, &[]);
    assert_eq!(t.egress(vni(42), &f), Egress::Drop(TxDrop::UnknownUnicast));
}

#[test]
fn egress_floods_broadcast_and_multicast() {
    let t = tables();
    let peers = [PEER_A, PEER_B];
    let f = frame(MacAddr::BROADCAST, LOCAL_MAC, 0x0800, &[]);
    assert_eq!(t.egress(vni(42), &f), Egress::Flood(&peers));
    let mdns = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    let f = frame(mdns, LOCAL_MAC, 0x0800, &[]);
    assert_eq!(t.egress(vni(42), &f), Egress::Flood(&peers));
    // ARP for an address no entry holds is flooded.
    let f = arp_request(MacAddr::BROADCAST, Ipv4Addr::new(10, 0, 0, 200));
    assert_eq!(t.egress(vni(42), &f), Egress::Flood(&peers));
    // An ARP reply (op 2) is not proxied, whatever its target.
    let mut reply = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    reply[21] = 2;
    assert_eq!(t.egress(vni(42), &reply), Egress::Flood(&peers));
}

#[test]
fn egress_proxy_arp() {
    let t = tables();
    let f = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    assert_eq!(t.egress(vni(42), &f), Egress::ProxyArp(REMOTE_MAC));
    // A unicast request (a cache refresh) too.
    let f = arp_request(REMOTE_MAC, REMOTE_IP);
    assert_eq!(t.egress(vni(42), &f), Egress::ProxyArp(REMOTE_MAC));
    // Padded to 60 bytes, as on a wire.
    let mut f = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    f.resize(60, 0);
    assert_eq!(t.egress(vni(42), &f), Egress::ProxyArp(REMOTE_MAC));
    // A truncated ARP request is not answered (it is flooded as a broadcast).
    let f = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    assert_eq!(
        t.egress(vni(42), &f[..41]),
        Egress::Flood(&[PEER_A, PEER_B])
    );
}

#[test]
fn egress_drops_malformed_unknown_vni_and_no_peers() {
    let mut t = tables();
    let f = frame(MacAddr::BROADCAST, LOCAL_MAC, 0x0800, &[]);
    assert_eq!(t.egress(vni(42), &f[..13]), Egress::Drop(TxDrop::Malformed));
    assert_eq!(t.egress(vni(42), &[]), Egress::Drop(TxDrop::Malformed));
    // Malformed comes before the VNI.
    assert_eq!(t.egress(vni(43), &f[..13]), Egress::Drop(TxDrop::Malformed));
    assert_eq!(t.egress(vni(43), &f), Egress::Drop(TxDrop::UnknownVni));
    t.add_vni(vni(43), 8).unwrap();
    assert_eq!(t.egress(vni(43), &f), Egress::Drop(TxDrop::NoPeers));
    // Without peers, a unicast has no entry either.
    let u = frame(REMOTE_MAC, LOCAL_MAC, 0x0800, &[]);
    assert_eq!(t.egress(vni(43), &u), Egress::Drop(TxDrop::UnknownUnicast));
}

#[test]
fn flood_limit() {
    let mut l = FloodLimit::new(FLOOD_RATE, FLOOD_BURST);
    let t0 = Duration::from_secs(100);
    let allowed = (0..1000).filter(|_| l.allow(t0)).count();
    assert_eq!(allowed, FLOOD_BURST as usize);
    assert!(!l.allow(t0));
    // 1,000 a second: one more each millisecond.
    assert!(l.allow(t0 + Duration::from_millis(1)));
    assert!(!l.allow(t0 + Duration::from_millis(1)));
    // A clock that goes back refills nothing.
    assert!(!l.allow(t0));
    // A long quiet spell refills the burst, no more.
    let t1 = t0 + Duration::from_secs(3600);
    assert_eq!((0..1000).filter(|_| l.allow(t1)).count(), 200);
    // Degenerate limits.
    let mut none = FloodLimit::new(1000, 0);
    assert!(!none.allow(t0));
    let mut once = FloodLimit::new(0, 1);
    assert!(once.allow(t0));
    assert!(!once.allow(t0 + Duration::from_secs(60)));
    assert_eq!(FloodLimit::default(), FloodLimit::new(1000, 200));
}

#[test]
fn tx_drop_names() {
    let names: HashSet<_> = TxDrop::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(names.len(), TxDrop::ALL.len());
    assert_eq!(TxDrop::UnknownUnicast.name(), "unknown_unicast");
    assert_eq!(TxDrop::FloodRate.to_string(), "flood_rate");
}

// ---------------------------------------------------------------------------------------
// Proxy ARP replies
// ---------------------------------------------------------------------------------------

#[test]
fn arp_reply_fields() {
    let req = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    let mut out = [0xeeu8; 64];
    assert_eq!(arp_reply(&req, REMOTE_MAC, &mut out), Some(42));
    assert!(
        out[42..].iter().all(|&b| b == 0xee),
        "nothing past 42 bytes"
    );

    let eth = EthernetFrame::new_checked(&out[..42]).unwrap();
    let e = EthernetRepr::parse(&eth).unwrap();
    assert_eq!(e.dst_addr, LOCAL_MAC, "to the requester");
    assert_eq!(e.src_addr, REMOTE_MAC, "from the owner");
    assert_eq!(e.ethertype, EtherType::Arp);
    let arp = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(arp.hardware_type(), 1);
    assert_eq!(arp.hardware_len(), 6);
    assert_eq!(arp.protocol_len(), 4);
    let a = ArpRepr::parse(&arp).unwrap();
    assert_eq!(a.operation, ArpOperation::Reply);
    assert_eq!(a.source_hardware_addr, REMOTE_MAC);
    assert_eq!(a.source_protocol_addr, REMOTE_IP);
    assert_eq!(a.target_hardware_addr, LOCAL_MAC);
    assert_eq!(a.target_protocol_addr, LOCAL_IP);
    // Byte for byte, as a kernel would send it.
    let mut want = Vec::new();
    want.extend_from_slice(&LOCAL_MAC.0);
    want.extend_from_slice(&REMOTE_MAC.0);
    want.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02]);
    want.extend_from_slice(&REMOTE_MAC.0);
    want.extend_from_slice(&REMOTE_IP.octets());
    want.extend_from_slice(&LOCAL_MAC.0);
    want.extend_from_slice(&LOCAL_IP.octets());
    assert_eq!(&out[..42], &want[..]);
}

#[test]
fn arp_reply_refuses() {
    let req = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    let mut out = [0u8; 42];
    assert_eq!(
        arp_reply(&req, REMOTE_MAC, &mut out[..41]),
        None,
        "small out"
    );
    assert_eq!(arp_reply(&req[..41], REMOTE_MAC, &mut out), None, "short");
    let mut reply = req.clone();
    reply[21] = 2;
    assert_eq!(arp_reply(&reply, REMOTE_MAC, &mut out), None, "a reply");
    let mut v6 = req.clone();
    v6[16..18].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(arp_reply(&v6, REMOTE_MAC, &mut out), None, "not IPv4");
    let mut ip = req.clone();
    ip[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(arp_reply(&ip, REMOTE_MAC, &mut out), None, "not ARP");
    assert_eq!(out, [0u8; 42], "nothing written");
}

// ---------------------------------------------------------------------------------------
// Table changes
// ---------------------------------------------------------------------------------------

#[test]
fn vni_add_remove() {
    let mut t = Tables::default();
    assert_eq!(t.vnis().count(), 0);
    t.add_vni(vni(1), 10).unwrap();
    t.add_vni(vni(2), 20).unwrap();
    assert_eq!(t.add_vni(vni(1), 11), Err(TableError::VniExists(vni(1))));
    assert_eq!(t.network(vni(1)).unwrap().port(), 10, "not replaced");
    let mut v: Vec<_> = t.vnis().collect();
    v.sort();
    assert_eq!(v, [vni(1), vni(2)]);
    let n = t.network(vni(2)).unwrap();
    assert_eq!((n.vni(), n.port(), n.len()), (vni(2), 20, 0));
    assert!(n.is_empty() && n.peers().is_empty());
    t.remove_vni(vni(1)).unwrap();
    assert_eq!(t.remove_vni(vni(1)), Err(TableError::UnknownVni(vni(1))));
    assert!(t.network(vni(1)).is_none());
    assert_eq!(t.vnis().collect::<Vec<_>>(), [vni(2)]);
}

#[test]
fn peers_sorted_and_idempotent() {
    let mut t = Tables::default();
    t.add_vni(vni(5), 1).unwrap();
    for p in [PEER_B, PEER_A, PEER_B, STRANGER, PEER_A] {
        t.add_peer(vni(5), p).unwrap();
    }
    assert_eq!(
        t.network(vni(5)).unwrap().peers(),
        [PEER_A, PEER_B, STRANGER]
    );
    t.remove_peer(vni(5), PEER_B).unwrap();
    assert_eq!(t.network(vni(5)).unwrap().peers(), [PEER_A, STRANGER]);
    assert_eq!(
        t.remove_peer(vni(5), PEER_B),
        Err(TableError::UnknownPeer {
            vni: vni(5),
            vtep: PEER_B
        })
    );
    assert_eq!(
        t.add_peer(vni(6), PEER_A),
        Err(TableError::UnknownVni(vni(6)))
    );
    assert_eq!(
        t.remove_peer(vni(6), PEER_A),
        Err(TableError::UnknownVni(vni(6)))
    );
}

#[test]
fn remove_peer_removes_its_entries() {
    let mut t = tables();
    t.remove_peer(vni(42), PEER_A).unwrap();
    let n = t.network(vni(42)).unwrap();
    assert_eq!(n.peers(), [PEER_B]);
    assert!(n.entry(&REMOTE_MAC).is_none());
    assert_eq!(n.neighbor(REMOTE_IP), None, "its address is gone too");
    assert!(n.entry(&REMOTE_B_MAC).is_some(), "B's entries stay");
    assert_eq!(n.len(), 1);
    // Adding the peer back does not bring the entries back.
    t.add_peer(vni(42), PEER_A).unwrap();
    assert!(t.network(vni(42)).unwrap().entry(&REMOTE_MAC).is_none());
    let f = arp_request(MacAddr::BROADCAST, REMOTE_IP);
    assert!(matches!(t.egress(vni(42), &f), Egress::Flood(_)));
}

#[test]
fn entries_add_replace_remove() {
    let mut t = tables();
    let n = t.network(vni(42)).unwrap();
    assert_eq!(n.entry(&REMOTE_MAC), Some(&entry_a()));
    assert_eq!(n.neighbor(REMOTE_IP), Some(REMOTE_MAC));
    assert_eq!(n.entries().count(), 2);

    // Replacing moves the MAC to B with a new address; the old one is gone.
    let moved = Entry {
        mac: REMOTE_MAC,
        ip: Some(Ipv4Addr::new(10, 0, 0, 9)),
        vtep: PEER_B,
    };
    t.add_entry(vni(42), moved).unwrap();
    let n = t.network(vni(42)).unwrap();
    assert_eq!(n.len(), 2);
    assert_eq!(n.entry(&REMOTE_MAC), Some(&moved));
    assert_eq!(n.neighbor(REMOTE_IP), None);
    assert_eq!(n.neighbor(Ipv4Addr::new(10, 0, 0, 9)), Some(REMOTE_MAC));

    // An address claimed by another MAC moves to it.
    let taker = Entry {
        mac: REMOTE_B_MAC,
        ip: Some(Ipv4Addr::new(10, 0, 0, 9)),
        vtep: PEER_B,
    };
    t.add_entry(vni(42), taker).unwrap();
    let n = t.network(vni(42)).unwrap();
    assert_eq!(n.neighbor(Ipv4Addr::new(10, 0, 0, 9)), Some(REMOTE_B_MAC));
    assert_eq!(n.entry(&REMOTE_MAC).unwrap().ip, None);
    // Removing the former holder leaves the new one's address alone.
    t.remove_entry(vni(42), REMOTE_MAC).unwrap();
    let n = t.network(vni(42)).unwrap();
    assert_eq!(n.neighbor(Ipv4Addr::new(10, 0, 0, 9)), Some(REMOTE_B_MAC));
    assert_eq!(
        t.remove_entry(vni(42), REMOTE_MAC),
        Err(TableError::UnknownEntry {
            vni: vni(42),
            mac: REMOTE_MAC
        })
    );
    t.remove_entry(vni(42), REMOTE_B_MAC).unwrap();
    let n = t.network(vni(42)).unwrap();
    assert!(n.is_empty());
    assert_eq!(n.neighbor(Ipv4Addr::new(10, 0, 0, 9)), None);
}

#[test]
fn entry_errors() {
    let mut t = tables();
    let stranger = Entry {
        vtep: STRANGER,
        ..entry_a()
    };
    assert_eq!(
        t.add_entry(vni(42), stranger),
        Err(TableError::UnknownPeer {
            vni: vni(42),
            vtep: STRANGER
        })
    );
    for mac in [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr::ZERO,
    ] {
        let e = Entry { mac, ..entry_a() };
        assert_eq!(
            t.add_entry(vni(42), e),
            Err(TableError::NotUnicast { vni: vni(42), mac })
        );
    }
    assert_eq!(
        t.add_entry(vni(9), entry_a()),
        Err(TableError::UnknownVni(vni(9)))
    );
    assert_eq!(
        t.remove_entry(vni(9), REMOTE_MAC),
        Err(TableError::UnknownVni(vni(9)))
    );
    // The refused changes left the tables as they were.
    assert_eq!(
        t.network(vni(42)).unwrap().entry(&REMOTE_MAC),
        Some(&entry_a())
    );
    // Messages name what they are about.
    let m = TableError::UnknownPeer {
        vni: vni(42),
        vtep: STRANGER,
    }
    .to_string();
    assert!(m.contains("42") && m.contains("198.51.100.1"), "{m}");
    let m = TableError::NotUnicast {
        vni: vni(42),
        mac: MacAddr::BROADCAST,
    }
    .to_string();
    assert!(m.contains("ff:ff:ff:ff:ff:ff"), "{m}");
}

#[test]
fn entries_bounded() {
    let mut t = Tables::default();
    t.add_vni(vni(1), 1).unwrap();
    t.add_peer(vni(1), PEER_A).unwrap();
    let mac = |i: usize| MacAddr([0x02, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    for i in 0..MAX_ENTRIES {
        t.add_entry(
            vni(1),
            Entry {
                mac: mac(i),
                ip: None,
                vtep: PEER_A,
            },
        )
        .unwrap();
    }
    assert_eq!(t.network(vni(1)).unwrap().len(), MAX_ENTRIES);
    let extra = Entry {
        mac: mac(MAX_ENTRIES),
        ip: None,
        vtep: PEER_A,
    };
    assert_eq!(
        t.add_entry(vni(1), extra),
        Err(TableError::Full {
            vni: vni(1),
            mac: extra.mac
        })
    );
    // Replacing an entry of a full table is fine.
    let again = Entry {
        ip: Some(REMOTE_IP),
        ..Entry {
            mac: mac(3),
            ip: None,
            vtep: PEER_A,
        }
    };
    t.add_entry(vni(1), again).unwrap();
    assert_eq!(t.network(vni(1)).unwrap().neighbor(REMOTE_IP), Some(mac(3)));
}

#[test]
fn clones_are_independent_snapshots() {
    let a = tables();
    let mut b = a.clone();
    // Untouched networks are shared.
    assert!(std::sync::Arc::ptr_eq(
        a.network(vni(42)).unwrap(),
        b.network(vni(42)).unwrap()
    ));
    b.remove_entry(vni(42), REMOTE_MAC).unwrap();
    assert!(a.network(vni(42)).unwrap().entry(&REMOTE_MAC).is_some());
    assert!(b.network(vni(42)).unwrap().entry(&REMOTE_MAC).is_none());
}

// ---------------------------------------------------------------------------------------
// Source ports
// ---------------------------------------------------------------------------------------

/// A UDP frame of flow `i`.
fn flow(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::from(0x0a00_0000 | (i & 0xff));
    let sport = (10_000 + i) as u16;
    let mut l4 = sport.to_be_bytes().to_vec();
    l4.extend_from_slice(&[0x00, 0x35, 0, 8, 0, 0]);
    frame(
        REMOTE_MAC,
        LOCAL_MAC,
        0x0800,
        &ipv4(src, REMOTE_IP, 17, &l4),
    )
}

#[test]
fn source_port_spreads() {
    let ports: HashSet<u16> = (0..1000)
        .map(|i| source_port(&flow(i), SOURCE_PORTS))
        .collect();
    assert!(ports.len() > 500, "{} distinct ports", ports.len());
    assert!(ports.iter().all(|p| SOURCE_PORTS.contains(p)));
    // Ports alone (same addresses) spread too.
    let ports: HashSet<u16> = (0..1000u32)
        .map(|i| {
            let l4 = [(i >> 8) as u8, i as u8, 0, 80, 0, 0, 0, 0];
            let f = frame(
                REMOTE_MAC,
                LOCAL_MAC,
                0x0800,
                &ipv4(LOCAL_IP, REMOTE_IP, 6, &l4),
            );
            source_port(&f, SOURCE_PORTS)
        })
        .collect();
    assert!(ports.len() > 500, "{} distinct ports", ports.len());
}

#[test]
fn source_port_stable() {
    let f = flow(7);
    let p = source_port(&f, SOURCE_PORTS);
    for _ in 0..10 {
        assert_eq!(source_port(&f, SOURCE_PORTS), p);
    }
    assert_eq!(source_port(&f.clone(), SOURCE_PORTS), p);
    // The payload is not part of the flow.
    let mut g = f.clone();
    let n = g.len();
    g[n - 1] ^= 0xff;
    assert_eq!(source_port(&g, SOURCE_PORTS), p);
    // Behind a VLAN tag, the same flow hashes the same fields.
    let mut tagged = f[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&f[12..]);
    assert_eq!(source_port(&tagged, SOURCE_PORTS), p);
    // Another destination port is another flow (with this input, another port).
    let mut other = f.clone();
    other[14 + 20 + 3] = 0x36;
    assert_ne!(source_port(&other, SOURCE_PORTS), p);
}

#[test]
fn source_port_ranges_and_unparsed() {
    let f = flow(3);
    assert_eq!(source_port(&f, 5000..=5000), 5000);
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 6000..=5000;
    assert_eq!(source_port(&f, empty), 6000);
    assert!((1..=2).contains(&source_port(&f, 1..=2)));
    let _ = source_port(&f, 0..=65535);
    // Unparseable frames hash their Ethernet addresses: the same addresses,
    // the same port.
    let a = frame(REMOTE_MAC, LOCAL_MAC, 0x0800, &[0x45, 0, 0]);
    let b = frame(REMOTE_MAC, LOCAL_MAC, 0x0800, &[0x45, 0xff]);
    assert_eq!(source_port(&a, SOURCE_PORTS), source_port(&b, SOURCE_PORTS));
    for n in 0..20 {
        assert!(SOURCE_PORTS.contains(&source_port(&f[..n], SOURCE_PORTS)));
    }
}

// ---------------------------------------------------------------------------------------
// Arbitrary bytes
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn ingress_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                            from_a in any::<bool>(), keep_header in any::<bool>()) {
        let t = tables();
        let mut d = bytes;
        if keep_header && d.len() >= 8 {
            d[..8].copy_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
        }
        let from = if from_a { PEER_A } else { STRANGER };
        if let Ingress::Local { vni: v, port, inner } = t.ingress(from, &d) {
            prop_assert_eq!(v, vni(42));
            prop_assert_eq!(port, LOCAL_PORT);
            prop_assert!(inner.start == 8 && inner.end == d.len());
        }
    }

    #[test]
    fn egress_and_helpers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let t = tables();
        let _ = t.egress(vni(42), &bytes);
        let mut out = [0u8; 64];
        if let Some(n) = arp_reply(&bytes, REMOTE_MAC, &mut out) {
            prop_assert_eq!(n, 42);
        }
        prop_assert!(SOURCE_PORTS.contains(&source_port(&bytes, SOURCE_PORTS)));
    }
}

#[test]
fn ingress_drops_an_entry_sending_from_another_address() {
    let t = tables();
    // REMOTE_MAC's entry holds REMOTE_IP: another IPv4 source is spoofed.
    let mut f = remote_ipv4();
    f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 77]);
    assert_eq!(
        t.ingress(PEER_A, &datagram(vni(42), &f)),
        Ingress::Drop(RxDrop::SpoofedSource)
    );
    // So is an ARP sender address that is not its own; a probe (0.0.0.0) is not.
    let mut arp = arp_request(MacAddr::BROADCAST, LOCAL_IP);
    arp[6..12].copy_from_slice(&REMOTE_MAC.0);
    arp[14 + 8..14 + 14].copy_from_slice(&REMOTE_MAC.0);
    arp[14 + 14..14 + 18].copy_from_slice(&[10, 0, 0, 77]);
    assert_eq!(
        t.ingress(PEER_A, &datagram(vni(42), &arp)),
        Ingress::Drop(RxDrop::SpoofedSource)
    );
    arp[14 + 14..14 + 18].copy_from_slice(&REMOTE_IP.octets());
    assert!(matches!(
        t.ingress(PEER_A, &datagram(vni(42), &arp)),
        Ingress::Local { .. }
    ));
    arp[14 + 14..14 + 18].copy_from_slice(&[0; 4]);
    assert!(matches!(
        t.ingress(PEER_A, &datagram(vni(42), &arp)),
        Ingress::Local { .. }
    ));
}
