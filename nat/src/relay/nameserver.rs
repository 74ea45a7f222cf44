//! The network's DNS server at the gateway address: UDP and TCP to port 53 of the
//! gateway address are answered here, never carried to a host socket (not even to the
//! host's loopback with `host_loopback`). Each query goes to the network's
//! [`DnsServer`]; what it answers goes back to the asker, and what it forwards waits in
//! a queue the caller drains ([`Relay::next_dns_forward`]) and sends from the network's
//! forwarding socket, whose messages come back through [`Relay::dns_upstream`].
//!
//! Over TCP (RFC 1035 §4.2.2, RFC 7766 §8) the relay accepts the connection in its own
//! smoltcp interface, with small buffers of its own (no host connect, no
//! [`Event::Connect`](super::Event::Connect)); each message has a two-byte length in
//! front. Such connections count against [`FlowLimits::tcp`](super::FlowLimits::tcp)
//! and are closed after [`DNS_TCP_IDLE`] without traffic (RFC 7766 §6.2.3 leaves the
//! timeout to the server; a few seconds is the usual choice).

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::Relay;
use super::dnsstate::Conn;
use super::flows::{Key, Proto};
use crate::dns::{Asker, DnsConfig, DnsCounters, MAX_IN_FLIGHT, Names, Outgoing};

/// The DNS port (RFC 1035 §4.2).
pub(super) const DNS_PORT: u16 = 53;
/// How long a DNS connection over TCP may stay without traffic before the relay closes
/// it (then resets it if the client does not close its side within as long again).
pub const DNS_TCP_IDLE: Duration = Duration::from_secs(10);
/// smoltcp's buffers of one DNS connection, per direction: messages are gathered and
/// answers queued outside them, so a small window is enough.
const SOCKET_BUFFER: usize = 4096;
/// Longest message over TCP, with its length in front.
const MESSAGE_MAX: usize = 2 + 65535;
/// Answers waiting for room in one connection's socket, in bytes: a client that does
/// not read loses the answers beyond it (counted).
const OUT_MAX: usize = 2 * MESSAGE_MAX;
/// Forwarded queries waiting for the caller to send them (the server keeps at most
/// [`MAX_IN_FLIGHT`] in flight, and retries one at a time).
const FORWARD_QUEUE: usize = 2 * MAX_IN_FLIGHT;

/// The DNS settings of a network with the defaults of [`crate::dns`]: `network` is the
/// key the network's names are found under; `forward` false on internal networks
/// ([`DnsConfig::new`]).
pub fn dns_config(network: &str, forward: bool) -> DnsConfig {
    DnsConfig::new(network, forward)
}

impl Relay {
    /// Whether `ip` (from a network's endpoint) is for the DNS server: UDP or TCP to
    /// the gateway address's port 53.
    pub(super) fn is_dns(&self, ip: &tapnet_wire::Ipv4Packet<&[u8]>) -> bool {
        ip.dst_addr() == self.cfg.gateway.ip
            && matches!(
                ip.protocol(),
                tapnet_wire::tcp::PROTOCOL | tapnet_wire::udp::PROTOCOL
            )
            && ip.payload().get(2..4) == Some(&DNS_PORT.to_be_bytes()[..])
    }

    /// The names the server answers from from now on.
    pub fn set_dns_names(&mut self, names: Arc<Names>) {
        self.dns.server.set_names(names);
    }

    /// The host's resolvers changed.
    pub fn set_dns_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.dns.server.set_upstreams(upstreams);
    }

    /// The DNS server's counters, shareable with other threads.
    pub fn dns_counters(&self) -> Arc<DnsCounters> {
        self.dns.server.counters()
    }

    /// DNS connections over TCP open now (they count as TCP flows against
    /// [`FlowLimits::tcp`](super::FlowLimits::tcp)).
    pub fn dns_tcp_conns(&self) -> usize {
        self.dns.conns()
    }

    /// The next query to forward: send `msg` to resolver `to` from the network's
    /// forwarding socket (an unconnected UDP socket of the host).
    pub fn next_dns_forward(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.dns.forwards.pop_front()
    }

    /// A message the network's forwarding socket received from `from`: an answer for
    /// an asker, if it matches a query in flight. Call [`Relay::poll`] after it.
    pub fn dns_upstream(&mut self, now: Duration, from: SocketAddr, msg: &[u8]) {
        if let Some(o) = self.dns.server.upstream(now, from, msg) {
            self.dns_out(o);
        }
    }

    /// A UDP query from `src` to the gateway's port 53.
    pub(super) fn dns_udp(&mut self, now: Duration, src: SocketAddrV4, msg: &[u8]) {
        if let Some(o) = self.dns.server.query(now, Asker::Udp(src), msg) {
            self.dns_out(o);
        }
    }

    /// Send what the server said: an answer to its asker, a query to forward.
    fn dns_out(&mut self, o: Outgoing) {
        match o {
            Outgoing::Answer(Asker::Udp(to), msg) => {
                let from = SocketAddrV4::new(self.cfg.gateway.ip, DNS_PORT);
                self.emit_udp(from, to, &msg);
            }
            Outgoing::Answer(Asker::Tcp { conn, .. }, msg) => {
                let Some(c) = self.dns.conns.get_mut(&conn) else {
                    // The connection closed meanwhile.
                    return;
                };
                let Ok(len) = u16::try_from(msg.len()) else {
                    self.counters.drop_malformed.inc();
                    return;
                };
                if c.out.len() + 2 + msg.len() > OUT_MAX {
                    self.counters.host_queue_full.inc();
                    return;
                }
                c.out.extend_from_slice(&len.to_be_bytes());
                c.out.extend_from_slice(&msg);
                self.dns.touched.push(conn);
            }
            Outgoing::Forward(to, msg) => {
                self.dns.maybe_in_flight = true;
                if self.dns.forwards.len() >= FORWARD_QUEUE {
                    // The server times it out like any unanswered query.
                    self.counters.host_queue_full.inc();
                    return;
                }
                self.dns.forwards.push_back((to, msg));
            }
        }
    }

    /// A TCP segment (`ip`, its whole IPv4 packet) from the container to the gateway's
    /// port 53 that no relayed flow owns. `new_syn`: a SYN without ACK or RST.
    pub(super) fn dns_tcp_input(&mut self, now: Duration, key: Key, new_syn: bool, ip: &[u8]) {
        if let Some(&id) = self.dns.by_key.get(&key) {
            self.dev.queue_rx(ip);
            self.dns.touched.push(id);
            return;
        }
        if !new_syn {
            // Not a connection we know: smoltcp resets it (or ignores a reset).
            self.dev.queue_rx(ip);
            return;
        }
        let limits = self.cfg.limits;
        if self.flows.outbound(Proto::Tcp) + self.dns.conns() >= limits.tcp {
            // No listener: smoltcp answers with a reset.
            self.counters.tcp_limit.inc();
            self.dev.queue_rx(ip);
            return;
        }
        // Segments queued before go in first: this SYN must meet its own listener.
        if !self.dev.rx.is_empty() {
            self.run_iface(now);
        }
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.cfg.gateway.ip)),
            port: DNS_PORT,
        };
        if sock.listen(local).is_err() {
            self.dev.queue_rx(ip);
            return;
        }
        let handle = self.sockets.add(sock);
        self.dev.queue_rx(ip);
        self.run_iface(now);
        if self.sockets.get::<tcp::Socket>(handle).state() == tcp::State::Listen {
            // smoltcp did not take the SYN (a bad segment): no listener stays behind to
            // take another client's.
            drop(self.sockets.remove(handle));
            return;
        }
        let id = self.dns.next_conn;
        self.dns.next_conn += 1;
        self.dns.conns.insert(
            id,
            Conn {
                key,
                handle,
                inbuf: Vec::new(),
                out: Vec::new(),
                last: now,
                closing: false,
            },
        );
        self.dns.by_key.insert(key, id);
        self.counters.dns_tcp_opened.inc();
    }

    /// The server's timers (resolvers that did not answer), and the DNS connections
    /// touched since the last pass. Part of [`Relay::poll`].
    pub(super) fn dns_poll(&mut self, now: Duration) {
        if self.dns.maybe_in_flight {
            match self.dns.server.poll_at() {
                None => self.dns.maybe_in_flight = false,
                Some(t) if t <= now => {
                    let mut due = std::mem::take(&mut self.dns.due);
                    self.dns.server.poll(now, &mut due);
                    for o in due.drain(..) {
                        self.dns_out(o);
                    }
                    self.dns.due = due;
                }
                Some(_) => {}
            }
        }
        if self.dns.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.dns.touched);
        touched.sort_unstable();
        touched.dedup();
        for id in touched.drain(..) {
            self.dns_conn(now, id);
        }
        // What `dns_conn` listed again meanwhile is its own answers, written already.
        self.dns.touched.clear();
        self.dns.touched = touched;
        // Answers written and FINs owed leave now.
        self.run_iface(now);
    }

    /// Read the queries of DNS connection `id`, answer them, write what waits, notice
    /// its end.
    fn dns_conn(&mut self, now: Duration, id: u64) {
        let mut moved = false;
        // Until the socket has nothing more: a message that completes the gathered
        // bytes may leave queries behind it in the socket, with no segment to come.
        while self.dns_read(now, id) {
            moved = true;
        }
        let Some(c) = self.dns.conns.get_mut(&id) else {
            return;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
        while !c.out.is_empty() && sock.can_send() {
            let n = sock.send_slice(&c.out).unwrap_or(0);
            if n == 0 {
                break;
            }
            c.out.drain(..n);
            moved = true;
        }
        if moved {
            c.last = now;
        }
        if !sock.may_recv() && c.out.is_empty() && sock.state() == tcp::State::CloseWait {
            // The client is done asking and has every answer.
            sock.close();
        }
        if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
            self.dns_forget(id);
        }
    }

    /// Read what DNS connection `id` has, as far as a message's room goes, and ask the
    /// server each whole message; whether anything was read.
    fn dns_read(&mut self, now: Duration, id: u64) -> bool {
        let Some(c) = self.dns.conns.get_mut(&id) else {
            return false;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let mut read = false;
        while sock.can_recv() && c.inbuf.len() < MESSAGE_MAX {
            let room = MESSAGE_MAX - c.inbuf.len();
            let inbuf = &mut c.inbuf;
            let n = sock
                .recv(|b| {
                    let k = b.len().min(room);
                    inbuf.extend_from_slice(&b[..k]);
                    (k, k)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            read = true;
        }
        // Whole messages, each with its length in front (RFC 1035 §4.2.2).
        let src = *c.key.0.ip();
        let mut inbuf = std::mem::take(&mut c.inbuf);
        let mut at = 0;
        let mut answers = Vec::new();
        while let Some(len) = inbuf.get(at..at + 2) {
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(msg) = inbuf.get(at + 2..at + 2 + len) else {
                break;
            };
            let asker = Asker::Tcp { conn: id, src };
            if let Some(o) = self.dns.server.query(now, asker, msg) {
                answers.push(o);
            }
            at += 2 + len;
        }
        inbuf.drain(..at);
        if let Some(c) = self.dns.conns.get_mut(&id) {
            c.inbuf = inbuf;
        }
        for o in answers {
            self.dns_out(o);
        }
        read
    }

    /// Drop DNS connection `id` and its socket.
    fn dns_forget(&mut self, id: u64) {
        if let Some(c) = self.dns.conns.remove(&id) {
            self.dns.by_key.remove(&c.key);
            drop(self.sockets.remove(c.handle));
            if self.dns.maybe_in_flight {
                self.dns.server.tcp_closed(id);
            }
            self.counters.dns_tcp_closed.inc();
        }
    }

    /// Close DNS connections idle for [`DNS_TCP_IDLE`]; reset those still open as long
    /// again after. Part of the relay's sweep.
    pub(super) fn dns_sweep(&mut self, now: Duration) {
        if self.dns.conns.is_empty() {
            return;
        }
        let mut reset = Vec::new();
        for (&id, c) in &mut self.dns.conns {
            if now.saturating_sub(c.last) <= DNS_TCP_IDLE {
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if c.closing {
                sock.abort();
                reset.push(id);
            } else {
                sock.close();
                c.closing = true;
                c.last = now;
                self.dns.touched.push(id);
            }
        }
        self.run_iface(now);
        for id in reset {
            self.dns_forget(id);
        }
    }
}
