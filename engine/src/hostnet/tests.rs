//! Host networking end to end without root: a smoltcp "container" on a memory port of
//! a running engine, the network's gateway port from [`HostNet`], and real host sockets
//! on 127.0.0.1. The container and the host thread share a [`ManualClock`]: the tests
//! move it a tick at a time while they wait, and jump it to reach idle timeouts.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use tapnet_nat::GatewayConfig;
use tapnet_nat::relay::timeouts;
use tapnet_switch::{DomainConfig, MacAddr};

use super::*;
use crate::port::gateway::GatewayHandle;
use crate::port::{MemPeer, MemPort};
use crate::runtime::{Engine, EngineConfig};

const GW: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CTR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Every wait in these tests ends by this (real time).
const LIMIT: Duration = Duration::from_secs(20);
/// How far each round of a wait moves the shared clock: about what a round takes, so
/// that the stacks' timers keep roughly to real time.
const TICK: Duration = Duration::from_micros(100);

/// The container's port, and how many frames it has sent.
struct PeerDev {
    peer: MemPeer,
    sent: u64,
}
struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut PeerDev);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0; len];
        let r = f(&mut v);
        if self.0.peer.send(&v) {
            self.0.sent += 1;
        }
        r
    }
}

impl phy::Device for PeerDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut buf = Vec::new();
        if self.peer.recv(&mut buf) {
            Some((Rx(buf), Tx(self)))
        } else {
            None
        }
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// A running engine with one network whose gateway is `HostNet`'s, and a smoltcp
/// container at 10.99.0.2 on a memory port without offloads (so the relay's superframes
/// are cut by the engine's software segmentation on the way).
struct Setup {
    _engine: Engine,
    host: HostNet,
    /// The counters of the network's gateway port.
    gateway: GatewayHandle,
    dev: PeerDev,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The time of the container and of the host thread.
    clock: ManualClock,
}

impl Setup {
    fn new(host_loopback: bool) -> Setup {
        Setup::with(host_loopback, HostNetConfig::default())
    }

    /// Like [`Setup::new`], host networking configured as `cfg` (its clock aside).
    fn with(host_loopback: bool, cfg: HostNetConfig) -> Setup {
        Setup::build(host_loopback, cfg, false)
    }

    /// Like [`Setup::with`], the network internal if `internal`.
    fn build(host_loopback: bool, cfg: HostNetConfig, internal: bool) -> Setup {
        let engine = Engine::start(EngineConfig {
            pin: false,
            ..EngineConfig::default()
        })
        .unwrap();
        let clock = ManualClock::new();
        let cfg = HostNetConfig {
            clock: Clock::Manual(clock.clone()),
            ..cfg
        };
        let host = HostNet::start(engine.pool().clone(), cfg).unwrap();
        let d = engine.add_domain(DomainConfig::default()).unwrap();
        let gateway = GatewayConfig {
            mac: MacAddr::from_ipv4(GW),
            ip: GW,
            prefix_len: 24,
            internal,
        };
        let (gp, gw_handle) = host
            .gateway_port(
                "n1",
                NetAttach {
                    gateway,
                    mtu: 1500,
                    host_loopback,
                },
            )
            .unwrap();
        let gid = engine.add_gateway_port(Box::new(gp), d).unwrap();
        engine.add_static_mac(d, gateway.mac, gid).unwrap();
        host.add_endpoint("n1", "ctr", CTR, MacAddr::from_ipv4(CTR));
        let (port, peer) = MemPort::pair("ctr", engine.pool().clone(), 1024, 1500, false);
        engine.add_port(Box::new(port), d).unwrap();
        let mut dev = PeerDev { peer, sent: 0 };
        let mut cfg = Config::new(EthernetAddress(MacAddr::from_ipv4(CTR).0).into());
        cfg.random_seed = 3;
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(CTR), 24));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(GW);
        Setup {
            _engine: engine,
            host,
            gateway: gw_handle,
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            clock,
        }
    }

    fn poll(&mut self) {
        let now = smoltcp::time::Instant::from_micros(self.clock.now().as_micros() as i64);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    /// Move the clock one tick and wait for the host thread's pass at the new time;
    /// false once `end` has passed.
    fn tick(&self, end: Instant) -> bool {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let at = self.clock.advance(TICK);
        self.clock.wait_pass(at, left);
        true
    }

    /// Run the container and the host thread a tick at a time until `done`; false if the
    /// time limit came first.
    fn until(&mut self, mut done: impl FnMut(&mut Setup) -> bool) -> bool {
        let end = Instant::now() + LIMIT;
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if !self.tick(end) {
                return false;
            }
        }
    }

    /// Like [`Setup::until`], without polling the container: what reaches it stays in
    /// its port for the test to read.
    fn until_unpolled(&self, done: impl Fn(&Setup) -> bool) -> bool {
        let end = Instant::now() + LIMIT;
        loop {
            if done(self) {
                return true;
            }
            if !self.tick(end) {
                return false;
            }
        }
    }

    /// Whether everything the container sent has gone as far as it goes: the gateway
    /// port has had every frame and is done with it (the gateway counts a frame as
    /// received before it decides what to do with it), and the relay has had every
    /// frame the port forwarded.
    fn settled(&self) -> bool {
        let g = self.gateway.snapshot();
        let r = self.host.relay_stats("n1").unwrap();
        g.received == self.dev.sent && handled(&g) == g.received && r.frames_in == g.forwarded
    }

    /// Jump the clock by `by` and wait for the host thread's pass at the new time.
    fn jump(&self, by: Duration) {
        let at = self.clock.advance(by);
        assert!(
            self.clock.wait_pass(at, LIMIT),
            "the host thread ran at {at:?}"
        );
    }

    fn tcp(&mut self) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
        );
        // smoltcp 0.12 panics when a peer fills a window it advertised earlier while
        // its newer, rounded-down advertisement is smaller and an ACK is delayed
        // (smoltcp issue 1048); the relay's segments arrive at a timing of their own.
        s.set_ack_delay(None);
        self.sockets.add(s)
    }
}

/// The frames the gateway is done with: each lands in exactly one of these counters,
/// after `received`.
fn handled(g: &tapnet_nat::GatewayCountersSnapshot) -> u64 {
    g.arp_replies
        + g.echo_replies
        + g.arp_ignored
        + g.forwarded
        + g.drop_not_for_us
        + g.drop_malformed
        + g.drop_bad_source
        + g.drop_fragment
        + g.drop_source_route
        + g.drop_no_route
        + g.drop_internal
        + g.drop_unsupported
        + g.drop_no_room
        + g.drop_bad_destination
}

/// A TCP server on 127.0.0.1 that answers each connection with the bytes it got,
/// reversed, after the client's FIN.
fn reverse_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(&got).unwrap();
    });
    (port, t)
}

#[test]
fn egress_tcp_reaches_host_loopback_through_the_gateway_address() {
    let (port, server) = reverse_server();
    let mut s = Setup::new(true);
    let h = s.tcp();
    let cx = s.iface.context();
    s.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(GW), port), 45000)
        .unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let ok = s.until(|s| {
        let sock = s.sockets.get_mut::<tcp::Socket>(h);
        if sock.can_send() && sent < data.len() {
            sent += sock.send_slice(&data[sent..]).unwrap();
            if sent == data.len() {
                sock.close();
            }
        }
        while sock.can_recv() {
            sock.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        got.len() == data.len() && !sock.is_active()
    });
    server.join().unwrap();
    assert!(
        ok,
        "transfer did not finish: sent {sent}, got {}",
        got.len()
    );
    let mut expect = data.clone();
    expect.reverse();
    assert!(got == expect, "bytes differ");
    assert!(
        s.until(|s| s.host.relay_stats("n1").unwrap().tcp_closed == 1),
        "{:?}",
        s.host.relay_stats("n1")
    );
    assert_eq!(s.host.relay_stats("n1").unwrap().tcp_opened, 1);
    // The host socket of the flow is closed.
    assert!(s.until(|s| s.host.stats().sockets == 0));
}

#[test]
fn refused_and_unlooped_connects_are_reset() {
    // A port nobody listens on: the host connect is refused, the container is reset.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut s = Setup::new(true);
    let h = s.tcp();
    let cx = s.iface.context();
    s.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(GW), port), 45001)
        .unwrap();
    assert!(s.until(|s| s.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed));
    assert_eq!(s.host.relay_stats("n1").unwrap().tcp_refused, 1);
    // Without host loopback the gateway address has no services.
    let (port, _server) = reverse_server();
    let mut s = Setup::new(false);
    let h = s.tcp();
    let cx = s.iface.context();
    s.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(GW), port), 45002)
        .unwrap();
    assert!(s.until(|s| s.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed));
    // Unblock the server thread.
    drop(TcpStream::connect(("127.0.0.1", port)));
}

#[test]
fn udp_to_host_loopback_and_back() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(LIMIT)).unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        echo.send_to(&buf[..n], from).unwrap();
    });
    let mut s = Setup::new(true);
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    u.bind(6000).unwrap();
    let h = s.sockets.add(u);
    let dst = IpEndpoint::new(IpAddress::Ipv4(GW), port);
    s.sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(b"ping over udp", dst)
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = None;
    assert!(s.until(|s| {
        if let Ok((n, meta)) = s.sockets.get_mut::<udp::Socket>(h).recv_slice(&mut buf) {
            got = Some((buf[..n].to_vec(), meta.endpoint));
        }
        got.is_some()
    }));
    t.join().unwrap();
    assert_eq!(got, Some((b"ping over udp".to_vec(), dst)));
}

#[test]
fn idle_udp_flows_end_at_conntracks_timeout_on_the_host_threads_clock() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(LIMIT)).unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        echo.send_to(&buf[..n], from).unwrap();
    });
    let mut s = Setup::new(true);
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    u.bind(6001).unwrap();
    let h = s.sockets.add(u);
    let dst = IpEndpoint::new(IpAddress::Ipv4(GW), port);
    s.sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(b"are you there", dst)
        .unwrap();
    // The flow was last active between the container's send and its receipt of the
    // reply; the clock moves while the reply travels, so count from either end.
    let sent_at = s.clock.now();
    let mut buf = [0u8; 64];
    assert!(s.until(|s| {
        s.sockets
            .get_mut::<udp::Socket>(h)
            .recv_slice(&mut buf)
            .is_ok()
    }));
    let got_at = s.clock.now();
    t.join().unwrap();
    assert_eq!(s.host.stats().sockets, 1, "the flow's host socket");
    // A flow with replies lives 120 s without traffic: not a second less.
    let at = sent_at + timeouts::UDP_STREAM - Duration::from_secs(1);
    s.jump(at.saturating_sub(s.clock.now()));
    assert_eq!(s.host.stats().sockets, 1);
    assert_eq!(s.host.relay_stats("n1").unwrap().expired, 0);
    let at = got_at + timeouts::UDP_STREAM + Duration::from_secs(1);
    s.jump(at.saturating_sub(s.clock.now()));
    assert!(s.until(|s| s.host.stats().sockets == 0));
    assert_eq!(s.host.relay_stats("n1").unwrap().expired, 1);
}

#[test]
fn idle_tcp_flows_are_reset_both_ways_at_conntracks_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let mut b = [0u8; 16];
        c.read(&mut b).map_err(|e| e.kind())
    });
    let mut s = Setup::new(true);
    let h = s.tcp();
    let cx = s.iface.context();
    s.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(GW), port), 45003)
        .unwrap();
    assert!(s.until(|s| s.sockets.get::<tcp::Socket>(h).state() == tcp::State::Established));
    // The relay has the ACK that ends the handshake (and whatever came before).
    assert!(s.until(|s| s.settled()));
    // Five days without a byte: the relay resets the container and closes the host
    // socket abortively.
    s.jump(timeouts::TCP_ESTABLISHED + Duration::from_secs(1));
    assert!(s.until(|s| s.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed));
    assert_eq!(
        server.join().unwrap(),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert!(s.until(|s| s.host.stats().sockets == 0));
    assert_eq!(s.host.relay_stats("n1").unwrap().expired, 1);
}

/// A TCP exchange and a UDP one through ports published on `lo` (a loopback address),
/// from clients on `lo`: the container sees them as the gateway address with their
/// ports.
fn published_round_trip_from(lo: IpAddr) {
    let mut s = Setup::new(false);
    let l = TcpListener::bind((lo, 0)).unwrap();
    let hport = l.local_addr().unwrap().port();
    s.host
        .publish("n1", HostListener::Tcp(l), SocketAddrV4::new(CTR, 8080))
        .unwrap();
    let h = s.tcp();
    s.sockets.get_mut::<tcp::Socket>(h).listen(8080).unwrap();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect((lo, hport)).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let me = c.local_addr().unwrap().port();
        c.write_all(b"hello container").unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap();
        (me, buf[..n].to_vec())
    });
    let mut asked = Vec::new();
    let mut remote = None;
    assert!(s.until(|s| {
        let sock = s.sockets.get_mut::<tcp::Socket>(h);
        if sock.can_recv() {
            let mut b = [0u8; 64];
            let n = sock.recv_slice(&mut b).unwrap();
            asked.extend_from_slice(&b[..n]);
            remote = sock.remote_endpoint();
            if asked == b"hello container" {
                sock.send_slice(b"hello client").unwrap();
            }
        }
        asked == b"hello container" && sock.send_queue() == 0
    }));
    let (client_port, reply) = client.join().unwrap();
    assert_eq!(reply, b"hello client");
    // A loopback client (IPv4 or IPv6) is seen as the gateway address, with its port.
    assert_eq!(
        remote,
        Some(IpEndpoint::new(IpAddress::Ipv4(GW), client_port))
    );
    // UDP.
    let us = UdpSocket::bind((lo, 0)).unwrap();
    let uport = us.local_addr().unwrap().port();
    s.host
        .publish("n1", HostListener::Udp(us), SocketAddrV4::new(CTR, 5353))
        .unwrap();
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    u.bind(5353).unwrap();
    let uh = s.sockets.add(u);
    let c = UdpSocket::bind((lo, 0)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let cport = c.local_addr().unwrap().port();
    c.send_to(b"q", (lo, uport)).unwrap();
    let mut from = None;
    assert!(s.until(|s| {
        let sock = s.sockets.get_mut::<udp::Socket>(uh);
        let mut b = [0u8; 16];
        if let Ok((_, meta)) = sock.recv_slice(&mut b) {
            from = Some(meta.endpoint);
            sock.send_slice(b"a", meta.endpoint).unwrap();
        }
        from.is_some() && sock.send_queue() == 0
    }));
    assert_eq!(from, Some(IpEndpoint::new(IpAddress::Ipv4(GW), cport)));
    let mut b = [0u8; 16];
    // Keep the container side polled while the reply travels.
    let mut got = None;
    assert!(s.until(|_| {
        c.set_nonblocking(true).unwrap();
        if let Ok((n, _)) = c.recv_from(&mut b) {
            got = Some(b[..n].to_vec());
        }
        got.is_some()
    }));
    assert_eq!(got.unwrap(), b"a");
    assert_eq!(s.host.stats().published, 2);
}

#[test]
fn published_tcp_and_udp_reach_the_container_from_the_client_address() {
    published_round_trip_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn published_ipv6_ports_reach_the_container_from_the_gateway_address() {
    let lo = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    if let Err(e) = TcpListener::bind((lo, 0)) {
        eprintln!(
            "SKIP published_ipv6_ports_reach_the_container_from_the_gateway_address: no IPv6 on this host ([::1]: {e})"
        );
        return;
    }
    published_round_trip_from(lo);
}

#[test]
fn ping_to_the_hosts_loopback_is_never_routed() {
    let mut s = Setup::new(false);
    // An echo request from the container to the host's loopback, built by hand: never
    // routed (the host's loopback is reached only through the gateway address, for TCP
    // and UDP, where the network asks for it). Egress ping is tested end to end, toward
    // a namespace the test makes (ctl/tests/e2e_nat.rs).
    let mut icmp = vec![8, 0, 0, 0, 0x42, 0x42, 0, 7];
    icmp.extend_from_slice(b"tapnet ping");
    let c = tapnet_wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&MacAddr::from_ipv4(GW).0);
    f.extend_from_slice(&MacAddr::from_ipv4(CTR).0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&CTR.octets());
    ip.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    let c = tapnet_wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    assert!(s.dev.peer.send(&f));
    // The gateway port drops it: once it is counted, nothing can answer it.
    assert!(
        s.until_unpolled(|s| s.gateway.snapshot().drop_bad_destination == 1),
        "{:?}",
        s.gateway.snapshot()
    );
    let mut buf = Vec::new();
    while s.dev.peer.recv(&mut buf) {
        let echo_reply = buf.len() > 34 && buf[23] == 1 && buf[34] == 0;
        assert!(!echo_reply, "the host's loopback answered");
    }
    assert_eq!(
        s.host.relay_stats("n1").unwrap().frames_in,
        0,
        "never relayed"
    );
    assert_eq!(s.host.stats().sockets, 0, "no host socket was opened");
}

/// A namespace with `CTR` on its loopback interface (`with_addr`) or no address but
/// 127.0.0.1, deleted on drop.
fn splice_ns(tag: &str, with_addr: bool) -> crate::sys::netns::NetNsGuard {
    let ns = crate::sys::netns::test_support::scratch_ns(tag);
    let mut nl = crate::sys::netlink::Netlink::open_in(&ns).unwrap();
    let lo = nl.link_index("lo").unwrap();
    nl.set_up(lo).unwrap();
    if with_addr {
        nl.add_address(lo, std::net::IpAddr::V4(CTR), 32).unwrap();
    }
    ns
}

/// A published port on 127.0.0.1 spliced into `ns`, toward `CTR:8080`.
fn publish_spliced_port(s: &Setup, ns: &crate::sys::netns::NetNs) -> (u16, PublishId) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let hport = l.local_addr().unwrap().port();
    let id = s
        .host
        .publish_spliced(
            "n1",
            HostListener::Tcp(l),
            SocketAddrV4::new(CTR, 8080),
            ns.fd(),
        )
        .unwrap();
    (hport, id)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
#[ignore = "needs root"]
fn loopback_clients_of_a_spliced_port_are_spliced_into_the_namespace() {
    let ns = splice_ns("splice", true);
    let server_l = ns
        .run(|| TcpListener::bind(SocketAddrV4::new(CTR, 8080)))
        .unwrap()
        .unwrap();
    let mut s = Setup::new(false);
    let (hport, id) = publish_spliced_port(&s, &ns);
    // The container: 1) answers with the reversed bytes after the client's
    // half-close; 2) echoes while reading; 3) resets.
    let server = std::thread::spawn(move || {
        let mut peers = Vec::new();
        let (mut c, peer) = server_l.accept().unwrap();
        peers.push(peer);
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got.reverse();
        c.write_all(&got).unwrap();
        drop(c);
        let (mut c, peer) = server_l.accept().unwrap();
        peers.push(peer);
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = vec![0u8; 100_000];
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n]).unwrap();
        }
        drop(c);
        let (c, peer) = server_l.accept().unwrap();
        peers.push(peer);
        nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(c);
        peers
    });
    // 1) Half-close: the container answers only after it saw the client's end.
    let data = pattern(3 << 20, 1);
    let mut c = TcpStream::connect(("127.0.0.1", hport)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let writer = {
        let mut c = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            c.write_all(&data).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    let mut expect = data;
    expect.reverse();
    assert!(got == expect, "reversed bytes differ ({} read)", got.len());
    // 2) Both ways at once.
    let data = pattern(4 << 20, 2);
    let mut c = TcpStream::connect(("127.0.0.1", hport)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let writer = {
        let mut c = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            c.write_all(&data).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "echoed bytes differ ({} read)", got.len());
    // 3) The container's reset reaches the client.
    let mut c = TcpStream::connect(("127.0.0.1", hport)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut b = [0u8; 16];
    let r = c.read(&mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    // The container saw its own address as the peer.
    let peers = server.join().unwrap();
    assert!(
        peers
            .iter()
            .all(|p| p.ip() == std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{peers:?}"
    );
    let st = s.host.stats();
    assert_eq!((st.spliced, st.splice_fallback), (3, 0), "{st:?}");
    assert_eq!(st.relay.tcp_inbound, 0, "nothing went through the relay");
    // Every stream and pipe of the connections is closed; the listener stays.
    assert!(
        s.until(|s| {
            let st = s.host.stats();
            st.sockets == 1 && st.pipes == 0
        }),
        "{:?}",
        s.host.stats()
    );
    s.host.unpublish(id);
    assert!(s.until(|s| s.host.stats().sockets == 0));
    assert!(TcpStream::connect(("127.0.0.1", hport)).is_err());
}

#[test]
#[ignore = "needs root"]
fn a_spliced_port_relays_when_the_namespace_cannot_connect_and_resets_when_refused() {
    // No route to the container's address in this namespace: the connect fails at
    // once and the client takes the relay path to the (smoltcp) container.
    let ns = splice_ns("splicefb", false);
    let mut s = Setup::new(false);
    let (hport, id) = publish_spliced_port(&s, &ns);
    let h = s.tcp();
    s.sockets.get_mut::<tcp::Socket>(h).listen(8080).unwrap();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", hport)).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.write_all(b"relayed").unwrap();
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    let mut asked = Vec::new();
    let mut remote = None;
    assert!(s.until(|s| {
        let sock = s.sockets.get_mut::<tcp::Socket>(h);
        if sock.can_recv() {
            let mut b = [0u8; 16];
            let n = sock.recv_slice(&mut b).unwrap();
            asked.extend_from_slice(&b[..n]);
            remote = sock.remote_endpoint();
            if asked == b"relayed" {
                sock.send_slice(b"ok").unwrap();
            }
        }
        asked == b"relayed" && sock.send_queue() == 0
    }));
    assert_eq!(client.join().unwrap(), b"ok");
    assert_eq!(remote.map(|e| e.addr), Some(IpAddress::Ipv4(GW)));
    let st = s.host.stats();
    assert_eq!((st.spliced, st.splice_fallback), (0, 1), "{st:?}");
    assert_eq!(st.relay.tcp_inbound, 1);
    // The relayed connection ends; only the listener is left.
    s.sockets.get_mut::<tcp::Socket>(h).close();
    assert!(
        s.until(|s| {
            let st = s.host.stats();
            st.pipes == 0 && st.sockets == 1
        }),
        "{:?}",
        s.host.stats()
    );
    s.host.unpublish(id);
    // The container's address but nothing listening: the client is reset, nothing
    // is relayed.
    let ns = splice_ns("splicerf", true);
    let (hport, _) = publish_spliced_port(&s, &ns);
    let mut c = TcpStream::connect(("127.0.0.1", hport)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut b = [0u8; 16];
    let r = c.read(&mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let st = s.host.stats();
    assert_eq!((st.spliced, st.splice_fallback), (0, 1), "{st:?}");
    assert_eq!(st.relay.tcp_inbound, 1);
    assert!(s.until(|s| s.host.stats().pipes == 0 && s.host.stats().sockets == 1));
}

#[test]
fn publishing_spliced_into_something_not_a_namespace_fails_and_publishes_nothing() {
    let s = Setup::new(false);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let not_ns = std::fs::File::open("/dev/null").unwrap();
    let e = s
        .host
        .publish_spliced(
            "n1",
            HostListener::Tcp(l),
            SocketAddrV4::new(CTR, 80),
            &not_ns,
        )
        .unwrap_err();
    assert!(e.to_string().contains("network namespace"), "{e}");
    assert_eq!(s.host.stats().published, 0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = s
        .host
        .publish_spliced(
            "nope",
            HostListener::Tcp(l),
            SocketAddrV4::new(CTR, 80),
            &not_ns,
        )
        .unwrap_err();
    assert!(matches!(e, HostNetError::UnknownNetwork(_)), "{e}");
}

#[test]
fn only_the_daemons_endpoints_reach_the_host() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let mut s = Setup::new(true);
    // The endpoint is unplugged: its address is nobody's.
    s.host.remove_endpoint("ctr");
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    u.bind(6002).unwrap();
    let h = s.sockets.add(u);
    let dst = IpEndpoint::new(IpAddress::Ipv4(GW), port);
    s.sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(b"anyone?", dst)
        .unwrap();
    assert!(s.until(|s| s.host.relay_stats("n1").unwrap().drop_unknown_source == 1));
    assert_eq!(s.host.relay_stats("n1").unwrap().udp_opened, 0);
    // Plugged again (a relay made again for the network keeps it too).
    s.host
        .add_endpoint("n1", "ctr", CTR, MacAddr::from_ipv4(CTR));
    s.sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(b"anyone?", dst)
        .unwrap();
    assert!(s.until(|s| s.host.relay_stats("n1").unwrap().udp_opened == 1));
    echo.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 64];
    let (k, _) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..k], b"anyone?");
}

/// An echo request frame from the container at `src` to `dst`, identifier 0x4242.
fn echo_request(src: Ipv4Addr, gw: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x42, 0x42, 0, 1];
    icmp.extend_from_slice(data);
    let c = tapnet_wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&MacAddr::from_ipv4(gw).0);
    f.extend_from_slice(&MacAddr::from_ipv4(src).0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = tapnet_wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The data of an echo reply frame (Ethernet, IPv4 without options, ICMP).
fn echo_data(frame: &[u8]) -> Option<&[u8]> {
    (frame.len() >= 42 && frame[23] == 1 && frame[34] == 0).then(|| &frame[42..])
}

#[test]
#[ignore = "needs root"]
fn raw_echo_replies_reach_only_the_network_whose_flow_sent_the_request() {
    // A namespace of its own, with an address on its loopback to ping: the host thread
    // started inside it opens its raw ICMP sockets there (ping sockets are not allowed
    // for root's group by default, `net.ipv4.ping_group_range` "1 0").
    let target = Ipv4Addr::new(198, 51, 100, 1);
    let ns = crate::sys::netns::test_support::scratch_ns("icmp");
    let mut nl = crate::sys::netlink::Netlink::open_in(&ns).unwrap();
    let lo = nl.link_index("lo").unwrap();
    nl.set_up(lo).unwrap();
    nl.add_address(lo, IpAddr::V4(target), 32).unwrap();
    ns.run(|| {
        let engine = Engine::start(EngineConfig {
            pin: false,
            ..EngineConfig::default()
        })
        .unwrap();
        let host = HostNet::start(engine.pool().clone(), HostNetConfig::default()).unwrap();
        let mut peers = Vec::new();
        for (k, third) in [("n1", 99u8), ("n2", 98u8)] {
            let gw = Ipv4Addr::new(10, third, 0, 1);
            let ctr = Ipv4Addr::new(10, third, 0, 2);
            let d = engine.add_domain(DomainConfig::default()).unwrap();
            let gateway = GatewayConfig {
                mac: MacAddr::from_ipv4(gw),
                ip: gw,
                prefix_len: 24,
                internal: false,
            };
            let attach = NetAttach {
                gateway,
                mtu: 1500,
                host_loopback: false,
            };
            let (gp, _) = host.gateway_port(k, attach).unwrap();
            let gid = engine.add_gateway_port(Box::new(gp), d).unwrap();
            engine.add_static_mac(d, gateway.mac, gid).unwrap();
            host.add_endpoint(k, k, ctr, MacAddr::from_ipv4(ctr));
            let (port, peer) = MemPort::pair(k, engine.pool().clone(), 1024, 1500, false);
            engine.add_port(Box::new(port), d).unwrap();
            peers.push((k, gw, ctr, peer));
        }
        // Each network pings the same address with its first ICMP flow (flow id 1 in
        // each relay), and waits for its reply.
        let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        let mut buf = Vec::new();
        for i in 0..2 {
            let (k, gw, ctr, peer) = &mut peers[i];
            assert!(peer.send(&echo_request(*ctr, *gw, target, k.as_bytes())));
            let end = Instant::now() + LIMIT;
            while got[i].is_empty() && Instant::now() < end {
                if peers[i].3.recv(&mut buf) {
                    if let Some(d) = echo_data(&buf) {
                        got[i].push(d.to_vec());
                    }
                }
            }
            assert_eq!(
                got[i],
                vec![peers[i].0.as_bytes().to_vec()],
                "{}",
                peers[i].0
            );
        }
        // The first network's raw socket saw the second's reply too: it must keep it
        // from its container, and count it.
        let end = Instant::now() + LIMIT;
        while host.relay_stats("n1").unwrap().icmp_foreign == 0 && Instant::now() < end {
            if peers[0].3.recv(&mut buf) {
                if let Some(d) = echo_data(&buf) {
                    got[0].push(d.to_vec());
                }
            }
        }
        assert_eq!(
            got[0],
            vec![b"n1".to_vec()],
            "n1 got another network's reply"
        );
        assert_eq!(host.relay_stats("n1").unwrap().icmp_foreign, 1);
        drop(host);
        drop(engine);
    })
    .unwrap();
}

#[test]
fn tcp_flows_share_the_hosts_flow_memory() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Room for one flow with the smallest buffers, and no more.
    let cfg = HostNetConfig {
        flow_memory: 3 * tapnet_nat::relay::MIN_TCP_BUFFER,
        ..HostNetConfig::default()
    };
    let mut s = Setup::with(true, cfg);
    assert_eq!(
        s.host.stats().flow_memory_limit,
        3 * tapnet_nat::relay::MIN_TCP_BUFFER as u64
    );
    let (a, b) = (s.tcp(), s.tcp());
    for (h, local) in [(a, 46000), (b, 46001)] {
        let cx = s.iface.context();
        s.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(GW), port), local)
            .unwrap();
    }
    // One is carried, with a small window; the other is reset for want of memory.
    assert!(s.until(|s| {
        let st = |h| s.sockets.get::<tcp::Socket>(h).state();
        let states = [st(a), st(b)];
        states.contains(&tcp::State::Established) && states.contains(&tcp::State::Closed)
    }));
    let r = s.host.relay_stats("n1").unwrap();
    assert_eq!(
        (r.tcp_opened, r.budget_backpressure, r.drop_budget),
        (1, 1, 1)
    );
    // The host thread publishes the figure at the end of the pass that sent the frames
    // above, so it may still be on its way.
    assert!(
        s.until(|s| s.host.stats().flow_memory == 2 * tapnet_nat::relay::MIN_TCP_BUFFER as u64)
    );
    // Once the carried one is over, its memory serves a new flow.
    let (_server, _) = l.accept().unwrap();
    let open = if s.sockets.get::<tcp::Socket>(a).state() == tcp::State::Established {
        a
    } else {
        b
    };
    s.sockets.get_mut::<tcp::Socket>(open).abort();
    assert!(s.until(|s| s.host.stats().flow_memory == 0));
    let c = s.tcp();
    let cx = s.iface.context();
    s.sockets
        .get_mut::<tcp::Socket>(c)
        .connect(cx, (IpAddress::Ipv4(GW), port), 46002)
        .unwrap();
    assert!(s.until(|s| s.sockets.get::<tcp::Socket>(c).state() == tcp::State::Established));
    assert_eq!(s.host.relay_stats("n1").unwrap().tcp_opened, 2);
}

#[test]
fn a_panic_on_the_host_thread_is_reported_and_calls_fail() {
    let engine = Engine::start(EngineConfig {
        manual: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let host = HostNet::start(engine.pool().clone(), HostNetConfig::default()).unwrap();
    assert_eq!(host.failed(), None);
    host.inject_panic();
    let deadline = Instant::now() + LIMIT;
    while host.failed().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let why = host.failed().expect("the failure is reported");
    assert!(
        why.contains("tapnet-host panicked") && why.contains("fault injected"),
        "{why}"
    );
    // Calls fail at once instead of waiting for a thread that is gone.
    let attach = NetAttach {
        gateway: GatewayConfig {
            mac: MacAddr::from_ipv4(GW),
            ip: GW,
            prefix_len: 24,
            internal: false,
        },
        mtu: 1500,
        host_loopback: false,
    };
    let t = Instant::now();
    let e = host.gateway_port("n1", attach).err().expect("an error");
    assert!(matches!(e, HostNetError::Stopped), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

mod dns {
    //! The networks' DNS servers through the host thread: queries from the container to
    //! the gateway's port 53, forwarding to a resolver the test runs on loopback (named
    //! in a `resolv.conf` of the test's, on a port of its own), timeouts on the
    //! shared clock, names changed while running.

    use std::path::PathBuf;
    use std::sync::Arc;

    use tapnet_nat::dns::{FORWARD_TIMEOUT, Names};

    use super::*;

    const DB: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

    /// A query (RD set) for `name`, type A, id `id`.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    /// An answer's id, response code, and the address of its last record if that is
    /// an A record (the tests' answers have one at most).
    fn answer(msg: &[u8]) -> (u16, u8, Option<Ipv4Addr>) {
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let rcode = msg[3] & 0x0f;
        let ancount = u16::from_be_bytes([msg[6], msg[7]]);
        let n = msg.len();
        let a = (ancount > 0 && msg[n - 6..n - 4] == [0, 4])
            .then(|| Ipv4Addr::new(msg[n - 4], msg[n - 3], msg[n - 2], msg[n - 1]));
        (id, rcode, a)
    }

    /// The names of network `n1`: the container as `web`, 10.99.0.3 as `db`.
    fn names(extra: &[(&str, Ipv4Addr)]) -> Arc<Names> {
        let mut n = Names::new();
        n.add_network("n1", "pets", true);
        n.add_endpoint("n1", "ctr-id", CTR, &["web"]);
        n.add_endpoint("n1", "db-id", DB, &["db"]);
        for (name, ip) in extra {
            n.add_endpoint("n1", name, *ip, &[name]);
        }
        Arc::new(n)
    }

    /// A directory of the test's own, and a `resolv.conf` in it saying `text`.
    fn resolv_conf(test: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tapnet-dns-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        write_resolv(&path, text);
        path
    }

    /// Replace `path` with `text`, as resolvconf does (a new file renamed over it).
    fn write_resolv(path: &std::path::Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// A resolver on `ip`:`port` (0: any) that answers every query with one A record
    /// `addr` (never, with `None`), until `n` queries; its port.
    fn resolver(
        ip: Ipv4Addr,
        port: u16,
        addr: Option<Ipv4Addr>,
        n: usize,
    ) -> (u16, std::thread::JoinHandle<usize>) {
        let s = UdpSocket::bind((ip, port)).unwrap();
        let port = s.local_addr().unwrap().port();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let t = std::thread::spawn(move || {
            let mut got = 0;
            let mut buf = [0u8; 1500];
            while got < n {
                let Ok((k, from)) = s.recv_from(&mut buf) else {
                    break;
                };
                got += 1;
                let Some(a) = addr.filter(|_| k >= 12) else {
                    continue;
                };
                let mut r = buf[..k].to_vec();
                r[2] |= 0x80;
                r[3] = 0x80;
                r[7] = 1;
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&a.octets());
                s.send_to(&r, from).unwrap();
            }
            got
        });
        (port, t)
    }

    impl Setup {
        /// A UDP socket of the container on `port`.
        fn udp(&mut self, port: u16) -> SocketHandle {
            let mut u = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
            );
            u.bind(port).unwrap();
            self.sockets.add(u)
        }

        /// Ask the gateway for `name` from socket `h` and wait for the answer.
        fn ask(
            &mut self,
            h: SocketHandle,
            id: u16,
            name: &str,
        ) -> Option<(u16, u8, Option<Ipv4Addr>)> {
            let gw53 = IpEndpoint::new(IpAddress::Ipv4(GW), 53);
            self.sockets
                .get_mut::<udp::Socket>(h)
                .send_slice(&query(id, name), gw53)
                .unwrap();
            let mut got = None;
            let mut buf = [0u8; 1500];
            self.until(|s| {
                if let Ok((n, meta)) = s.sockets.get_mut::<udp::Socket>(h).recv_slice(&mut buf) {
                    assert_eq!(meta.endpoint, gw53);
                    got = Some(answer(&buf[..n]));
                }
                got.is_some()
            });
            got
        }
    }

    fn cfg(resolv: PathBuf, port: u16) -> HostNetConfig {
        HostNetConfig {
            resolv_conf: resolv,
            dns_port: port,
            ..HostNetConfig::default()
        }
    }

    #[test]
    fn queries_are_answered_from_the_names_and_forwarded_to_the_hosts_resolver() {
        let (port, server) = resolver(Ipv4Addr::LOCALHOST, 0, Some(Ipv4Addr::new(192, 0, 2, 7)), 1);
        let path = resolv_conf("forward", "nameserver 127.0.0.1\n");
        // Even with host loopback, port 53 of the gateway is the network's server.
        let mut s = Setup::with(true, cfg(path.clone(), port));
        s.host.set_names(names(&[]));
        let h = s.udp(5300);
        assert_eq!(s.ask(h, 1, "db"), Some((1, 0, Some(DB))));
        assert_eq!(
            s.ask(h, 2, "example.com"),
            Some((2, 0, Some(Ipv4Addr::new(192, 0, 2, 7))))
        );
        assert_eq!(server.join().unwrap(), 1);
        let d = s.host.dns_stats("n1").unwrap();
        assert_eq!(
            (d.queries, d.answered, d.forwarded, d.forward_answers),
            (2, 1, 1, 1)
        );
        assert_eq!(s.host.stats().dns, d);
        // One forwarding socket, and no flow.
        assert_eq!(s.host.stats().sockets, 1);
        assert_eq!(s.host.relay_stats("n1").unwrap().udp_opened, 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_hosts_resolv_conf_is_read_again_when_it_changes() {
        let (port, first) = resolver(Ipv4Addr::LOCALHOST, 0, Some(Ipv4Addr::new(192, 0, 2, 1)), 1);
        let (_, second) = resolver(
            Ipv4Addr::new(127, 0, 0, 2),
            port,
            Some(Ipv4Addr::new(192, 0, 2, 2)),
            1,
        );
        let path = resolv_conf("reread", "nameserver 127.0.0.1\n");
        let mut s = Setup::with(false, cfg(path.clone(), port));
        s.host.set_names(names(&[]));
        let h = s.udp(5301);
        assert_eq!(
            s.ask(h, 1, "a.example"),
            Some((1, 0, Some(Ipv4Addr::new(192, 0, 2, 1))))
        );
        write_resolv(&path, "# changed\nnameserver 127.0.0.2\n");
        // Looked at again once a second.
        s.jump(Duration::from_millis(1100));
        assert_eq!(
            s.ask(h, 2, "b.example"),
            Some((2, 0, Some(Ipv4Addr::new(192, 0, 2, 2))))
        );
        assert_eq!(first.join().unwrap(), 1);
        assert_eq!(second.join().unwrap(), 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_resolver_that_never_answers_gives_servfail_at_the_timeout_and_names_still_answer() {
        let (port, server) = resolver(Ipv4Addr::LOCALHOST, 0, None, 1);
        let path = resolv_conf("timeout", "nameserver 127.0.0.1\n");
        let mut s = Setup::with(false, cfg(path.clone(), port));
        s.host.set_names(names(&[]));
        let h = s.udp(5302);
        let gw53 = IpEndpoint::new(IpAddress::Ipv4(GW), 53);
        s.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(&query(5, "slow.example"), gw53)
            .unwrap();
        assert!(s.until(|s| s.host.dns_stats("n1").unwrap().forwarded == 1));
        assert_eq!(server.join().unwrap(), 1);
        // Local names answer meanwhile.
        let h2 = s.udp(5303);
        assert_eq!(s.ask(h2, 6, "db"), Some((6, 0, Some(DB))));
        s.jump(FORWARD_TIMEOUT + Duration::from_millis(10));
        let mut buf = [0u8; 512];
        let mut got = None;
        assert!(s.until(|s| {
            if let Ok((n, _)) = s.sockets.get_mut::<udp::Socket>(h).recv_slice(&mut buf) {
                got = Some(answer(&buf[..n]));
            }
            got.is_some()
        }));
        assert_eq!(got, Some((5, 2, None)), "SERVFAIL");
        assert_eq!(s.host.dns_stats("n1").unwrap().timeouts, 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn names_set_while_running_answer_from_the_next_query() {
        let path = resolv_conf("names", "");
        let mut s = Setup::with(false, cfg(path.clone(), 53));
        s.host.set_names(names(&[]));
        let h = s.udp(5304);
        assert_eq!(s.ask(h, 1, "db"), Some((1, 0, Some(DB))));
        let cache = Ipv4Addr::new(10, 99, 0, 9);
        s.host.set_names(names(&[("cache", cache)]));
        assert_eq!(s.ask(h, 2, "cache"), Some((2, 0, Some(cache))));
        // No resolvers at all: other names are refused.
        assert_eq!(s.ask(h, 3, "example.com"), Some((3, 5, None)));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_internal_network_answers_its_names_and_nothing_else() {
        let (port, server) = resolver(Ipv4Addr::LOCALHOST, 0, Some(Ipv4Addr::new(192, 0, 2, 7)), 1);
        let path = resolv_conf("internal", "nameserver 127.0.0.1\n");
        let mut s = Setup::build(true, cfg(path.clone(), port), true);
        s.host.set_names(names(&[]));
        let h = s.udp(5305);
        assert_eq!(s.ask(h, 1, "db"), Some((1, 0, Some(DB))));
        // Not forwarded: NXDOMAIN.
        assert_eq!(s.ask(h, 2, "example.com"), Some((2, 3, None)));
        // Nothing else reaches the host, not even its loopback through the gateway.
        let gw_echo = IpEndpoint::new(IpAddress::Ipv4(GW), port);
        s.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(b"hello", gw_echo)
            .unwrap();
        let t = s.tcp();
        let cx = s.iface.context();
        s.sockets
            .get_mut::<tcp::Socket>(t)
            .connect(
                cx,
                (IpAddress::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), 80),
                45100,
            )
            .unwrap();
        assert!(s.until(|s| s.settled()));
        assert_eq!(s.host.stats().sockets, 0);
        let r = s.host.relay_stats("n1").unwrap();
        assert_eq!((r.udp_opened, r.tcp_opened), (0, 0));
        let g = s.gateway.snapshot();
        assert!(g.drop_unsupported >= 1 && g.drop_internal >= 1, "{g:?}");
        assert_eq!(s.host.dns_stats("n1").unwrap().forwarded, 0);
        // Published ports are refused on it.
        let l = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            s.host
                .publish("n1", HostListener::Udp(l), SocketAddrV4::new(CTR, 53)),
            Err(HostNetError::UnknownNetwork(_))
        ));
        // Unblock the resolver.
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", ("127.0.0.1", port))
            .unwrap();
        server.join().unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// An Ethernet frame carrying a UDP datagram from `src`:`sport` (MAC from its
    /// address) to `gw`:53, with a right IPv4 checksum and no UDP checksum.
    fn dns_frame(src: Ipv4Addr, gw: Ipv4Addr, sport: u16, msg: &[u8]) -> Vec<u8> {
        let mut f = MacAddr::from_ipv4(gw).0.to_vec();
        f.extend_from_slice(&MacAddr::from_ipv4(src).0);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + msg.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&gw.octets());
        let c = tapnet_wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(msg);
        f
    }

    #[test]
    fn a_sandbox_flooding_dns_does_not_starve_another_networks_answers() {
        let path = resolv_conf("flood", "");
        let mut s = Setup::with(false, cfg(path.clone(), 53));
        // A second network, its sandbox speaking raw frames.
        let gw2 = Ipv4Addr::new(10, 98, 0, 1);
        let ctr2 = Ipv4Addr::new(10, 98, 0, 2);
        let d2 = s._engine.add_domain(DomainConfig::default()).unwrap();
        let gateway = GatewayConfig {
            mac: MacAddr::from_ipv4(gw2),
            ip: gw2,
            prefix_len: 24,
            internal: false,
        };
        let attach = NetAttach {
            gateway,
            mtu: 1500,
            host_loopback: false,
        };
        let (gp, _) = s.host.gateway_port("n2", attach).unwrap();
        let gid = s._engine.add_gateway_port(Box::new(gp), d2).unwrap();
        s._engine.add_static_mac(d2, gateway.mac, gid).unwrap();
        s.host
            .add_endpoint("n2", "ctr2", ctr2, MacAddr::from_ipv4(ctr2));
        let pool = s._engine.pool().clone();
        let (port, mut peer2) = MemPort::pair("ctr2", pool, 1024, 1500, false);
        s._engine.add_port(Box::new(port), d2).unwrap();
        let mut n = Names::new();
        n.add_network("n1", "pets", true);
        n.add_endpoint("n1", "ctr-id", CTR, &["web"]);
        n.add_network("n2", "other", true);
        n.add_endpoint("n2", "ctr2-id", ctr2, &["two"]);
        s.host.set_names(Arc::new(n));
        // The first network's sandbox floods its gateway with queries, far past its
        // rate (the time does not move meanwhile: 2,000 queries of burst at most).
        let flood = dns_frame(CTR, GW, 7000, &query(1, "web"));
        let ask = dns_frame(ctr2, gw2, 7001, &query(2, "two"));
        let end = Instant::now() + LIMIT;
        let mut sent = 0u64;
        let mut answered = false;
        let mut buf = Vec::new();
        while Instant::now() < end && !(answered && sent >= 20_000) {
            for _ in 0..512 {
                if s.dev.peer.send(&flood) {
                    sent += 1;
                }
                // Whatever the flood's answers, the container does not read them.
                s.dev.peer.recv(&mut buf);
            }
            if !answered {
                peer2.send(&ask);
            }
            while peer2.recv(&mut buf) {
                if buf.len() > 42 + 12 && buf[23] == 17 && buf[34..36] == 53u16.to_be_bytes() {
                    let (id, rcode, a) = answer(&buf[42..]);
                    assert_eq!((id, rcode, a), (2, 0, Some(ctr2)));
                    answered = true;
                }
            }
            std::thread::yield_now();
        }
        assert!(answered, "the second network's query got no answer");
        let d1 = s.host.dns_stats("n1").unwrap();
        assert!(d1.rate_limited > 0, "{d1:?}");
        assert!(d1.answered <= 2_000, "{d1:?}");
        assert!(s.host.dns_stats("n2").unwrap().answered >= 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
