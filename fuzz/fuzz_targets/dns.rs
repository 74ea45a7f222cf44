//! Queries and resolvers' answers into a network's DNS server (`tapnet_nat::dns`).
//!
//! The first byte of each operation picks it: a raw UDP or TCP query (any bytes), a
//! well-formed query for a chosen or fuzzed name and type (with or without EDNS, then a
//! few bytes flipped), an answer from a resolver to the last forwarded query (built
//! with `simple-dns`, then mutated, from the right or a wrong address), raw bytes from
//! a resolver, time passing with `poll`, a TCP connection closing, new names or
//! resolvers.
//!
//! Invariants: every message the server sends parses with `simple-dns`; an answer to a
//! UDP query is at most 512 bytes unless the query carried an OPT record, and never
//! over 4096; an answer to a query keeps its id; queries in flight stay within the
//! bound; nothing is forwarded on the internal network or without resolvers.

#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use simple_dns::rdata::{OPT, RData};
use simple_dns::{
    CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
};
use tapnet_fuzz::Input;
use tapnet_nat::dns::{Asker, DnsConfig, DnsServer, Names, Outgoing};

const MAX_IN_FLIGHT: usize = 8;
const NAMES: [&str; 10] = [
    "web",
    "DB",
    "db.pets",
    "lots",
    "cache",
    "cache.other",
    "example.com",
    "3.1.0.10.in-addr.arpa",
    "4.2.0.10.IN-ADDR.arpa.",
    "nobody.pets",
];

fn names(extra: bool) -> Names {
    let mut n = Names::new();
    n.add_network("n1", "pets", true);
    n.add_network("n2", "other", true);
    n.add_network("br", "bridge", false);
    n.add_endpoint("n1", "a", Ipv4Addr::new(10, 0, 1, 2), &["web", "webhost"]);
    n.add_endpoint("n1", "b", Ipv4Addr::new(10, 0, 1, 3), &["db", "database"]);
    n.add_endpoint("n2", "b", Ipv4Addr::new(10, 0, 2, 3), &["db"]);
    n.add_endpoint("n2", "c", Ipv4Addr::new(10, 0, 2, 4), &["cache"]);
    n.add_endpoint("br", "a", Ipv4Addr::new(172, 17, 0, 2), &["web"]);
    for i in 0..40u8 {
        let own = format!("m{i}");
        n.add_endpoint("n1", &own, Ipv4Addr::new(10, 0, 3, i), &[&own, "lots"]);
    }
    if extra {
        n.add_endpoint("n1", "c", Ipv4Addr::new(10, 0, 1, 9), &["cache", "lots"]);
    }
    n
}

fn upstreams(which: u8) -> Vec<SocketAddr> {
    let all: [SocketAddr; 3] = [
        "192.0.2.53:53".parse().unwrap(),
        "[2001:db8::53]:53".parse().unwrap(),
        "127.0.0.53:53".parse().unwrap(),
    ];
    all.iter()
        .enumerate()
        .filter(|(i, _)| which & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect()
}

fn asker(input: &mut Input<'_>) -> Asker {
    let b = input.u8();
    let ip = match b % 5 {
        0 => Ipv4Addr::new(10, 0, 1, 2),
        1 => Ipv4Addr::new(10, 0, 1, 3),
        2 => Ipv4Addr::new(10, 0, 3, 7),
        3 => Ipv4Addr::new(172, 17, 0, 2),
        _ => Ipv4Addr::from(input.u32()),
    };
    if b & 0x80 != 0 {
        Asker::Tcp {
            conn: u64::from(b & 3),
            src: ip,
        }
    } else {
        Asker::Udp(SocketAddrV4::new(ip, 40000))
    }
}

fn built_query(input: &mut Input<'_>) -> Vec<u8> {
    let which = input.u8();
    let fuzzed;
    let name = if which & 0x80 != 0 {
        fuzzed = String::from_utf8_lossy(input.chunk()).into_owned();
        fuzzed.as_str()
    } else {
        NAMES[usize::from(which) % NAMES.len()]
    };
    let mut p = Packet::new_query(input.u16());
    if input.u8() & 1 != 0 {
        p.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let Ok(qname) = Name::new(name) else {
        return Vec::new();
    };
    let qtype = match input.u8() % 4 {
        0 => TYPE::A,
        1 => TYPE::AAAA,
        2 => TYPE::PTR,
        _ => TYPE::from(input.u16()),
    };
    p.questions.push(Question::new(
        qname,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    if input.u8() & 1 != 0 {
        *p.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: input.u16(),
            version: 0,
        });
    }
    let mut bytes = p.build_bytes_vec().unwrap_or_default();
    for _ in 0..input.u8() % 4 {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(input.u16()) % bytes.len();
        bytes[at] ^= input.u8();
    }
    bytes
}

fn upstream_answer(input: &mut Input<'_>, fwd: &[u8]) -> Vec<u8> {
    let Ok(q) = Packet::parse(fwd) else {
        return Vec::new();
    };
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    *r.rcode_mut() = RCODE::from(u16::from(input.u8() % 6));
    r.questions.extend(q.questions.iter().cloned());
    if let Some(qn) = q.questions.first().map(|x| x.qname.clone()) {
        for i in 0..input.u8() % 64 {
            r.answers.push(ResourceRecord::new(
                qn.clone(),
                CLASS::IN,
                60,
                RData::A(Ipv4Addr::new(93, 184, 0, i).into()),
            ));
        }
    }
    if q.opt().is_some() {
        *r.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: 1232,
            version: 0,
        });
    }
    let mut bytes = r.build_bytes_vec_compressed().unwrap_or_default();
    for _ in 0..input.u8() % 3 {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(input.u16()) % bytes.len();
        bytes[at] ^= input.u8();
    }
    bytes
}

/// Whether `msg` carries an OPT record, as simple-dns reads it.
fn has_opt(msg: &[u8]) -> bool {
    Packet::parse(msg).is_ok_and(|p| p.opt().is_some())
}

struct Rig {
    server: DnsServer,
    forward: bool,
    now: Duration,
    /// Forwarding id → whether the forwarded query had an OPT.
    forwarded: HashMap<u16, bool>,
    last: Option<(SocketAddr, Vec<u8>)>,
}

impl Rig {
    /// Checks what the server sent; `edns`: the query answered had an OPT.
    fn check(&mut self, out: Outgoing, edns: Option<bool>, id: Option<u16>) {
        match out {
            Outgoing::Answer(asker, bytes) => {
                assert!(
                    Packet::parse(&bytes).is_ok(),
                    "answer does not parse: {bytes:02x?}"
                );
                assert!(bytes.len() >= 12);
                if let Some(id) = id {
                    assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), id, "id changed");
                }
                if let Asker::Udp(_) = asker {
                    assert!(bytes.len() <= 4096, "UDP answer of {} bytes", bytes.len());
                    if edns == Some(false) {
                        assert!(
                            bytes.len() <= 512,
                            "UDP answer of {} bytes without EDNS",
                            bytes.len()
                        );
                    }
                }
            }
            Outgoing::Forward(to, bytes) => {
                assert!(self.forward, "forwarded on an internal network");
                assert!(
                    Packet::parse(&bytes).is_ok(),
                    "forwarded query does not parse"
                );
                self.forwarded
                    .insert(u16::from_be_bytes([bytes[0], bytes[1]]), has_opt(&bytes));
                self.last = Some((to, bytes));
            }
        }
        assert!(self.server.in_flight() <= MAX_IN_FLIGHT);
    }

    fn query(&mut self, asker: Asker, msg: &[u8]) {
        if let Some(out) = self.server.query(self.now, asker, msg) {
            let id = (msg.len() >= 2).then(|| u16::from_be_bytes([msg[0], msg[1]]));
            self.check(out, Some(has_opt(msg)), id);
        }
    }

    fn upstream(&mut self, from: SocketAddr, msg: &[u8]) {
        if let Some(out) = self.server.upstream(self.now, from, msg) {
            let edns = (msg.len() >= 2)
                .then(|| {
                    self.forwarded
                        .get(&u16::from_be_bytes([msg[0], msg[1]]))
                        .copied()
                })
                .flatten();
            self.check(out, edns, None);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let setup = input.u8();
    let forward = setup & 1 == 0;
    let mut cfg = DnsConfig::new(["n1", "n2", "br"][usize::from(setup >> 1) % 3], forward);
    cfg.max_in_flight = MAX_IN_FLIGHT;
    cfg.rate = u32::from(input.u8());
    cfg.burst = u32::from(input.u8());
    let ups = upstreams(setup >> 4);
    let server = DnsServer::new(cfg, Arc::new(names(false)), ups, u64::from(input.u32()));
    let mut rig = Rig {
        server,
        forward,
        now: Duration::from_secs(1),
        forwarded: HashMap::new(),
        last: None,
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        match input.u8() % 8 {
            0 => {
                let a = asker(&mut input);
                let msg = input.long_chunk(70_000);
                rig.query(a, msg);
            }
            1 | 2 => {
                let a = asker(&mut input);
                let msg = built_query(&mut input);
                rig.query(a, &msg);
            }
            3 => {
                let Some((to, fwd)) = rig.last.clone() else {
                    continue;
                };
                let from = if input.u8() & 7 == 0 {
                    "192.0.2.54:53".parse().unwrap()
                } else {
                    to
                };
                let msg = upstream_answer(&mut input, &fwd);
                rig.upstream(from, &msg);
            }
            4 => {
                let from = upstreams(7)[usize::from(input.u8() % 3)];
                let msg = input.long_chunk(70_000);
                rig.upstream(from, msg);
            }
            5 => {
                rig.now += Duration::from_millis(u64::from(input.u16()) * 4);
                if let Some(at) = rig.server.poll_at() {
                    assert!(rig.server.in_flight() > 0);
                    let _ = at;
                }
                let mut out = Vec::new();
                rig.server.poll(rig.now, &mut out);
                for o in out {
                    rig.check(o, None, None);
                }
                if rig.server.in_flight() == 0 {
                    assert_eq!(rig.server.poll_at(), None);
                }
            }
            6 => rig.server.tcp_closed(u64::from(input.u8() & 3)),
            _ => {
                let b = input.u8();
                if b & 1 != 0 {
                    rig.server.set_names(Arc::new(names(b & 2 != 0)));
                } else {
                    rig.server.set_upstreams(upstreams(b >> 1));
                }
            }
        }
    }
});
