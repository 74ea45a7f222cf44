//! The relay's DNS state: the network's server, its DNS connections over TCP, and the
//! queries waiting to be forwarded (what `nameserver` does with them is there).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::iface::SocketHandle;

use super::flows::Key;
use crate::dns::{DnsServer, Outgoing};

/// One DNS connection over TCP.
pub(super) struct Conn {
    /// The container's address and the gateway's port 53.
    pub(super) key: Key,
    pub(super) handle: SocketHandle,
    /// Bytes read and not yet a whole message.
    pub(super) inbuf: Vec<u8>,
    /// Answers (length in front) not yet in the socket.
    pub(super) out: Vec<u8>,
    /// When it last carried a byte.
    pub(super) last: Duration,
    /// The relay closed it for idleness.
    pub(super) closing: bool,
}

/// The relay's DNS state.
pub(super) struct Dns {
    pub(super) server: DnsServer,
    pub(super) conns: HashMap<u64, Conn>,
    pub(super) by_key: HashMap<Key, u64>,
    /// Connections with segments or answers since the last pass.
    pub(super) touched: Vec<u64>,
    pub(super) forwards: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(super) next_conn: u64,
    /// A query may be in flight upstream: the server's timers are looked at.
    pub(super) maybe_in_flight: bool,
    /// Scratch for the server's timers.
    pub(super) due: Vec<Outgoing>,
}

impl Dns {
    /// The state of a relay whose server is `server`.
    pub(super) fn new(server: DnsServer) -> Dns {
        Dns {
            server,
            conns: HashMap::new(),
            by_key: HashMap::new(),
            touched: Vec::new(),
            forwards: VecDeque::new(),
            next_conn: 1,
            maybe_in_flight: false,
            due: Vec::new(),
        }
    }

    /// DNS connections over TCP open now.
    pub(super) fn conns(&self) -> usize {
        self.conns.len()
    }

    /// When the server's timers are due, if a query is in flight.
    pub(super) fn poll_at(&self) -> Option<Duration> {
        if self.maybe_in_flight {
            self.server.poll_at()
        } else {
            None
        }
    }
}
