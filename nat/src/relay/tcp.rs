//! TCP flows: the container's connections terminated by smoltcp sockets (egress, held
//! until the host connect succeeds; and published ports, connected from the client's
//! address), the MSS raised so that smoltcp sends superframes, and the bytes pumped
//! between each socket and its [`HostStream`].

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use tapnet_wire::{Ipv4Packet, TcpFlags, TcpPacket};

use super::budget::Budget;
use super::bufpool::Lease;
use super::device::{OneRx, smol_now};
use super::flows::{Flow, FlowId, FlowKind, Proto, SockMark, TcpState};
use super::isolation::Isolation;
use super::nameserver::DNS_PORT;
use super::{ConnectError, Event, Relay};

/// The MSS the relay shows smoltcp for a container (the largest IPv4 packet less 40).
const BIG_MSS: u16 = 65495;
/// Smallest MSS taken from a container (RFC 879's 536 less is allowed by RFC 1122 only
/// down to what a 128-byte IP packet leaves; Linux's `tcp_min_snd_mss` is 48, Linux
/// clamps to 88 since 5.x): below it the relay uses it.
pub(super) const MIN_MSS: u16 = 88;
/// The MSS a SYN without the option stands for (RFC 9293 §3.7.1).
const DEFAULT_MSS: u16 = 536;

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

/// A TCP socket on the buffers of `lease`, which must outlive it (see `bufpool`), set
/// up for the in-memory container link.
fn tcp_socket(lease: &mut Lease) -> tcp::Socket<'static> {
    // SAFETY: the socket made here is the slices' only user; every caller keeps the
    // lease until the socket is dropped (on failure before the lease is given back, or
    // once removed from the socket set in `forget_quiet`, or with the relay, whose
    // socket set is dropped before its flows).
    let (rx, tx) = unsafe { lease.lend() };
    let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    sock.set_nagle_enabled(false);
    // Immediate ACKs: the container link is memory. They also keep smoltcp 0.12 from
    // judging its window against a stale ACK: it panics when a peer sent past a
    // rounded-down scaled window while an ACK was delayed (smoltcp issue 1048).
    sock.set_ack_delay(None);
    sock
}

/// Raise the MSS option of a SYN's TCP header to [`BIG_MSS`]; returns the MSS the
/// sender asked for, if it gave one.
fn raise_mss(seg: &mut [u8]) -> Option<u16> {
    let mut seg = TcpPacket::new_unchecked(seg);
    let mss = seg.mss()?;
    seg.set_mss(BIG_MSS.max(mss));
    Some(mss)
}

impl Relay {
    /// The largest MSS the network's MTU allows.
    pub(super) fn max_mss(&self) -> u16 {
        (self.cfg.mtu.clamp(576, 65535) - 40) as u16
    }

    /// A container's MSS option, within what the network carries: it becomes the
    /// segment size of the superframes sent back, so a tiny one must not turn one frame
    /// into thousands of segments.
    fn clamp_mss(&self, mss: u16) -> u16 {
        mss.clamp(MIN_MSS, self.max_mss())
    }

    /// A TCP segment from the container (`ip` is its whole IPv4 packet).
    pub(super) fn input_tcp(
        &mut self,
        now: Duration,
        ip: Ipv4Packet<&[u8]>,
        isolation: &Isolation,
    ) {
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
        if key.1 == SocketAddrV4::new(self.cfg.gateway.ip, DNS_PORT)
            && !self.flows.tcp.contains_key(&key)
        {
            // The network's DNS server, never the host's loopback.
            self.dns_tcp_input(now, key, syn && !ack && !rst, ip);
            return;
        }
        match self.flows.tcp.get(&key).copied() {
            Some(id) => {
                let max_mss = self.max_mss();
                let Some(flow) = self.flows.by_id.get_mut(&id) else {
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
                            self.flows.ready.push(id);
                        }
                    }
                    FlowKind::Tcp(TcpState::Open { handle, .. }) => {
                        let before = SockMark::of(self.sockets.get(handle));
                        self.flows.touched.push((id, before));
                        self.dev.queue_rx(ip);
                        if syn {
                            // The container's SYN-ACK to a published connection.
                            if let Some(pkt) = self.dev.rx.back_mut() {
                                if let Some(m) = raise_mss(&mut pkt[ihl..]) {
                                    flow.mss = m.clamp(MIN_MSS, max_mss);
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
                let mss = self.clamp_mss(raise_mss(&mut pkt[ihl..]).unwrap_or(DEFAULT_MSS));
                let limits = self.cfg.limits;
                if self.flows.outbound(Proto::Tcp) + self.dns_tcp_conns() >= limits.tcp
                    || self.flows.pending_tcp >= limits.tcp_pending
                {
                    // No listener: smoltcp answers with a reset.
                    self.counters.tcp_limit.inc();
                    self.dev.rx.push_back(pkt);
                    return;
                }
                let dst = self.host_dst(key.1);
                let kind = FlowKind::Tcp(TcpState::Connecting { syn: pkt });
                let mut flow = Flow::new(key, Proto::Tcp, kind, now);
                flow.mss = mss;
                let id = self.flows.add(flow);
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

    /// The host connect of TCP flow `id`, whose container SYN waits, succeeded (`Ok`)
    /// or not: let the SYN in, to a listener of its own or to a reset.
    pub(super) fn tcp_connected(
        &mut self,
        now: Duration,
        id: FlowId,
        result: Result<(), ConnectError>,
        budget: &mut Budget,
    ) {
        let size = match result {
            Ok(()) if self.flows.by_id.contains_key(&id) => self.reserve_tcp(budget),
            _ => None,
        };
        let Some(flow) = self.flows.by_id.get_mut(&id) else {
            return;
        };
        let FlowKind::Tcp(TcpState::Connecting { syn }) = &mut flow.kind else {
            return;
        };
        let syn = std::mem::take(syn);
        match result {
            Ok(()) => {
                let Some(size) = size else {
                    // No memory for it: the container's SYN meets no listener (a reset),
                    // and the host connection closes.
                    self.dev.rx.push_back(syn);
                    self.forget(id, true);
                    return;
                };
                let mut lease = self.pool.take(size);
                let mut sock = tcp_socket(&mut lease);
                let local = IpListenEndpoint {
                    addr: Some(IpAddress::Ipv4(*flow.key.1.ip())),
                    port: flow.key.1.port(),
                };
                if sock.listen(local).is_err() {
                    drop(sock);
                    self.released += lease.bytes();
                    self.pool.give(lease);
                    self.dev.rx.push_back(syn);
                    self.forget(id, false);
                    return;
                }
                let before = SockMark::of(&sock);
                let handle = self.sockets.add(sock);
                self.flows.pending_tcp -= 1;
                flow.kind = FlowKind::Tcp(TcpState::Open {
                    handle,
                    lease,
                    shut_host: false,
                    host_eof: false,
                });
                // The SYN goes in right after its listener, before any other SYN for the
                // same address could take that listener.
                self.dev.rx.push_back(syn);
                self.flows.touched.push((id, before));
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

    /// A host client connected to a published TCP port for `ctr`: open a connection to
    /// the container from the client's address (see [`Relay::udp_inbound`] for how a
    /// client appears). `None` when a bound is reached (`limits.tcp_inbound`,
    /// `limits.inbound_per_client`, the memory `budget`), or when the client's
    /// address is an open flow's already (a client the host gave the same address and
    /// port before the relay saw the old connection end).
    pub fn tcp_inbound(
        &mut self,
        now: Duration,
        client: SocketAddr,
        ctr: SocketAddrV4,
        budget: &mut Budget,
    ) -> Option<FlowId> {
        if self.cfg.gateway.internal {
            self.counters.drop_internal.inc();
            return None;
        }
        if self.flows.inbound.tcp >= self.cfg.limits.tcp_inbound {
            self.counters.tcp_inbound_limit.inc();
            return None;
        }
        if self
            .flows
            .client_capped(client, self.cfg.limits.inbound_per_client)
        {
            self.counters.inbound_client_limit.inc();
            return None;
        }
        let gw = self.cfg.gateway.ip;
        let seen = self.flows.pick_seen(client, ctr, Proto::Tcp, gw)?;
        let size = self.reserve_tcp(budget)?;
        let mut lease = self.pool.take(size);
        let mut sock = tcp_socket(&mut lease);
        let remote = IpEndpoint::new(IpAddress::Ipv4(*ctr.ip()), ctr.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*seen.ip())),
            port: seen.port(),
        };
        if sock.connect(self.iface.context(), remote, local).is_err() {
            drop(sock);
            self.released += lease.bytes();
            self.pool.give(lease);
            return None;
        }
        let handle = self.sockets.add(sock);
        let kind = FlowKind::Tcp(TcpState::Open {
            handle,
            lease,
            shut_host: false,
            host_eof: false,
        });
        let mut flow = Flow::new((ctr, seen), Proto::Tcp, kind, now);
        flow.mss = self.max_mss();
        flow.client = Some(client);
        let id = self.flows.add(flow);
        self.counters.tcp_inbound.inc();
        self.poll(now);
        Some(id)
    }

    /// Move bytes between TCP flow `id` and its host stream, both ways, as far as each
    /// side takes them; pass on FINs; notice the end.
    pub fn pump(&mut self, now: Duration, id: FlowId, host: &mut dyn HostStream) -> Pumped {
        let Some(flow) = self.flows.by_id.get_mut(&id) else {
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
        }) = self.flows.by_id.get(&id)
        else {
            return false;
        };
        let s = self.sockets.get::<tcp::Socket>(*handle);
        !*host_eof && s.may_send() && s.send_queue() < s.send_capacity()
    }

    /// The host stream of TCP flow `id` failed or was reset: reset the container side.
    pub fn host_reset(&mut self, now: Duration, id: FlowId) {
        if let Some(Flow {
            kind: FlowKind::Tcp(TcpState::Open { handle, .. }),
            ..
        }) = self.flows.by_id.get(&id)
        {
            self.sockets.get_mut::<tcp::Socket>(*handle).abort();
            self.run_iface(now);
        }
        self.forget_quiet(id);
    }
}
