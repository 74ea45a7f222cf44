//! VXLAN datagrams from the underlay and frames toward the overlay through
//! `tapnet_vxlan::Tables` (one VNI, one peer VTEP, one remote entry with an address),
//! with `arp_reply` and `source_port` on the same bytes.
//!
//! The first byte chooses the sender (the peer or a stranger), whether the inner frame
//! gets the entry's source MAC, and the VNI of the egress frame; the rest is used three
//! ways: as a whole datagram, as the inner frame behind a valid header for the VNI, and
//! as a frame from the local network.
//!
//! Invariants: a datagram let in comes from the peer, for the VNI and its port, with
//! the inner frame right after the header, at least an Ethernet header long, untagged
//! and from the entry's MAC; egress encapsulates only to the peer and only for the
//! entry's MAC, floods only broadcast or multicast to exactly the peer, answers by
//! proxy ARP only with the entry's MAC and only what `arp_reply` answers, and calls a
//! frame malformed exactly when it is shorter than 14 bytes; an ARP reply is 42 bytes,
//! parses as a reply giving the requested address at the given MAC, and writes nothing
//! past its end; the source port stays in its range.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_fuzz::frames::CTR;
use tapnet_vxlan::{
    Egress, Entry, Ingress, MacAddr, SOURCE_PORTS, Tables, TxDrop, VXLAN_HEADER_LEN, Vni,
    arp_reply, source_port, write_header,
};
use tapnet_wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use tapnet_wire::ethernet::EthernetFrame;

const PORT: u32 = 3;
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

fn vni() -> Vni {
    Vni::new(42).expect("a 24-bit VNI")
}

fn remote_mac() -> MacAddr {
    MacAddr::from_ipv4(REMOTE_IP)
}

fn tables() -> Tables {
    let mut t = Tables::default();
    t.add_vni(vni(), PORT).expect("new VNI");
    t.add_peer(vni(), PEER).expect("known VNI");
    t.add_entry(
        vni(),
        Entry {
            mac: remote_mac(),
            ip: Some(REMOTE_IP),
            vtep: PEER,
        },
    )
    .expect("entry behind a peer");
    t
}

fn check_ingress(t: &Tables, from: Ipv4Addr, d: &[u8]) {
    match t.ingress(from, d) {
        Ingress::Local {
            vni: v,
            port,
            inner,
        } => {
            assert_eq!(v, vni());
            assert_eq!(port, PORT);
            assert_eq!(from, PEER, "only the peer gets in");
            assert_eq!(inner, VXLAN_HEADER_LEN..d.len());
            let f = &d[inner];
            assert!(f.len() >= 14, "inner frame holds an Ethernet header");
            assert_eq!(&f[6..12], &remote_mac().0, "from the entry's MAC");
            let et = u16::from_be_bytes([f[12], f[13]]);
            assert!(![0x8100, 0x88a8, 0x9100].contains(&et), "untagged");
        }
        Ingress::Drop(_) => {}
    }
}

fn check_egress(t: &Tables, v: Vni, f: &[u8]) {
    let e = t.egress(v, f);
    assert_eq!(
        e == Egress::Drop(TxDrop::Malformed),
        f.len() < 14,
        "malformed exactly when short"
    );
    let mut out = [0xa5u8; 64];
    match e {
        Egress::Encap(vtep) => {
            assert_eq!(vtep, PEER);
            assert_eq!(&f[..6], &remote_mac().0, "only to the entry's MAC");
        }
        Egress::Flood(peers) => {
            assert_eq!(peers, [PEER]);
            assert!(f[0] & 1 == 1, "only broadcast and multicast flood");
        }
        Egress::ProxyArp(mac) => {
            assert_eq!(mac, remote_mac());
            assert_eq!(arp_reply(f, mac, &mut out), Some(42), "a request answered");
        }
        Egress::Drop(_) => {}
    }
}

fn check_arp_reply(f: &[u8]) {
    let mut out = [0xa5u8; 64];
    let Some(n) = arp_reply(f, remote_mac(), &mut out) else {
        assert!(out.iter().all(|&b| b == 0xa5), "nothing written on refusal");
        return;
    };
    assert_eq!(n, 42);
    assert!(
        out[42..].iter().all(|&b| b == 0xa5),
        "nothing past the reply"
    );
    let eth = EthernetFrame::new_checked(&out[..n]).expect("an Ethernet frame");
    assert_eq!(eth.src_addr(), remote_mac());
    let reply = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("ARP"))
        .expect("IPv4 over Ethernet");
    let req = ArpRepr::parse(&ArpPacket::new_unchecked(&f[14..])).expect("was a request");
    assert_eq!(req.operation, ArpOperation::Request);
    assert_eq!(reply.operation, ArpOperation::Reply);
    assert_eq!(reply.source_hardware_addr, remote_mac());
    assert_eq!(reply.source_protocol_addr, req.target_protocol_addr);
    assert_eq!(reply.target_hardware_addr, req.source_hardware_addr);
    assert_eq!(reply.target_protocol_addr, req.source_protocol_addr);
    assert_eq!(eth.dst_addr(), req.source_hardware_addr);
}

fuzz_target!(|data: &[u8]| {
    let t = tables();
    let mut input = Input::new(data);
    let op = input.u8();
    let from = if op & 1 == 0 { PEER } else { STRANGER };
    let rest = input.rest();

    // The bytes as a whole datagram.
    check_ingress(&t, from, rest);

    // The bytes as the inner frame behind a valid header, from the entry's MAC or not.
    let mut hdr = [0u8; VXLAN_HEADER_LEN];
    write_header(&mut hdr, vni());
    let mut d = hdr.to_vec();
    d.extend_from_slice(rest);
    if op & 2 != 0 && d.len() >= VXLAN_HEADER_LEN + 12 {
        d[VXLAN_HEADER_LEN + 6..VXLAN_HEADER_LEN + 12].copy_from_slice(&remote_mac().0);
    }
    check_ingress(&t, from, &d);

    // The bytes as a frame from the local network (the served VNI or another).
    let v = if op & 4 == 0 {
        vni()
    } else {
        Vni::new(43).expect("24 bits")
    };
    let mut f = rest.to_vec();
    if op & 8 != 0 && f.len() >= 12 {
        f[6..12].copy_from_slice(&MacAddr::from_ipv4(CTR).0);
    }
    check_egress(&t, v, &f);
    check_arp_reply(&f);

    let p = source_port(&f, SOURCE_PORTS);
    assert!(SOURCE_PORTS.contains(&p));
});
