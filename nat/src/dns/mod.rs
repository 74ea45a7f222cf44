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
//! `resolver.go`): on the asker's own networks only (the asker is the sandbox with the
//! query's source address on the network asked; other sources are dropped), a
//! sandbox's name, its `--network-alias` aliases, its hostname and `name.network`; PTR
//! (`name.network.`) for every address given out; case-insensitive, with or without the
//! trailing dot; a name several sandboxes hold answers all their addresses, rotated
//! per query (round robin); TTL 600; AA set. A known name with no record of the asked
//! type is NOERROR with no answer (AAAA included: networks are IPv4). A name or address
//! held only on networks the asker is not on, and `X.network` that no sandbox holds, is
//! NXDOMAIN, never forwarded. The default `bridge` network's names resolve nowhere
//! ([`Names::add_network`] with `serve` false). Anything else is forwarded to the
//! host's resolvers (`resolv.conf`), never on an internal network (NXDOMAIN there);
//! with no resolver it is REFUSED.
//!
//! Forwarding (RFC 5452 §9.2): the query gets a fresh random id, its answer is taken
//! only from the resolver it was sent to, with that id and the same question, and goes
//! back under the asker's id; other messages are counted `stray`. The resolvers are
//! tried in turn, each for an equal share of [`FORWARD_TIMEOUT`] (and at once after a
//! SERVFAIL or REFUSED); after the last the asker gets SERVFAIL. Past
//! [`MAX_IN_FLIGHT`] queries waiting, REFUSED.
//!
//! Bad input (RFC 1035 §4.1): shorter than a header or a response: dropped. A header
//! followed by anything but exactly one question of class IN and whole records (one
//! OPT at most, nothing after them): FORMERR; another opcode: NOTIMP. UDP answers over
//! 512 bytes (or the query's EDNS size, RFC 6891 §6.2.5, at most 4096) are cut to the
//! header and question with TC. A token bucket per asker address bounds its queries
//! per second.
//!
//! Messages are parsed and built with `simple-dns` (RFC 1035 with name compression);
//! what it cannot do (find a message's end, answer one it cannot parse) is done on the
//! header's bytes (`message.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{OPT, PTR, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, RCODE, ResourceRecord};

mod asker;
mod forward;
mod limit;
mod message;
mod names;
mod resolv;
#[cfg(test)]
mod tests;

pub use asker::Asker;
use forward::{InFlight, Pending, Rng};
pub use limit::Limiter;
use message::{HEADER_LEN, Shape};
use names::Found;
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
/// past them queries are dropped and counted. Below the engine's read rate of a
/// throttled port (8,000 frames/s, `FLOOD_READ_BATCH` per `FLOOD_READ_PERIOD`): a
/// sandbox that floods stays over its rate while throttled, so it stays throttled and
/// its queries reach the server a few per millisecond, never in a batch that other
/// networks' answers wait behind.
pub const DEFAULT_RATE: u32 = 5_000;
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

impl DnsConfig {
    /// The defaults for network `network`: [`DEFAULT_RATE`], [`DEFAULT_BURST`],
    /// [`MAX_IN_FLIGHT`], [`FORWARD_TIMEOUT`].
    pub fn new(network: &str, forward: bool) -> DnsConfig {
        DnsConfig {
            network: network.to_owned(),
            forward,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            max_in_flight: MAX_IN_FLIGHT,
            timeout: FORWARD_TIMEOUT,
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
        /// Queries answered NXDOMAIN: names of sandboxes on networks the asker is
        /// not on, and names of no sandbox on a network without forwarding.
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
        /// Malformed queries answered FORMERR (the header parsed, the rest did not),
        /// and queries of another opcode answered NOTIMP.
        formerr,
        /// Messages dropped unanswered: shorter than a header, responses, or from an
        /// address that is no endpoint.
        dropped,
        /// Answers over UDP cut to 512 bytes (or the query's EDNS size) with the TC
        /// flag (the asker retries over TCP).
        truncated,
        /// Messages from host resolvers that matched no query in flight (late,
        /// spoofed or from an unknown address), dropped.
        stray,
    }
}

/// The largest UDP answer with EDNS (RFC 6891 §6.2.5: what this server advertises).
pub const EDNS_MAX: u16 = 4096;
/// The largest answer over TCP (the 2-byte length prefix, RFC 1035 §4.2.2).
const TCP_MAX: usize = 65_535;

/// One network's DNS server (see the module docs).
pub struct DnsServer {
    /// Its configuration.
    cfg: DnsConfig,
    /// The names answered.
    names: Arc<Names>,
    /// `cfg.network`'s index in `names`.
    net: Option<usize>,
    /// The host's resolvers.
    upstreams: Arc<[SocketAddr]>,
    /// Its counters.
    counters: Arc<DnsCounters>,
    /// Ids of forwarded queries.
    rng: Rng,
    /// Per-asker rates.
    limiter: Limiter,
    /// Forwarded queries.
    in_flight: InFlight,
    /// Round-robin turn.
    turn: usize,
    /// Scratch: the lowercase name asked.
    name: String,
    /// Scratch: addresses found.
    addrs: Vec<Ipv4Addr>,
}

/// What a local lookup found.
enum Local<'n> {
    /// Addresses of a name.
    Addrs,
    /// Names of an address.
    Ptrs(Vec<&'n str>),
}

impl DnsServer {
    /// A server for `cfg.network`, with resolvers `upstreams` and names `names`;
    /// `seed` (random, from the caller) seeds the ids of forwarded queries.
    pub fn new(cfg: DnsConfig, names: Arc<Names>, upstreams: Vec<SocketAddr>, seed: u64) -> Self {
        let net = names.network(&cfg.network);
        DnsServer {
            limiter: Limiter::new(cfg.rate, cfg.burst),
            cfg,
            names,
            net,
            upstreams: upstreams.into(),
            counters: Arc::default(),
            rng: Rng::new(seed),
            in_flight: InFlight::default(),
            turn: 0,
            name: String::new(),
            addrs: Vec::new(),
        }
    }

    /// Its counters, shareable with other threads.
    pub fn counters(&self) -> Arc<DnsCounters> {
        Arc::clone(&self.counters)
    }

    /// The names to answer from from now on.
    pub fn set_names(&mut self, names: Arc<Names>) {
        self.net = names.network(&self.cfg.network);
        self.names = names;
    }

    /// The host's resolvers changed (queries in flight finish with the old ones).
    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.upstreams = upstreams.into();
    }

    /// Forwarded queries waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Askers the rate limiter tracks.
    pub fn askers(&self) -> usize {
        self.limiter.len()
    }

    /// One query message `msg` from `asker` at `now`: what to send, if anything.
    pub fn query(&mut self, now: Duration, asker: Asker, msg: &[u8]) -> Option<Outgoing> {
        let c = &*self.counters;
        c.queries.inc();
        if msg.len() < HEADER_LEN || message::flags(msg) & message::QR != 0 {
            c.dropped.inc();
            return None;
        }
        let names = Arc::clone(&self.names);
        let Some(nets) = self.net.and_then(|n| names.asker(n, asker.addr())) else {
            c.dropped.inc();
            return None;
        };
        if !self.limiter.allow(now, asker.addr()) {
            c.rate_limited.inc();
            return None;
        }
        let (id, qflags) = (message::id(msg), message::flags(msg));
        if qflags & message::OPCODE_MASK != 0 {
            // Not a standard query: NOTIMP (RFC 1035 §4.1.1), built on the header
            // since the rest need not be a query's.
            c.formerr.inc();
            let flags = message::reply_flags(qflags, message::NOTIMP);
            return Some(Outgoing::Answer(
                asker,
                message::short_reply(id, flags, &[]),
            ));
        }
        // simple-dns parses the message; `walk` checks what it does not (trailing
        // bytes, one uncompressed question, one OPT) and finds the question's bytes.
        let shape = message::walk(msg).filter(|s| s.qclass == u16::from(CLASS::IN));
        let packet = shape.and_then(|_| Packet::parse(msg).ok());
        let (Some(shape), Some(packet)) = (shape, packet) else {
            // FORMERR with the query's id and opcode, and no question (it may not be
            // one): simple-dns cannot build an answer to what it could not parse.
            c.formerr.inc();
            let flags = message::reply_flags(qflags, message::FORMERR);
            return Some(Outgoing::Answer(
                asker,
                message::short_reply(id, flags, &[]),
            ));
        };
        let limit = match asker {
            Asker::Udp(_) => shape
                .edns
                .map_or(UDP_MAX, |s| usize::from(s.min(EDNS_MAX)).max(UDP_MAX)),
            Asker::Tcp { .. } => TCP_MAX,
        };
        let mut name = std::mem::take(&mut self.name);
        let mut found = Found::Unknown;
        let mut local = Local::Addrs;
        self.addrs.clear();
        if message::lower_name(msg, &shape, &mut name) {
            if let Some(ip) = message::reverse_addr(&name) {
                let mut ptrs = Vec::new();
                found = names.reverse(nets, ip, &mut ptrs);
                local = Local::Ptrs(ptrs);
            } else {
                found = names.lookup(nets, &name, &mut self.addrs);
            }
        }
        self.name = name;
        let out = match found {
            Found::Local => {
                c.answered.inc();
                self.local_answer(&packet, &shape, local, limit)
            }
            Found::Elsewhere => {
                c.nxdomain.inc();
                self.rcode_answer(&packet, RCODE::NameError, limit)
            }
            Found::Unknown if !self.cfg.forward => {
                c.nxdomain.inc();
                self.rcode_answer(&packet, RCODE::NameError, limit)
            }
            Found::Unknown => return self.forward(now, asker, msg, &shape, limit),
        };
        Some(Outgoing::Answer(asker, out))
    }

    /// The answer with this server's records for `q`.
    fn local_answer(
        &mut self,
        q: &Packet<'_>,
        shape: &Shape,
        local: Local<'_>,
        limit: usize,
    ) -> Vec<u8> {
        let mut r = self.reply(q, RCODE::NoError);
        r.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        let qname = &q.questions[0].qname;
        match local {
            Local::Addrs if shape.qtype == u16::from(simple_dns::TYPE::A) || shape.qtype == 255 => {
                let n = self.addrs.len();
                if n > 1 {
                    self.turn = self.turn.wrapping_add(1);
                    self.addrs.rotate_left(self.turn % n);
                }
                for ip in &self.addrs {
                    let rdata = RData::A((*ip).into());
                    r.answers
                        .push(ResourceRecord::new(qname.clone(), CLASS::IN, TTL, rdata));
                }
            }
            Local::Ptrs(ptrs)
                if shape.qtype == u16::from(simple_dns::TYPE::PTR) || shape.qtype == 255 =>
            {
                for p in ptrs {
                    if let Ok(target) = Name::new(p) {
                        let rdata = RData::PTR(PTR(target));
                        r.answers
                            .push(ResourceRecord::new(qname.clone(), CLASS::IN, TTL, rdata));
                    }
                }
            }
            _ => {} // NODATA
        }
        self.build(r, limit)
    }

    /// An answer with `rcode` and no records.
    fn rcode_answer(&self, q: &Packet<'_>, rcode: RCODE, limit: usize) -> Vec<u8> {
        let mut r = self.reply(q, rcode);
        r.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        self.build(r, limit)
    }

    /// A reply to `q` with its question, RD copied, RA, its OPT if it had one.
    fn reply<'a>(&self, q: &Packet<'a>, rcode: RCODE) -> Packet<'a> {
        let mut r = Packet::new_reply(q.id());
        r.set_flags(PacketFlag::RECURSION_AVAILABLE);
        if q.has_flags(PacketFlag::RECURSION_DESIRED) {
            r.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        *r.rcode_mut() = rcode;
        r.questions.push(q.questions[0].clone());
        if q.opt().is_some() {
            *r.opt_mut() = Some(OPT {
                opt_codes: Vec::new(),
                udp_packet_size: EDNS_MAX,
                version: 0,
            });
        }
        r
    }

    /// `r`'s bytes, cut to its header, question and OPT with TC if over `limit`.
    fn build(&self, mut r: Packet<'_>, limit: usize) -> Vec<u8> {
        let bytes = r.build_bytes_vec_compressed().unwrap_or_default();
        if bytes.len() <= limit && !bytes.is_empty() {
            return bytes;
        }
        self.counters.truncated.inc();
        r.answers.clear();
        r.set_flags(PacketFlag::TRUNCATION);
        r.build_bytes_vec_compressed().unwrap_or_default()
    }

    /// Forwards `msg` (well formed, a name of no sandbox) to the first resolver.
    fn forward(
        &mut self,
        now: Duration,
        asker: Asker,
        msg: &[u8],
        shape: &Shape,
        limit: usize,
    ) -> Option<Outgoing> {
        let c = &*self.counters;
        let (id, qflags) = (message::id(msg), message::flags(msg));
        let question = &msg[HEADER_LEN..shape.q_end];
        if self.upstreams.is_empty()
            || self.in_flight.len() >= self.cfg.max_in_flight.min(forward::MAX_IDS)
        {
            c.refused.inc();
            let flags = message::reply_flags(qflags, message::REFUSED);
            return Some(Outgoing::Answer(
                asker,
                message::short_reply(id, flags, question),
            ));
        }
        c.forwarded.inc();
        let fid = self.in_flight.free_id(&mut self.rng);
        let mut fwd = msg.to_vec();
        fwd[..2].copy_from_slice(&fid.to_be_bytes());
        let n = u32::try_from(self.upstreams.len()).unwrap_or(u32::MAX);
        let share = self.cfg.timeout / n;
        let p = Pending {
            asker,
            asker_id: id,
            msg: fwd.clone(),
            q_end: shape.q_end,
            limit,
            upstreams: Arc::clone(&self.upstreams),
            current: 0,
            deadline: now + share,
            share,
        };
        let to = p.resolver();
        self.in_flight.insert(fid, p);
        Some(Outgoing::Forward(to, fwd))
    }

    /// A message `msg` that the network's forwarding socket received from `from`: the
    /// answer for the asker whose query it matches, if any (or the query for the next
    /// resolver, if this one answered SERVFAIL or REFUSED).
    pub fn upstream(&mut self, now: Duration, from: SocketAddr, msg: &[u8]) -> Option<Outgoing> {
        let c = &*self.counters;
        let matched = msg.len() >= HEADER_LEN
            && message::flags(msg) & message::QR != 0
            && self.in_flight.get(message::id(msg)).is_some_and(|p| {
                p.resolver() == from
                    && message::walk(msg).is_some_and(|s| {
                        msg[HEADER_LEN..s.q_end].eq_ignore_ascii_case(p.question())
                    })
            })
            && Packet::parse(msg).is_ok();
        if !matched {
            c.stray.inc();
            return None;
        }
        let fid = message::id(msg);
        let flags = message::flags(msg);
        let rcode = flags & 0xf;
        if rcode == message::SERVFAIL || rcode == message::REFUSED {
            if let Some((to, fwd)) = self.in_flight.next_resolver(now, fid) {
                return Some(Outgoing::Forward(to, fwd));
            }
        }
        let p = self.in_flight.remove(fid)?;
        c.forward_answers.inc();
        let out = if msg.len() > p.limit {
            c.truncated.inc();
            message::short_reply(p.asker_id, flags | message::TC, p.question())
        } else {
            let mut out = msg.to_vec();
            out[..2].copy_from_slice(&p.asker_id.to_be_bytes());
            out
        };
        Some(Outgoing::Answer(p.asker, out))
    }

    /// Forwarded queries whose resolver did not answer in time: the next resolver, or
    /// SERVFAIL for the asker. Call when [`DnsServer::poll_at`] is due.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<Outgoing>) {
        while let Some(fid) = self.in_flight.due(now) {
            if let Some((to, fwd)) = self.in_flight.next_resolver(now, fid) {
                out.push(Outgoing::Forward(to, fwd));
                continue;
            }
            let Some(p) = self.in_flight.remove(fid) else {
                break;
            };
            self.counters.timeouts.inc();
            let flags = message::reply_flags(message::flags(&p.msg), message::SERVFAIL);
            out.push(Outgoing::Answer(
                p.asker,
                message::short_reply(p.asker_id, flags, p.question()),
            ));
        }
    }

    /// When [`DnsServer::poll`] is due next, if a query is in flight.
    pub fn poll_at(&self) -> Option<Duration> {
        self.in_flight.next_deadline()
    }

    /// A TCP connection `conn` closed: answers still due on it are dropped.
    pub fn tcp_closed(&mut self, conn: u64) {
        self.in_flight.remove_conn(conn);
    }
}
