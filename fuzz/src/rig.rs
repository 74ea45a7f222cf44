//! A container (smoltcp on Ethernet), its network's gateway and relay, and an in-memory
//! host, stepped together on a fake clock: the setup of the relay's own tests
//! (`nat/src/relay/tests.rs`), rebuilt here because those helpers are private to that
//! crate's tests. The relay targets open real flows with it, then feed mutated frames.
//!
//! Every frame the relay writes passes [`Rig::check_frame`]; [`Rig::check`] holds the
//! flow bounds.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp as stcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use tapnet_nat::relay::{
    Budget, ConnectError, Event, FlowId, FlowLimits, HostStream, Isolation, Relay, RelayConfig,
};
use tapnet_nat::{Gateway, GatewayConfig, Outcome};
use tapnet_wire::{EthernetFrame, Ipv4Packet, MacAddr};

use crate::frames::{CTR, GW};

/// Flow bounds small enough for a fuzzer to reach (bounds added later keep their
/// defaults).
#[allow(clippy::needless_update)]
pub fn limits() -> FlowLimits {
    FlowLimits {
        tcp: 4,
        tcp_pending: 2,
        udp: 4,
        icmp: 2,
        tcp_inbound: 4,
        udp_inbound: 4,
        inbound_per_client: 2,
        ..FlowLimits::default()
    }
}

/// The rig's flow memory: three TCP flows with 16 KiB each way.
const RIG_FLOW_MEMORY: usize = 3 * 2 * 16 * 1024;

/// Rounds of [`Rig::step`] at most: frames between the container and the relay.
const STEP_ROUNDS: usize = 16;

/// The gateway of the fuzzed network.
pub fn gw_cfg() -> GatewayConfig {
    GatewayConfig {
        mac: MacAddr::from_ipv4(GW),
        ip: GW,
        prefix_len: 24,
        internal: false,
    }
}

/// The relay of the fuzzed network: MTU 1500, small flow bounds, 16 KiB per direction
/// of a TCP flow.
pub fn relay_cfg(host_loopback: bool) -> RelayConfig {
    RelayConfig {
        gateway: gw_cfg(),
        mtu: 1500,
        host_loopback,
        limits: limits(),
        tcp_buffer: 16 * 1024,
        dns: tapnet_nat::relay::dns_config("fuzz", true),
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
        c.max_transmission_unit = 1514;
        // The relay leaves TCP checksums partial, as a TAP with offloads takes them.
        let mut cs = phy::ChecksumCapabilities::default();
        cs.tcp = phy::Checksum::None;
        c.checksum = cs;
        c
    }
}

/// A host stream in memory: what the host sends the container, and what it got.
#[derive(Default)]
pub struct MemHost {
    /// Bytes the host has for the container.
    pub to_ctr: VecDeque<u8>,
    /// The host closed its side after `to_ctr`.
    pub eof: bool,
    /// Bytes the host got (only counted: the fuzzer sends many).
    pub got: usize,
    /// The relay shut the host's write side.
    pub shut: bool,
    /// Writes are refused (a full socket buffer).
    pub block_writes: bool,
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
        self.got += buf.len();
        Ok(buf.len())
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

/// The container, its gateway and relay, and the host side of one TCP flow.
pub struct Rig {
    /// The fake clock.
    pub now: Duration,
    wire: Wire,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The network's gateway port (ARP, ICMP, and the decision to route).
    pub gateway: Gateway,
    /// The relay under test.
    pub relay: Relay,
    /// Memory for the relay's TCP buffers: room for three flows of 16 KiB each way,
    /// so the fuzzer reaches the refusal when it is spent.
    pub budget: Budget,
    /// The host's other networks.
    pub isolation: Isolation,
    /// Connects the relay asked for and nobody answered yet.
    pub pending: Vec<FlowId>,
    /// The host stream of every TCP flow the host side knows.
    pub hosts: Vec<(FlowId, MemHost)>,
    /// Flows the relay closed since the owner of the rig last cleared this.
    pub closed: Vec<FlowId>,
    /// Datagrams the relay sent the host (counted).
    pub datagrams: usize,
    /// The last frame the container sent toward the relay (a template to mutate).
    pub last_from_ctr: Vec<u8>,
    out: Vec<u8>,
}

impl Rig {
    /// A fresh network at time zero, nothing open.
    pub fn new(host_loopback: bool) -> Rig {
        let mut wire = Wire::default();
        let mac = MacAddr::from_ipv4(CTR);
        let mut icfg = Config::new(EthernetAddress(mac.0).into());
        icfg.random_seed = 7;
        let mut iface = Interface::new(icfg, &mut wire, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(CTR), 24));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(GW);
        let cfg = relay_cfg(host_loopback);
        Rig {
            now: Duration::ZERO,
            wire,
            iface,
            sockets: SocketSet::new(Vec::new()),
            gateway: Gateway::with_egress(cfg.gateway),
            relay: {
                let mut relay = Relay::new(cfg, Duration::ZERO);
                // The daemon's endpoint table: the container is the network's endpoint.
                relay.set_endpoint(CTR, MacAddr::from_ipv4(CTR));
                relay
            },
            budget: Budget::new(RIG_FLOW_MEMORY),
            isolation: Isolation::default(),
            pending: Vec::new(),
            hosts: Vec::new(),
            closed: Vec::new(),
            datagrams: 0,
            last_from_ctr: Vec::new(),
            out: vec![0; 14 + 65535],
        }
    }

    /// A rig with one TCP flow from the container's port 40000 to `to:80`, connected on
    /// the host and established on both sides: its flow id and the container's socket.
    pub fn established(to: Ipv4Addr) -> (Rig, FlowId, SocketHandle) {
        let mut rig = Rig::new(false);
        let h = rig.dial(to, 80, 40000);
        rig.step();
        let id = rig.pending.pop().expect("the SYN asks for a host connect");
        rig.relay.connected(rig.now, id, Ok(()), &mut rig.budget);
        rig.hosts.push((id, MemHost::default()));
        rig.step();
        assert_eq!(
            rig.sockets.get::<stcp::Socket>(h).state(),
            stcp::State::Established
        );
        (rig, id, h)
    }

    /// A container socket connecting from `local_port` to `to:port`.
    pub fn dial(&mut self, to: Ipv4Addr, port: u16, local_port: u16) -> SocketHandle {
        let s = stcp::Socket::new(
            stcp::SocketBuffer::new(vec![0; 32 * 1024]),
            stcp::SocketBuffer::new(vec![0; 32 * 1024]),
        );
        let h = self.sockets.add(s);
        let cx = self.iface.context();
        // A port in use or an address smoltcp refuses leaves the socket closed.
        let _ = self.sockets.get_mut::<stcp::Socket>(h).connect(
            cx,
            (IpAddress::Ipv4(to), port),
            local_port,
        );
        h
    }

    /// The container's TCP socket `h`.
    pub fn socket(&mut self, h: SocketHandle) -> &mut stcp::Socket<'static> {
        self.sockets.get_mut::<stcp::Socket>(h)
    }

    /// Answers the oldest pending host connect.
    pub fn answer(&mut self, result: Result<(), ConnectError>) {
        if self.pending.is_empty() {
            return;
        }
        let id = self.pending.remove(0);
        self.relay.connected(self.now, id, result, &mut self.budget);
        if result.is_ok() {
            self.hosts.push((id, MemHost::default()));
        }
    }

    /// A frame from the container network, through the gateway as the engine routes it:
    /// what the gateway forwards goes to the relay, its replies back to the container.
    pub fn inject(&mut self, frame: &[u8], gso: bool) {
        let mut reply = [0u8; 2048];
        match self.gateway.handle(frame, &mut reply) {
            Outcome::Forward => self.relay.input(self.now, frame, gso, &self.isolation),
            Outcome::Reply(n) => {
                assert!(n <= reply.len());
                self.wire.to_ctr.push_back(reply[..n].to_vec());
            }
            Outcome::Consumed | Outcome::Drop(_) => {}
        }
    }

    /// Moves frames between the container and the relay until nothing moves (at most
    /// [`STEP_ROUNDS`] rounds, 1 ms each), pumping every TCP flow with its host stream.
    pub fn step(&mut self) {
        for _ in 0..STEP_ROUNDS {
            self.now += Duration::from_millis(1);
            let t = smoltcp::time::Instant::from_micros(self.now.as_micros() as i64);
            self.iface.poll(t, &mut self.wire, &mut self.sockets);
            let mut moved = false;
            while let Some(f) = self.wire.from_ctr.pop_front() {
                moved = true;
                self.inject(&f, false);
                self.last_from_ctr = f;
            }
            self.pump();
            moved |= self.drain();
            if !moved && self.wire.to_ctr.is_empty() {
                break;
            }
        }
    }

    /// Runs the relay's stack, pumps the TCP flows and collects what the relay sends.
    pub fn pump(&mut self) {
        self.relay.poll(self.now);
        self.relay.settle(&mut self.budget);
        assert!(
            self.budget.used() <= self.budget.limit(),
            "the relay holds more flow memory than its budget"
        );
        let mut ready = Vec::new();
        self.relay.take_ready(&mut ready);
        for (id, host) in &mut self.hosts {
            if ready.contains(id) || self.relay.wants_host_bytes(*id) || !host.to_ctr.is_empty() {
                let _ = self.relay.pump(self.now, *id, host);
            }
        }
        self.relay.poll(self.now);
        self.relay.settle(&mut self.budget);
        assert!(
            self.budget.used() <= self.budget.limit(),
            "the relay holds more flow memory than its budget"
        );
        // As the host thread does after each round (see `Relay::poll_in`).
        let _ = self.relay.poll_in(self.now);
    }

    /// Takes every frame, event and datagram the relay has: frames are checked and go to
    /// the container. Whether there was a frame.
    pub fn drain(&mut self) -> bool {
        let mut moved = false;
        while let Some(f) = self.relay.next_frame(&mut self.out) {
            moved = true;
            check_frame(&self.out, f);
            self.wire.to_ctr.push_back(self.out[..f.len].to_vec());
        }
        while let Some(e) = self.relay.poll_event() {
            match e {
                Event::Connect { id, .. } => self.pending.push(id),
                Event::Close { id, .. } => {
                    self.pending.retain(|p| *p != id);
                    self.hosts.retain(|(h, _)| *h != id);
                    if self.closed.len() < 1024 {
                        self.closed.push(id);
                    }
                }
            }
        }
        while self.relay.next_datagram().is_some() {
            self.datagrams += 1;
        }
        self.check();
        moved
    }

    /// The relay's flow bounds hold: the containers' flows and the published ports'
    /// each have a budget of their own.
    pub fn check(&self) {
        let (c, l) = (self.relay.flow_counts(), limits());
        assert!(c.tcp <= l.tcp + l.tcp_inbound, "{c:?}");
        assert!(c.udp <= l.udp + l.udp_inbound, "{c:?}");
        assert!(c.icmp <= l.icmp, "{c:?}");
    }
}

/// A frame the relay wrote is a well-formed IPv4 frame for the container network: it
/// fits the buffer, its IP header parses and its total length is the frame's, from the
/// gateway's MAC; a GSO superframe is TCP with its headers inside the frame.
pub fn check_frame(out: &[u8], f: tapnet_nat::relay::FrameOut) {
    assert!(f.len <= out.len(), "{f:?}");
    let frame = &out[..f.len];
    let eth = EthernetFrame::new_checked(frame).expect("relay frame has an Ethernet header");
    assert_eq!(
        eth.src_addr(),
        MacAddr::from_ipv4(GW),
        "from the gateway's MAC"
    );
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("relay frame is IPv4");
    assert_eq!(usize::from(ip.total_len()) + 14, f.len, "{f:?}");
    if f.gso_size > 0 {
        assert_eq!(ip.protocol(), crate::frames::PROTO_TCP);
        assert!(usize::from(f.hdr_len) <= f.len, "{f:?}");
        assert!(usize::from(f.l4_offset) < usize::from(f.hdr_len), "{f:?}");
    }
}

/// A SocketAddrV4 of the remote side of the fuzzed flows.
pub fn remote(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(crate::frames::REMOTE, port)
}
