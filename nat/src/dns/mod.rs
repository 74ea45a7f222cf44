//! The embedded DNS server of a tapnet network, without I/O.
//!
//! Every network's gateway address answers DNS on UDP and TCP port 53 (tapnet's
//! deliberate difference from Docker's 127.0.0.11: no rule inside the container
//! redirects anything). A [`DnsServer`] per network takes one query message and the
//! address it came from, and says what happens next ([`Outgoing`]): an answer for the
//! asker, a message to forward to one of the host's resolvers, or nothing (dropped and
//! counted). Names come from a [`Names`] the control plane builds whole and swaps in
//! on every change, so an answer never mixes two states.
//!
//! What resolves (Docker's embedded DNS, `libnetwork/sandbox_dns_unix.go`,
//! `resolver.go`): on the asker's own networks only, a sandbox's name, its
//! `--network-alias` aliases, its hostname and `name.network`; PTR for every address
//! given out; case-insensitive; a name several sandboxes hold answers all their
//! addresses; TTL 600. A known name with no record of the asked type is NOERROR with no
//! answer (AAAA included: networks are IPv4). Anything else is forwarded to the host's
//! resolvers (`resolv.conf`), never on an internal network.
//!
//! Messages are parsed and built with `simple-dns` (RFC 1035 with name compression).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

mod names;
mod resolv;

pub use names::Names;
pub use resolv::ResolvConf;

/// The TTL of every local answer, in seconds (Docker's).
pub const TTL: u32 = 600;
/// How long a forwarded query waits for the host's resolvers in all before the asker
/// gets SERVFAIL (each resolver tried in turn gets an equal share).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(4);
/// Forwarded queries in flight per network; past it the answer is REFUSED (Docker's
/// bound, 1,024).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Queries per second one asker (one source address) may make, and the burst above it;
/// past them queries are dropped and counted.
pub const DEFAULT_RATE: u32 = 10_000;
/// See [`DEFAULT_RATE`].
pub const DEFAULT_BURST: u32 = 2_000;
/// The largest DNS message over UDP without EDNS (RFC 1035 §4.2.1).
pub const UDP_MAX: usize = 512;

/// What a network's server does.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Names the network's [`Names`] are looked up under (the control plane's key of
    /// the network, as given to [`Names::add_network`]).
    pub network: String,
    /// Forward what is not a local name to the host's resolvers (false on `--internal`
    /// networks, where such a name is NXDOMAIN).
    pub forward: bool,
    /// Queries per second per asker (0: no limit).
    pub rate: u32,
    /// Burst above `rate`.
    pub burst: u32,
    /// Forwarded queries in flight at most.
    pub max_in_flight: usize,
    /// How long a forwarded query waits in all.
    pub timeout: Duration,
}

/// Who asked, and so where the answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Asker {
    /// A UDP query from this address and port.
    Udp(SocketAddrV4),
    /// A query on TCP connection `conn` (the caller's id of it) from address `src`.
    Tcp {
        /// The caller's id of the connection.
        conn: u64,
        /// The asker's address.
        src: Ipv4Addr,
    },
}

impl Asker {
    /// The asker's address.
    pub fn addr(&self) -> Ipv4Addr {
        match self {
            Asker::Udp(a) => *a.ip(),
            Asker::Tcp { src, .. } => *src,
        }
    }
}

/// What to send next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A message for the asker (over TCP without the length prefix).
    Answer(Asker, Vec<u8>),
    /// A query for a host resolver, from the network's forwarding socket.
    Forward(SocketAddr, Vec<u8>),
}

tapnet_switch::counters! {
    /// Counters of one network's DNS server, written by its thread, readable from any.
    pub struct DnsCounters / DnsStats {
        /// Query messages received (well formed or not).
        queries,
        /// Queries answered from the network's names (NOERROR, with or without
        /// records).
        answered,
        /// Queries answered NXDOMAIN: a name of no sandbox on a network without
        /// forwarding.
        nxdomain,
        /// Queries forwarded to a host resolver.
        forwarded,
        /// Answers of host resolvers passed on to the asker.
        forward_answers,
        /// Forwarded queries no resolver answered in time (the asker got SERVFAIL).
        timeouts,
        /// Queries refused: forwarded queries past [`MAX_IN_FLIGHT`], and queries for
        /// other names on a network without resolvers to forward to.
        refused,
        /// Queries dropped because their asker was over its rate.
        rate_limited,
        /// Malformed queries answered FORMERR (the header parsed, the rest did not).
        formerr,
        /// Messages dropped unanswered: shorter than a header, responses, or from an
        /// address that is no endpoint.
        dropped,
        /// Answers over UDP cut to 512 bytes with the TC flag (the asker retries over
        /// TCP).
        truncated,
        /// Messages from host resolvers that matched no query in flight (late,
        /// spoofed or from an unknown address), dropped.
        stray,
    }
}

/// One network's DNS server (see the module docs).
pub struct DnsServer {
    cfg: DnsConfig,
    names: Arc<Names>,
    upstreams: Vec<SocketAddr>,
    counters: Arc<DnsCounters>,
    seed: u64,
}

impl DnsServer {
    /// A server for `cfg.network`, with resolvers `upstreams` and names `names`;
    /// `seed` (random, from the caller) seeds the ids of forwarded queries.
    pub fn new(cfg: DnsConfig, names: Arc<Names>, upstreams: Vec<SocketAddr>, seed: u64) -> Self {
        DnsServer {
            cfg,
            names,
            upstreams,
            counters: Arc::default(),
            seed,
        }
    }

    /// Its counters, shareable with other threads.
    pub fn counters(&self) -> Arc<DnsCounters> {
        Arc::clone(&self.counters)
    }

    /// The names to answer from from now on.
    pub fn set_names(&mut self, names: Arc<Names>) {
        self.names = names;
    }

    /// The host's resolvers changed (queries in flight finish with the old ones).
    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.upstreams = upstreams;
    }

    /// One query message `msg` from `asker` at `now`: what to send, if anything.
    pub fn query(&mut self, now: Duration, asker: Asker, msg: &[u8]) -> Option<Outgoing> {
        let _ = (
            now,
            asker,
            msg,
            &self.cfg,
            &self.names,
            &self.upstreams,
            self.seed,
        );
        unimplemented!()
    }

    /// A message `msg` that the network's forwarding socket received from `from`: the
    /// answer for the asker whose query it matches, if any.
    pub fn upstream(&mut self, now: Duration, from: SocketAddr, msg: &[u8]) -> Option<Outgoing> {
        let _ = (now, from, msg);
        unimplemented!()
    }

    /// Forwarded queries whose resolver did not answer in time: the next resolver, or
    /// SERVFAIL for the asker. Call when [`DnsServer::poll_at`] is due.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<Outgoing>) {
        let _ = (now, out);
        unimplemented!()
    }

    /// When [`DnsServer::poll`] is due next, if a query is in flight.
    pub fn poll_at(&self) -> Option<Duration> {
        unimplemented!()
    }

    /// A TCP connection `conn` closed: answers still due on it are dropped.
    pub fn tcp_closed(&mut self, conn: u64) {
        let _ = conn;
        unimplemented!()
    }
}
