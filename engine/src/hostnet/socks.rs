//! The host thread's socket table: every host socket it watches (flows' sockets,
//! published listeners, spliced connections), each under the mio token of its slot.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mio::{Interest, Registry, Token};
use tapnet_nat::relay::{FlowId, HostStream};

use super::splice::{NsConnector, Spliced};

/// One host socket and what it carries. `net` is the index of its network on the host
/// thread.
pub(super) enum Sock {
    /// The host stream of a TCP flow.
    Stream {
        net: usize,
        id: FlowId,
        s: mio::net::TcpStream,
        /// The connect has not completed yet.
        connecting: bool,
    },
    /// The host socket of a UDP or ICMP echo flow.
    Dgram {
        net: usize,
        id: FlowId,
        s: mio::net::UdpSocket,
        /// A raw ICMP socket (no ping sockets allowed here) and the echo identifier
        /// this flow uses on it.
        raw_ident: Option<u16>,
    },
    /// A published TCP port.
    TcpListen {
        net: usize,
        l: mio::net::TcpListener,
        ctr: SocketAddrV4,
        /// Loopback clients are spliced through this namespace's sockets.
        splice: Option<Arc<NsConnector>>,
    },
    /// A spliced connection, under the token of its client stream.
    Splice { net: usize, sp: Box<Spliced> },
    /// The token of a spliced connection's stream to the container.
    SpliceInner { net: usize, main: Token },
    /// A published UDP port.
    UdpListen {
        net: usize,
        s: mio::net::UdpSocket,
        ctr: SocketAddrV4,
    },
    /// A network's DNS forwarding socket (unconnected), for IPv6 resolvers or IPv4.
    Dns {
        net: usize,
        s: mio::net::UdpSocket,
        v6: bool,
    },
}

impl Sock {
    /// Its network.
    fn net(&self) -> usize {
        match self {
            Sock::Stream { net, .. }
            | Sock::Dgram { net, .. }
            | Sock::TcpListen { net, .. }
            | Sock::UdpListen { net, .. }
            | Sock::Dns { net, .. }
            | Sock::Splice { net, .. }
            | Sock::SpliceInner { net, .. } => *net,
        }
    }
}

/// What [`Socks::remove`] took away, for the caller's bookkeeping.
pub(super) enum Removed {
    /// The socket of flow `id` of network `net`, and the echo identifier it had on a
    /// raw ICMP socket.
    Flow {
        net: usize,
        id: FlowId,
        raw_ident: Option<u16>,
    },
    /// A spliced connection of network `net`.
    Splice { net: usize },
    /// A published port's listener.
    Listener,
    /// A DNS forwarding socket of network `net`.
    Dns { net: usize, v6: bool },
}

/// Every socket the host thread watches; slot `i` is token `i + 1` (token 0 is the
/// thread's waker).
pub(super) struct Socks {
    slots: Vec<Option<Sock>>,
    free: Vec<usize>,
    /// Sockets open now, for the handle's statistics.
    open: Arc<AtomicU64>,
}

impl Socks {
    /// No sockets; `open` counts them.
    pub(super) fn new(open: Arc<AtomicU64>) -> Socks {
        Socks {
            slots: Vec::new(),
            free: Vec::new(),
            open,
        }
    }

    /// The socket of token `t`.
    pub(super) fn get(&self, t: Token) -> Option<&Sock> {
        self.slots.get(t.0.checked_sub(1)?)?.as_ref()
    }

    /// The socket of token `t`.
    pub(super) fn get_mut(&mut self, t: Token) -> Option<&mut Sock> {
        self.slots.get_mut(t.0.checked_sub(1)?)?.as_mut()
    }

    /// The tokens of network `net`'s sockets.
    pub(super) fn of_net(&self, net: usize) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.net() == net))
            .map(|(i, _)| Token(i + 1))
            .collect()
    }

    /// A free slot (left empty) and its token.
    fn slot(&mut self) -> (usize, Token) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        (slot, Token(slot + 1))
    }

    /// Watch `sock` (not a spliced connection: see [`Socks::add_splice`]).
    pub(super) fn add(&mut self, reg: &Registry, mut sock: Sock) -> io::Result<Token> {
        let (slot, token) = self.slot();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = match &mut sock {
            Sock::Stream { s, .. } => reg.register(s, token, both),
            Sock::Dgram { s, .. } => reg.register(s, token, Interest::READABLE),
            Sock::TcpListen { l, .. } => reg.register(l, token, Interest::READABLE),
            Sock::UdpListen { s, .. } | Sock::Dns { s, .. } => {
                reg.register(s, token, Interest::READABLE)
            }
            Sock::Splice { .. } | Sock::SpliceInner { .. } => Err(io::Error::other(
                "spliced connections are added by add_splice",
            )),
        };
        if let Err(e) = registered {
            self.free.push(slot);
            return Err(e);
        }
        self.slots[slot] = Some(sock);
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(token)
    }

    /// Watch a spliced connection of network `net`: its two streams under two tokens.
    pub(super) fn add_splice(
        &mut self,
        reg: &Registry,
        net: usize,
        mut sp: Box<Spliced>,
    ) -> io::Result<Token> {
        let (a, ta) = self.slot();
        let (b, tb) = self.slot();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = reg.register(&mut sp.client, ta, both).and_then(|()| {
            reg.register(&mut sp.inner, tb, both).inspect_err(|_| {
                let _ = reg.deregister(&mut sp.client);
            })
        });
        if let Err(e) = registered {
            self.free.push(b);
            self.free.push(a);
            return Err(e);
        }
        sp.inner_token = tb;
        self.slots[a] = Some(Sock::Splice { net, sp });
        self.slots[b] = Some(Sock::SpliceInner { net, main: ta });
        self.open.fetch_add(2, Ordering::Relaxed);
        Ok(ta)
    }

    /// Stop watching the spliced connection of token `t` and hand it back, with its
    /// network.
    pub(super) fn take_splice(
        &mut self,
        reg: &Registry,
        t: Token,
    ) -> Option<(usize, Box<Spliced>)> {
        let slot = t.0.checked_sub(1)?;
        let Some(Some(Sock::Splice { .. })) = self.slots.get(slot) else {
            return None;
        };
        let Some(Sock::Splice { net, mut sp }) = self.slots[slot].take() else {
            return None;
        };
        let _ = reg.deregister(&mut sp.client);
        let _ = reg.deregister(&mut sp.inner);
        if let Some(b) = sp.inner_token.0.checked_sub(1) {
            if let Some(s) = self.slots.get_mut(b) {
                *s = None;
            }
            self.free.push(b);
        }
        self.free.push(slot);
        self.open.fetch_sub(2, Ordering::Relaxed);
        Some((net, sp))
    }

    /// Stop watching the socket of token `t` (either token of a spliced connection)
    /// and close it; `reset` closes streams abortively.
    pub(super) fn remove(&mut self, reg: &Registry, t: Token, reset: bool) -> Option<Removed> {
        let slot = t.0.checked_sub(1)?;
        match self.slots.get(slot) {
            Some(Some(Sock::SpliceInner { main, .. })) => return self.remove(reg, *main, reset),
            Some(Some(Sock::Splice { .. })) => {
                let (net, sp) = self.take_splice(reg, t)?;
                if reset {
                    set_linger0(&sp.client);
                    set_linger0(&sp.inner);
                }
                return Some(Removed::Splice { net });
            }
            _ => {}
        }
        let mut sock = self.slots.get_mut(slot).and_then(Option::take)?;
        let _ = match &mut sock {
            Sock::Stream { s, .. } => {
                if reset {
                    set_linger0(s);
                }
                reg.deregister(s)
            }
            Sock::Dgram { s, .. } | Sock::UdpListen { s, .. } | Sock::Dns { s, .. } => {
                reg.deregister(s)
            }
            Sock::TcpListen { l, .. } => reg.deregister(l),
            Sock::Splice { .. } | Sock::SpliceInner { .. } => Ok(()),
        };
        self.free.push(slot);
        self.open.fetch_sub(1, Ordering::Relaxed);
        Some(match sock {
            Sock::Stream { net, id, .. } => Removed::Flow {
                net,
                id,
                raw_ident: None,
            },
            Sock::Dgram {
                net, id, raw_ident, ..
            } => Removed::Flow { net, id, raw_ident },
            Sock::Dns { net, v6, .. } => Removed::Dns { net, v6 },
            _ => Removed::Listener,
        })
    }
}

/// A flow's host stream, as the relay pumps it.
pub(super) struct StreamIo<'a>(pub(super) &'a mio::net::TcpStream);

impl HostStream for StreamIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// Make closing `s` reset the connection.
pub(super) fn set_linger0(s: &mio::net::TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        &s.as_fd(),
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}
