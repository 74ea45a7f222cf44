//! The host thread's pass over one network: frames from the engine into the relay,
//! the relay's events (host sockets to open and close), ready TCP flows pumped,
//! datagrams to host sockets, and the relay's frames into pool slots for the engine.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tapnet_nat::icmp::{self, RawIdents};
use tapnet_nat::relay::{ConnectError, Event, FlowId, FrameOut, Proto, Pumped};
use tapnet_wire::{VnetHdr, tcp};

use super::socks::{Sock, StreamIo};
use super::thread::{BATCH, Host};
use crate::pool::HEADROOM;

impl Host {
    /// Move one network's frames and events.
    pub(super) fn service(&mut self, i: usize) {
        let now = self.now();
        let Some(Some(n)) = self.nets.get_mut(i) else {
            return;
        };
        for _ in 0..BATCH {
            let Ok(h) = n.from_engine.pop() else {
                break;
            };
            let gso = self.pool.meta(&h).vnet.is_gso();
            n.relay
                .input(now, self.pool.frame(&h), gso, &self.isolation);
            self.pool.free(h);
        }
        if !n.from_engine.is_empty() {
            // More than one batch waits: come back at once, the engine rang only once.
            self.busy = true;
        }
        n.relay.poll(now);
        // Events: sockets to open and close.
        let mut opens = Vec::new();
        let mut closes = Vec::new();
        while let Some(e) = n.relay.poll_event() {
            match e {
                Event::Connect { id, proto, dst } => opens.push((id, proto, dst)),
                Event::Close { id, reset } => {
                    n.udp_clients.remove(&id);
                    if let Some(t) = n.flows.remove(&id) {
                        closes.push((t, reset));
                    }
                }
            }
        }
        for (t, reset) in closes {
            self.remove_sock(t, reset);
        }
        for (id, proto, dst) in opens {
            self.open_flow(i, now, id, proto, dst);
        }
        let Some(Some(n)) = self.nets.get_mut(i) else {
            return;
        };
        // TCP flows whose container side moved.
        let mut ready = Vec::new();
        n.relay.take_ready(&mut ready);
        let mut closed = Vec::new();
        for id in ready {
            let Some(&t) = n.flows.get(&id) else {
                continue;
            };
            if let Some(Sock::Stream {
                s,
                connecting: false,
                ..
            }) = self.socks.get(t)
            {
                if let Pumped::Closed { reset } = n.relay.pump(now, id, &mut StreamIo(s)) {
                    closed.push((t, reset));
                }
            }
        }
        // Datagrams for host sockets.
        while let Some((id, data)) = n.relay.next_datagram() {
            if let Some(&(lt, client)) = n.udp_clients.get(&id) {
                if let Some(Sock::UdpListen { s, .. }) = self.socks.get(lt) {
                    let _ = s.send_to(&data, client);
                }
            } else if let Some(&t) = n.flows.get(&id) {
                if let Some(Sock::Dgram { s, raw_ident, .. }) = self.socks.get(t) {
                    match raw_ident {
                        None => {
                            let _ = s.send(&data);
                        }
                        Some(ident) => {
                            let mut m = data;
                            if icmp::set_echo_ident(&mut m, *ident) {
                                let _ = s.send(&m);
                            }
                        }
                    }
                }
            }
        }
        n.relay.poll(now);
        // Frames for the engine, straight into pool slots.
        let mut sent = false;
        let mut blocked = false;
        while let Some(len) = n.relay.peek_frame_len() {
            if n.to_engine.is_abandoned() {
                // The gateway port left the engine (its network is going): nobody
                // would free what is pushed now.
                break;
            }
            if n.to_engine.is_full() {
                blocked = true;
                break;
            }
            let Some(mut h) = self.pool.alloc_for(len) else {
                blocked = true;
                break;
            };
            let written = {
                let p = self.pool.get_mut(&mut h);
                match n.relay.next_frame(&mut p.slot[HEADROOM..]) {
                    Some(f) => {
                        p.meta.head = HEADROOM as u32;
                        p.meta.len = f.len as u32;
                        p.meta.vnet = vnet_for(&f);
                        true
                    }
                    None => false,
                }
            };
            if !written {
                self.pool.free(h);
                break;
            }
            if let Err(rtrb::PushError::Full(h)) = n.to_engine.push(h) {
                self.pool.free(h);
                blocked = true;
                break;
            }
            sent = true;
        }
        if sent {
            if let Some(notifier) = n.notifier.get() {
                notifier.notify();
            }
        }
        self.out_frames_blocked |= blocked;
        // Queries for the host's resolvers.
        let mut forwards = Vec::new();
        while let Some(f) = n.relay.next_dns_forward() {
            forwards.push(f);
        }
        for (t, reset) in closed {
            self.remove_sock(t, reset);
        }
        for (to, msg) in forwards {
            self.forward_dns(i, to, &msg);
        }
        if let Some(Some(n)) = self.nets.get_mut(i) {
            n.relay.settle(&mut self.budget);
        }
        self.flow_memory
            .store(self.budget.used() as u64, Ordering::Relaxed);
    }

    /// Open the host socket of a new outbound flow.
    fn open_flow(
        &mut self,
        net: usize,
        now: Duration,
        id: FlowId,
        proto: Proto,
        dst: SocketAddrV4,
    ) {
        let opened: io::Result<(Sock, bool)> = match proto {
            Proto::Tcp => mio::net::TcpStream::connect(SocketAddr::V4(dst)).map(|s| {
                let _ = s.set_nodelay(true);
                (
                    Sock::Stream {
                        net,
                        id,
                        s,
                        connecting: true,
                    },
                    false,
                )
            }),
            Proto::Udp => udp_connected(dst).map(|s| {
                (
                    Sock::Dgram {
                        net,
                        id,
                        s,
                        raw_ident: None,
                    },
                    true,
                )
            }),
            Proto::Icmp => icmp_socket(dst, &mut self.raw_idents).map(|(s, raw_ident)| {
                (
                    Sock::Dgram {
                        net,
                        id,
                        s,
                        raw_ident,
                    },
                    true,
                )
            }),
        };
        let Some(Some(n)) = self.nets.get_mut(net) else {
            return;
        };
        match opened {
            Ok((sock, ready_now)) => match self.watch_flow(sock) {
                Ok(t) => {
                    let Some(Some(n)) = self.nets.get_mut(net) else {
                        return;
                    };
                    n.flows.insert(id, t);
                    if ready_now {
                        n.relay.connected(now, id, Ok(()), &mut self.budget);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch a host socket");
                    if let Some(Some(n)) = self.nets.get_mut(net) {
                        n.relay
                            .connected(now, id, Err(ConnectError::Failed), &mut self.budget);
                    }
                }
            },
            Err(e) => {
                if e.kind() == io::ErrorKind::AddrNotAvailable && proto == Proto::Icmp {
                    n.relay.counters_ref().icmp_ident_limit.inc();
                }
                let why = if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Failed
                };
                tracing::debug!(error = %e, %dst, ?proto, "cannot open a host socket");
                n.relay.connected(now, id, Err(why), &mut self.budget);
            }
        }
    }
}

impl Host {
    /// Send `msg` to resolver `to` from network `net`'s forwarding socket of that
    /// family, made (and watched) on first use. A send that fails is not retried: the
    /// server's timeout answers the asker.
    fn forward_dns(&mut self, net: usize, to: SocketAddr, msg: &[u8]) {
        let v6 = to.is_ipv6();
        let Some(Some(n)) = self.nets.get(net) else {
            return;
        };
        let t = match n.dns_socks[usize::from(v6)] {
            Some(t) => t,
            None => {
                let any: SocketAddr = if v6 {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let made = mio::net::UdpSocket::bind(any).and_then(|s| {
                    self.socks
                        .add(self.poll.registry(), Sock::Dns { net, s, v6 })
                });
                match made {
                    Ok(t) => {
                        if let Some(Some(n)) = self.nets.get_mut(net) {
                            n.dns_socks[usize::from(v6)] = Some(t);
                        }
                        t
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot open a DNS forwarding socket");
                        return;
                    }
                }
            }
        };
        if let Some(Sock::Dns { s, .. }) = self.socks.get(t) {
            if let Err(e) = s.send_to(msg, to) {
                tracing::debug!(error = %e, %to, "cannot forward a DNS query");
            }
        }
    }

    /// Watch the new socket of a flow; on failure its raw echo identifier goes back.
    fn watch_flow(&mut self, sock: Sock) -> io::Result<mio::Token> {
        let raw_ident = match &sock {
            Sock::Dgram { raw_ident, .. } => *raw_ident,
            _ => None,
        };
        let added = self.socks.add(self.poll.registry(), sock);
        if let (Err(_), Some(i)) = (&added, raw_ident) {
            self.raw_idents.free(i);
        }
        added
    }
}

fn udp_connected(dst: SocketAddrV4) -> io::Result<mio::net::UdpSocket> {
    let s = mio::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    s.connect(SocketAddr::V4(dst))?;
    Ok(s)
}

/// A socket for ICMP echo to `dst`: an unprivileged ping socket where
/// `net.ipv4.ping_group_range` admits the daemon's group (the kernel then picks the
/// echo identifier), else a raw ICMP socket (needs CAP_NET_RAW) with an identifier of
/// the flow's own from `idents`, unique across every network (given back when the
/// socket is removed). `AddrNotAvailable` when no identifier is free.
fn icmp_socket(
    dst: SocketAddrV4,
    idents: &mut RawIdents,
) -> io::Result<(mio::net::UdpSocket, Option<u16>)> {
    match icmp_fd(dst, libc::SOCK_DGRAM) {
        Ok(s) => Ok((s, None)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            let Some(ident) = idents.alloc() else {
                return Err(io::ErrorKind::AddrNotAvailable.into());
            };
            icmp_fd(dst, libc::SOCK_RAW)
                .map(|s| (s, Some(ident)))
                .inspect_err(|_| idents.free(ident))
        }
        Err(e) => Err(e),
    }
}

fn icmp_fd(dst: SocketAddrV4, kind: libc::c_int) -> io::Result<mio::net::UdpSocket> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let s = mio::net::UdpSocket::from_std(UdpSocket::from(owned));
    s.connect(SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0)))?;
    Ok(s)
}

/// The virtio-net header of a relay frame.
fn vnet_for(f: &FrameOut) -> VnetHdr {
    let mut v = VnetHdr::default();
    if f.csum_partial {
        v.flags = VnetHdr::F_NEEDS_CSUM;
        v.csum_start = f.l4_offset;
        v.csum_offset = tcp::CHECKSUM_OFFSET as u16;
    }
    if f.gso_size > 0 {
        v.gso_type = VnetHdr::GSO_TCPV4;
        v.gso_size = f.gso_size;
        v.hdr_len = f.hdr_len;
    }
    v
}
