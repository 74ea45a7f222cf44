//! The relay's flow table: what a flow is, how it is found (keys and ids), how many there
//! may be (limits), when one has been idle too long, and which TCP flows have work for
//! the host side.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::bufpool::Lease;

/// Linux conntrack's default timeouts (`nf_conntrack_*_timeout*`), which Docker's NAT
/// uses.
pub mod timeouts {
    use std::time::Duration;

    /// A connect not yet answered (`tcp_timeout_syn_sent`).
    pub const TCP_SYN_SENT: Duration = Duration::from_secs(120);
    /// An established connection without traffic (`tcp_timeout_established`, 5 days).
    pub const TCP_ESTABLISHED: Duration = Duration::from_secs(432_000);
    /// A connection closing (FIN seen) without traffic (`tcp_timeout_fin_wait`).
    pub const TCP_CLOSING: Duration = Duration::from_secs(120);
    /// A UDP flow that has seen traffic one way only (`udp_timeout`).
    pub const UDP: Duration = Duration::from_secs(30);
    /// A UDP flow with replies (`udp_timeout_stream`).
    pub const UDP_STREAM: Duration = Duration::from_secs(120);
    /// An ICMP echo flow (`icmp_timeout`).
    pub const ICMP: Duration = Duration::from_secs(30);
    /// An established connection through a published port without traffic: 2 h 4 min,
    /// the least RFC 5382 (REQ-5) allows a NAT, rather than conntrack's 5 days, since
    /// here the relay holds a socket and its buffers for each. A container or client
    /// that keeps an idle connection with TCP keepalives at Linux's defaults
    /// (`tcp_keepalive_time` 2 h, then probes 75 s apart) is seen before it ends: the
    /// container's probes reach the relay; a remote client's are answered by the host
    /// kernel, so only data refreshes it from that side.
    pub const TCP_INBOUND_ESTABLISHED: Duration = Duration::from_secs(2 * 3600 + 4 * 60);
}

/// Bounds on tracked flows, per network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Outbound TCP connections (the containers'), open or being opened.
    pub tcp: usize,
    /// TCP connects not yet answered by the host (a SYN flood or a port scan fills
    /// this, not the room of established connections).
    pub tcp_pending: usize,
    /// Outbound UDP flows (the containers').
    pub udp: usize,
    /// ICMP echo flows.
    pub icmp: usize,
    /// TCP connections through published ports (a budget of their own: clients of
    /// published ports cannot take the room of the containers' own connections, nor
    /// the other way round).
    pub tcp_inbound: usize,
    /// UDP flows through published ports (a budget of their own, likewise).
    pub udp_inbound: usize,
    /// TCP and UDP flows through published ports of one client address (IPv4, or
    /// IPv6 as a whole address). Loopback clients, the host itself, are not capped.
    pub inbound_per_client: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            // With 1 MiB buffers each way (the host thread's default), 1,024
            // connections would be 2 GiB of buffers: the host's flow memory
            // (`Budget`) bounds them all together, smaller windows first.
            tcp: 1024,
            tcp_pending: 256,
            udp: 2048,
            icmp: 256,
            tcp_inbound: 1024,
            udp_inbound: 2048,
            // Room for a busy client (a proxy, a load balancer) and still an eighth of
            // the UDP budget at most.
            inbound_per_client: 256,
        }
    }
}

/// Flows a relay tracks now, by transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// TCP connections, open or being opened.
    pub tcp: usize,
    /// UDP flows, outbound and through published ports.
    pub udp: usize,
    /// ICMP echo flows.
    pub icmp: usize,
}

/// A flow of a relay. Ids are not reused while the relay lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u64);

impl FlowId {
    /// The number, for logs and tokens.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// Transport of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP: one host stream.
    Tcp,
    /// UDP: one connected host datagram socket.
    Udp,
    /// ICMP echo: one connected host ping socket.
    Icmp,
}

/// The flow key as the container sees it: its own address, and the remote's.
pub(super) type Key = (SocketAddrV4, SocketAddrV4);

/// An ICMP echo flow's key: the container's address, its echo identifier, the remote.
type IcmpKey = (Ipv4Addr, u16, Ipv4Addr);

/// Where a TCP flow stands.
#[derive(Debug)]
pub(super) enum TcpState {
    /// The host connect runs; the container's SYN (an IPv4 packet, MSS raised) waits.
    Connecting { syn: Vec<u8> },
    /// A smoltcp socket carries it.
    Open {
        handle: SocketHandle,
        /// The socket's buffers (given back once the socket is removed).
        lease: Lease,
        /// The container sent FIN and the host was told.
        shut_host: bool,
        /// The host sent EOF and smoltcp was told.
        host_eof: bool,
    },
}

/// What carries a flow.
#[derive(Debug)]
pub(super) enum FlowKind {
    Tcp(TcpState),
    /// UDP or ICMP. `pending` holds datagrams while the host socket opens.
    Datagram {
        ready: bool,
        pending: Vec<Vec<u8>>,
        /// Seen traffic from the host too (UDP "stream" timeout).
        replied: bool,
        /// ICMP: the container's echo identifier.
        ident: u16,
    },
}

/// One flow.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) key: Key,
    pub(super) proto: Proto,
    pub(super) kind: FlowKind,
    /// When it last carried something.
    pub(super) last: Duration,
    /// The container's real MSS (TCP).
    pub(super) mss: u16,
    /// Listed in `Flows::ready` already.
    pub(super) queued: bool,
    /// The real client of a flow that came in through a published port (TCP or UDP).
    pub(super) client: Option<SocketAddr>,
}

impl Flow {
    /// A flow of `proto` carried by `kind`, last active `now`.
    pub(super) fn new(key: Key, proto: Proto, kind: FlowKind, now: Duration) -> Flow {
        Flow {
            key,
            proto,
            kind,
            last: now,
            mss: 0,
            queued: false,
            client: None,
        }
    }

    /// A UDP or ICMP flow whose host socket is not open yet.
    pub(super) fn datagram(key: Key, proto: Proto, ident: u16, now: Duration) -> Flow {
        let kind = FlowKind::Datagram {
            ready: false,
            pending: Vec::new(),
            replied: false,
            ident,
        };
        Flow::new(key, proto, kind, now)
    }

    /// Its ICMP key, for an ICMP flow.
    fn icmp_key(&self) -> Option<IcmpKey> {
        match (self.proto, &self.kind) {
            (Proto::Icmp, FlowKind::Datagram { ident, .. }) => {
                Some((*self.key.0.ip(), *ident, *self.key.1.ip()))
            }
            _ => None,
        }
    }
}

/// What a TCP socket shows the host side: a change in any of these is work for the
/// relay's `pump` (bytes to carry, room for more, a state to act on). Only segments from
/// the container change them outside `pump`, so the relay compares them around each
/// segment of a known flow instead of registering wakers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SockMark {
    state: tcp::State,
    recv_queue: usize,
    send_queue: usize,
}

impl SockMark {
    /// What `s` shows now.
    pub(super) fn of(s: &tcp::Socket<'_>) -> SockMark {
        SockMark {
            state: s.state(),
            recv_queue: s.recv_queue(),
            send_queue: s.send_queue(),
        }
    }
}

/// Ports for clients shown as the gateway address whose own port is taken: Linux's
/// default ephemeral range.
const SEEN_PORTS: (u16, u16) = (32768, 60999);

/// Every flow of a relay, by id and by key.
#[derive(Debug)]
pub(super) struct Flows {
    pub(super) by_id: HashMap<FlowId, Flow>,
    /// TCP flows by key.
    pub(super) tcp: HashMap<Key, FlowId>,
    /// UDP flows by key.
    pub(super) udp: HashMap<Key, FlowId>,
    /// ICMP flows by (container address, identifier, remote address).
    pub(super) icmp: HashMap<IcmpKey, FlowId>,
    /// UDP flows through published ports by (real client, container address).
    pub(super) inbound_udp: HashMap<(SocketAddr, SocketAddrV4), FlowId>,
    /// Flows now.
    pub(super) count: FlowCounts,
    /// The part of `count` that came in through published ports.
    pub(super) inbound: FlowCounts,
    /// Flows through published ports, by client address (loopback ones not counted).
    pub(super) per_client: HashMap<IpAddr, usize>,
    /// TCP flows whose host connect runs.
    pub(super) pending_tcp: usize,
    /// TCP flows whose socket changed since the relay's last `take_ready`.
    pub(super) ready: Vec<FlowId>,
    /// TCP flows with a segment queued for smoltcp, and their socket's mark before it:
    /// compared once the interface has run ([`Flows::settle`]).
    pub(super) touched: Vec<(FlowId, SockMark)>,
    /// Next port to try for a client shown as the gateway whose own port is taken.
    next_seen_port: u16,
    next_id: u64,
}

impl Flows {
    /// No flows.
    pub(super) fn new() -> Flows {
        Flows {
            by_id: HashMap::new(),
            tcp: HashMap::new(),
            udp: HashMap::new(),
            icmp: HashMap::new(),
            inbound_udp: HashMap::new(),
            count: FlowCounts::default(),
            inbound: FlowCounts::default(),
            per_client: HashMap::new(),
            pending_tcp: 0,
            ready: Vec::new(),
            touched: Vec::new(),
            next_seen_port: SEEN_PORTS.0,
            next_id: 1,
        }
    }

    /// Track `flow` under a new id, findable by its key (and by its client, for a UDP
    /// flow through a published port).
    pub(super) fn add(&mut self, flow: Flow) -> FlowId {
        let id = FlowId(self.next_id);
        self.next_id += 1;
        if let Some(c) = flow.client {
            match flow.proto {
                Proto::Tcp => self.inbound.tcp += 1,
                _ => self.inbound.udp += 1,
            }
            if let Some(a) = capped_client(c) {
                *self.per_client.entry(a).or_default() += 1;
            }
        }
        match flow.proto {
            Proto::Tcp => {
                self.tcp.insert(flow.key, id);
                self.count.tcp += 1;
                if matches!(flow.kind, FlowKind::Tcp(TcpState::Connecting { .. })) {
                    self.pending_tcp += 1;
                }
            }
            Proto::Udp => {
                self.udp.insert(flow.key, id);
                if let Some(c) = flow.client {
                    self.inbound_udp.insert((c, flow.key.0), id);
                }
                self.count.udp += 1;
            }
            Proto::Icmp => {
                if let Some(k) = flow.icmp_key() {
                    self.icmp.insert(k, id);
                }
                self.count.icmp += 1;
            }
        }
        self.by_id.insert(id, flow);
        id
    }

    /// Stop tracking flow `id`; its socket, if any, is the caller's to drop.
    pub(super) fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = self.by_id.remove(&id)?;
        if let Some(c) = flow.client {
            match flow.proto {
                Proto::Tcp => self.inbound.tcp -= 1,
                _ => self.inbound.udp -= 1,
            }
            if let Some(a) = capped_client(c) {
                if let Some(k) = self.per_client.get_mut(&a) {
                    *k -= 1;
                    if *k == 0 {
                        self.per_client.remove(&a);
                    }
                }
            }
        }
        match flow.proto {
            Proto::Tcp => {
                self.tcp.remove(&flow.key);
                self.count.tcp -= 1;
                if matches!(flow.kind, FlowKind::Tcp(TcpState::Connecting { .. })) {
                    self.pending_tcp -= 1;
                }
            }
            Proto::Udp => {
                self.udp.remove(&flow.key);
                if let Some(c) = flow.client {
                    self.inbound_udp.remove(&(c, flow.key.0));
                }
                self.count.udp -= 1;
            }
            Proto::Icmp => {
                if let Some(k) = flow.icmp_key() {
                    self.icmp.remove(&k);
                }
                self.count.icmp -= 1;
            }
        }
        Some(flow)
    }

    /// The MSS of the container end of the TCP flow `key`, if it gave one.
    pub(super) fn tcp_mss(&self, key: &Key) -> Option<u16> {
        let id = self.tcp.get(key)?;
        Some(self.by_id.get(id)?.mss).filter(|&m| m > 0)
    }

    /// Flows idle past Linux conntrack's timeouts (see [`timeouts`]), given the state of
    /// each TCP socket.
    pub(super) fn expired(
        &self,
        now: Duration,
        state_of: impl Fn(SocketHandle) -> tcp::State,
    ) -> Vec<FlowId> {
        let mut ended = Vec::new();
        for (&id, f) in &self.by_id {
            let idle = now.saturating_sub(f.last);
            let over = match &f.kind {
                FlowKind::Tcp(TcpState::Connecting { .. }) => idle > timeouts::TCP_SYN_SENT,
                FlowKind::Tcp(TcpState::Open { handle, .. }) => match state_of(*handle) {
                    // The segment that ended it made it ready, and `pump` closes the
                    // host side the right way; only a flow nobody pumps ends here.
                    tcp::State::Closed | tcp::State::TimeWait => idle > timeouts::TCP_CLOSING,
                    tcp::State::Established if f.client.is_some() => {
                        idle > timeouts::TCP_INBOUND_ESTABLISHED
                    }
                    tcp::State::Established => idle > timeouts::TCP_ESTABLISHED,
                    tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => {
                        idle > timeouts::TCP_SYN_SENT
                    }
                    _ => idle > timeouts::TCP_CLOSING,
                },
                FlowKind::Datagram { replied, .. } => match f.proto {
                    Proto::Icmp => idle > timeouts::ICMP,
                    _ if *replied => idle > timeouts::UDP_STREAM,
                    _ => idle > timeouts::UDP,
                },
            };
            if over {
                ended.push(id);
            }
        }
        ended
    }

    /// Compare each touched flow's socket, now that smoltcp has taken the queued
    /// segments, with its mark from before: those that changed are ready.
    pub(super) fn settle(&mut self, mark_of: impl Fn(SocketHandle) -> SockMark) {
        for (id, before) in self.touched.drain(..) {
            let Some(f) = self.by_id.get_mut(&id) else {
                continue;
            };
            let FlowKind::Tcp(TcpState::Open { handle, .. }) = f.kind else {
                continue;
            };
            if mark_of(handle) != before && !f.queued {
                f.queued = true;
                self.ready.push(id);
            }
        }
    }

    /// Move the ready flows into `out`.
    pub(super) fn take_ready(&mut self, out: &mut Vec<FlowId>) {
        for id in self.ready.drain(..) {
            if let Some(f) = self.by_id.get_mut(&id) {
                f.queued = false;
                out.push(id);
            }
        }
    }

    /// The address the container sees for a new flow of `client` toward `ctr`, unique
    /// among the flows of `proto`: the client's own (IPv4, not loopback) address and
    /// port; for the others the gateway address `gw` with the client's port, or, when
    /// that is taken by another client's flow (two loopback addresses, IPv6 and IPv4
    /// clients, two published ports of one container port), with a free port of
    /// `SEEN_PORTS`. `None` when nothing is free.
    pub(super) fn pick_seen(
        &mut self,
        client: SocketAddr,
        ctr: SocketAddrV4,
        proto: Proto,
        gw: Ipv4Addr,
    ) -> Option<SocketAddrV4> {
        let keys = if proto == Proto::Tcp {
            &self.tcp
        } else {
            &self.udp
        };
        let seen = seen_client(client, gw);
        if !keys.contains_key(&(ctr, seen)) {
            return Some(seen);
        }
        if *seen.ip() != gw {
            return None;
        }
        let (lo, hi) = SEEN_PORTS;
        for _ in lo..=hi {
            let p = self.next_seen_port;
            self.next_seen_port = if p >= hi { lo } else { p + 1 };
            let cand = SocketAddrV4::new(gw, p);
            if !keys.contains_key(&(ctr, cand)) {
                return Some(cand);
            }
        }
        None
    }
}

impl Flows {
    /// Outbound flows of `proto` now.
    pub(super) fn outbound(&self, proto: Proto) -> usize {
        match proto {
            Proto::Tcp => self.count.tcp - self.inbound.tcp,
            Proto::Udp => self.count.udp - self.inbound.udp,
            Proto::Icmp => self.count.icmp,
        }
    }

    /// Whether `client` has `cap` flows through published ports already.
    pub(super) fn client_capped(&self, client: SocketAddr, cap: usize) -> bool {
        capped_client(client).is_some_and(|a| self.per_client.get(&a).copied().unwrap_or(0) >= cap)
    }
}

/// The address `client` is counted under for the per-client cap: its IP (an
/// IPv4-mapped IPv6 address as IPv4); `None` for a loopback client (the host itself).
fn capped_client(client: SocketAddr) -> Option<IpAddr> {
    let ip = client.ip().to_canonical();
    (!ip.is_loopback()).then_some(ip)
}

/// How a host client appears to the container: itself, or the gateway address `gw`
/// (with the client's port) for a loopback client (a container drops packets from
/// 127.0.0.0/8) and for an IPv6 client (the network inside is IPv4; an IPv4-mapped
/// address counts as its IPv4 address).
fn seen_client(client: SocketAddr, gw: Ipv4Addr) -> SocketAddrV4 {
    let v4 = match client.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    match v4 {
        Some(a) if !a.is_loopback() && !a.is_unspecified() => SocketAddrV4::new(a, client.port()),
        _ => SocketAddrV4::new(gw, client.port()),
    }
}
