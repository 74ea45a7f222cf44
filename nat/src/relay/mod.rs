//! Egress NAT and published ports of one network, without I/O.
//!
//! A [`Relay`] terminates the container side of every flow that leaves a network through
//! its gateway, and lets the caller carry the payload over ordinary host sockets:
//!
//! * **TCP** is terminated by a smoltcp interface in "any IP" mode: for each new
//!   connection a smoltcp socket listens on the very address and port the container
//!   asked for, so the container talks TCP to the remote it named while the bytes go
//!   through a host `TcpStream`. The container's SYN is held until the host connect has
//!   succeeded; a refused connect is answered with a reset, like a real refusal.
//! * **UDP** and **ICMP echo** are translated datagram by datagram: each flow is one
//!   connected host socket (a ping socket for ICMP).
//! * **Published ports** run the other way: a host connection or datagram is carried to
//!   the container from the client's own address and port (a loopback client, or an
//!   IPv6 one, appears as the gateway address with its port: the container can route
//!   back to it, and the network inside is IPv4).
//! * **DNS** to the gateway address (UDP and TCP port 53) is answered by the network's
//!   [`DnsServer`] inside the relay, never carried to a host socket; what it forwards
//!   the caller sends ([`Relay::next_dns_forward`], [`Relay::dns_upstream`]). On an
//!   internal network this is all the relay does.
//!
//! Why a terminating stack rather than translating segment by segment (as passt does):
//! the host kernel already runs TCP toward the remote, and on the container side the
//! link is in-memory and lossless, so a small stack with large windows is cheap. It also
//! lets the relay send the container **64 KiB superframes**: the container's MSS option
//! is raised before smoltcp sees it, and every larger segment leaves with a virtio-net
//! GSO header carrying the real MSS, so the TAP (or the engine's software segmentation)
//! cuts it. Checksums toward the container are left partial for the same reason.
//!
//! Nothing here does I/O, reads a clock or takes a lock (the counters are atomics other
//! threads may read): the caller passes `now`, frames in and out, the [`Isolation`]
//! table it keeps, and a [`HostStream`] for each TCP flow it pumps. Flow state is bounded
//! ([`FlowLimits`]: the containers' flows and the published ports' flows each have a
//! budget, and each client address a cap), and so is the memory of every relay of a
//! host together ([`Budget`], lent by the host thread); what a bound refuses is counted
//! in [`RelayCounters`]. Idle timeouts follow Linux conntrack's defaults, which Docker's
//! NAT inherits, except for published-port connections (RFC 5382's 2 h 4 min).
//!
//! Frames are addressed from the network's endpoint table, which the control plane
//! fills ([`Relay::set_endpoint`]): never from MACs seen in frames, and a frame from an
//! address that is no endpoint (or with another MAC than the endpoint's) is dropped.
//!
//! Cost to know: smoltcp finds a segment's socket by scanning the network's sockets, so
//! per-frame work grows with the number of open TCP flows (bounded by
//! [`FlowLimits::tcp`]).
//!
//! The files: this one holds the relay's state and its entry points; `flows` the flow
//! table (keys, ids, limits, idle timeouts, which flows are ready); `tcp` the TCP flows
//! and their pumping; `datagram` the UDP and ICMP echo flows; `device` smoltcp's view of
//! the container network; `emit` the frames that go to the container; `nameserver` the
//! network's DNS server at the gateway address (UDP and TCP port 53), `dnsstate` what
//! it keeps; `isolation`
//! Docker's isolation between networks; `bufpool` the TCP sockets' buffers; `budget` the
//! host-wide memory bound on them.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp as smol_tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tapnet_switch::MacAddr;
use tapnet_wire::{EtherType, EthernetFrame, Ipv4Packet, icmpv4, tcp as tcp_wire, udp};

use crate::GatewayConfig;
use crate::dns::{DnsConfig, DnsServer, Names};

mod budget;
mod bufpool;
mod datagram;
mod device;
mod dnsstate;
mod emit;
mod flows;
mod isolation;
mod nameserver;
mod tcp;
#[cfg(test)]
mod tests;

use bufpool::BufPool;
use device::{Dev, smol_now};
use dnsstate::Dns;
use flows::{Flow, FlowKind, Flows, SockMark, TcpState};

pub use budget::{Budget, DEFAULT_FLOW_MEMORY, MIN_TCP_BUFFER};
pub use datagram::HOST_QUEUE_BYTES;
pub use emit::FrameOut;
pub use flows::{FlowCounts, FlowId, FlowLimits, Proto, timeouts};
pub use isolation::Isolation;
pub use nameserver::{DNS_TCP_IDLE, dns_config};
pub use tcp::{HostStream, Pumped};

/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Socket buffer pairs kept spare per network: enough for connections that come one
/// after another, little memory when idle (the pages touched stay resident).
const SPARE_LEASES: usize = 4;

/// What one relay serves.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The network's gateway: its MAC and address are the relay's.
    pub gateway: GatewayConfig,
    /// The network's MTU (the containers' MSS is derived from it).
    pub mtu: u32,
    /// TCP and UDP to the gateway address go to the host's 127.0.0.1.
    pub host_loopback: bool,
    /// Flow bounds.
    pub limits: FlowLimits,
    /// Buffer per direction of one TCP connection, in bytes.
    pub tcp_buffer: usize,
    /// The network's DNS server at the gateway address ([`dns_config`] gives the
    /// defaults). On an internal network (`gateway.internal`) the relay answers DNS and
    /// nothing else: set `forward` false there.
    pub dns: DnsConfig,
}

/// What the relay asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a host socket for a new outbound flow, connect it to `dst` (the gateway
    /// address already mapped to 127.0.0.1 where asked), and report with
    /// [`Relay::connected`]. For ICMP `dst`'s port is 0.
    Connect {
        /// The flow.
        id: FlowId,
        /// Its transport.
        proto: Proto,
        /// Where the host socket connects.
        dst: SocketAddrV4,
    },
    /// The flow is over: close its host socket. For TCP, `reset` asks for an abortive
    /// close (the container reset the connection).
    Close {
        /// The flow.
        id: FlowId,
        /// Close with a reset (SO_LINGER 0) rather than a FIN.
        reset: bool,
    },
}

/// Why a host connect failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Refused: the container gets a TCP reset.
    Refused,
    /// Anything else (unreachable, timed out, not permitted): the container's attempt
    /// goes unanswered, as behind a firewall that drops.
    Failed,
}

tapnet_switch::counters! {
    /// Counters of one [`Relay`], written by its thread, readable from any.
    pub struct RelayCounters / RelayStats {
        /// Frames given to [`Relay::input`].
        frames_in,
        /// Frames handed out by [`Relay::next_frame`].
        frames_out,
        /// TCP connections opened (outbound, host connect succeeded).
        tcp_opened,
        /// TCP connections carried in through a published port.
        tcp_inbound,
        /// TCP connections whose host connect was refused, and connections to the
        /// gateway address without host loopback (each answered with a reset).
        tcp_refused,
        /// TCP connections whose host connect failed otherwise.
        tcp_failed,
        /// TCP connections that ended.
        tcp_closed,
        /// SYNs refused because `limits.tcp` or `limits.tcp_pending` was reached
        /// (answered with a reset).
        tcp_limit,
        /// Retransmitted SYNs of a connect still in progress.
        tcp_syn_pending,
        /// UDP flows opened.
        udp_opened,
        /// UDP datagrams refused because `limits.udp` was reached.
        udp_limit,
        /// ICMP echo flows opened.
        icmp_opened,
        /// Echo requests refused because `limits.icmp` was reached.
        icmp_limit,
        /// Flows ended by their idle timeout.
        expired,
        /// Packets toward another network's subnet, or toward an address never routed
        /// (loopback, reserved), dropped (networks are isolated).
        drop_isolated,
        /// Datagrams toward the host dropped because a queue was full.
        host_queue_full,
        /// Frames dropped as malformed (short headers, bad lengths).
        drop_malformed,
        /// IPv4 fragments (not reassembled).
        drop_fragment,
        /// Other protocols, ICMP other than echo requests, UDP superframes, UDP to
        /// the gateway address without host loopback.
        drop_unsupported,
        /// Datagrams from the host for a flow that no longer exists.
        drop_stale,
        /// Frames from an address that is no endpoint of the network (see
        /// [`Relay::set_endpoint`]): nothing is relayed for an address the daemon
        /// did not give out.
        drop_unknown_source,
        /// Frames from an endpoint's address with another MAC than the endpoint's
        /// (a neighbour spoofing its address).
        drop_spoofed_source,
        /// Frames toward the container network for an address that is no endpoint
        /// (any more): there is no MAC to send them to.
        drop_no_endpoint,
        /// Echo replies a flow's raw ICMP socket read under another flow's identifier
        /// (a raw socket sees every echo reply to the host), not delivered.
        icmp_foreign,
        /// ICMP echo flows that got no raw-socket identifier: all of the host's
        /// ([`RAW_IDENTS`](crate::icmp::RAW_IDENTS)) were in use.
        icmp_ident_limit,
        /// Published-port TCP connections refused because `limits.tcp_inbound` was
        /// reached (the client is reset).
        tcp_inbound_limit,
        /// Published-port UDP datagrams of a new client flow dropped because
        /// `limits.udp_inbound` was reached.
        udp_inbound_limit,
        /// Published-port connections and datagrams of a new flow refused because their
        /// client address had `limits.inbound_per_client` flows already.
        inbound_client_limit,
        /// Published-port TCP connections ended by their idle timeout
        /// ([`timeouts::TCP_INBOUND_ESTABLISHED`]); also counted in `expired`.
        tcp_inbound_expired,
        /// TCP flows given smaller buffers than configured (a smaller window) because
        /// the host's flow memory ([`Budget`]) ran low.
        budget_backpressure,
        /// TCP flows refused (reset) because not even the smallest buffers
        /// ([`MIN_TCP_BUFFER`]) fitted in the host's flow memory.
        drop_budget,
        /// DNS connections over TCP accepted at the gateway address's port 53 (they
        /// count against `limits.tcp`).
        dns_tcp_opened,
        /// DNS connections over TCP that ended (closed by the client, or idle for
        /// [`DNS_TCP_IDLE`]).
        dns_tcp_closed,
        /// Frames of an internal network other than DNS to the gateway address, and
        /// published-port traffic on one: an internal network's relay carries nothing
        /// to or from the host.
        drop_internal,
    }
}

/// Egress and published ports of one network (see the module docs).
pub struct Relay {
    cfg: RelayConfig,
    iface: Interface,
    /// Declared before `flows` and `pool`: its sockets borrow their buffers from the
    /// flows' leases, so they are dropped first (see `bufpool`).
    sockets: SocketSet<'static>,
    dev: Dev,
    flows: Flows,
    /// Spare socket buffers.
    pool: BufPool,
    /// The network's endpoints, address → MAC, as the control plane set them: the only
    /// source of the MACs frames are sent to, and of the addresses frames may come
    /// from. Never learned from frames (a spoofed source would divert replies).
    endpoints: HashMap<Ipv4Addr, MacAddr>,
    events: VecDeque<Event>,
    to_host: VecDeque<(FlowId, Vec<u8>)>,
    /// Bytes of the datagrams queued toward host sockets (`to_host` and the flows'
    /// pending ones), at most [`HOST_QUEUE_BYTES`].
    queued_bytes: usize,
    /// Bytes held from the host's [`Budget`] (given back ones included until settled).
    reserved: usize,
    /// Bytes freed since the last [`Relay::settle`].
    released: usize,
    last_sweep: Duration,
    counters: Arc<RelayCounters>,
    /// The network's DNS server and its connections.
    dns: Dns,
}

impl Relay {
    /// A relay for one network, at time `now`; its DNS server has no names and no
    /// resolvers yet (see [`Relay::with_dns`]).
    pub fn new(cfg: RelayConfig, now: Duration) -> Relay {
        let seed = u64::from(u32::from(cfg.gateway.ip)) ^ now.as_nanos() as u64;
        Relay::with_dns(cfg, now, Arc::new(Names::new()), Vec::new(), seed)
    }

    /// A relay for one network, at time `now`, whose DNS server answers from `names`
    /// and forwards to `upstreams` (both can be changed later:
    /// [`Relay::set_dns_names`], [`Relay::set_dns_upstreams`]); `seed`, random, seeds
    /// the ids of forwarded queries.
    pub fn with_dns(
        cfg: RelayConfig,
        now: Duration,
        names: Arc<Names>,
        upstreams: Vec<SocketAddr>,
        seed: u64,
    ) -> Relay {
        let server = DnsServer::new(cfg.dns.clone(), names, upstreams, seed);
        let mut dev = Dev::default();
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = u64::from(u32::from(cfg.gateway.ip)) ^ now.as_nanos() as u64;
        let mut iface = Interface::new(icfg, &mut dev, smol_now(now));
        let gw = cfg.gateway.ip;
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(
                IpAddress::Ipv4(gw),
                cfg.gateway.prefix_len.min(32),
            ));
        });
        // Any address is ours: with a default route through our own address, smoltcp's
        // any-IP mode accepts segments for every destination.
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
        iface.set_any_ip(true);
        let pool = BufPool::new(cfg.tcp_buffer, SPARE_LEASES);
        Relay {
            cfg,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            flows: Flows::new(),
            pool,
            endpoints: HashMap::new(),
            events: VecDeque::new(),
            to_host: VecDeque::new(),
            queued_bytes: 0,
            reserved: 0,
            released: 0,
            last_sweep: now,
            counters: Arc::default(),
            dns: Dns::new(server),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Its counters, shareable with other threads.
    pub fn counters(&self) -> Arc<RelayCounters> {
        Arc::clone(&self.counters)
    }

    /// Its counters, for the thread that owns the relay to count what it drops on the
    /// relay's behalf.
    pub fn counters_ref(&self) -> &RelayCounters {
        &self.counters
    }

    /// Give `budget` back what the relay freed since the last call (the host thread
    /// calls it once per pass; the calls that reserve memory do it first too).
    pub fn settle(&mut self, budget: &mut Budget) {
        budget.give(self.released);
        self.reserved -= self.released;
        self.released = 0;
    }

    /// Bytes it holds from the host's budget: give them back when the relay goes.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Reserve buffers for a new TCP flow from `budget`: the configured size, or a
    /// smaller one when memory runs low (counted), or `None` (counted).
    fn reserve_tcp(&mut self, budget: &mut Budget) -> Option<usize> {
        self.settle(budget);
        let want = self.pool.size();
        let Some(size) = budget.tcp_buffer(want) else {
            self.counters.drop_budget.inc();
            return None;
        };
        if !budget.take(2 * size) {
            self.counters.drop_budget.inc();
            return None;
        }
        self.reserved += 2 * size;
        if size < want {
            self.counters.budget_backpressure.inc();
        }
        Some(size)
    }

    /// Flows tracked now.
    pub fn flow_counts(&self) -> FlowCounts {
        self.flows.count
    }

    /// Endpoint `ip` of the network has MAC `mac` (the control plane calls this when
    /// it plugs or adopts an endpoint): frames to `ip` go to `mac`, and frames from
    /// `ip` are relayed only when they come from `mac`.
    pub fn set_endpoint(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.endpoints.insert(ip, mac);
    }

    /// Endpoint `ip` is gone: nothing is relayed from or to it any more (its flows end
    /// at their idle timeout).
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) {
        self.endpoints.remove(&ip);
    }

    /// Whether no flow may go to `dst`: another network's subnet (the gateway address,
    /// in this network's own subnet, is the host's when host loopback is on), or an
    /// address never routed (loopback, "this network", reserved: the host's loopback is
    /// reached only through the gateway address).
    fn isolated(&self, dst: Ipv4Addr, isolation: &Isolation) -> bool {
        crate::gateway::never_routed(dst) || isolation.contains_other(dst, Some(&self.cfg.gateway))
    }

    /// Where a flow to `dst` goes on the host.
    fn host_dst(&self, dst: SocketAddrV4) -> SocketAddrV4 {
        if self.cfg.host_loopback && *dst.ip() == self.cfg.gateway.ip {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port())
        } else {
            dst
        }
    }

    /// One Ethernet frame from the container network, routed through the gateway (the
    /// gateway port has checked the IPv4 header). `gso` tells that the frame is a TCP
    /// or UDP superframe of the sender. A new flow toward a subnet of `isolation` (the
    /// host's other networks) is refused.
    pub fn input(&mut self, now: Duration, frame: &[u8], gso: bool, isolation: &Isolation) {
        self.counters.frames_in.inc();
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop_malformed.inc();
            return;
        };
        if eth.ethertype() != EtherType::Ipv4 {
            self.counters.drop_unsupported.inc();
            return;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        if ip.more_frags() || ip.frag_offset() != 0 {
            self.counters.drop_fragment.inc();
            return;
        }
        match self.endpoints.get(&ip.src_addr()) {
            None => {
                self.counters.drop_unknown_source.inc();
                return;
            }
            Some(mac) if *mac != eth.src_addr() => {
                self.counters.drop_spoofed_source.inc();
                return;
            }
            Some(_) => {}
        }
        // `new_checked` bounds the packet to its total length: the same view without
        // the trailing padding.
        let ip = Ipv4Packet::new_unchecked(&eth.payload()[..usize::from(ip.total_len())]);
        if self.cfg.gateway.internal && !self.is_dns(&ip) {
            // The gateway lets nothing else through; should anything get here, no
            // host flow opens for it.
            self.counters.drop_internal.inc();
            return;
        }
        match ip.protocol() {
            tcp_wire::PROTOCOL => self.input_tcp(now, ip, isolation),
            udp::PROTOCOL if !gso => self.input_udp(now, &ip, isolation),
            icmpv4::PROTOCOL => self.input_icmp(now, &ip, isolation),
            _ => self.counters.drop_unsupported.inc(),
        }
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The host socket of flow `id` is connected (`Ok`) or could not be. A TCP flow's
    /// buffers are reserved from `budget` now.
    pub fn connected(
        &mut self,
        now: Duration,
        id: FlowId,
        result: Result<(), ConnectError>,
        budget: &mut Budget,
    ) {
        // Segments already queued (another container's SYN to the same address, say)
        // go through before this flow's listener exists, so it cannot take them.
        if !self.dev.rx.is_empty() {
            self.run_iface(now);
        }
        let Some(flow) = self.flows.by_id.get_mut(&id) else {
            return;
        };
        flow.last = now;
        match flow.kind {
            FlowKind::Tcp(TcpState::Connecting { .. }) => {
                self.tcp_connected(now, id, result, budget)
            }
            FlowKind::Tcp(TcpState::Open { .. }) => {}
            FlowKind::Datagram { .. } => self.datagram_connected(id, result),
        }
    }

    /// Run the container-side stack: take queued frames, fire timers, expire idle
    /// flows. Call after [`Relay::input`]s and [`Relay::pump`]s, before
    /// [`Relay::next_frame`].
    pub fn poll(&mut self, now: Duration) {
        self.run_iface(now);
        self.dns_poll(now);
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
    }

    /// When [`Relay::poll`] should run next at the latest, if anything waits for a
    /// timer. Call it after [`Relay::poll`], as the host thread does: smoltcp 0.12's
    /// `poll_at` judges each socket's window before it looks for an ACK owed, and that
    /// panics if a peer sent past a rounded-down window and the ACK has not gone out yet
    /// (smoltcp issue 1048); `poll` sends every ACK owed.
    pub fn poll_in(&mut self, now: Duration) -> Option<Duration> {
        let t = self.iface.poll_delay(smol_now(now), &self.sockets);
        let t = t.map(|d| Duration::from_micros(d.total_micros()));
        let t = match (t, self.dns.poll_at().map(|at| at.saturating_sub(now))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.flows.by_id.is_empty() && self.dns.conns() == 0 {
            t
        } else {
            Some(t.map_or(SWEEP_EVERY, |t| t.min(SWEEP_EVERY)))
        }
    }

    /// TCP flows whose container side moved (data, room, state) since the last call:
    /// [`Relay::pump`] each. Flows that ended are reported as [`Event::Close`] instead.
    pub fn take_ready(&mut self, out: &mut Vec<FlowId>) {
        self.flows.take_ready(out);
    }

    /// Run the container-side stack over the segments queued for it, then list the TCP
    /// flows they changed as ready.
    fn run_iface(&mut self, now: Duration) {
        self.iface
            .poll(smol_now(now), &mut self.dev, &mut self.sockets);
        let sockets = &self.sockets;
        self.flows
            .settle(|h| SockMark::of(sockets.get::<smol_tcp::Socket>(h)));
    }

    /// End flow `id` now, whatever its kind (its host side is gone): a TCP
    /// connection is reset toward the container. No [`Event::Close`] follows.
    pub fn end_flow(&mut self, now: Duration, id: FlowId) {
        self.host_reset(now, id);
    }

    /// Drop flow `id` without telling the caller (it knows).
    fn forget_quiet(&mut self, id: FlowId) {
        let Some(flow) = self.flows.remove(id) else {
            return;
        };
        match flow.kind {
            FlowKind::Tcp(TcpState::Open { handle, lease, .. }) => {
                // The socket is dropped here, before its buffers go back.
                drop(self.sockets.remove(handle));
                self.released += lease.bytes();
                self.pool.give(lease);
                self.counters.tcp_closed.inc();
            }
            FlowKind::Datagram { pending, .. } => {
                self.queued_bytes -= pending.iter().map(Vec::len).sum::<usize>();
            }
            FlowKind::Tcp(TcpState::Connecting { .. }) => {}
        }
    }

    /// Drop flow `id` and tell the caller to close its socket.
    fn forget(&mut self, id: FlowId, reset: bool) {
        if self.flows.by_id.contains_key(&id) {
            self.forget_quiet(id);
            self.events.push_back(Event::Close { id, reset });
        }
    }

    /// End idle flows (Linux conntrack's timeouts) and TCP flows smoltcp closed, and
    /// idle DNS connections.
    fn sweep(&mut self, now: Duration) {
        self.dns_sweep(now);
        let sockets = &self.sockets;
        let ended = self
            .flows
            .expired(now, |h| sockets.get::<smol_tcp::Socket>(h).state());
        let mut aborted = false;
        for id in &ended {
            if let Some(Flow {
                kind: FlowKind::Tcp(TcpState::Open { handle, .. }),
                ..
            }) = self.flows.by_id.get(id)
            {
                let s = self.sockets.get_mut::<smol_tcp::Socket>(*handle);
                if !matches!(
                    s.state(),
                    smol_tcp::State::Closed | smol_tcp::State::TimeWait
                ) {
                    s.abort();
                    aborted = true;
                }
            }
        }
        if aborted {
            // Let the resets leave before the sockets go.
            self.run_iface(now);
        }
        for id in ended {
            self.counters.expired.inc();
            if self
                .flows
                .by_id
                .get(&id)
                .is_some_and(|f| f.proto == Proto::Tcp && f.client.is_some())
            {
                self.counters.tcp_inbound_expired.inc();
            }
            self.forget(id, true);
        }
    }
}
