//! Two engines in this process, each with a VTEP on its own loopback address, joined by
//! the kernel's loopback as the underlay; memory ports stand for the containers.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use tapnet_switch::{DomainConfig, MacAddr};

use super::*;
use crate::port::{MemPeer, MemPort};
use crate::runtime::EngineConfig;

const MAC_A: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
const MAC_B: [u8; 6] = [2, 0x42, 10, 0, 0, 3];
const MAC_C: [u8; 6] = [2, 0x42, 10, 0, 0, 4];
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const VTEP_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

/// A port free on both loopback addresses.
fn free_port() -> (UdpSocket, UdpSocket, u16) {
    for _ in 0..50 {
        let a = UdpSocket::bind(SocketAddrV4::new(VTEP_A, 0)).unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = UdpSocket::bind(SocketAddrV4::new(VTEP_B, port)) {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

struct Side {
    engine: Engine,
    overlay: Overlay,
    domain: DomainId,
    peer: MemPeer,
}

fn side(rx: UdpSocket, port: u16, mac: [u8; 6], offloads: bool) -> Side {
    let engine = Engine::start(EngineConfig::default()).unwrap();
    let domain = engine.add_domain(DomainConfig::default()).unwrap();
    let local = match rx.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let mut cfg = OverlayConfig::new(local);
    cfg.peer_port = port;
    cfg.mtu = Some(1450);
    cfg.offloads = offloads;
    let tx: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind(SocketAddrV4::new(*local.ip(), 0)).unwrap())
        .collect();
    let overlay = Overlay::with_sockets(&engine, cfg, rx, tx).unwrap();
    let (p, peer) = MemPort::pair("c", engine.pool().clone(), 1024, 1500, false);
    let id = engine.add_port(Box::new(p), domain).unwrap();
    engine.add_static_mac(domain, MacAddr(mac), id).unwrap();
    Side {
        engine,
        overlay,
        domain,
        peer,
    }
}

/// Two engines serving VNI 42, each knowing the other's endpoint.
fn pair(offloads: bool) -> (Side, Side) {
    let (ra, rb, port) = free_port();
    let a = side(ra, port, MAC_A, offloads);
    let b = side(rb, port, MAC_B, offloads);
    for (s, peer, mac, ip) in [(&a, VTEP_B, MAC_B, IP_B), (&b, VTEP_A, MAC_A, IP_A)] {
        s.overlay.add_network(&s.engine, vni(42), s.domain).unwrap();
        s.overlay.add_peer(vni(42), peer).unwrap();
        s.overlay
            .add_entry(
                &s.engine,
                vni(42),
                Entry {
                    mac: MacAddr(mac),
                    ip: Some(ip),
                    vtep: peer,
                },
            )
            .unwrap();
    }
    (a, b)
}

fn frame(dst: [u8; 6], src: [u8; 6], tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14] = tag;
    f
}

fn arp_request(src: [u8; 6], sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tip.octets());
    f.resize(60, 0);
    f
}

fn collect(peer: &mut MemPeer, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + wait;
    while got.len() < n && Instant::now() < deadline {
        if peer.recv(&mut buf) {
            got.push(buf.clone());
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn shutdown(s: Side) {
    s.engine.shutdown();
}

fn unicast_both_ways(offloads: bool) {
    let (mut a, mut b) = pair(offloads);
    for i in 0..50u8 {
        assert!(a.peer.send(&frame(MAC_B, MAC_A, i, 1000)));
    }
    let got = collect(&mut b.peer, 50, Duration::from_secs(5));
    assert_eq!(got.len(), 50, "a→b");
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, f)| f[14] == i as u8 && f.len() == 1000)
    );
    assert!(b.peer.send(&frame(MAC_A, MAC_B, 7, 100)));
    let got = collect(&mut a.peer, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "b→a");
    // A sender counts its datagrams once `sendmmsg` returns, which may be after the
    // peer has them: wait for the counters themselves.
    wait_for("a counted 50 datagrams", || {
        a.overlay.stats().tx_datagrams == 50
    });
    wait_for("b counted 1 datagram", || {
        b.overlay.stats().tx_datagrams == 1
    });
    assert_eq!(b.overlay.stats().rx_frames, 50);
    shutdown(a);
    shutdown(b);
}

#[test]
fn frames_cross_between_two_engines_both_ways() {
    unicast_both_ways(true);
}

#[test]
fn frames_cross_without_gso_and_gro() {
    unicast_both_ways(false);
}

#[test]
fn arp_for_a_remote_endpoint_is_answered_locally() {
    let (mut a, b) = pair(true);
    assert!(a.peer.send(&arp_request(MAC_A, IP_A, IP_B)));
    let got = collect(&mut a.peer, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "a proxy-ARP reply");
    let r = &got[0];
    assert_eq!(&r[..6], &MAC_A, "to the asker");
    assert_eq!(&r[12..14], &[0x08, 0x06]);
    assert_eq!(&r[20..22], &[0, 2], "a reply");
    assert_eq!(&r[22..28], &MAC_B, "b's MAC");
    assert_eq!(&r[28..32], &IP_B.octets());
    // Counted once the reply is in the port's ring, which the rx stage may empty first.
    wait_for("the proxy-ARP reply counted", || {
        a.overlay.stats().proxy_arp == 1
    });
    assert_eq!(a.overlay.stats().tx_datagrams, 0, "nothing crossed");
    shutdown(a);
    shutdown(b);
}

#[test]
fn unknown_unicast_is_dropped_and_broadcast_replicated() {
    let (mut a, mut b) = pair(true);
    assert!(a.peer.send(&frame(MAC_C, MAC_A, 1, 100)));
    wait_for("unknown unicast counted", || {
        a.overlay.stats().drop_unknown_unicast == 1
    });
    assert!(a.peer.send(&frame([0xff; 6], MAC_A, 2, 100)));
    let got = collect(&mut b.peer, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "the broadcast reached b");
    assert_eq!(got[0][14], 2, "and nothing else did");
    assert_eq!(a.overlay.stats().tx_flood_copies, 1);
    shutdown(a);
    shutdown(b);
}

#[test]
fn another_vni_sees_nothing_and_forged_datagrams_are_counted() {
    let (mut a, mut b) = pair(true);
    // A second network on b, with its own endpoint, VNI 43.
    let d2 = b.engine.add_domain(DomainConfig::default()).unwrap();
    b.overlay.add_network(&b.engine, vni(43), d2).unwrap();
    b.overlay.add_peer(vni(43), VTEP_A).unwrap();
    let (p, mut other) = MemPort::pair("c2", b.engine.pool().clone(), 1024, 1500, false);
    let id = b.engine.add_port(Box::new(p), d2).unwrap();
    b.engine.add_static_mac(d2, MacAddr(MAC_C), id).unwrap();
    assert!(a.peer.send(&frame([0xff; 6], MAC_A, 1, 100)));
    assert!(a.peer.send(&frame(MAC_B, MAC_A, 2, 100)));
    assert_eq!(collect(&mut b.peer, 2, Duration::from_secs(5)).len(), 2);
    assert!(collect(&mut other, 1, Duration::from_millis(300)).is_empty());

    let to = SocketAddrV4::new(VTEP_B, b.overlay.local_addr().port());
    let mut dgram = vec![0x08, 0, 0, 0, 0, 0, 99, 0];
    dgram.extend_from_slice(&frame(MAC_B, MAC_A, 3, 60));
    // A forged VNI from a's address.
    let s = UdpSocket::bind(SocketAddrV4::new(VTEP_A, 0)).unwrap();
    s.send_to(&dgram, to).unwrap();
    wait_for("unknown VNI counted", || {
        b.overlay.stats().drop_unknown_vni == 1
    });
    // VNI 42 from a VTEP that is no peer.
    dgram[6] = 42;
    let s3 = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 0)).unwrap();
    s3.send_to(&dgram, to).unwrap();
    wait_for("unknown VTEP counted", || {
        b.overlay.stats().drop_unknown_vtep == 1
    });
    // A's address, but a source MAC the table places nowhere.
    let mut spoof = dgram.clone();
    spoof[8 + 6..8 + 12].copy_from_slice(&MAC_C);
    s.send_to(&spoof, to).unwrap();
    wait_for("spoofed source counted", || {
        b.overlay.stats().drop_spoofed_source == 1
    });
    // Short, and without the I flag.
    s.send_to(&[0x08, 0, 0], to).unwrap();
    wait_for("short counted", || b.overlay.stats().drop_short == 1);
    let mut noflag = dgram.clone();
    noflag[0] = 0;
    s.send_to(&noflag, to).unwrap();
    wait_for("no I flag counted", || {
        b.overlay.stats().drop_no_vni_flag == 1
    });
    assert!(collect(&mut b.peer, 1, Duration::from_millis(200)).is_empty());
    assert!(collect(&mut other, 1, Duration::from_millis(10)).is_empty());
    shutdown(a);
    shutdown(b);
}

#[test]
fn a_removed_peer_takes_its_entries_and_the_vni_can_go() {
    let (mut a, b) = pair(true);
    a.overlay.remove_peer(&a.engine, vni(42), VTEP_B).unwrap();
    assert!(a.peer.send(&frame(MAC_B, MAC_A, 1, 100)));
    wait_for("unknown unicast after the peer went", || {
        a.overlay.stats().drop_unknown_unicast == 1
    });
    let e = a
        .overlay
        .add_entry(
            &a.engine,
            vni(42),
            Entry {
                mac: MacAddr(MAC_B),
                ip: None,
                vtep: VTEP_B,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("127.0.0.2"), "{e}");
    a.overlay.remove_network(&a.engine, vni(42)).unwrap();
    assert!(a.overlay.port(vni(42)).is_none());
    let e = a.overlay.add_peer(vni(42), VTEP_B).unwrap_err();
    assert!(e.to_string().contains("42"), "{e}");
    assert!(collect(&mut a.peer, 1, Duration::from_millis(50)).is_empty());
    shutdown(a);
    shutdown(b);
}

#[test]
fn the_underlay_mtu_is_asked_of_the_sockets_namespace() {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind(SocketAddrV4::new(VTEP_A, 0)).unwrap();
    let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(socket_if_mtu(s.as_raw_fd(), VTEP_A), Some(lo));
    let nowhere = Ipv4Addr::new(192, 0, 2, 77);
    assert_eq!(socket_if_mtu(s.as_raw_fd(), nowhere), None);
    assert_eq!(underlay_mtu(nowhere, Some(s.as_raw_fd())), 1500);
    assert_eq!(
        underlay_mtu(Ipv4Addr::UNSPECIFIED, Some(s.as_raw_fd())),
        1500
    );
}

#[test]
fn a_closed_vtep_gives_back_its_ports_slots_and_socket() {
    let (mut a, b) = pair(true);
    assert!(a.peer.send(&frame(MAC_B, MAC_A, 1, 1000)));
    let addr = b.overlay.local_addr();
    let small = b.engine.config().pool.small_slots as usize;
    let large = b.engine.config().pool.large_slots as usize;
    let Side {
        engine, overlay, ..
    } = b;
    wait_for("the frame crossed", || overlay.stats().rx_frames == 1);
    let ports_before = engine.stats().ports.len();
    overlay.close(&engine).unwrap();
    let st = engine.stats();
    assert_eq!(
        st.ports.len(),
        ports_before - 2,
        "overlay and underlay ports gone"
    );
    // The sandbox's port still holds the frame it was sent; nothing else is held.
    wait_for("slots given back", || {
        let f = engine.stats().pool_free;
        f.large == large && f.small >= small - 1
    });
    // The socket is closed: its address can be bound again.
    UdpSocket::bind(addr).expect("the underlay address is free again");
    engine.shutdown();
    let _ = a.peer.recv(&mut Vec::new());
    shutdown(a);
}
