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
//!
//! Why a terminating stack rather than translating segment by segment (as passt does):
//! the host kernel already runs TCP toward the remote, and on the container side the
//! link is in-memory and lossless, so a small stack with large windows is cheap. It also
//! lets the relay send the container **64 KiB superframes**: the container's MSS option
//! is raised before smoltcp sees it, and every larger segment leaves with a virtio-net
//! GSO header carrying the real MSS, so the TAP (or the engine's software segmentation)
//! cuts it. Checksums toward the container are left partial for the same reason.
//!
//! Nothing here does I/O or reads a clock: the caller passes `now`, frames in and out,
//! and a [`HostStream`] for each TCP flow it pumps. Flow state is bounded
//! ([`FlowLimits`]); what a bound refuses is counted in [`RelayCounters`]. Idle
//! timeouts follow Linux conntrack's defaults, which Docker's NAT inherits.
//!
//! Cost to know: smoltcp finds a segment's socket by scanning the network's sockets, so
//! per-frame work grows with the number of open TCP flows (bounded by
//! [`FlowLimits::tcp`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use tapnet_switch::MacAddr;
use tapnet_wire::checksum::pseudo_header_v4;
use tapnet_wire::{
    EtherType, EthernetFrame, Icmpv4Message, Icmpv4Packet, IpPair, Ipv4Packet, Ipv4Repr, TcpFlags,
    TcpPacket, UdpPacket, UdpRepr, ethernet, icmpv4, ipv4, tcp as tcp_wire, udp as udp_wire,
};

use crate::GatewayConfig;

const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Largest IPv4 packet; the relay's smoltcp MTU, so that it emits superframes.
const IP_MAX: usize = 65535;
/// The MSS the relay shows smoltcp for a container (IP_MAX − 40).
const BIG_MSS: u16 = 65495;
/// Smallest MSS taken from a container (RFC 879's 536 less is allowed by RFC 1122 only
/// down to what a 128-byte IP packet leaves; Linux's `tcp_min_snd_mss` is 48, Linux
/// clamps to 88 since 5.x): below it the relay uses it.
const MIN_MSS: u16 = 88;
/// Datagrams queued for one flow whose host socket is still being opened.
const PENDING_DATAGRAMS: usize = 16;
/// Datagrams queued toward host sockets, all flows together.
const HOST_QUEUE: usize = 4096;
/// Container MACs remembered (address → MAC from the frames seen).
const MAC_CACHE: usize = 4096;
/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
}

/// Bounds on tracked flows, per network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// TCP connections, open or being opened.
    pub tcp: usize,
    /// TCP connects not yet answered by the host (a SYN flood or a port scan fills
    /// this, not the room of established connections).
    pub tcp_pending: usize,
    /// UDP flows.
    pub udp: usize,
    /// ICMP echo flows.
    pub icmp: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            // With 1 MiB buffers each way (the host thread's default), 1,024
            // connections bound a network's TCP buffers to 2 GiB of address space;
            // pages are touched only as data passes.
            tcp: 1024,
            tcp_pending: 256,
            udp: 2048,
            icmp: 256,
        }
    }
}

/// The subnets of every network of a host: traffic between networks is denied (Docker's
/// isolation rule), so a flow toward another network's subnet is dropped rather than
/// carried out through the host. A plain value: whoever runs the relays owns it, keeps it
/// current, and hands it to [`Relay::input`].
#[derive(Clone, Debug, Default)]
pub struct Isolation(HashMap<String, (Ipv4Addr, u8)>);

impl Isolation {
    /// Network `key` has subnet `addr/prefix`.
    pub fn insert(&mut self, key: &str, addr: Ipv4Addr, prefix: u8) {
        self.0.insert(key.to_string(), (addr, prefix.min(32)));
    }

    /// Network `key` is gone.
    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// Whether `addr` is inside one of the subnets.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.contains_other(addr, None)
    }

    /// Whether `addr` is inside one of the subnets other than `own`'s.
    fn contains_other(&self, addr: Ipv4Addr, own: Option<&GatewayConfig>) -> bool {
        if own.is_some_and(|g| g.contains(addr)) {
            return false;
        }
        let a = u32::from(addr);
        self.0.values().any(|&(net, p)| {
            let m = if p == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p))
            };
            a & m == u32::from(net) & m
        })
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
}

/// A flow of a relay. Ids are not reused while the relay lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u64);

impl FlowId {
    /// The number, for logs and tokens.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The flow numbered `raw`.
    #[cfg(test)]
    pub(crate) fn from_raw(raw: u64) -> FlowId {
        FlowId(raw)
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

/// The host side of one TCP flow, as [`Relay::pump`] uses it. Non-blocking: "nothing
/// now" is [`io::ErrorKind::WouldBlock`].
pub trait HostStream {
    /// Read what the host has for the container; `Ok(0)` is end of stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write the container's bytes to the host.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// The container will send no more.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// What [`Relay::pump`] left the flow in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Still open.
    Open,
    /// Over; the relay has forgotten it and will not mention it again. `reset`: close
    /// the host socket abortively (the container reset it, or the host side failed).
    Closed {
        /// Close with a reset (SO_LINGER 0) rather than a FIN.
        reset: bool,
    },
}

/// A frame for the container network, written by [`Relay::next_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOut {
    /// Bytes written, Ethernet header included.
    pub len: usize,
    /// The transport checksum holds only the pseudo-header sum: the receiver (or the
    /// engine's software offload) completes it. Checksum start is the transport
    /// header, offset 16 (TCP).
    pub csum_partial: bool,
    /// A TCP superframe to be cut into segments of this payload size (0: none).
    pub gso_size: u16,
    /// Length of the Ethernet, IPv4 and TCP headers (for the virtio-net header).
    pub hdr_len: u16,
    /// Offset of the transport header in the frame (where a partial checksum starts).
    pub l4_offset: u16,
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
    }
}

/// The flow key as the container sees it: its own address, and the remote's.
type Key = (SocketAddrV4, SocketAddrV4);

#[derive(Debug)]
enum TcpState {
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

#[derive(Debug)]
enum FlowKind {
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

#[derive(Debug)]
struct Flow {
    key: Key,
    proto: Proto,
    kind: FlowKind,
    last: Duration,
    /// The container's real MSS (TCP).
    mss: u16,
    /// Listed in `Relay::ready` already.
    queued: bool,
    /// The real client of a UDP flow that came in through a published port.
    client: Option<SocketAddr>,
}

/// What a TCP socket shows the host side: a change in any of these is work for
/// [`Relay::pump`] (bytes to carry, room for more, a state to act on). Only segments from
/// the container change them outside `pump`, so the relay compares them around each
/// segment of a known flow instead of registering wakers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SockMark {
    state: tcp::State,
    recv_queue: usize,
    send_queue: usize,
}

impl SockMark {
    fn of(s: &tcp::Socket<'_>) -> SockMark {
        SockMark {
            state: s.state(),
            recv_queue: s.recv_queue(),
            send_queue: s.send_queue(),
        }
    }
}

/// Packet buffers kept for reuse, per direction: a 64 KiB superframe costs no
/// allocation and no zeroing once the relay is warm.
const SPARE_BUFFERS: usize = 64;
/// Bytes of a reused transmit buffer cleared before smoltcp writes a packet into it:
/// more than any IPv4 + TCP header, so option padding never carries old bytes (smoltcp
/// writes every payload byte itself).
const HEADER_CLEAR: usize = 128;

/// smoltcp's view of the container network: IPv4 packets in, IPv4 packets out.
#[derive(Default)]
struct Dev {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    rx_spare: Vec<Vec<u8>>,
    tx_spare: Vec<Vec<u8>>,
}

impl Dev {
    /// A buffer of `len` bytes for a packet the relay writes itself, reused if one is
    /// spare.
    fn tx_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.tx_spare.pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        v
    }

    /// A copy of `pkt` for smoltcp's receive queue, in a reused buffer if one is spare.
    fn queue_rx(&mut self, pkt: &[u8]) {
        let mut v = self.rx_spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(pkt);
        self.rx.push_back(v);
    }
}

fn recycle(spare: &mut Vec<Vec<u8>>, v: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS {
        spare.push(v);
    }
}

struct RxTok<'a>(Vec<u8>, &'a mut Vec<Vec<u8>>);
struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>, &'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        recycle(self.1, self.0);
        r
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = self.1.pop().unwrap_or_default();
        if v.len() >= len {
            v.truncate(len);
            let n = len.min(HEADER_CLEAR);
            v[..n].fill(0);
        } else {
            v.clear();
            v.resize(len, 0);
        }
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

/// smoltcp's view of the container network for one packet read in place: that packet,
/// and [`Dev`]'s transmit queue for anything smoltcp answers at once.
struct OneRx<'p, 'd> {
    pkt: Option<&'p [u8]>,
    dev: &'d mut Dev,
}

struct InPlace<'p>(&'p [u8]);

impl phy::RxToken for InPlace<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<'p> phy::Device for OneRx<'p, '_> {
    type RxToken<'a>
        = InPlace<'p>
    where
        Self: 'a;
    type TxToken<'a>
        = TxTok<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.pkt.take()?;
        Some((InPlace(p), TxTok(&mut self.dev.tx, &mut self.dev.tx_spare)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok(&mut self.dev.tx, &mut self.dev.tx_spare))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.dev.capabilities()
    }
}

impl phy::Device for Dev {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((
            RxTok(p, &mut self.rx_spare),
            TxTok(&mut self.tx, &mut self.tx_spare),
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok(&mut self.tx, &mut self.tx_spare))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MAX;
        let mut cs = ChecksumCapabilities::ignored();
        // Frames come from local TAPs: transport checksums may be partial, and there is
        // no wire to corrupt them. IPv4 header checksums are always complete.
        cs.ipv4 = Checksum::Both;
        cs.tcp = Checksum::None;
        caps.checksum = cs;
        caps
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
    flows: HashMap<FlowId, Flow>,
    /// Spare socket buffers.
    pool: BufPool,
    tcp_keys: HashMap<Key, FlowId>,
    udp_keys: HashMap<Key, FlowId>,
    /// ICMP flows by (container address, identifier, remote address).
    icmp_keys: HashMap<(Ipv4Addr, u16, Ipv4Addr), FlowId>,
    handles: HashMap<SocketHandle, FlowId>,
    /// UDP flows through published ports by (real client, container address).
    inbound_udp: HashMap<(SocketAddr, SocketAddrV4), FlowId>,
    /// Next port to try for a client shown as the gateway whose own port is taken.
    next_seen_port: u16,
    macs: HashMap<Ipv4Addr, MacAddr>,
    events: VecDeque<Event>,
    to_host: VecDeque<(FlowId, Vec<u8>)>,
    /// TCP flows whose socket changed since the last [`Relay::take_ready`].
    ready: Vec<FlowId>,
    /// TCP flows with a segment queued for smoltcp, and their socket's mark before it:
    /// compared once the interface has run.
    touched: Vec<(FlowId, SockMark)>,
    next_id: u64,
    pending_tcp: usize,
    count: FlowCounts,
    last_sweep: Duration,
    counters: Arc<RelayCounters>,
}

/// Ports for clients shown as the gateway address whose own port is taken: Linux's
/// default ephemeral range.
const SEEN_PORTS: (u16, u16) = (32768, 60999);

/// Socket buffer pairs kept spare per network: enough for connections that come one
/// after another, little memory when idle (the pages touched stay resident).
const SPARE_LEASES: usize = 4;

/// A TCP socket on the buffers of `lease`, which must outlive it (see `bufpool`).
fn tcp_socket(lease: &mut Lease) -> tcp::Socket<'static> {
    // SAFETY: the socket made here is the slices' only user; every caller keeps the
    // lease until the socket is dropped (on failure before the lease is given back, or
    // once removed from the socket set in `forget_quiet`, or with the relay, whose
    // socket set is dropped before its flows).
    let (rx, tx) = unsafe { lease.lend() };
    tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx))
}

fn smol_now(now: Duration) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}

impl Relay {
    /// A relay for one network, at time `now`.
    pub fn new(cfg: RelayConfig, now: Duration) -> Relay {
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
            flows: HashMap::new(),
            pool,
            tcp_keys: HashMap::new(),
            udp_keys: HashMap::new(),
            icmp_keys: HashMap::new(),
            handles: HashMap::new(),
            inbound_udp: HashMap::new(),
            next_seen_port: SEEN_PORTS.0,
            macs: HashMap::new(),
            events: VecDeque::new(),
            to_host: VecDeque::new(),
            ready: Vec::new(),
            touched: Vec::new(),
            next_id: 1,
            pending_tcp: 0,
            count: FlowCounts::default(),
            last_sweep: now,
            counters: Arc::default(),
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

    /// Flows tracked now.
    pub fn flow_counts(&self) -> FlowCounts {
        self.count
    }

    fn new_id(&mut self) -> FlowId {
        let id = FlowId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Whether no flow may go to `dst`: another network's subnet (the gateway address,
    /// in this network's own subnet, is the host's when host loopback is on), or an
    /// address never routed (loopback, "this network", reserved: the host's loopback is
    /// reached only through the gateway address).
    fn isolated(&self, dst: Ipv4Addr, isolation: &Isolation) -> bool {
        crate::gateway::never_routed(dst) || isolation.contains_other(dst, Some(&self.cfg.gateway))
    }

    /// The largest MSS the network's MTU allows.
    fn max_mss(&self) -> u16 {
        (self.cfg.mtu.clamp(576, 65535) - 40) as u16
    }

    /// A container's MSS option, within what the network carries: it becomes the
    /// segment size of the superframes sent back, so a tiny one must not turn one frame
    /// into thousands of segments.
    fn clamp_mss(&self, mss: u16) -> u16 {
        mss.clamp(MIN_MSS, self.max_mss())
    }

    /// Where a flow to `dst` goes on the host.
    fn host_dst(&self, dst: SocketAddrV4) -> SocketAddrV4 {
        if self.cfg.host_loopback && *dst.ip() == self.cfg.gateway.ip {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port())
        } else {
            dst
        }
    }

    /// How a host client appears to the container: itself, or the gateway address (with
    /// the client's port) for a loopback client (a container drops packets from
    /// 127.0.0.0/8) and for an IPv6 client (the network inside is IPv4; an
    /// IPv4-mapped address counts as its IPv4 address).
    /// The address the container sees for a new flow of `client` toward `ctr`, unique
    /// among the flows in `keys`: the client's own (IPv4, not loopback) address and
    /// port; for the others the gateway address with the client's port, or, when that
    /// is taken by another client's flow (two loopback addresses, IPv6 and IPv4 clients,
    /// two published ports of one container port), with a free port of `SEEN_PORTS`.
    /// `None` when nothing is free.
    fn pick_seen(
        &mut self,
        client: SocketAddr,
        ctr: SocketAddrV4,
        proto: Proto,
    ) -> Option<SocketAddrV4> {
        let keys = if proto == Proto::Tcp {
            &self.tcp_keys
        } else {
            &self.udp_keys
        };
        let seen = self.seen_client(client);
        if !keys.contains_key(&(ctr, seen)) {
            return Some(seen);
        }
        if *seen.ip() != self.cfg.gateway.ip {
            return None;
        }
        let (lo, hi) = SEEN_PORTS;
        for _ in lo..=hi {
            let p = self.next_seen_port;
            self.next_seen_port = if p >= hi { lo } else { p + 1 };
            let cand = SocketAddrV4::new(self.cfg.gateway.ip, p);
            if !keys.contains_key(&(ctr, cand)) {
                return Some(cand);
            }
        }
        None
    }

    fn seen_client(&self, client: SocketAddr) -> SocketAddrV4 {
        let v4 = match client.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        match v4 {
            Some(a) if !a.is_loopback() && !a.is_unspecified() => {
                SocketAddrV4::new(a, client.port())
            }
            _ => SocketAddrV4::new(self.cfg.gateway.ip, client.port()),
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
        let src = ip.src_addr();
        if self.cfg.gateway.contains(src) && self.macs.len() < MAC_CACHE
            || self.macs.contains_key(&src)
        {
            self.macs.insert(src, eth.src_addr());
        }
        // `new_checked` bounds the packet to its total length: the same view without
        // the trailing padding.
        let ip = Ipv4Packet::new_unchecked(&eth.payload()[..usize::from(ip.total_len())]);
        match ip.protocol() {
            tcp_wire::PROTOCOL => self.input_tcp(now, ip, isolation),
            udp_wire::PROTOCOL if !gso => self.input_udp(now, &ip, isolation),
            icmpv4::PROTOCOL => self.input_icmp(now, &ip, isolation),
            _ => self.counters.drop_unsupported.inc(),
        }
    }

    fn input_tcp(&mut self, now: Duration, ip: Ipv4Packet<&[u8]>, isolation: &Isolation) {
        let Ok(seg) = TcpPacket::new_checked(ip.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
        let flags = seg.flags();
        let (syn, ack, rst) = (
            flags.contains(TcpFlags::SYN),
            flags.contains(TcpFlags::ACK),
            flags.contains(TcpFlags::RST),
        );
        let key = (
            SocketAddrV4::new(src_ip, seg.src_port()),
            SocketAddrV4::new(dst_ip, seg.dst_port()),
        );
        let ihl = ip.header_len();
        let ip = ip.into_inner();
        match self.tcp_keys.get(&key).copied() {
            Some(id) => {
                let Some(flow) = self.flows.get_mut(&id) else {
                    return;
                };
                flow.last = now;
                match flow.kind {
                    FlowKind::Tcp(TcpState::Connecting { .. }) => {
                        self.counters.tcp_syn_pending.inc();
                    }
                    FlowKind::Tcp(TcpState::Open { handle, .. })
                        if !syn && self.dev.rx.is_empty() =>
                    {
                        // The common case, a segment of an open connection: smoltcp
                        // reads it where it lies (nothing queued before it).
                        let before = SockMark::of(self.sockets.get(handle));
                        let mut one = OneRx {
                            pkt: Some(ip),
                            dev: &mut self.dev,
                        };
                        self.iface
                            .poll_ingress_single(smol_now(now), &mut one, &mut self.sockets);
                        if SockMark::of(self.sockets.get(handle)) != before && !flow.queued {
                            flow.queued = true;
                            self.ready.push(id);
                        }
                    }
                    FlowKind::Tcp(TcpState::Open { handle, .. }) => {
                        let before = SockMark::of(self.sockets.get(handle));
                        self.touched.push((id, before));
                        self.dev.queue_rx(ip);
                        if syn {
                            // The container's SYN-ACK to a published connection.
                            let max = (self.cfg.mtu.clamp(576, 65535) - 40) as u16;
                            if let Some(pkt) = self.dev.rx.back_mut() {
                                if let Some(m) = raise_mss(&mut pkt[ihl..]) {
                                    flow.mss = m.clamp(MIN_MSS, max);
                                }
                            }
                        }
                    }
                    FlowKind::Datagram { .. } => {}
                }
            }
            None if syn
                && !ack
                && !rst
                && dst_ip == self.cfg.gateway.ip
                && !self.cfg.host_loopback =>
            {
                // Nothing listens on the gateway address: a reset, as from a closed port.
                self.counters.tcp_refused.inc();
                self.dev.queue_rx(ip);
            }
            None if syn && !ack && !rst && self.isolated(dst_ip, isolation) => {
                self.counters.drop_isolated.inc();
            }
            None if syn && !ack && !rst => {
                let mut pkt = ip.to_vec();
                let mss = self.clamp_mss(raise_mss(&mut pkt[ihl..]).unwrap_or(536));
                let limits = self.cfg.limits;
                if self.count.tcp >= limits.tcp || self.pending_tcp >= limits.tcp_pending {
                    // No listener: smoltcp answers with a reset.
                    self.counters.tcp_limit.inc();
                    self.dev.rx.push_back(pkt);
                    return;
                }
                let id = self.new_id();
                let dst = self.host_dst(key.1);
                self.flows.insert(
                    id,
                    Flow {
                        key,
                        proto: Proto::Tcp,
                        kind: FlowKind::Tcp(TcpState::Connecting { syn: pkt }),
                        last: now,
                        mss,
                        queued: false,
                        client: None,
                    },
                );
                self.tcp_keys.insert(key, id);
                self.count.tcp += 1;
                self.pending_tcp += 1;
                self.events.push_back(Event::Connect {
                    id,
                    proto: Proto::Tcp,
                    dst,
                });
            }
            // Not a connection we know: smoltcp resets it (or ignores a reset).
            None => self.dev.queue_rx(ip),
        }
    }

    fn input_udp(&mut self, now: Duration, ip: &Ipv4Packet<&[u8]>, isolation: &Isolation) {
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        let key = (
            SocketAddrV4::new(ip.src_addr(), udp.src_port()),
            SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        );
        let payload = udp.payload();
        let id = match self.udp_keys.get(&key) {
            Some(&id) => id,
            None if *key.1.ip() == self.cfg.gateway.ip && !self.cfg.host_loopback => {
                self.counters.drop_unsupported.inc();
                return;
            }
            None if self.isolated(*key.1.ip(), isolation) => {
                self.counters.drop_isolated.inc();
                return;
            }
            None => {
                if self.count.udp >= self.cfg.limits.udp {
                    self.counters.udp_limit.inc();
                    return;
                }
                let id = self.new_id();
                self.open_datagram_flow(now, id, key, Proto::Udp, 0);
                self.udp_keys.insert(key, id);
                self.count.udp += 1;
                self.counters.udp_opened.inc();
                let dst = self.host_dst(key.1);
                self.events.push_back(Event::Connect {
                    id,
                    proto: Proto::Udp,
                    dst,
                });
                id
            }
        };
        self.datagram_out(now, id, payload.to_vec());
    }

    fn input_icmp(&mut self, now: Duration, ip: &Ipv4Packet<&[u8]>, isolation: &Isolation) {
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
            self.counters.drop_malformed.inc();
            return;
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
            // Only echo requests leave; errors and replies have nowhere to go.
            self.counters.drop_unsupported.inc();
            return;
        }
        let ident = icmp.echo_ident();
        let key3 = (ip.src_addr(), ident, ip.dst_addr());
        let id = match self.icmp_keys.get(&key3) {
            Some(&id) => id,
            None if self.isolated(ip.dst_addr(), isolation) => {
                self.counters.drop_isolated.inc();
                return;
            }
            None => {
                if self.count.icmp >= self.cfg.limits.icmp {
                    self.counters.icmp_limit.inc();
                    return;
                }
                let id = self.new_id();
                let key = (
                    SocketAddrV4::new(ip.src_addr(), 0),
                    SocketAddrV4::new(ip.dst_addr(), 0),
                );
                self.open_datagram_flow(now, id, key, Proto::Icmp, ident);
                self.icmp_keys.insert(key3, id);
                self.count.icmp += 1;
                self.counters.icmp_opened.inc();
                self.events.push_back(Event::Connect {
                    id,
                    proto: Proto::Icmp,
                    dst: SocketAddrV4::new(ip.dst_addr(), 0),
                });
                id
            }
        };
        self.datagram_out(now, id, icmp.into_inner().to_vec());
    }

    fn open_datagram_flow(
        &mut self,
        now: Duration,
        id: FlowId,
        key: Key,
        proto: Proto,
        ident: u16,
    ) {
        self.flows.insert(
            id,
            Flow {
                key,
                proto,
                kind: FlowKind::Datagram {
                    ready: false,
                    pending: Vec::new(),
                    replied: false,
                    ident,
                },
                last: now,
                mss: 0,
                queued: false,
                client: None,
            },
        );
    }

    /// Queue a datagram of flow `id` toward its host socket.
    fn datagram_out(&mut self, now: Duration, id: FlowId, data: Vec<u8>) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.last = now;
        let FlowKind::Datagram { ready, pending, .. } = &mut flow.kind else {
            return;
        };
        if !*ready {
            if pending.len() < PENDING_DATAGRAMS {
                pending.push(data);
            } else {
                self.counters.host_queue_full.inc();
            }
        } else if self.to_host.len() < HOST_QUEUE {
            self.to_host.push_back((id, data));
        } else {
            self.counters.host_queue_full.inc();
        }
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The host socket of flow `id` is connected (`Ok`) or could not be.
    pub fn connected(&mut self, now: Duration, id: FlowId, result: Result<(), ConnectError>) {
        // Segments already queued (another container's SYN to the same address, say)
        // go through before this flow's listener exists, so it cannot take them.
        if !self.dev.rx.is_empty() {
            self.run_iface(now);
        }
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.last = now;
        match &mut flow.kind {
            FlowKind::Tcp(TcpState::Connecting { syn }) => {
                let syn = std::mem::take(syn);
                match result {
                    Ok(()) => {
                        let mut lease = self.pool.take();
                        let mut sock = tcp_socket(&mut lease);
                        sock.set_nagle_enabled(false);
                        // Immediate ACKs: the container link is memory. They also keep
                        // smoltcp 0.12 from judging its window against a stale ACK: it
                        // panics when a peer sent past a rounded-down scaled window
                        // while an ACK was delayed (smoltcp issue 1048).
                        sock.set_ack_delay(None);
                        let local = IpListenEndpoint {
                            addr: Some(IpAddress::Ipv4(*flow.key.1.ip())),
                            port: flow.key.1.port(),
                        };
                        if sock.listen(local).is_err() {
                            drop(sock);
                            self.pool.give(lease);
                            self.dev.rx.push_back(syn);
                            self.forget(id, false);
                            return;
                        }
                        let before = SockMark::of(&sock);
                        let handle = self.sockets.add(sock);
                        self.handles.insert(handle, id);
                        self.pending_tcp -= 1;
                        flow.kind = FlowKind::Tcp(TcpState::Open {
                            handle,
                            lease,
                            shut_host: false,
                            host_eof: false,
                        });
                        // The SYN goes in right after its listener, before any other
                        // SYN for the same address could take that listener.
                        self.dev.rx.push_back(syn);
                        self.touched.push((id, before));
                        self.counters.tcp_opened.inc();
                        self.poll(now);
                    }
                    Err(e) => {
                        if e == ConnectError::Refused {
                            self.counters.tcp_refused.inc();
                            // No listener: smoltcp answers the SYN with a reset.
                            self.dev.rx.push_back(syn);
                        } else {
                            self.counters.tcp_failed.inc();
                        }
                        self.forget(id, false);
                    }
                }
            }
            FlowKind::Tcp(TcpState::Open { .. }) => {}
            FlowKind::Datagram { ready, pending, .. } => match result {
                Ok(()) => {
                    *ready = true;
                    for d in pending.drain(..) {
                        if self.to_host.len() < HOST_QUEUE {
                            self.to_host.push_back((id, d));
                        } else {
                            self.counters.host_queue_full.inc();
                        }
                    }
                }
                Err(_) => self.forget(id, false),
            },
        }
    }

    /// The next datagram for a host socket: a UDP payload, or an ICMP echo request
    /// (header included; the host's ping socket sets its own identifier).
    pub fn next_datagram(&mut self) -> Option<(FlowId, Vec<u8>)> {
        self.to_host.pop_front()
    }

    /// A datagram the host socket of flow `id` received: a UDP payload, or an ICMP
    /// echo reply from a ping socket. Returns false if the flow is gone.
    pub fn datagram_from_host(&mut self, now: Duration, id: FlowId, data: &[u8]) -> bool {
        let Some(flow) = self.flows.get_mut(&id) else {
            self.counters.drop_stale.inc();
            return false;
        };
        flow.last = now;
        let (ctr, remote) = flow.key;
        let proto = flow.proto;
        let FlowKind::Datagram { replied, ident, .. } = &mut flow.kind else {
            return false;
        };
        *replied = true;
        let ident = *ident;
        match proto {
            Proto::Udp => self.emit_udp(remote, ctr, data),
            Proto::Icmp => {
                let reply = Icmpv4Packet::new_checked(data);
                if reply.map_or(true, |r| r.msg_type() != Icmpv4Message::EchoReply) {
                    self.counters.drop_unsupported.inc();
                    return true;
                }
                self.emit_echo_reply(*remote.ip(), *ctr.ip(), data, ident);
            }
            Proto::Tcp => {}
        }
        true
    }

    /// A datagram reached a published UDP port from `client`, for `ctr`. Returns the
    /// flow carrying it (replies from the container come back on it, through
    /// [`Relay::next_datagram`]), or `None` when the UDP bound is reached. The container
    /// sees the client's own address, or the gateway address with the client's port for
    /// a loopback or an IPv6 client (another port when a different client's flow shows
    /// that one already: each flow has one real client).
    pub fn udp_inbound(
        &mut self,
        now: Duration,
        client: SocketAddr,
        ctr: SocketAddrV4,
        data: &[u8],
    ) -> Option<FlowId> {
        let known = self
            .inbound_udp
            .get(&(client, ctr))
            .and_then(|id| Some((*id, self.flows.get(id)?.key.1)));
        let (id, seen) = match known {
            Some(k) => k,
            None => {
                if self.count.udp >= self.cfg.limits.udp {
                    self.counters.udp_limit.inc();
                    return None;
                }
                let Some(seen) = self.pick_seen(client, ctr, Proto::Udp) else {
                    self.counters.udp_limit.inc();
                    return None;
                };
                let key = (ctr, seen);
                let id = self.new_id();
                self.open_datagram_flow(now, id, key, Proto::Udp, 0);
                if let Some(f) = self.flows.get_mut(&id) {
                    f.client = Some(client);
                    if let FlowKind::Datagram { ready, .. } = &mut f.kind {
                        *ready = true;
                    }
                }
                self.inbound_udp.insert((client, ctr), id);
                self.udp_keys.insert(key, id);
                self.count.udp += 1;
                self.counters.udp_opened.inc();
                (id, seen)
            }
        };
        if let Some(f) = self.flows.get_mut(&id) {
            f.last = now;
        }
        self.emit_udp(seen, ctr, data);
        Some(id)
    }

    /// A host client connected to a published TCP port for `ctr`: open a connection to
    /// the container from the client's address (see [`Relay::udp_inbound`] for how a
    /// client appears). `None` when the TCP bound is reached, or when the client's
    /// address is an open flow's already (a client the host gave the same address and
    /// port before the relay saw the old connection end).
    pub fn tcp_inbound(
        &mut self,
        now: Duration,
        client: SocketAddr,
        ctr: SocketAddrV4,
    ) -> Option<FlowId> {
        if self.count.tcp >= self.cfg.limits.tcp {
            self.counters.tcp_limit.inc();
            return None;
        }
        let seen = self.pick_seen(client, ctr, Proto::Tcp)?;
        let key = (ctr, seen);
        let id = self.new_id();
        let mut lease = self.pool.take();
        let mut sock = tcp_socket(&mut lease);
        sock.set_nagle_enabled(false);
        // Immediate ACKs, as for egress flows (see `connected`).
        sock.set_ack_delay(None);
        let remote = IpEndpoint::new(IpAddress::Ipv4(*ctr.ip()), ctr.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*seen.ip())),
            port: seen.port(),
        };
        if sock.connect(self.iface.context(), remote, local).is_err() {
            drop(sock);
            self.pool.give(lease);
            return None;
        }
        let handle = self.sockets.add(sock);
        self.handles.insert(handle, id);
        self.flows.insert(
            id,
            Flow {
                key,
                proto: Proto::Tcp,
                kind: FlowKind::Tcp(TcpState::Open {
                    handle,
                    lease,
                    shut_host: false,
                    host_eof: false,
                }),
                last: now,
                mss: (self.cfg.mtu.clamp(576, 65535) - 40) as u16,
                queued: false,
                client: None,
            },
        );
        self.tcp_keys.insert(key, id);
        self.count.tcp += 1;
        self.counters.tcp_inbound.inc();
        self.poll(now);
        Some(id)
    }

    /// Run the container-side stack: take queued frames, fire timers, expire idle
    /// flows. Call after [`Relay::input`]s and [`Relay::pump`]s, before
    /// [`Relay::next_frame`].
    pub fn poll(&mut self, now: Duration) {
        self.run_iface(now);
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
        if self.flows.is_empty() {
            t
        } else {
            Some(t.map_or(SWEEP_EVERY, |t| t.min(SWEEP_EVERY)))
        }
    }

    /// TCP flows whose container side moved (data, room, state) since the last call:
    /// [`Relay::pump`] each. Flows that ended are reported as [`Event::Close`] instead.
    pub fn take_ready(&mut self, out: &mut Vec<FlowId>) {
        for id in self.ready.drain(..) {
            if let Some(f) = self.flows.get_mut(&id) {
                f.queued = false;
                out.push(id);
            }
        }
    }

    /// Run the container-side stack over the segments queued for it, then list the TCP
    /// flows they changed as ready.
    fn run_iface(&mut self, now: Duration) {
        self.iface
            .poll(smol_now(now), &mut self.dev, &mut self.sockets);
        for (id, before) in self.touched.drain(..) {
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            let FlowKind::Tcp(TcpState::Open { handle, .. }) = f.kind else {
                continue;
            };
            if SockMark::of(self.sockets.get(handle)) != before && !f.queued {
                f.queued = true;
                self.ready.push(id);
            }
        }
    }

    /// Move bytes between TCP flow `id` and its host stream, both ways, as far as each
    /// side takes them; pass on FINs; notice the end.
    pub fn pump(&mut self, now: Duration, id: FlowId, host: &mut dyn HostStream) -> Pumped {
        let Some(flow) = self.flows.get_mut(&id) else {
            return Pumped::Closed { reset: false };
        };
        let FlowKind::Tcp(TcpState::Open {
            handle,
            shut_host,
            host_eof,
            ..
        }) = &mut flow.kind
        else {
            return Pumped::Open;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(*handle);
        let mut moved = false;
        let mut failed = false;
        // Container → host.
        while sock.can_recv() {
            let r = sock.recv(|buf| match host.write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => moved = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Ok(Err(_)) | Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed && !*shut_host && !sock.may_recv() && sock.recv_queue() == 0 {
            // The container sent FIN and everything before it went out.
            if matches!(
                sock.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            ) {
                *shut_host = true;
                let _ = host.shutdown_write();
            }
        }
        // Host → container.
        while !failed && !*host_eof && sock.may_send() && sock.send_queue() < sock.send_capacity() {
            let r = sock.send(|buf| match host.read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => {
                    *host_eof = true;
                    sock.close();
                }
                Ok(Ok(_)) => moved = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Ok(Err(_)) | Err(_) => {
                    failed = true;
                }
            }
        }
        if failed {
            sock.abort();
        }
        let state = sock.state();
        if moved || failed {
            flow.last = now;
        }
        let host_eof = *host_eof;
        // A connection that ended still delivers what the container sent before its FIN:
        // the flow stays until the host took it (its writable event pumps again).
        let drained = sock.recv_queue() == 0;
        if failed || (drained && matches!(state, tcp::State::Closed | tcp::State::TimeWait)) {
            // TIME-WAIT is not kept: the container is the side that may need it. A
            // connection that closed before the host finished was reset.
            let reset = failed || (state == tcp::State::Closed && !host_eof);
            self.run_iface(now);
            self.forget_quiet(id);
            return Pumped::Closed { reset };
        }
        Pumped::Open
    }

    /// Whether TCP flow `id` wants bytes from the host now (room in its buffer).
    pub fn wants_host_bytes(&self, id: FlowId) -> bool {
        let Some(Flow {
            kind: FlowKind::Tcp(TcpState::Open {
                handle, host_eof, ..
            }),
            ..
        }) = self.flows.get(&id)
        else {
            return false;
        };
        let s = self.sockets.get::<tcp::Socket>(*handle);
        !*host_eof && s.may_send() && s.send_queue() < s.send_capacity()
    }

    /// End flow `id` now, whatever its kind (its host side is gone): a TCP
    /// connection is reset toward the container. No [`Event::Close`] follows.
    pub fn end_flow(&mut self, now: Duration, id: FlowId) {
        self.host_reset(now, id);
    }

    /// The host stream of TCP flow `id` failed or was reset: reset the container side.
    pub fn host_reset(&mut self, now: Duration, id: FlowId) {
        if let Some(Flow {
            kind: FlowKind::Tcp(TcpState::Open { handle, .. }),
            ..
        }) = self.flows.get(&id)
        {
            self.sockets.get_mut::<tcp::Socket>(*handle).abort();
            self.run_iface(now);
        }
        self.forget_quiet(id);
    }

    /// Drop flow `id` without telling the caller (it knows).
    fn forget_quiet(&mut self, id: FlowId) {
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        match flow.proto {
            Proto::Tcp => {
                self.tcp_keys.remove(&flow.key);
                self.count.tcp -= 1;
                match flow.kind {
                    FlowKind::Tcp(TcpState::Connecting { .. }) => self.pending_tcp -= 1,
                    FlowKind::Tcp(TcpState::Open { handle, lease, .. }) => {
                        self.handles.remove(&handle);
                        // The socket is dropped here, before its buffers go back.
                        drop(self.sockets.remove(handle));
                        self.pool.give(lease);
                        self.counters.tcp_closed.inc();
                    }
                    FlowKind::Datagram { .. } => {}
                }
            }
            Proto::Udp => {
                self.udp_keys.remove(&flow.key);
                if let Some(c) = flow.client {
                    self.inbound_udp.remove(&(c, flow.key.0));
                }
                self.count.udp -= 1;
            }
            Proto::Icmp => {
                if let FlowKind::Datagram { ident, .. } = flow.kind {
                    self.icmp_keys
                        .remove(&(*flow.key.0.ip(), ident, *flow.key.1.ip()));
                }
                self.count.icmp -= 1;
            }
        }
    }

    /// Drop flow `id` and tell the caller to close its socket.
    fn forget(&mut self, id: FlowId, reset: bool) {
        if self.flows.contains_key(&id) {
            self.forget_quiet(id);
            self.events.push_back(Event::Close { id, reset });
        }
    }

    /// End idle flows (Linux conntrack's timeouts) and TCP flows smoltcp closed.
    fn sweep(&mut self, now: Duration) {
        let mut ended = Vec::new();
        for (&id, f) in &self.flows {
            let idle = now.saturating_sub(f.last);
            let over = match &f.kind {
                FlowKind::Tcp(TcpState::Connecting { .. }) => idle > timeouts::TCP_SYN_SENT,
                FlowKind::Tcp(TcpState::Open { handle, .. }) => {
                    match self.sockets.get::<tcp::Socket>(*handle).state() {
                        // The segment that ended it made it ready, and `pump` closes
                        // the host side the right way; only a flow nobody pumps ends
                        // here.
                        tcp::State::Closed | tcp::State::TimeWait => idle > timeouts::TCP_CLOSING,
                        tcp::State::Established => idle > timeouts::TCP_ESTABLISHED,
                        tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => {
                            idle > timeouts::TCP_SYN_SENT
                        }
                        _ => idle > timeouts::TCP_CLOSING,
                    }
                }
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
        let mut aborted = false;
        for id in &ended {
            if let Some(Flow {
                kind: FlowKind::Tcp(TcpState::Open { handle, .. }),
                ..
            }) = self.flows.get(id)
            {
                let s = self.sockets.get_mut::<tcp::Socket>(*handle);
                if !matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
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
            self.forget(id, true);
        }
    }

    /// Length of the frame [`Relay::next_frame`] would write next, if any.
    pub fn peek_frame_len(&self) -> Option<usize> {
        self.dev.tx.front().map(|p| ETH_LEN + p.len())
    }

    /// The next frame for the container network, written into `out` (which must hold
    /// 14 + 65535 bytes for a superframe; a frame that does not fit is dropped).
    pub fn next_frame(&mut self, out: &mut [u8]) -> Option<FrameOut> {
        loop {
            let pkt = self.dev.tx.pop_front()?;
            let f = self.frame(&pkt, out);
            recycle(&mut self.dev.tx_spare, pkt);
            if let Some(f) = f {
                self.counters.frames_out.inc();
                return Some(f);
            }
        }
    }

    fn frame(&self, pkt: &[u8], out: &mut [u8]) -> Option<FrameOut> {
        if pkt.len() < ipv4::HEADER_LEN || out.len() < ETH_LEN + pkt.len() {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(pkt);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mac = self
            .macs
            .get(&dst)
            .copied()
            .unwrap_or_else(|| MacAddr::from_ipv4(dst));
        let mut eth = EthernetFrame::new_unchecked(&mut out[..ETH_LEN + pkt.len()]);
        eth.set_dst_addr(mac);
        eth.set_src_addr(self.cfg.gateway.mac);
        eth.set_ethertype(EtherType::Ipv4);
        eth.payload_mut().copy_from_slice(pkt);
        let ihl = ip.header_len();
        let mut f = FrameOut {
            len: ETH_LEN + pkt.len(),
            csum_partial: false,
            gso_size: 0,
            hdr_len: 0,
            l4_offset: (ETH_LEN + ihl) as u16,
        };
        if ip.protocol() == tcp_wire::PROTOCOL && pkt.len() >= ihl + tcp_wire::HEADER_LEN {
            let seg = TcpPacket::new_unchecked(&pkt[ihl..]);
            let thl = seg.header_len();
            let tcp_len = pkt.len() - ihl;
            // Pseudo-header sum only; the receiver completes it.
            let sum = pseudo_header_v4(src, dst, tcp_wire::PROTOCOL, tcp_len as u16);
            TcpPacket::new_unchecked(&mut out[ETH_LEN + ihl..]).set_checksum(sum);
            f.csum_partial = true;
            f.hdr_len = (ETH_LEN + ihl + thl) as u16;
            let payload = tcp_len.saturating_sub(thl);
            let key = (
                SocketAddrV4::new(dst, seg.dst_port()),
                SocketAddrV4::new(src, seg.src_port()),
            );
            let mss = self
                .tcp_keys
                .get(&key)
                .and_then(|id| self.flows.get(id))
                .map(|fl| fl.mss)
                .filter(|&m| m > 0)
                .unwrap_or((self.cfg.mtu.clamp(576, 65535) - 40) as u16);
            if payload > usize::from(mss) {
                f.gso_size = mss;
            }
        }
        Some(f)
    }

    /// A UDP datagram from `src` to the container at `dst`, carrying `data`.
    fn emit_udp(&mut self, src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) {
        let udp = UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            payload: data,
        };
        if ipv4::HEADER_LEN + udp.buffer_len() > IP_MAX {
            self.counters.drop_malformed.inc();
            return;
        }
        let ip = Ipv4Repr::new(*src.ip(), *dst.ip(), udp_wire::PROTOCOL, udp.buffer_len());
        let mut p = self.dev.tx_buffer(ip.buffer_len() + udp.buffer_len());
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
        let addrs = IpPair::from((*src.ip(), *dst.ip()));
        udp.emit(
            &mut UdpPacket::new_unchecked(&mut p[ipv4::HEADER_LEN..]),
            &addrs,
        );
        self.dev.tx.push_back(p);
    }

    /// The echo reply `msg` from `src` to the container at `dst`, under the container's
    /// own identifier `ident`.
    fn emit_echo_reply(&mut self, src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8], ident: u16) {
        let ip = Ipv4Repr::new(src, dst, icmpv4::PROTOCOL, msg.len());
        let mut p = self.dev.tx_buffer(ip.buffer_len() + msg.len());
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
        let icmp = &mut p[ipv4::HEADER_LEN..];
        icmp.copy_from_slice(msg);
        crate::icmp::set_echo_ident(icmp, ident);
        self.dev.tx.push_back(p);
    }
}

/// Raise the MSS option of a SYN's TCP header to [`BIG_MSS`]; returns the MSS the
/// sender asked for, if it gave one.
fn raise_mss(seg: &mut [u8]) -> Option<u16> {
    let mut seg = TcpPacket::new_unchecked(seg);
    let mss = seg.mss()?;
    seg.set_mss(BIG_MSS.max(mss));
    Some(mss)
}
mod bufpool;
#[cfg(test)]
mod tests;

use bufpool::{BufPool, Lease};
