//! What the host thread does when a socket is ready: a flow's host socket connects or
//! has bytes, a published port accepts a client (relayed, or spliced into the
//! container's namespace), a spliced connection moves.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::Token;
use tapnet_nat::icmp;
use tapnet_nat::relay::{ConnectError, Pumped};

use super::socks::{Sock, StreamIo, set_linger0};
use super::splice::{self, Dir, NsConnector, Pipe, Spliced, Step};
use super::thread::{BATCH, Host};

impl Host {
    /// Readiness on a host socket.
    pub(super) fn socket_event(&mut self, t: Token) {
        let now = self.now();
        let Some(sock) = self.socks.get_mut(t) else {
            return;
        };
        match sock {
            Sock::Splice { .. } | Sock::SpliceInner { .. } => self.splice_event(t),
            Sock::Stream {
                net,
                id,
                s,
                connecting,
            } => {
                let (net, id) = (*net, *id);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                if *connecting {
                    match s.take_error() {
                        Ok(Some(e)) | Err(e) => {
                            let why = if e.kind() == io::ErrorKind::ConnectionRefused {
                                ConnectError::Refused
                            } else {
                                ConnectError::Failed
                            };
                            n.relay.connected(now, id, Err(why), &mut self.budget);
                            n.flows.remove(&id);
                            self.remove_sock(t, false);
                            return;
                        }
                        Ok(None) => {}
                    }
                    match s.peer_addr() {
                        Ok(_) => {
                            *connecting = false;
                            n.relay.connected(now, id, Ok(()), &mut self.budget);
                        }
                        // Not connected yet (a spurious wake-up).
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                        Err(_) => {
                            n.relay
                                .connected(now, id, Err(ConnectError::Failed), &mut self.budget);
                            n.flows.remove(&id);
                            self.remove_sock(t, false);
                            return;
                        }
                    }
                }
                if let Pumped::Closed { reset } = n.relay.pump(now, id, &mut StreamIo(s)) {
                    self.remove_sock(t, reset);
                }
            }
            Sock::Dgram {
                net,
                id,
                s,
                raw_ident,
            } => {
                let (net, id, raw_ident) = (*net, *id, *raw_ident);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                let mut buf = [0u8; 65536];
                let mut drained = false;
                for _ in 0..BATCH {
                    match s.recv(&mut buf) {
                        Ok(k) => {
                            let msg = match raw_ident {
                                None => &buf[..k],
                                // A raw socket sees every echo reply to this host, IP
                                // header included: keep this flow's.
                                Some(ident) => match icmp::raw_echo_reply(&buf[..k], ident) {
                                    Some(m) => m,
                                    None => {
                                        // Another flow's (identifiers are unique across
                                        // networks: never delivered here).
                                        if icmp::raw_echo_reply_ident(&buf[..k]).is_some() {
                                            n.relay.counters_ref().icmp_foreign.inc();
                                        }
                                        continue;
                                    }
                                },
                            };
                            if !n.relay.datagram_from_host(now, id, msg) {
                                drained = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        // An ICMP error reported on the socket (ECONNREFUSED after a
                        // port unreachable): the datagrams behind it still count.
                        Err(_) => {}
                    }
                }
                if !drained {
                    // Edge-triggered: no new event comes for what is still queued.
                    self.again.push(t);
                }
            }
            Sock::TcpListen {
                net,
                l,
                ctr,
                splice,
                ..
            } => {
                let (net, ctr, splice) = (*net, *ctr, splice.clone());
                let mut accepted = Vec::new();
                let mut drained = false;
                for _ in 0..BATCH {
                    match l.accept() {
                        Ok((s, client)) => accepted.push((s, client)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                        Err(e) => {
                            // Out of descriptors, say: try again shortly.
                            tracing::debug!(error = %e, "accept on a published port failed");
                            self.backoff = true;
                            break;
                        }
                    }
                }
                if !drained {
                    self.again.push(t);
                }
                for (s, client) in accepted {
                    let _ = s.set_nodelay(true);
                    let s = match &splice {
                        Some(c) if client.ip().is_loopback() => {
                            match self.start_splice(net, s, client, ctr, c) {
                                Some(s) => {
                                    self.splice.fallback.fetch_add(1, Ordering::Relaxed);
                                    s
                                }
                                None => continue,
                            }
                        }
                        _ => s,
                    };
                    self.relay_inbound(net, now, s, client, ctr);
                }
            }
            Sock::Dns { net, s, .. } => {
                let net = *net;
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                let mut buf = [0u8; 65536];
                let mut drained = false;
                for _ in 0..BATCH {
                    match s.recv_from(&mut buf) {
                        Ok((k, from)) => n.relay.dns_upstream(now, from, &buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        // An ICMP error from an earlier send (a resolver unreachable):
                        // the server's timeout takes care of it.
                        Err(_) => {}
                    }
                }
                if !drained {
                    self.again.push(t);
                }
            }
            Sock::UdpListen { net, s, ctr, .. } => {
                let (net, ctr) = (*net, *ctr);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                let mut buf = [0u8; 65536];
                let mut drained = false;
                for _ in 0..BATCH {
                    match s.recv_from(&mut buf) {
                        Ok((k, client)) => {
                            if let Some(id) = n.relay.udp_inbound(now, client, ctr, &buf[..k]) {
                                n.udp_clients.insert(id, (t, client));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(_) => {}
                    }
                }
                if !drained {
                    self.again.push(t);
                }
            }
        }
    }

    /// Carry the accepted stream `s` of `client` to `ctr` through the relay.
    fn relay_inbound(
        &mut self,
        net: usize,
        now: Duration,
        s: mio::net::TcpStream,
        client: SocketAddr,
        ctr: SocketAddrV4,
    ) {
        let Some(Some(n)) = self.nets.get_mut(net) else {
            return;
        };
        // Refused (the flow bound, or no address to show the client): the client is
        // reset, as by a full listener.
        let Some(id) = n.relay.tcp_inbound(now, client, ctr, &mut self.budget) else {
            set_linger0(&s);
            return;
        };
        let sock = Sock::Stream {
            net,
            id,
            s,
            connecting: false,
        };
        match self.socks.add(self.poll.registry(), sock) {
            Ok(tok) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.flows.insert(id, tok);
                }
            }
            Err(_) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.relay.host_reset(now, id);
                }
            }
        }
    }

    /// Splice the loopback client `s` to `ctr` through a socket of `conn`'s namespace.
    /// `None` when done with it (spliced, or closed); the stream back when it should
    /// take the relay path instead.
    fn start_splice(
        &mut self,
        net: usize,
        s: mio::net::TcpStream,
        client: SocketAddr,
        ctr: SocketAddrV4,
        conn: &NsConnector,
    ) -> Option<mio::net::TcpStream> {
        let n = self.nets.get(net)?.as_ref()?;
        if n.spliced >= self.max_spliced {
            // Over the bound, like the relay's refusal: closed with a reset.
            tracing::debug!(%client, "spliced connection bound reached");
            set_linger0(&s);
            return None;
        }
        let made = (|| {
            let pipes = [
                Pipe::new(self.pipe_size, &self.splice)?,
                Pipe::new(self.pipe_size, &self.splice)?,
            ];
            let fd = conn.take()?;
            splice::connect(&fd, ctr)?;
            Ok::<_, io::Error>((pipes, fd))
        })();
        let (pipes, fd) = match made {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                set_linger0(&s);
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, %ctr, "cannot splice a published port; relaying");
                return Some(s);
            }
        };
        let inner = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
        let _ = inner.set_nodelay(true);
        let [up, down] = pipes;
        let sp = Box::new(Spliced {
            client: s,
            inner,
            inner_token: Token(0),
            client_addr: client,
            ctr,
            connecting: true,
            dirs: [Dir::new(up), Dir::new(down)],
        });
        match self.add_splice(net, sp) {
            Ok(t) => {
                // The connect may have completed already: look now.
                self.splice_again.push(t);
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch a spliced connection");
                None
            }
        }
    }

    /// Readiness on either stream of a spliced connection (or its budget renewed).
    pub(super) fn splice_event(&mut self, t: Token) {
        let main = match self.socks.get(t) {
            Some(Sock::SpliceInner { main, .. }) => *main,
            Some(Sock::Splice { .. }) => t,
            _ => return,
        };
        let Some(Sock::Splice { sp, .. }) = self.socks.get_mut(main) else {
            return;
        };
        if sp.connecting {
            let failed = match sp.inner.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match sp.inner.peer_addr() {
                    Ok(_) => None,
                    // Not connected yet.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                let Some((net, sp)) = self.take_splice(main) else {
                    return;
                };
                match e.kind() {
                    // The container refused: so is the client.
                    io::ErrorKind::ConnectionRefused => {
                        set_linger0(&sp.client);
                        return;
                    }
                    // Connected, then reset before this event: the client too.
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        self.splice.spliced.fetch_add(1, Ordering::Relaxed);
                        set_linger0(&sp.client);
                        return;
                    }
                    _ => {}
                }
                tracing::debug!(error = %e, ctr = %sp.ctr, "cannot splice a published port; relaying");
                self.splice.fallback.fetch_add(1, Ordering::Relaxed);
                let Spliced {
                    client,
                    client_addr,
                    ctr,
                    ..
                } = *sp;
                let now = self.now();
                self.relay_inbound(net, now, client, client_addr, ctr);
                return;
            }
            sp.connecting = false;
            self.splice.spliced.fetch_add(1, Ordering::Relaxed);
        }
        match sp.pump() {
            Step::Broken => self.remove_sock(main, true),
            Step::More => self.splice_again.push(main),
            Step::Idle => {
                if sp.finished() {
                    self.remove_sock(main, false);
                }
            }
        }
    }
}
