//! The relay against a smoltcp "container" on the other side of a [`Gateway`], with
//! in-memory host streams.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp as stcp, udp as sudp};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};

use tapnet_wire::checksum::checksum;

use super::*;
use crate::Gateway;

const PROTO_ICMP: u8 = tapnet_wire::icmpv4::PROTOCOL;
const PROTO_TCP: u8 = tapnet_wire::tcp::PROTOCOL;
const PROTO_UDP: u8 = tapnet_wire::udp::PROTOCOL;

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CTR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

fn gw_cfg() -> GatewayConfig {
    GatewayConfig {
        mac: MacAddr::from_ipv4(GW),
        ip: GW,
        prefix_len: 24,
        internal: false,
    }
}

fn relay_cfg(limits: FlowLimits, host_loopback: bool) -> RelayConfig {
    RelayConfig {
        gateway: gw_cfg(),
        mtu: 1500,
        host_loopback,
        limits,
        tcp_buffer: 64 * 1024,
        dns: dns_config("n1", true),
    }
}

/// Ethernet frames between the container and the gateway.
#[derive(Default)]
struct Wire {
    to_ctr: VecDeque<Vec<u8>>,
    from_ctr: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0; len];
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let f = self.to_ctr.pop_front()?;
        Some((Rx(f), Tx(&mut self.from_ctr)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.from_ctr))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        // Room for the relay's superframes (the TAP would cut them; here the
        // container's stack takes them whole).
        c.max_transmission_unit = 1514;
        // The relay leaves TCP checksums partial, as a TAP with offloads takes them.
        let mut cs = phy::ChecksumCapabilities::default();
        cs.tcp = phy::Checksum::None;
        c.checksum = cs;
        c
    }
}

/// In-memory host stream.
#[derive(Default)]
struct MemHost {
    to_ctr: VecDeque<u8>,
    eof: bool,
    got: Vec<u8>,
    shut: bool,
    /// Refuse writes (a full socket buffer).
    block_writes: bool,
}

impl HostStream for MemHost {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.to_ctr.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.to_ctr.len());
        for (i, b) in self.to_ctr.drain(..n).enumerate() {
            buf[i] = b;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block_writes {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.got.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

/// `r` with the test's container, 10.0.0.2, as an endpoint.
fn with_ctr(mut r: Relay) -> Relay {
    r.set_endpoint(CTR, MacAddr::from_ipv4(CTR));
    r
}

/// A container (smoltcp on Ethernet), its gateway and the relay, stepped together.
struct Net {
    now: Duration,
    wire: Wire,
    iface: Interface,
    sockets: SocketSet<'static>,
    gateway: Gateway,
    relay: Relay,
    /// The host's networks, as the host thread keeps them.
    isolation: Isolation,
    events: Vec<Event>,
    datagrams: Vec<(FlowId, Vec<u8>)>,
    /// Every flow [`Relay::take_ready`] listed, in order.
    ready: Vec<FlowId>,
    /// The last frame the relay sent toward the container.
    last_from_relay: Vec<u8>,
    /// The host's memory for flow buffers.
    budget: Budget,
}

impl Net {
    fn new(cfg: RelayConfig) -> Net {
        let mut wire = Wire::default();
        let mac = MacAddr::from_ipv4(CTR);
        let mut icfg = Config::new(EthernetAddress(mac.0).into());
        icfg.random_seed = 7;
        let mut iface = Interface::new(icfg, &mut wire, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(CTR), 24));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(GW);
        Net {
            now: Duration::ZERO,
            wire,
            iface,
            sockets: SocketSet::new(Vec::new()),
            gateway: Gateway::with_egress(cfg.gateway),
            relay: with_ctr(Relay::new(cfg, Duration::ZERO)),
            isolation: Isolation::default(),
            events: Vec::new(),
            datagrams: Vec::new(),
            ready: Vec::new(),
            last_from_relay: Vec::new(),
            budget: Budget::default(),
        }
    }

    /// Move frames until nothing moves; pump every ready TCP flow with `hosts`.
    fn step(&mut self, hosts: &mut [(FlowId, &mut MemHost)]) {
        let mut out = vec![0u8; 14 + 65535];
        let mut reply = vec![0u8; 2048];
        for _ in 0..200 {
            self.now += Duration::from_millis(1);
            let t = smoltcp::time::Instant::from_micros(self.now.as_micros() as i64);
            self.iface.poll(t, &mut self.wire, &mut self.sockets);
            let mut moved = false;
            while let Some(f) = self.wire.from_ctr.pop_front() {
                moved = true;
                match self.gateway.handle(&f, &mut reply) {
                    crate::Outcome::Forward => {
                        self.relay.input(self.now, &f, false, &self.isolation)
                    }
                    crate::Outcome::Reply(n) => self.wire.to_ctr.push_back(reply[..n].to_vec()),
                    _ => {}
                }
            }
            self.relay.poll(self.now);
            let mut ready = Vec::new();
            self.relay.take_ready(&mut ready);
            for (id, h) in hosts.iter_mut() {
                if ready.contains(id) || self.relay.wants_host_bytes(*id) || !h.to_ctr.is_empty() {
                    let _ = self.relay.pump(self.now, *id, *h);
                }
            }
            self.ready.extend(ready);
            self.relay.poll(self.now);
            while let Some(f) = self.relay.next_frame(&mut out) {
                moved = true;
                self.last_from_relay = out[..f.len].to_vec();
                self.wire.to_ctr.push_back(out[..f.len].to_vec());
            }
            while let Some(e) = self.relay.poll_event() {
                self.events.push(e);
            }
            while let Some(d) = self.relay.next_datagram() {
                self.datagrams.push(d);
            }
            if !moved && self.wire.to_ctr.is_empty() {
                break;
            }
        }
    }

    fn tcp_socket(&mut self) -> smoltcp::iface::SocketHandle {
        let s = stcp::Socket::new(
            stcp::SocketBuffer::new(vec![0; 256 * 1024]),
            stcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        self.sockets.add(s)
    }

    /// A new container socket connecting from `local_port` to `to:port`.
    fn dial(&mut self, to: Ipv4Addr, port: u16, local_port: u16) -> smoltcp::iface::SocketHandle {
        let h = self.tcp_socket();
        let cx = self.iface.context();
        self.sockets
            .get_mut::<stcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(to), port), local_port)
            .unwrap();
        h
    }

    fn connect_event(&mut self) -> (FlowId, Proto, SocketAddrV4) {
        let i = self
            .events
            .iter()
            .position(|e| matches!(e, Event::Connect { .. }))
            .expect("a connect event");
        match self.events.remove(i) {
            Event::Connect { id, proto, dst } => (id, proto, dst),
            Event::Close { .. } => unreachable!(),
        }
    }
}

#[test]
fn tcp_egress_carries_bytes_both_ways_and_closes() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.dial(REMOTE, 80, 40000);
    n.step(&mut []);
    let (id, proto, dst) = n.connect_event();
    assert_eq!((proto, dst), (Proto::Tcp, SocketAddrV4::new(REMOTE, 80)));
    // The SYN waits for the host connect.
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h).state(),
        stcp::State::SynSent
    );
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h).state(),
        stcp::State::Established
    );
    let up: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let down: Vec<u8> = (0..500_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let mut host = MemHost {
        to_ctr: down.iter().copied().collect(),
        eof: true,
        ..Default::default()
    };
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..500 {
        let s = n.sockets.get_mut::<stcp::Socket>(h);
        if sent < up.len() && s.can_send() {
            sent += s.send_slice(&up[sent..]).unwrap();
        }
        if sent == up.len() && s.may_send() {
            s.close();
        }
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        n.step(&mut [(id, &mut host)]);
        if got.len() == down.len() && host.got.len() == up.len() && n.relay.flow_counts().tcp == 0 {
            break;
        }
    }
    assert_eq!(host.got.len(), up.len());
    assert!(host.got == up, "container → host bytes differ");
    assert!(got == down, "host → container bytes differ");
    assert!(host.shut, "the container's FIN reached the host");
    assert_eq!(n.relay.flow_counts(), FlowCounts::default());
    let c = n.relay.counters().snapshot();
    assert_eq!((c.tcp_opened, c.tcp_closed), (1, 1));
}

#[test]
fn refused_connect_resets_and_limits_reset_too() {
    let limits = FlowLimits {
        tcp_pending: 2,
        ..FlowLimits::default()
    };
    let mut n = Net::new(relay_cfg(limits, false));
    let hs: Vec<_> = (0..3).map(|_| n.tcp_socket()).collect();
    for (i, &h) in hs.iter().enumerate() {
        let cx = n.iface.context();
        n.sockets
            .get_mut::<stcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(REMOTE), 80), 41000 + i as u16)
            .unwrap();
    }
    n.step(&mut []);
    // Two connects pending; the third SYN was over the bound and got a reset.
    assert_eq!(n.relay.counters().snapshot().tcp_limit, 1);
    assert_eq!(
        n.sockets.get::<stcp::Socket>(hs[2]).state(),
        stcp::State::Closed
    );
    let (id, _, _) = n.connect_event();
    n.relay
        .connected(n.now, id, Err(ConnectError::Refused), &mut n.budget);
    n.step(&mut []);
    let closed = hs
        .iter()
        .filter(|&&h| n.sockets.get::<stcp::Socket>(h).state() == stcp::State::Closed)
        .count();
    assert_eq!(closed, 2, "the refused connect was reset");
    assert_eq!(n.relay.flow_counts().tcp, 1);
    assert_eq!(n.relay.counters().snapshot().tcp_refused, 1);
}

#[test]
fn host_loopback_maps_the_gateway_address() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), true));
    n.dial(GW, 5201, 40001);
    n.step(&mut []);
    let (_, proto, dst) = n.connect_event();
    assert_eq!(
        (proto, dst),
        (Proto::Tcp, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5201))
    );
    // Without the option, nothing listens there: the connect is reset.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.dial(GW, 5201, 40001);
    n.step(&mut []);
    assert!(n.events.is_empty());
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h).state(),
        stcp::State::Closed
    );
    assert_eq!(n.relay.counters().snapshot().tcp_refused, 1);
}

#[test]
fn udp_round_trip_and_idle_timeout() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let mut s = sudp::Socket::new(
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
    );
    s.bind(5353).unwrap();
    let h = n.sockets.add(s);
    let remote = IpEndpoint::new(IpAddress::Ipv4(REMOTE), 53);
    n.sockets
        .get_mut::<sudp::Socket>(h)
        .send_slice(b"query", remote)
        .unwrap();
    n.step(&mut []);
    let (id, proto, dst) = n.connect_event();
    assert_eq!((proto, dst), (Proto::Udp, SocketAddrV4::new(REMOTE, 53)));
    // Queued until the host socket is connected.
    assert!(n.datagrams.is_empty());
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    assert_eq!(n.datagrams, vec![(id, b"query".to_vec())]);
    assert!(n.relay.datagram_from_host(n.now, id, b"answer"));
    n.step(&mut []);
    let mut buf = [0u8; 64];
    let (len, meta) = n
        .sockets
        .get_mut::<sudp::Socket>(h)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(&buf[..len], b"answer");
    assert_eq!(meta.endpoint, remote);
    // A replied flow lives 120 s without traffic.
    n.now += Duration::from_secs(119);
    n.step(&mut []);
    assert_eq!(n.relay.flow_counts().udp, 1);
    n.now += Duration::from_secs(2);
    n.step(&mut []);
    assert_eq!(n.relay.flow_counts().udp, 0);
    assert!(n.events.contains(&Event::Close { id, reset: true }));
    assert!(!n.relay.datagram_from_host(n.now, id, b"late"));
}

#[test]
fn ping_keeps_the_containers_identifier() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    // An echo request from the container, built by hand.
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"ping");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let frame = eth_ip(CTR, REMOTE, PROTO_ICMP, &icmp);
    n.wire.from_ctr.push_back(frame);
    n.step(&mut []);
    let (id, proto, dst) = n.connect_event();
    assert_eq!((proto, dst), (Proto::Icmp, SocketAddrV4::new(REMOTE, 0)));
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    assert_eq!(n.datagrams.len(), 1);
    // The host's ping socket answers with its own identifier.
    let mut reply = vec![0, 0, 0, 0, 0x99, 0x99, 0, 1];
    reply.extend_from_slice(b"ping");
    assert!(n.relay.datagram_from_host(n.now, id, &reply));
    let mut out = vec![0u8; 2048];
    n.relay.poll(n.now);
    let f = n.relay.next_frame(&mut out).expect("an echo reply");
    let ip = &out[14..f.len];
    assert_eq!(&ip[12..16], &REMOTE.octets());
    assert_eq!(&ip[16..20], &CTR.octets());
    let icmp = &ip[20..];
    assert_eq!(&icmp[4..6], &[0x12, 0x34]);
    assert_eq!(checksum(icmp), 0, "the ICMP checksum verifies");
    assert_eq!(&out[..6], &MacAddr::from_ipv4(CTR).0);
}

#[test]
fn published_tcp_shows_the_client_address() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h).listen(8080).unwrap();
    // A loopback client appears as the gateway; another as itself.
    let id = n
        .relay
        .tcp_inbound(
            n.now,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50000).into(),
            SocketAddrV4::new(CTR, 8080),
            &mut n.budget,
        )
        .unwrap();
    let mut host = MemHost {
        to_ctr: b"hello".iter().copied().collect(),
        ..Default::default()
    };
    for _ in 0..20 {
        n.step(&mut [(id, &mut host)]);
    }
    let s = n.sockets.get_mut::<stcp::Socket>(h);
    assert_eq!(s.state(), stcp::State::Established);
    assert_eq!(
        s.remote_endpoint(),
        Some(IpEndpoint::new(IpAddress::Ipv4(GW), 50000))
    );
    let mut buf = [0u8; 16];
    let k = s.recv_slice(&mut buf).unwrap();
    assert_eq!(&buf[..k], b"hello");
    s.send_slice(b"world").unwrap();
    n.step(&mut [(id, &mut host)]);
    assert_eq!(host.got, b"world");
    let h2 = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h2).listen(8080).unwrap();
    let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 50001);
    let id2 = n
        .relay
        .tcp_inbound(
            n.now,
            client.into(),
            SocketAddrV4::new(CTR, 8080),
            &mut n.budget,
        )
        .unwrap();
    let mut host2 = MemHost::default();
    n.step(&mut [(id2, &mut host2)]);
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h2).remote_endpoint(),
        Some(IpEndpoint::new(IpAddress::Ipv4(*client.ip()), 50001))
    );
}

/// The container's view of a published TCP connection from `client`.
fn tcp_inbound_seen_as(client: SocketAddr) -> Option<IpEndpoint> {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h).listen(8080).unwrap();
    let id = n
        .relay
        .tcp_inbound(n.now, client, SocketAddrV4::new(CTR, 8080), &mut n.budget)
        .unwrap();
    let mut host = MemHost::default();
    for _ in 0..5 {
        n.step(&mut [(id, &mut host)]);
    }
    let s = n.sockets.get::<stcp::Socket>(h);
    assert_eq!(s.state(), stcp::State::Established, "from {client}");
    s.remote_endpoint()
}

#[test]
fn ipv6_clients_appear_as_the_gateway_with_their_port() {
    let gw = |port| Some(IpEndpoint::new(IpAddress::Ipv4(GW), port));
    // The network inside is IPv4: an IPv6 client, loopback or not, is the gateway.
    assert_eq!(
        tcp_inbound_seen_as("[::1]:50010".parse().unwrap()),
        gw(50010)
    );
    assert_eq!(
        tcp_inbound_seen_as("[2001:db8::7]:50011".parse().unwrap()),
        gw(50011)
    );
    // An IPv4-mapped client is its IPv4 address, with the IPv4 rules.
    assert_eq!(
        tcp_inbound_seen_as("[::ffff:192.0.2.9]:50012".parse().unwrap()),
        Some(IpEndpoint::new(
            IpAddress::Ipv4(Ipv4Addr::new(192, 0, 2, 9)),
            50012
        ))
    );
    assert_eq!(
        tcp_inbound_seen_as("[::ffff:127.0.0.1]:50013".parse().unwrap()),
        gw(50013)
    );
    // UDP: the datagram arrives from the gateway and the client's port; the reply goes
    // back on the flow the caller holds for the IPv6 client.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let mut u = sudp::Socket::new(
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
    );
    u.bind(5353).unwrap();
    let h = n.sockets.add(u);
    let client: SocketAddr = "[::1]:50020".parse().unwrap();
    let id = n
        .relay
        .udp_inbound(n.now, client, SocketAddrV4::new(CTR, 5353), b"q6")
        .unwrap();
    n.step(&mut []);
    let mut buf = [0u8; 16];
    let (len, meta) = n
        .sockets
        .get_mut::<sudp::Socket>(h)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(
        (&buf[..len], meta.endpoint),
        (&b"q6"[..], gw(50020).unwrap())
    );
    n.sockets
        .get_mut::<sudp::Socket>(h)
        .send_slice(b"a6", meta.endpoint)
        .unwrap();
    n.step(&mut []);
    assert_eq!(n.datagrams, vec![(id, b"a6".to_vec())]);
}

#[test]
fn internal_networks_route_nothing() {
    let cfg = GatewayConfig {
        internal: true,
        ..gw_cfg()
    };
    let mut g = Gateway::with_egress(cfg);
    let f = eth_ip(CTR, REMOTE, PROTO_UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
    let mut out = [0u8; 128];
    assert_eq!(
        g.handle(&f, &mut out),
        crate::Outcome::Drop(crate::GatewayDrop::Internal)
    );
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let mut r = with_ctr(Relay::new(
        relay_cfg(FlowLimits::default(), false),
        Duration::ZERO,
    ));
    let good = eth_ip(CTR, REMOTE, PROTO_UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
    for cut in 0..good.len() {
        r.input(Duration::ZERO, &good[..cut], false, &Isolation::default());
    }
    // A UDP length past the packet.
    let bad = eth_ip(CTR, REMOTE, PROTO_UDP, &[0, 1, 0, 2, 0, 80, 0, 0]);
    r.input(Duration::ZERO, &bad, false, &Isolation::default());
    // A TCP header shorter than 20 bytes.
    let bad = eth_ip(CTR, REMOTE, PROTO_TCP, &[0; 12]);
    r.input(Duration::ZERO, &bad, false, &Isolation::default());
    // A SYN whose data offset runs past the segment.
    let mut syn = [0u8; 20];
    syn[12] = 15 << 4;
    syn[13] = 0x02;
    let bad = eth_ip(CTR, REMOTE, PROTO_TCP, &syn);
    let before = r.counters().snapshot().drop_malformed;
    r.input(Duration::ZERO, &bad, false, &Isolation::default());
    assert_eq!(r.counters().snapshot().drop_malformed, before + 1);
    assert!(r.poll_event().is_none(), "no flow for it");
    let c = r.counters().snapshot();
    assert!(c.drop_malformed >= 4, "{c:?}");
    assert_eq!(r.flow_counts(), FlowCounts::default());
    r.poll(Duration::ZERO);
}

proptest::proptest! {
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                                    proto in proptest::prop_oneof![proptest::strategy::Just(1u8), proptest::strategy::Just(6u8), proptest::strategy::Just(17u8)]) {
        let mut r = with_ctr(Relay::new(relay_cfg(FlowLimits::default(), true), Duration::ZERO));
        r.input(Duration::ZERO, &bytes, false, &Isolation::default());
        let f = eth_ip(CTR, REMOTE, proto, &bytes);
        r.input(Duration::ZERO, &f, false, &Isolation::default());
        r.poll(Duration::from_millis(1));
        let mut out = vec![0u8; 14 + 65535];
        while r.next_frame(&mut out).is_some() {}
        while r.poll_event().is_some() {}
    }
}

/// An Ethernet + IPv4 frame from the container's MAC to the gateway's.
fn eth_ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MacAddr::from_ipv4(GW).0);
    f.extend_from_slice(&MacAddr::from_ipv4(src).0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

#[test]
fn other_networks_are_not_reached_through_the_host() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    n.isolation.insert("other", Ipv4Addr::new(10, 1, 0, 0), 16);
    // Its own subnet is listed too, as the host lists every network's.
    n.isolation.insert("own", GW, 24);
    let h = n.dial(Ipv4Addr::new(10, 1, 2, 3), 80, 40000);
    n.step(&mut []);
    // Dropped, unanswered, as Docker's isolation rules drop it.
    assert!(n.events.is_empty());
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h).state(),
        stcp::State::SynSent
    );
    assert_eq!(n.relay.counters().snapshot().drop_isolated, 1);
    // The gateway address itself (host loopback) is not another network.
    n.dial(GW, 80, 40001);
    n.step(&mut []);
    assert_eq!(n.relay.counters().snapshot().drop_isolated, 1);
    n.isolation.remove("other");
    assert!(!n.isolation.contains(Ipv4Addr::new(10, 1, 2, 3)));
}

#[test]
fn loopback_and_reserved_destinations_are_never_routed() {
    let mut g = Gateway::with_egress(gw_cfg());
    let mut out = [0u8; 128];
    for dst in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(240, 0, 0, 1),
    ] {
        let f = eth_ip(CTR, dst, PROTO_UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(
            g.handle(&f, &mut out),
            crate::Outcome::Drop(crate::GatewayDrop::BadDestination),
            "{dst}"
        );
        // The relay refuses them too, should a frame get there.
        let mut r = with_ctr(Relay::new(
            relay_cfg(FlowLimits::default(), true),
            Duration::ZERO,
        ));
        r.input(Duration::ZERO, &f, false, &Isolation::default());
        assert!(r.poll_event().is_none(), "{dst}");
        assert_eq!(r.counters().snapshot().drop_isolated, 1);
    }
    assert_eq!(g.snapshot().drop_bad_destination, 3);
}

#[test]
fn data_sent_before_the_fin_waits_for_a_slow_host() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.dial(REMOTE, 80, 40100);
    n.step(&mut []);
    let (id, _, _) = n.connect_event();
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    // The host takes nothing for now (its socket buffer is full) and has already
    // closed its side.
    let mut host = MemHost {
        eof: true,
        block_writes: true,
        ..Default::default()
    };
    let data = vec![7u8; 30_000];
    let s = n.sockets.get_mut::<stcp::Socket>(h);
    s.send_slice(&data).unwrap();
    s.close();
    for _ in 0..20 {
        n.step(&mut [(id, &mut host)]);
    }
    assert_eq!(n.relay.flow_counts().tcp, 1, "the flow waits for the host");
    assert!(host.got.is_empty());
    // The host socket turns writable: its event pumps the flow.
    host.block_writes = false;
    let _ = n.relay.pump(n.now, id, &mut host);
    for _ in 0..20 {
        n.step(&mut [(id, &mut host)]);
    }
    assert_eq!(
        host.got.len(),
        data.len(),
        "everything sent before the FIN arrived"
    );
    assert!(host.got == data);
    assert!(host.shut);
    assert_eq!(n.relay.flow_counts().tcp, 0);
}

#[test]
fn a_tiny_mss_is_raised_before_it_sizes_superframes() {
    let mut r = with_ctr(Relay::new(
        relay_cfg(FlowLimits::default(), false),
        Duration::ZERO,
    ));
    // A SYN with MSS 1.
    let mut tcp = vec![0u8; 24];
    tcp[0..2].copy_from_slice(&40200u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    tcp[20..24].copy_from_slice(&[2, 4, 0, 1]);
    let f = eth_ip(CTR, REMOTE, PROTO_TCP, &tcp);
    r.input(Duration::ZERO, &f, false, &Isolation::default());
    let Some(Event::Connect { id, .. }) = r.poll_event() else {
        panic!("a connect")
    };
    assert_eq!(r.flows.by_id[&id].mss, super::tcp::MIN_MSS);
}

#[test]
fn window_updates_after_the_containers_fin_are_honoured_at_once() {
    // The container sends its request and closes its side first; the host answers
    // with far more than the container's window, then ends. Every time the container
    // frees its window the relay must go on at once, not after a zero-window probe.
    // The relay buffers more than the container's window (256 KiB), so the window
    // closes while the relay has the host's end and bytes still to send.
    let mut n = Net::new(RelayConfig {
        tcp_buffer: 1 << 20,
        ..relay_cfg(FlowLimits::default(), false)
    });
    let h = n.dial(REMOTE, 80, 40300);
    n.step(&mut []);
    let (id, _, _) = n.connect_event();
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    let down: Vec<u8> = (0..3_000_000u32).map(|i| (i * 11 % 249) as u8).collect();
    let mut host = MemHost {
        to_ctr: down.iter().copied().collect(),
        eof: true,
        ..Default::default()
    };
    let s = n.sockets.get_mut::<stcp::Socket>(h);
    s.send_slice(b"GET").unwrap();
    s.close();
    let start = n.now;
    let mut got = Vec::new();
    for _ in 0..200 {
        n.step(&mut [(id, &mut host)]);
        let s = n.sockets.get_mut::<stcp::Socket>(h);
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if got.len() == down.len() && n.relay.flow_counts().tcp == 0 {
            break;
        }
    }
    assert_eq!(got.len(), down.len());
    assert!(got == down, "host → container bytes differ");
    assert_eq!(host.got, b"GET");
    assert_eq!(n.relay.flow_counts().tcp, 0, "the flow ended");
    // Simulated time: a single zero-window probe would have cost a second.
    let took = n.now - start;
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Sequence, acknowledgement and window fields of the TCP segment in an Ethernet frame.
fn tcp_fields(frame: &[u8]) -> (u32, u32, u16) {
    let ip = &frame[14..];
    let t = &ip[usize::from(ip[0] & 0x0f) * 4..];
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (
        be32(&t[4..]),
        be32(&t[8..]),
        u16::from_be_bytes([t[14], t[15]]),
    )
}

#[test]
fn bytes_beyond_the_advertised_window_do_not_crash_the_relay() {
    // The relay's window is scaled (64 KiB buffer: shift 1), so what it advertises is
    // rounded down. A container may send past the advertised edge (a bad sender, or a
    // good one using an earlier, larger advertisement). smoltcp 0.12 takes such bytes
    // when they fit its buffer, and panics computing its next window if an ACK is
    // still owed; the relay never delays its ACKs, so it goes on.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.dial(REMOTE, 80, 40400);
    n.step(&mut []);
    let (id, _, _) = n.connect_event();
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    // The host takes nothing: everything stays in the relay's receive buffer.
    let mut host = MemHost {
        block_writes: true,
        ..Default::default()
    };
    n.sockets
        .get_mut::<stcp::Socket>(h)
        .send_slice(b"x")
        .unwrap();
    n.step(&mut [(id, &mut host)]);
    let segment = |seq: u32, ack: u32, len: usize| {
        let mut t = vec![0u8; 20 + len];
        t[0..2].copy_from_slice(&40400u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x10;
        t[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        t[20..].fill(b'y');
        eth_ip(CTR, REMOTE, PROTO_TCP, &t)
    };
    // 40,000 bytes: 40,001 buffered, 25,535 free, advertised as 12,767 << 1 = 25,534.
    let (seq, ack, _) = tcp_fields(&n.last_from_relay);
    n.wire.from_ctr.push_back(segment(ack, seq, 40_000));
    n.step(&mut [(id, &mut host)]);
    let (seq, ack, win) = tcp_fields(&n.last_from_relay);
    let edge = usize::from(win) << 1;
    assert_eq!(edge, 25_534, "the relay's window is rounded down");
    // One byte past the advertised edge, and still inside the buffer.
    n.wire.from_ctr.push_back(segment(ack, seq, edge + 1));
    n.step(&mut [(id, &mut host)]);
    // The host thread asks for the next timer after each round.
    let _ = n.relay.poll_in(n.now);
    host.block_writes = false;
    let _ = n.relay.pump(n.now, id, &mut host);
    n.step(&mut [(id, &mut host)]);
    let _ = n.relay.poll_in(n.now);
    assert_eq!(host.got.len(), 1 + 40_000 + edge + 1);
}

#[test]
fn clients_shown_as_the_gateway_never_share_a_flow() {
    // 127.0.0.1:5000, 127.0.0.2:5000 and [::1]:5000 all map to the gateway with port
    // 5000: each gets a flow of its own, and replies go to the right one.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let mut u = sudp::Socket::new(
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
    );
    u.bind(5353).unwrap();
    let h = n.sockets.add(u);
    let ctr = SocketAddrV4::new(CTR, 5353);
    let clients: [SocketAddr; 3] = [
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.2:5000".parse().unwrap(),
        "[::1]:5000".parse().unwrap(),
    ];
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let id = n
            .relay
            .udp_inbound(n.now, *c, ctr, &[b'0' + i as u8])
            .unwrap();
        // The same client again: the same flow.
        assert_eq!(n.relay.udp_inbound(n.now, *c, ctr, b"+"), Some(id));
        ids.push(id);
        n.step(&mut []);
        let mut buf = [0u8; 16];
        let s = n.sockets.get_mut::<sudp::Socket>(h);
        let (len, meta) = s.recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..len], &[b'0' + i as u8]);
        let (len2, meta2) = s.recv_slice(&mut buf).unwrap();
        assert_eq!((&buf[..len2], meta2.endpoint), (&b"+"[..], meta.endpoint));
        assert_eq!(meta.endpoint.addr, IpAddress::Ipv4(GW));
        seen.push(meta.endpoint);
    }
    assert_eq!(seen[0].port, 5000, "the first keeps its own port");
    assert!(seen[1] != seen[0] && seen[2] != seen[0] && seen[1] != seen[2]);
    let mut uniq = ids.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), 3);
    // The container answers each: each answer comes out on its client's flow.
    for (i, ep) in seen.iter().enumerate() {
        n.sockets
            .get_mut::<sudp::Socket>(h)
            .send_slice(&[b'a' + i as u8], *ep)
            .unwrap();
    }
    n.step(&mut []);
    let mut got = n.datagrams.clone();
    got.sort();
    let mut want: Vec<(FlowId, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, vec![b'a' + i as u8]))
        .collect();
    want.sort();
    assert_eq!(got, want);

    // TCP: a second loopback client with the same port gets a connection too.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h1 = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h1).listen(8080).unwrap();
    let h2 = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h2).listen(8080).unwrap();
    let ctr = SocketAddrV4::new(CTR, 8080);
    let a = n
        .relay
        .tcp_inbound(n.now, clients[0], ctr, &mut n.budget)
        .unwrap();
    let b = n
        .relay
        .tcp_inbound(n.now, clients[2], ctr, &mut n.budget)
        .unwrap();
    let (mut ha, mut hb) = (MemHost::default(), MemHost::default());
    for _ in 0..5 {
        n.step(&mut [(a, &mut ha), (b, &mut hb)]);
    }
    let e1 = n.sockets.get::<stcp::Socket>(h1).remote_endpoint().unwrap();
    let e2 = n.sockets.get::<stcp::Socket>(h2).remote_endpoint().unwrap();
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h2).state(),
        stcp::State::Established
    );
    assert_eq!(
        (e1.addr, e2.addr),
        (IpAddress::Ipv4(GW), IpAddress::Ipv4(GW))
    );
    assert_ne!(e1.port, e2.port);
}

#[test]
fn flows_are_ready_when_a_segment_changed_their_socket() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.dial(REMOTE, 80, 40500);
    // Acknowledge at once, so that one step shows the relay each ACK.
    n.sockets.get_mut::<stcp::Socket>(h).set_ack_delay(None);
    n.step(&mut []);
    let (id, _, _) = n.connect_event();
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    n.step(&mut []);
    assert!(n.ready.contains(&id), "the handshake changed the socket");
    // Nothing moves: nothing to pump.
    n.ready.clear();
    n.step(&mut []);
    assert_eq!(n.ready, vec![]);
    // Bytes from the container, read where they lie.
    n.sockets
        .get_mut::<stcp::Socket>(h)
        .send_slice(b"one")
        .unwrap();
    n.step(&mut []);
    assert_eq!(n.ready, vec![id], "once, however many segments");
    // Bytes behind a segment queued for smoltcp (an ACK for no connection): the same.
    let mut stray = vec![0u8; 20];
    stray[0..2].copy_from_slice(&40999u16.to_be_bytes());
    stray[2..4].copy_from_slice(&80u16.to_be_bytes());
    stray[12] = 5 << 4;
    stray[13] = 0x10;
    n.wire
        .from_ctr
        .push_back(eth_ip(CTR, REMOTE, PROTO_TCP, &stray));
    n.sockets
        .get_mut::<stcp::Socket>(h)
        .send_slice(b"two")
        .unwrap();
    n.ready.clear();
    n.step(&mut []);
    assert_eq!(n.ready, vec![id]);
    // Host bytes sent and acknowledged: room again, ready again.
    let mut host = MemHost {
        to_ctr: b"answer".iter().copied().collect(),
        ..Default::default()
    };
    assert_eq!(n.relay.pump(n.now, id, &mut host), Pumped::Open);
    assert_eq!(host.got, b"onetwo");
    n.ready.clear();
    n.step(&mut []);
    assert_eq!(n.ready, vec![id]);
    // A reset from the container: ready, and the pump ends the flow.
    n.sockets.get_mut::<stcp::Socket>(h).abort();
    n.ready.clear();
    n.step(&mut []);
    assert_eq!(n.ready, vec![id]);
    assert_eq!(
        n.relay.pump(n.now, id, &mut host),
        Pumped::Closed { reset: true }
    );
    assert_eq!(n.relay.flow_counts(), FlowCounts::default());
}

/// A UDP datagram from `src_mac`/`src` port 5353 to `dst`:53, in an Ethernet frame.
fn udp_frame(src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x14, 0xe9, 0, 53, 0, 0, 0, 0];
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(payload);
    let mut f = eth_ip(src, dst, PROTO_UDP, &udp);
    f[6..12].copy_from_slice(&src_mac.0);
    f
}

#[test]
fn a_spoofed_source_does_not_divert_replies_to_the_real_owner() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let owner = MacAddr::from_ipv4(CTR);
    let attacker = MacAddr::from_ipv4(Ipv4Addr::new(10, 0, 0, 9));
    // The real owner of 10.0.0.2 opens a UDP flow.
    n.relay.input(
        n.now,
        &udp_frame(owner, CTR, REMOTE, b"query"),
        false,
        &n.isolation,
    );
    let (id, _, _) = {
        while let Some(e) = n.relay.poll_event() {
            n.events.push(e);
        }
        n.connect_event()
    };
    n.relay.connected(n.now, id, Ok(()), &mut n.budget);
    // A neighbour sends one frame with the owner's address and its own MAC.
    n.relay.input(
        n.now,
        &udp_frame(attacker, CTR, REMOTE, b"spoof"),
        false,
        &n.isolation,
    );
    // The reply, and a published connection to the owner, go to the owner's MAC.
    assert!(n.relay.datagram_from_host(n.now, id, b"answer"));
    n.relay
        .tcp_inbound(
            n.now,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 50001).into(),
            SocketAddrV4::new(CTR, 8080),
            &mut n.budget,
        )
        .unwrap();
    n.relay.poll(n.now);
    let mut out = vec![0u8; 14 + 65535];
    let mut frames = 0;
    while let Some(f) = n.relay.next_frame(&mut out) {
        frames += 1;
        let to = MacAddr(out[..6].try_into().unwrap());
        assert_eq!(to, owner, "frame of {} bytes to {to:?}", f.len);
    }
    assert_eq!(frames, 2, "the reply and the SYN");
    // And a frame from an address no endpoint has is not relayed at all.
    let stranger = Ipv4Addr::new(10, 0, 0, 77);
    n.relay.input(
        n.now,
        &udp_frame(MacAddr::from_ipv4(stranger), stranger, REMOTE, b"who"),
        false,
        &n.isolation,
    );
    assert!(n.relay.poll_event().is_none(), "no flow for a stranger");
    let c = n.relay.counters().snapshot();
    assert_eq!((c.drop_spoofed_source, c.drop_unknown_source), (1, 1));
    // An endpoint that is gone gets nothing more.
    n.relay.remove_endpoint(CTR);
    assert!(n.relay.datagram_from_host(n.now, id, b"late"));
    n.relay.poll(n.now);
    assert!(n.relay.next_frame(&mut out).is_none());
    assert_eq!(n.relay.counters().snapshot().drop_no_endpoint, 1);
}

#[test]
fn a_remote_client_flooding_a_published_udp_port_leaves_egress_working() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    // One remote client, a datagram from each of 2,048 source ports.
    let client = Ipv4Addr::new(192, 0, 2, 50);
    let mut taken = 0;
    for port in 0..2048u16 {
        let from = SocketAddrV4::new(client, 10000 + port);
        if n.relay
            .udp_inbound(n.now, from.into(), SocketAddrV4::new(CTR, 53), b"x")
            .is_some()
        {
            taken += 1;
        }
    }
    assert!(taken < 2048, "one client is bounded ({taken} flows)");
    let limits = FlowLimits::default();
    assert_eq!(taken, limits.inbound_per_client);
    let c = n.relay.counters().snapshot();
    assert_eq!(c.inbound_client_limit as usize, 2048 - taken);
    assert_eq!(c.udp_limit, 0, "the containers' budget was not touched");
    // Another client still gets in; so does the host itself, uncapped.
    let other = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 51), 1000);
    assert!(
        n.relay
            .udp_inbound(n.now, other.into(), SocketAddrV4::new(CTR, 53), b"x")
            .is_some()
    );
    for port in 0..300u16 {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 20000 + port);
        assert!(
            n.relay
                .udp_inbound(n.now, lo.into(), SocketAddrV4::new(CTR, 53), b"x")
                .is_some()
        );
    }
    // The container's own DNS query still leaves.
    let mut s = sudp::Socket::new(
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
    );
    s.bind(5300).unwrap();
    let h = n.sockets.add(s);
    n.sockets
        .get_mut::<sudp::Socket>(h)
        .send_slice(b"query", IpEndpoint::new(IpAddress::Ipv4(REMOTE), 53))
        .unwrap();
    n.step(&mut []);
    let (_, proto, dst) = n.connect_event();
    assert_eq!((proto, dst), (Proto::Udp, SocketAddrV4::new(REMOTE, 53)));
}

#[test]
fn idle_published_tcp_connections_end_after_two_hours_four_minutes() {
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let h = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h).listen(8080).unwrap();
    let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 50001);
    let id = n
        .relay
        .tcp_inbound(
            n.now,
            client.into(),
            SocketAddrV4::new(CTR, 8080),
            &mut n.budget,
        )
        .unwrap();
    let mut host = MemHost::default();
    n.step(&mut [(id, &mut host)]);
    assert_eq!(
        n.sockets.get::<stcp::Socket>(h).state(),
        stcp::State::Established
    );
    // RFC 5382 REQ-5: not less than 2 h 4 min.
    n.now += Duration::from_secs(2 * 3600 + 4 * 60 - 1);
    n.step(&mut []);
    assert_eq!(n.relay.flow_counts().tcp, 1);
    n.now += Duration::from_secs(2);
    n.step(&mut []);
    assert_eq!(n.relay.flow_counts().tcp, 0, "the idle inbound flow ended");
    assert!(n.events.contains(&Event::Close { id, reset: true }));
    let c = n.relay.counters().snapshot();
    assert_eq!((c.expired, c.tcp_inbound_expired), (1, 1));
}

#[test]
fn inbound_and_outbound_flows_have_budgets_of_their_own() {
    let limits = FlowLimits {
        tcp: 1,
        udp: 1,
        tcp_inbound: 2,
        udp_inbound: 2,
        inbound_per_client: 1,
        ..FlowLimits::default()
    };
    let mut n = Net::new(relay_cfg(limits, false));
    let ctr = SocketAddrV4::new(CTR, 8080);
    let client =
        |i: u8, port: u16| SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, i), port));
    // Inbound UDP: one flow per client, two in all.
    assert!(
        n.relay
            .udp_inbound(n.now, client(1, 1), ctr, b"a")
            .is_some()
    );
    assert!(
        n.relay
            .udp_inbound(n.now, client(1, 2), ctr, b"a")
            .is_none()
    );
    assert!(
        n.relay
            .udp_inbound(n.now, client(2, 1), ctr, b"a")
            .is_some()
    );
    assert!(
        n.relay
            .udp_inbound(n.now, client(3, 1), ctr, b"a")
            .is_none()
    );
    // Inbound TCP likewise, the UDP flows not counted.
    assert!(
        n.relay
            .tcp_inbound(n.now, client(4, 1), ctr, &mut n.budget)
            .is_some()
    );
    assert!(
        n.relay
            .tcp_inbound(n.now, client(4, 2), ctr, &mut n.budget)
            .is_none()
    );
    assert!(
        n.relay
            .tcp_inbound(n.now, client(5, 1), ctr, &mut n.budget)
            .is_some()
    );
    assert!(
        n.relay
            .tcp_inbound(n.now, client(6, 1), ctr, &mut n.budget)
            .is_none()
    );
    let c = n.relay.counters().snapshot();
    assert_eq!(
        (
            c.udp_inbound_limit,
            c.tcp_inbound_limit,
            c.inbound_client_limit
        ),
        (1, 1, 2)
    );
    // The container's own flows have their budget whole.
    n.relay.input(
        n.now,
        &udp_frame(MacAddr::from_ipv4(CTR), CTR, REMOTE, b"query"),
        false,
        &n.isolation,
    );
    n.dial(REMOTE, 80, 40000);
    n.step(&mut []);
    let opened: Vec<Proto> = n
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connect { proto, .. } => Some(*proto),
            Event::Close { .. } => None,
        })
        .collect();
    assert_eq!(opened.len(), 2, "{opened:?}");
    let c = n.relay.counters().snapshot();
    assert_eq!((c.udp_limit, c.tcp_limit), (0, 0));
}

#[test]
fn flow_buffers_stay_within_the_hosts_budget_windows_shrinking_first() {
    // 64 KiB per direction configured; room for four such flows.
    let mut n = Net::new(relay_cfg(FlowLimits::default(), false));
    let limit = 8 * 64 * 1024;
    n.budget = Budget::new(limit);
    let h = n.tcp_socket();
    n.sockets.get_mut::<stcp::Socket>(h).listen(8080).unwrap();
    let ctr = SocketAddrV4::new(CTR, 8080);
    let mut windows = Vec::new();
    let mut ids = Vec::new();
    let mut out = vec![0u8; 14 + 65535];
    for port in 0..40u16 {
        let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 40000 + port);
        let Some(id) = n
            .relay
            .tcp_inbound(n.now, client.into(), ctr, &mut n.budget)
        else {
            break;
        };
        ids.push(id);
        assert!(n.budget.used() <= limit, "{} > {limit}", n.budget.used());
        assert_eq!(n.relay.reserved(), n.budget.used());
        // The SYN toward the container: its window (never scaled in a SYN) is the
        // receive buffer the flow got.
        n.relay.poll(n.now);
        let f = n.relay.next_frame(&mut out).expect("a SYN");
        windows.push(tcp_fields(&out[..f.len]).2);
        while n.relay.next_frame(&mut out).is_some() {}
    }
    assert_eq!(
        windows.first(),
        Some(&65535),
        "full size while there is room"
    );
    assert!(
        windows.windows(2).all(|w| w[1] <= w[0]),
        "windows only shrink: {windows:?}"
    );
    assert_eq!(
        windows.last().copied(),
        Some(MIN_TCP_BUFFER as u16),
        "{windows:?}"
    );
    assert!(ids.len() < 40, "refused at last");
    let c = n.relay.counters().snapshot();
    assert!(c.budget_backpressure > 0);
    assert_eq!(c.drop_budget, 1, "refused only once nothing fits");
    // The flows end (their host side went away): after the host thread's settle, a new
    // flow has its full window again.
    for id in ids {
        n.relay.end_flow(n.now, id);
    }
    n.relay.settle(&mut n.budget);
    assert_eq!((n.budget.used(), n.relay.reserved()), (0, 0));
    // (The resets toward the container.)
    while n.relay.next_frame(&mut out).is_some() {}
    let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 40000);
    n.relay
        .tcp_inbound(n.now, client.into(), ctr, &mut n.budget)
        .expect("room again");
    n.relay.poll(n.now);
    let f = n.relay.next_frame(&mut out).expect("a SYN");
    assert_eq!(tcp_fields(&out[..f.len]).2, 65535);
}

mod dns {
    //! The network's DNS server at the gateway address, as the container reaches it.

    use std::sync::Arc;

    use simple_dns::rdata::RData;
    use simple_dns::{Packet, RCODE};

    use super::*;
    use crate::dns::{DnsConfig, Names};

    const DB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const RESOLVER: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 53), 53));

    /// A query (RD set) for `name`, type A, id `id`.
    pub(super) fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    /// An answer's id, code and A records.
    pub(super) fn answer(msg: &[u8]) -> (u16, RCODE, Vec<Ipv4Addr>) {
        let p = Packet::parse(msg).expect("a DNS message");
        let a = p
            .answers
            .iter()
            .filter_map(|r| match &r.rdata {
                RData::A(a) => Some(Ipv4Addr::from(a.address)),
                _ => None,
            })
            .collect();
        (p.id(), p.rcode(), a)
    }

    /// Names with `db` at 10.0.0.3 and the container at 10.0.0.2 on network `n1`.
    fn names() -> Arc<Names> {
        let mut n = Names::new();
        n.add_network("n1", "pets", true);
        n.add_endpoint("n1", "ctr-id", CTR, &["web"]);
        n.add_endpoint("n1", "db-id", DB, &["db"]);
        Arc::new(n)
    }

    fn dns_net(internal: bool, host_loopback: bool) -> Net {
        let mut cfg = relay_cfg(FlowLimits::default(), host_loopback);
        cfg.gateway.internal = internal;
        cfg.dns = dns_config("n1", !internal);
        let mut n = Net::new(cfg.clone());
        n.gateway = Gateway::with_relay(cfg.gateway);
        n.relay = with_ctr(Relay::with_dns(
            cfg,
            Duration::ZERO,
            names(),
            vec![RESOLVER],
            42,
        ));
        n
    }

    fn udp_sock(n: &mut Net, port: u16) -> smoltcp::iface::SocketHandle {
        let mut s = sudp::Socket::new(
            sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
            sudp::PacketBuffer::new(vec![sudp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        );
        s.bind(port).unwrap();
        n.sockets.add(s)
    }

    fn ask_udp(n: &mut Net, h: smoltcp::iface::SocketHandle, msg: &[u8]) {
        let gw53 = IpEndpoint::new(IpAddress::Ipv4(GW), 53);
        n.sockets
            .get_mut::<sudp::Socket>(h)
            .send_slice(msg, gw53)
            .unwrap();
    }

    fn recv_udp(n: &mut Net, h: smoltcp::iface::SocketHandle) -> Option<(Vec<u8>, IpEndpoint)> {
        let mut buf = [0u8; 4096];
        let (len, meta) = n
            .sockets
            .get_mut::<sudp::Socket>(h)
            .recv_slice(&mut buf)
            .ok()?;
        Some((buf[..len].to_vec(), meta.endpoint))
    }

    #[test]
    fn a_udp_query_to_the_gateway_is_answered_from_the_names_never_the_host() {
        // Even with host loopback, port 53 of the gateway is the network's server.
        let mut n = dns_net(false, true);
        let h = udp_sock(&mut n, 5353);
        ask_udp(&mut n, h, &query(0x1234, "db"));
        n.step(&mut []);
        let (msg, from) = recv_udp(&mut n, h).expect("an answer");
        assert_eq!(from, IpEndpoint::new(IpAddress::Ipv4(GW), 53));
        assert_eq!(answer(&msg), (0x1234, RCODE::NoError, vec![DB]));
        assert!(n.events.is_empty(), "no host socket: {:?}", n.events);
        assert_eq!(n.relay.flow_counts(), FlowCounts::default());
        let d = n.relay.dns_counters().snapshot();
        assert_eq!((d.queries, d.answered), (1, 1));
        // The answer frame went to the endpoint's MAC.
        assert_eq!(&n.last_from_relay[..6], &MacAddr::from_ipv4(CTR).0);
    }

    #[test]
    fn a_tcp_query_is_answered_with_its_length_in_front() {
        let mut n = dns_net(false, false);
        let h = n.dial(GW, 53, 41000);
        n.step(&mut []);
        assert_eq!(
            n.sockets.get::<stcp::Socket>(h).state(),
            stcp::State::Established
        );
        assert!(n.events.is_empty(), "no host connect: {:?}", n.events);
        assert_eq!(n.relay.dns_tcp_conns(), 1);
        // Two queries in one write, the second cut in two.
        let (q1, q2) = (query(1, "db"), query(2, "web.pets"));
        let mut bytes = Vec::new();
        for q in [&q1, &q2] {
            bytes.extend_from_slice(&(q.len() as u16).to_be_bytes());
            bytes.extend_from_slice(q);
        }
        let cut = bytes.len() - 5;
        n.sockets
            .get_mut::<stcp::Socket>(h)
            .send_slice(&bytes[..cut])
            .unwrap();
        n.step(&mut []);
        n.sockets
            .get_mut::<stcp::Socket>(h)
            .send_slice(&bytes[cut..])
            .unwrap();
        n.step(&mut []);
        let mut got = Vec::new();
        let s = n.sockets.get_mut::<stcp::Socket>(h);
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let len1 = usize::from(u16::from_be_bytes([got[0], got[1]]));
        let a1 = &got[2..2 + len1];
        let rest = &got[2 + len1..];
        let len2 = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        assert_eq!(rest.len(), 2 + len2);
        assert_eq!(answer(a1), (1, RCODE::NoError, vec![DB]));
        assert_eq!(answer(&rest[2..]), (2, RCODE::NoError, vec![CTR]));
        // The client closes: so does the server, and the connection is gone.
        n.sockets.get_mut::<stcp::Socket>(h).close();
        n.step(&mut []);
        assert_eq!(n.relay.dns_tcp_conns(), 0);
        let c = n.relay.counters().snapshot();
        assert_eq!(
            (c.dns_tcp_opened, c.dns_tcp_closed, c.tcp_opened),
            (1, 1, 0)
        );
    }

    #[test]
    fn pipelined_tcp_queries_beyond_the_window_are_all_answered() {
        let mut n = dns_net(false, false);
        let h = n.dial(GW, 53, 41010);
        n.step(&mut []);
        let mut bytes = Vec::new();
        for id in 0..700u16 {
            let q = query(id, "db");
            bytes.extend_from_slice(&(q.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&q);
        }
        assert!(bytes.len() > 3 * 4096);
        let mut sent = 0;
        let mut got = Vec::new();
        for _ in 0..100 {
            let s = n.sockets.get_mut::<stcp::Socket>(h);
            if sent < bytes.len() && s.can_send() {
                sent += s.send_slice(&bytes[sent..]).unwrap();
            }
            while s.can_recv() {
                s.recv(|b| {
                    got.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            n.step(&mut []);
        }
        let mut ids = Vec::new();
        let mut at = 0;
        while at + 2 <= got.len() {
            let len = usize::from(u16::from_be_bytes([got[at], got[at + 1]]));
            let (id, rcode, a) = answer(&got[at + 2..at + 2 + len]);
            assert_eq!((rcode, a), (RCODE::NoError, vec![DB]));
            ids.push(id);
            at += 2 + len;
        }
        assert_eq!(ids, (0..700).collect::<Vec<u16>>());
    }

    #[test]
    fn idle_dns_connections_close_after_ten_seconds_and_count_as_tcp_flows() {
        let limits = FlowLimits {
            tcp: 1,
            ..FlowLimits::default()
        };
        let mut cfg = relay_cfg(limits, false);
        cfg.dns = dns_config("n1", true);
        let mut n = Net::new(cfg.clone());
        n.gateway = Gateway::with_relay(cfg.gateway);
        n.relay = with_ctr(Relay::with_dns(cfg, Duration::ZERO, names(), vec![], 1));
        let h = n.dial(GW, 53, 41001);
        n.step(&mut []);
        assert_eq!(n.relay.dns_tcp_conns(), 1);
        // The one TCP flow allowed is taken: another connection is reset.
        let h2 = n.dial(REMOTE, 80, 41002);
        n.step(&mut []);
        assert!(n.events.is_empty());
        assert_eq!(
            n.sockets.get::<stcp::Socket>(h2).state(),
            stcp::State::Closed
        );
        assert_eq!(n.relay.counters().snapshot().tcp_limit, 1);
        // Ten seconds of nothing: the server closes (a FIN); the client never does,
        // so ten more and it is reset.
        n.now += DNS_TCP_IDLE + Duration::from_secs(1);
        n.step(&mut []);
        assert_eq!(
            n.sockets.get::<stcp::Socket>(h).state(),
            stcp::State::CloseWait
        );
        n.now += DNS_TCP_IDLE + Duration::from_secs(1);
        n.step(&mut []);
        assert_eq!(n.relay.dns_tcp_conns(), 0);
        assert_eq!(
            n.sockets.get::<stcp::Socket>(h).state(),
            stcp::State::Closed
        );
        assert_eq!(n.relay.counters().snapshot().dns_tcp_closed, 1);
    }

    #[test]
    fn other_names_are_forwarded_and_the_resolvers_answer_delivered() {
        let mut n = dns_net(false, false);
        let h = udp_sock(&mut n, 5354);
        ask_udp(&mut n, h, &query(0x4242, "example.com"));
        n.step(&mut []);
        let (to, fwd) = n.relay.next_dns_forward().expect("a forwarded query");
        assert_eq!(to, RESOLVER);
        assert!(n.relay.next_dns_forward().is_none());
        assert!(n.events.is_empty(), "no flow: {:?}", n.events);
        // The resolver answers under the forwarded id, with the same question.
        let mut reply = fwd.clone();
        reply[2] |= 0x80;
        reply[3] |= 0x80;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        // From anyone else, it is not taken.
        let stranger = SocketAddr::from(([192, 0, 2, 99], 53));
        n.relay.dns_upstream(n.now, stranger, &reply);
        n.relay.dns_upstream(n.now, RESOLVER, &reply);
        n.step(&mut []);
        let (msg, _) = recv_udp(&mut n, h).expect("the answer");
        assert_eq!(
            answer(&msg),
            (
                0x4242,
                RCODE::NoError,
                vec![Ipv4Addr::new(93, 184, 216, 34)]
            )
        );
        assert!(recv_udp(&mut n, h).is_none());
        let d = n.relay.dns_counters().snapshot();
        assert_eq!((d.forwarded, d.forward_answers, d.stray), (1, 1, 1));
        assert_eq!(n.relay.poll_in(n.now), None, "nothing waits any more");
    }

    #[test]
    fn a_resolver_that_never_answers_gives_servfail_over_tcp_too() {
        let mut n = dns_net(false, false);
        let h = n.dial(GW, 53, 41003);
        n.step(&mut []);
        let q = query(7, "example.org");
        let mut bytes = (q.len() as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(&q);
        n.sockets
            .get_mut::<stcp::Socket>(h)
            .send_slice(&bytes)
            .unwrap();
        n.step(&mut []);
        assert!(n.relay.next_dns_forward().is_some());
        // The relay wants to be polled by the timeout.
        let due = n.relay.poll_in(n.now).expect("a timer");
        assert!(due <= crate::dns::FORWARD_TIMEOUT, "{due:?}");
        n.now += crate::dns::FORWARD_TIMEOUT + Duration::from_millis(1);
        n.step(&mut []);
        let mut got = Vec::new();
        let s = n.sockets.get_mut::<stcp::Socket>(h);
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        assert!(got.len() > 2, "an answer");
        assert_eq!(answer(&got[2..]).1, RCODE::ServerFailure);
        assert_eq!(n.relay.dns_counters().snapshot().timeouts, 1);
    }

    #[test]
    fn an_internal_network_answers_dns_and_opens_nothing() {
        let mut n = dns_net(true, true);
        let h = udp_sock(&mut n, 5355);
        ask_udp(&mut n, h, &query(9, "db"));
        ask_udp(&mut n, h, &query(10, "example.com"));
        n.step(&mut []);
        let (a1, _) = recv_udp(&mut n, h).expect("an answer");
        assert_eq!(answer(&a1), (9, RCODE::NoError, vec![DB]));
        let (a2, _) = recv_udp(&mut n, h).expect("an answer");
        assert_eq!(answer(&a2).1, RCODE::NameError, "nothing forwarded");
        assert!(n.relay.next_dns_forward().is_none());
        // TCP DNS works; TCP and UDP anywhere else, the gateway's other ports (even
        // with host loopback) and pings open nothing.
        let t = n.dial(GW, 53, 41004);
        n.dial(GW, 80, 41005);
        n.dial(REMOTE, 80, 41006);
        n.step(&mut []);
        assert_eq!(
            n.sockets.get::<stcp::Socket>(t).state(),
            stcp::State::Established
        );
        // Frames the gateway would have dropped, given to the relay straight.
        for f in [
            udp_frame(MacAddr::from_ipv4(CTR), CTR, REMOTE, b"x"),
            eth_ip(CTR, GW, PROTO_TCP, &[0; 20]),
            eth_ip(CTR, REMOTE, PROTO_ICMP, &[8, 0, 0, 0, 0, 1, 0, 1]),
        ] {
            n.relay.input(n.now, &f, false, &n.isolation);
        }
        n.step(&mut []);
        assert!(n.events.is_empty(), "{:?}", n.events);
        assert!(n.datagrams.is_empty());
        assert_eq!(n.relay.flow_counts(), FlowCounts::default());
        let c = n.relay.counters().snapshot();
        assert_eq!(c.drop_internal, 3);
        // Published ports are refused too.
        let client = SocketAddr::from(([192, 0, 2, 1], 4000));
        assert!(
            n.relay
                .udp_inbound(n.now, client, SocketAddrV4::new(CTR, 80), b"x")
                .is_none()
        );
        assert!(
            n.relay
                .tcp_inbound(n.now, client, SocketAddrV4::new(CTR, 80), &mut n.budget)
                .is_none()
        );
        assert_eq!(n.relay.counters().snapshot().drop_internal, 5);
        let g = n.gateway.snapshot();
        assert!(g.drop_internal >= 1 && g.drop_unsupported >= 1, "{g:?}");
    }

    #[test]
    fn a_flood_from_one_sandbox_is_dropped_without_starving_another() {
        let mut cfg = relay_cfg(FlowLimits::default(), false);
        cfg.dns = DnsConfig {
            rate: 10,
            burst: 10,
            ..dns_config("n1", true)
        };
        let mut r = with_ctr(Relay::with_dns(cfg, Duration::ZERO, names(), vec![], 1));
        r.set_endpoint(DB, MacAddr::from_ipv4(DB));
        let q = query(1, "web");
        let flood = udp_frame(MacAddr::from_ipv4(CTR), CTR, GW, &q);
        let iso = Isolation::default();
        for _ in 0..10_000 {
            r.input(Duration::ZERO, &flood, false, &iso);
        }
        let mut out = vec![0u8; 14 + 65535];
        let mut answers = 0;
        r.poll(Duration::ZERO);
        while r.next_frame(&mut out).is_some() {
            answers += 1;
        }
        assert!(answers <= 20, "{answers}");
        let d = r.dns_counters().snapshot();
        assert!(d.rate_limited >= 9_980, "{d:?}");
        // Another sandbox of the network is answered at once.
        let other = udp_frame(MacAddr::from_ipv4(DB), DB, GW, &query(2, "web"));
        r.input(Duration::ZERO, &other, false, &iso);
        r.poll(Duration::ZERO);
        let f = r.next_frame(&mut out).expect("an answer");
        assert_eq!(&out[..6], &MacAddr::from_ipv4(DB).0);
        assert_eq!(answer(&out[42..f.len]), (2, RCODE::NoError, vec![CTR]));
    }

    #[test]
    fn names_set_later_answer_from_the_next_query() {
        let mut n = dns_net(false, false);
        let h = udp_sock(&mut n, 5356);
        let mut later = Names::new();
        later.add_network("n1", "pets", true);
        later.add_endpoint("n1", "ctr-id", CTR, &["web"]);
        later.add_endpoint("n1", "cache-id", Ipv4Addr::new(10, 0, 0, 9), &["cache"]);
        n.relay.set_dns_names(Arc::new(later));
        ask_udp(&mut n, h, &query(3, "cache"));
        n.step(&mut []);
        let (msg, _) = recv_udp(&mut n, h).expect("an answer");
        assert_eq!(
            answer(&msg),
            (3, RCODE::NoError, vec![Ipv4Addr::new(10, 0, 0, 9)])
        );
    }
}
