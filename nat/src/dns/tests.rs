//! The DNS server's rules, one by one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use simple_dns::rdata::{OPT, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use super::limit::{Limiter, MAX_ASKERS};
use super::*;

const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const DB1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const DB2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const CACHE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 4);
const D: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 4);
const E: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
const F: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const G: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

fn up1() -> SocketAddr {
    "192.0.2.53:53".parse().unwrap()
}

fn up2() -> SocketAddr {
    "[2001:db8::53]:53".parse().unwrap()
}

/// Networks `n1` ("pets"), `n2` ("other"), `br` ("bridge", not served), `many`.
fn names() -> Names {
    let mut n = Names::new();
    n.add_network("n1", "pets", true);
    n.add_network("n2", "other", true);
    n.add_network("br", "bridge", false);
    n.add_network("many", "many", true);
    n.add_endpoint("n1", "a", WEB, &["web", "", "webhost", "aaaaaaaaaaaa"]);
    n.add_endpoint("n1", "b", DB1, &["db", "database"]);
    n.add_endpoint("n2", "b", DB2, &["db"]);
    n.add_endpoint("n2", "c", CACHE, &["cache", "Shared"]);
    n.add_endpoint("n1", "d", D, &["d", "shared"]);
    n.add_endpoint("n1", "e", E, &["e", "shared."]);
    n.add_endpoint("br", "f", F, &["f"]);
    n.add_endpoint("br", "g", G, &["g"]);
    for i in 0..40u8 {
        n.add_endpoint(
            "many",
            &format!("m{i}"),
            Ipv4Addr::new(10, 9, 0, i + 2),
            &[&format!("m{i}"), "lots"],
        );
    }
    n
}

fn server_on(net: &str, forward: bool, upstreams: Vec<SocketAddr>) -> DnsServer {
    DnsServer::new(
        DnsConfig::new(net, forward),
        Arc::new(names()),
        upstreams,
        7,
    )
}

fn server() -> DnsServer {
    server_on("n1", true, vec![up1(), up2()])
}

fn udp(ip: Ipv4Addr) -> Asker {
    Asker::Udp(SocketAddrV4::new(ip, 40000))
}

fn query_msg(id: u16, name: &str, qtype: TYPE, edns: Option<u16>) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    if let Some(size) = edns {
        *p.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: size,
            version: 0,
        });
    }
    p.build_bytes_vec().unwrap()
}

/// The answer `s` gives `asker` for `name`, parsed.
fn ask(s: &mut DnsServer, asker: Asker, name: &str, qtype: TYPE) -> Vec<u8> {
    match s.query(Duration::ZERO, asker, &query_msg(0x1234, name, qtype, None)) {
        Some(Outgoing::Answer(a, bytes)) => {
            assert_eq!(a, asker);
            bytes
        }
        other => panic!("no answer for {name}: {other:?}"),
    }
}

fn addrs(bytes: &[u8]) -> Vec<Ipv4Addr> {
    Packet::parse(bytes)
        .unwrap()
        .answers
        .iter()
        .map(|rr| match &rr.rdata {
            RData::A(a) => Ipv4Addr::from(a.address),
            other => panic!("not A: {other:?}"),
        })
        .collect()
}

fn rcode(bytes: &[u8]) -> RCODE {
    Packet::parse(bytes).unwrap().rcode()
}

fn sorted(mut v: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    v.sort();
    v
}

#[test]
fn answers_a_name_on_the_askers_network() {
    let mut s = server();
    let bytes = ask(&mut s, udp(WEB), "db", TYPE::A);
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.id(), 0x1234);
    assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
    assert!(p.has_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE));
    assert_eq!(p.rcode(), RCODE::NoError);
    assert_eq!(p.questions.len(), 1);
    assert_eq!(p.questions[0].qname.to_string(), "db");
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].ttl, TTL);
    assert_eq!(p.answers[0].class, CLASS::IN);
    assert!(p.opt().is_none());
    assert_eq!(addrs(&bytes), vec![DB1]);
    let c = s.counters().snapshot();
    assert_eq!((c.queries, c.answered, c.forwarded), (1, 1, 0));
}

#[test]
fn every_name_of_a_sandbox_and_network_qualified() {
    let mut s = server();
    for name in [
        "web",
        "webhost",
        "aaaaaaaaaaaa",
        "web.pets",
        "WEB",
        "Web.Pets.",
        "web.",
    ] {
        assert_eq!(
            addrs(&ask(&mut s, udp(D), name, TYPE::A)),
            vec![WEB],
            "{name}"
        );
    }
    assert_eq!(
        addrs(&ask(&mut s, udp(WEB), "database.pets", TYPE::A)),
        vec![DB1]
    );
}

#[test]
fn question_case_is_echoed() {
    let mut s = server();
    let bytes = ask(&mut s, udp(WEB), "dB.PeTs", TYPE::A);
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.questions[0].qname.to_string(), "dB.PeTs");
}

#[test]
fn a_sandbox_on_two_networks_resolves_both() {
    let mut s = server();
    // b is on n1 and n2 and asks through n1's gateway.
    assert_eq!(addrs(&ask(&mut s, udp(DB1), "cache", TYPE::A)), vec![CACHE]);
    assert_eq!(
        addrs(&ask(&mut s, udp(DB1), "cache.other", TYPE::A)),
        vec![CACHE]
    );
    assert_eq!(
        sorted(addrs(&ask(&mut s, udp(DB1), "db", TYPE::A))),
        vec![DB1, DB2]
    );
    assert_eq!(
        addrs(&ask(&mut s, udp(DB1), "db.other", TYPE::A)),
        vec![DB2]
    );
    // web is on n1 only.
    assert_eq!(addrs(&ask(&mut s, udp(WEB), "db", TYPE::A)), vec![DB1]);
    // Names on both networks, from an asker on both: all holders.
    assert_eq!(
        sorted(addrs(&ask(&mut s, udp(DB1), "shared", TYPE::A))),
        vec![D, E, CACHE]
    );
}

#[test]
fn names_elsewhere_are_nxdomain_not_forwarded() {
    let mut s = server();
    for name in [
        "cache",
        "cache.other",
        "db.other",
        "web.other",
        "nobody.pets",
        "a.b.pets",
    ] {
        let bytes = ask(&mut s, udp(WEB), name, TYPE::A);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.rcode(), RCODE::NameError, "{name}");
        assert!(p.answers.is_empty());
    }
    assert_eq!(s.counters().snapshot().forwarded, 0);
    // Names of the default bridge are no one's: forwarded.
    for name in ["f", "f.bridge"] {
        let q = query_msg(1, name, TYPE::A, None);
        assert!(matches!(
            s.query(Duration::ZERO, udp(WEB), &q),
            Some(Outgoing::Forward(..))
        ));
    }
}

#[test]
fn several_holders_rotate() {
    let mut s = server();
    let first = addrs(&ask(&mut s, udp(WEB), "shared", TYPE::A));
    let second = addrs(&ask(&mut s, udp(WEB), "shared", TYPE::A));
    assert_eq!(sorted(first.clone()), vec![D, E]);
    assert_eq!(sorted(second.clone()), vec![D, E]);
    assert_ne!(first, second);
}

#[test]
fn other_types_of_a_known_name_are_nodata() {
    let mut s = server();
    for t in [TYPE::AAAA, TYPE::MX, TYPE::TXT, TYPE::PTR] {
        let bytes = ask(&mut s, udp(WEB), "db", t);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.rcode(), RCODE::NoError);
        assert!(p.answers.is_empty());
        assert!(p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
    }
    assert_eq!(s.counters().snapshot().forwarded, 0);
}

#[test]
fn ptr_of_an_address_on_the_askers_networks() {
    let mut s = server();
    let bytes = ask(&mut s, udp(WEB), "3.1.0.10.in-addr.arpa", TYPE::PTR);
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.rcode(), RCODE::NoError);
    assert_eq!(p.answers.len(), 1);
    match &p.answers[0].rdata {
        RData::PTR(ptr) => assert_eq!(ptr.0.to_string(), "db.pets"),
        other => panic!("{other:?}"),
    }
    // Upper case, trailing dot.
    let bytes = ask(&mut s, udp(WEB), "3.1.0.10.IN-ADDR.ARPA.", TYPE::PTR);
    assert_eq!(Packet::parse(&bytes).unwrap().answers.len(), 1);
    // A for a reverse name: NODATA.
    let bytes = ask(&mut s, udp(WEB), "3.1.0.10.in-addr.arpa", TYPE::A);
    assert!(Packet::parse(&bytes).unwrap().answers.is_empty());
    assert_eq!(rcode(&bytes), RCODE::NoError);
    // An address on another network: NXDOMAIN.
    assert_eq!(
        rcode(&ask(&mut s, udp(WEB), "4.2.0.10.in-addr.arpa", TYPE::PTR)),
        RCODE::NameError
    );
    // b's address on n2, asked by b: its name there.
    let bytes = ask(&mut s, udp(DB1), "3.2.0.10.in-addr.arpa", TYPE::PTR);
    match &Packet::parse(&bytes).unwrap().answers[0].rdata {
        RData::PTR(ptr) => assert_eq!(ptr.0.to_string(), "db.other"),
        other => panic!("{other:?}"),
    }
    // An address of no sandbox: forwarded.
    let q = query_msg(1, "8.8.8.8.in-addr.arpa", TYPE::PTR, None);
    assert!(matches!(
        s.query(Duration::ZERO, udp(WEB), &q),
        Some(Outgoing::Forward(..))
    ));
}

#[test]
fn reverse_names() {
    use super::message::reverse_addr;
    assert_eq!(
        reverse_addr("4.3.2.1.in-addr.arpa"),
        Some(Ipv4Addr::new(1, 2, 3, 4))
    );
    for bad in [
        "3.2.1.in-addr.arpa",
        "5.4.3.2.1.in-addr.arpa",
        "256.3.2.1.in-addr.arpa",
        "+4.3.2.1.in-addr.arpa",
        "4.3.2.1.ip6.arpa",
        ".3.2.1.in-addr.arpa",
    ] {
        assert_eq!(reverse_addr(bad), None, "{bad}");
    }
}

#[test]
fn default_bridge_serves_no_names_but_forwards() {
    let mut s = server_on("br", true, vec![up1()]);
    let q = query_msg(9, "g", TYPE::A, None);
    assert!(
        matches!(s.query(Duration::ZERO, udp(F), &q), Some(Outgoing::Forward(a, _)) if a == up1())
    );
    let q = query_msg(9, "8.0.17.172.in-addr.arpa", TYPE::PTR, None);
    assert!(matches!(
        s.query(Duration::ZERO, udp(F), &q),
        Some(Outgoing::Forward(..))
    ));
    // A name of a served network f is not on.
    assert_eq!(
        rcode(&ask(&mut s, udp(F), "web", TYPE::A)),
        RCODE::NameError
    );
}

#[test]
fn internal_network_forwards_nothing() {
    let mut s = server_on("n1", false, vec![up1()]);
    let bytes = ask(&mut s, udp(WEB), "example.com", TYPE::A);
    assert_eq!(rcode(&bytes), RCODE::NameError);
    assert_eq!(addrs(&ask(&mut s, udp(WEB), "db", TYPE::A)), vec![DB1]);
    let c = s.counters().snapshot();
    assert_eq!((c.forwarded, c.nxdomain, c.answered), (0, 1, 1));
}

#[test]
fn no_resolvers_is_refused() {
    let mut s = server_on("n1", true, vec![]);
    let bytes = ask(&mut s, udp(WEB), "example.com", TYPE::A);
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.rcode(), RCODE::Refused);
    assert_eq!(p.id(), 0x1234);
    assert_eq!(p.questions[0].qname.to_string(), "example.com");
    assert_eq!(s.counters().snapshot().refused, 1);
}

#[test]
fn unknown_askers_and_networks_are_dropped() {
    let mut s = server();
    let q = query_msg(1, "db", TYPE::A, None);
    assert_eq!(
        s.query(Duration::ZERO, udp(Ipv4Addr::new(10, 0, 1, 99)), &q),
        None
    );
    // CACHE is an endpoint of n2, not of n1.
    assert_eq!(s.query(Duration::ZERO, udp(CACHE), &q), None);
    let mut s = server_on("nope", true, vec![up1()]);
    assert_eq!(s.query(Duration::ZERO, udp(WEB), &q), None);
    assert_eq!(s.counters().snapshot().dropped, 1);
}

#[test]
fn set_names_takes_effect_at_once() {
    let mut s = server();
    assert_eq!(
        rcode(&ask(&mut s, udp(WEB), "cache", TYPE::A)),
        RCODE::NameError
    );
    let mut n = names();
    n.add_endpoint("n1", "c", Ipv4Addr::new(10, 0, 1, 9), &["cache"]);
    s.set_names(Arc::new(n));
    assert_eq!(
        addrs(&ask(&mut s, udp(WEB), "cache", TYPE::A)),
        vec![Ipv4Addr::new(10, 0, 1, 9)]
    );
    s.set_names(Arc::new(Names::new()));
    let q = query_msg(1, "db", TYPE::A, None);
    assert_eq!(s.query(Duration::ZERO, udp(WEB), &q), None);
}

#[test]
fn names_counts() {
    let n = names();
    assert_eq!(n.networks(), 4);
    assert_eq!(n.len(), 48);
    assert!(!n.is_empty());
    assert!(Names::new().is_empty());
}

// --- Bad input ---------------------------------------------------------------

/// The answer to raw bytes `msg` from WEB.
fn raw(s: &mut DnsServer, msg: &[u8]) -> Option<Vec<u8>> {
    match s.query(Duration::ZERO, udp(WEB), msg) {
        Some(Outgoing::Answer(_, b)) => Some(b),
        Some(Outgoing::Forward(..)) => panic!("forwarded"),
        None => None,
    }
}

fn assert_formerr(s: &mut DnsServer, msg: &[u8], what: &str) {
    let bytes = raw(s, msg).unwrap_or_else(|| panic!("{what}: dropped"));
    assert_eq!(&bytes[..2], &msg[..2], "{what}: id");
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.rcode(), RCODE::FormatError, "{what}");
    assert!(p.has_flags(PacketFlag::RESPONSE));
}

#[test]
fn short_and_response_messages_are_dropped() {
    let mut s = server();
    assert_eq!(raw(&mut s, &[]), None);
    assert_eq!(raw(&mut s, &[0; 11]), None);
    let mut q = query_msg(5, "db", TYPE::A, None);
    q[2] |= 0x80;
    assert_eq!(raw(&mut s, &q), None);
    let c = s.counters().snapshot();
    assert_eq!((c.dropped, c.queries, c.formerr), (3, 3, 0));
}

#[test]
fn malformed_queries_are_formerr() {
    let mut s = server();
    let good = query_msg(0xbeef, "db", TYPE::A, None);
    // Truncated anywhere past the header.
    for cut in 12..good.len() {
        assert_formerr(&mut s, &good[..cut], &format!("cut at {cut}"));
    }
    // A header alone (qdcount 1).
    // qdcount 0 and 2.
    let mut q = good.clone();
    q[5] = 0;
    assert_formerr(&mut s, &q[..12], "qdcount 0");
    let mut q = good.clone();
    q[5] = 2;
    q.extend_from_slice(&good[12..]);
    assert_formerr(&mut s, &q, "qdcount 2");
    // Compression pointer loop in the question, and a pointer to itself.
    let mut q = good[..12].to_vec();
    q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_formerr(&mut s, &q, "pointer loop");
    // A pointer loop in an additional record's name.
    let mut q = good.clone();
    q[11] = 1;
    let at = q.len() as u8;
    q.extend_from_slice(&[0xc0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_formerr(&mut s, &q, "pointer loop in a record");
    // Class CH.
    let mut q = good.clone();
    let n = q.len();
    q[n - 1] = 3;
    assert_formerr(&mut s, &q, "class CH");
    // Trailing garbage.
    let mut q = good.clone();
    q.push(0);
    assert_formerr(&mut s, &q, "trailing byte");
    // 64 KiB.
    let mut q = good.clone();
    q.resize(65_535, 0xff);
    assert_formerr(&mut s, &q, "64 KiB");
    // A label over 63 bytes.
    let mut q = good[..12].to_vec();
    q.push(64);
    q.extend_from_slice(&[b'a'; 64]);
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_formerr(&mut s, &q, "label 64");
    // Two OPT records.
    let opt = [0u8, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0];
    let mut q = good.clone();
    q[11] = 2;
    q.extend_from_slice(&opt);
    q.extend_from_slice(&opt);
    assert_formerr(&mut s, &q, "two OPT");
    assert_eq!(
        s.counters().snapshot().formerr,
        s.counters().snapshot().queries
    );
}

#[test]
fn other_opcodes_are_notimp() {
    let mut s = server();
    let mut q = query_msg(0x4242, "db", TYPE::A, None);
    q[2] = (q[2] & !0x78) | (2 << 3); // STATUS
    let bytes = raw(&mut s, &q).unwrap();
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.id(), 0x4242);
    assert_eq!(p.rcode(), RCODE::NotImplemented);
    assert_eq!(bytes[2] & 0x78, 2 << 3);
    assert_eq!(bytes.len(), 12);
}

// --- Sizes and EDNS ----------------------------------------------------------

#[test]
fn udp_answers_over_512_are_truncated() {
    let mut s = server_on("many", true, vec![up1()]);
    let asker = udp(Ipv4Addr::new(10, 9, 0, 2));
    let bytes = ask(&mut s, asker, "lots", TYPE::A);
    assert!(bytes.len() <= UDP_MAX);
    let p = Packet::parse(&bytes).unwrap();
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert!(p.answers.is_empty());
    assert_eq!(p.questions.len(), 1);
    assert_eq!(s.counters().snapshot().truncated, 1);
    // Over TCP: all of them.
    let tcp = Asker::Tcp {
        conn: 3,
        src: Ipv4Addr::new(10, 9, 0, 2),
    };
    let bytes = ask(&mut s, tcp, "lots", TYPE::A);
    assert!(bytes.len() > UDP_MAX);
    assert_eq!(addrs(&bytes).len(), 40);
    // With EDNS 4096: all of them, with an OPT.
    let q = query_msg(1, "lots", TYPE::A, Some(4096));
    let Some(Outgoing::Answer(_, bytes)) = s.query(Duration::ZERO, asker, &q) else {
        panic!()
    };
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.answers.len(), 40);
    assert!(!p.has_flags(PacketFlag::TRUNCATION));
    assert_eq!(p.opt().unwrap().udp_packet_size, EDNS_MAX);
    // EDNS below 512 counts as 512; above 4096 as 4096.
    let q = query_msg(1, "lots", TYPE::A, Some(100));
    let Some(Outgoing::Answer(_, bytes)) = s.query(Duration::ZERO, asker, &q) else {
        panic!()
    };
    assert!(bytes.len() <= UDP_MAX);
    let p = Packet::parse(&bytes).unwrap();
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert!(p.opt().is_some());
}

#[test]
fn opt_is_echoed() {
    let mut s = server();
    let q = query_msg(1, "db", TYPE::A, Some(1232));
    let Some(Outgoing::Answer(_, bytes)) = s.query(Duration::ZERO, udp(WEB), &q) else {
        panic!()
    };
    let p = Packet::parse(&bytes).unwrap();
    let opt = p.opt().unwrap();
    assert!(opt.opt_codes.is_empty());
    assert_eq!(opt.udp_packet_size, EDNS_MAX);
    assert_eq!(addrs(&bytes), vec![DB1]);
}

// --- Forwarding ------------------------------------------------------------

/// Forwards `name` from `asker` with id `id` at `now`: the resolver and the message.
fn forward(
    s: &mut DnsServer,
    now: Duration,
    asker: Asker,
    id: u16,
    name: &str,
) -> (SocketAddr, Vec<u8>) {
    match s.query(now, asker, &query_msg(id, name, TYPE::A, None)) {
        Some(Outgoing::Forward(to, m)) => (to, m),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// A resolver's answer to `fwd`: `addrs` count of A records, `rcode`.
fn upstream_answer(fwd: &[u8], n: u8, rcode: RCODE) -> Vec<u8> {
    let q = Packet::parse(fwd).unwrap();
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE | PacketFlag::RECURSION_DESIRED);
    *r.rcode_mut() = rcode;
    r.questions.push(q.questions[0].clone());
    for i in 0..n {
        r.answers.push(simple_dns::ResourceRecord::new(
            q.questions[0].qname.clone(),
            CLASS::IN,
            60,
            RData::A(Ipv4Addr::new(93, 184, 0, i).into()),
        ));
    }
    r.build_bytes_vec().unwrap()
}

#[test]
fn forwarded_query_gets_a_fresh_id_and_the_answer_the_old_one() {
    let mut s = server();
    let (to, fwd) = forward(&mut s, Duration::ZERO, udp(WEB), 0x1111, "example.com");
    assert_eq!(to, up1());
    let orig = query_msg(0x1111, "example.com", TYPE::A, None);
    assert_eq!(&fwd[2..], &orig[2..]);
    assert_eq!(s.in_flight(), 1);
    let ans = upstream_answer(&fwd, 1, RCODE::NoError);
    let Some(Outgoing::Answer(a, bytes)) = s.upstream(Duration::from_millis(5), up1(), &ans) else {
        panic!()
    };
    assert_eq!(a, udp(WEB));
    assert_eq!(&bytes[..2], &[0x11, 0x11]);
    assert_eq!(&bytes[2..], &ans[2..]);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.poll_at(), None);
    let c = s.counters().snapshot();
    assert_eq!((c.forwarded, c.forward_answers, c.stray), (1, 1, 0));
    // A second answer to the same query is stray.
    assert_eq!(s.upstream(Duration::from_millis(6), up1(), &ans), None);
    assert_eq!(s.counters().snapshot().stray, 1);
}

#[test]
fn forwarded_ids_differ() {
    let mut s = server();
    let mut ids = std::collections::HashSet::new();
    for i in 0..200 {
        let (_, fwd) = forward(
            &mut s,
            Duration::ZERO,
            udp(WEB),
            7,
            &format!("h{i}.example"),
        );
        ids.insert(u16::from_be_bytes([fwd[0], fwd[1]]));
    }
    assert_eq!(ids.len(), 200);
}

#[test]
fn stray_answers_are_dropped() {
    let mut s = server();
    let (_, fwd) = forward(&mut s, Duration::ZERO, udp(WEB), 0x2222, "example.com");
    let ans = upstream_answer(&fwd, 1, RCODE::NoError);
    let now = Duration::from_millis(1);
    // Wrong source address, and the right address on a wrong port.
    assert_eq!(s.upstream(now, up2(), &ans), None);
    assert_eq!(
        s.upstream(now, "192.0.2.53:54".parse().unwrap(), &ans),
        None
    );
    // Wrong id.
    let mut bad = ans.clone();
    bad[0] ^= 0xff;
    assert_eq!(s.upstream(now, up1(), &bad), None);
    // Other question.
    let other = upstream_answer(
        &query_msg(
            u16::from_be_bytes([fwd[0], fwd[1]]),
            "example.org",
            TYPE::A,
            None,
        ),
        1,
        RCODE::NoError,
    );
    assert_eq!(s.upstream(now, up1(), &other), None);
    let mut other = ans.clone();
    let n = fwd.len();
    other[n - 3] = 28; // AAAA
    assert_eq!(s.upstream(now, up1(), &other), None);
    // A query, not an answer; short; garbage after.
    let mut q = ans.clone();
    q[2] &= 0x7f;
    assert_eq!(s.upstream(now, up1(), &q), None);
    assert_eq!(s.upstream(now, up1(), &ans[..11]), None);
    let mut long = ans.clone();
    long.push(1);
    assert_eq!(s.upstream(now, up1(), &long), None);
    assert_eq!(s.counters().snapshot().stray, 8);
    assert_eq!(s.in_flight(), 1);
    // The question in another case is the same question.
    let mut upper = ans.clone();
    upper[13..20].make_ascii_uppercase();
    assert!(matches!(
        s.upstream(now, up1(), &upper),
        Some(Outgoing::Answer(..))
    ));
}

#[test]
fn timeout_moves_to_the_next_resolver_then_servfail() {
    let mut s = server();
    let t0 = Duration::from_secs(100);
    let (to, fwd) = forward(&mut s, t0, udp(WEB), 0x3333, "example.com");
    assert_eq!(to, up1());
    let share = FORWARD_TIMEOUT / 2;
    assert_eq!(s.poll_at(), Some(t0 + share));
    let mut out = Vec::new();
    s.poll(t0 + share - Duration::from_millis(1), &mut out);
    assert!(out.is_empty());
    s.poll(t0 + share, &mut out);
    assert_eq!(out, vec![Outgoing::Forward(up2(), fwd.clone())]);
    out.clear();
    // The first resolver's late answer is stray now.
    let ans = upstream_answer(&fwd, 1, RCODE::NoError);
    assert_eq!(s.upstream(t0 + share, up1(), &ans), None);
    assert_eq!(s.poll_at(), Some(t0 + FORWARD_TIMEOUT));
    s.poll(t0 + FORWARD_TIMEOUT, &mut out);
    assert_eq!(out.len(), 1);
    let Outgoing::Answer(a, bytes) = &out[0] else {
        panic!()
    };
    assert_eq!(*a, udp(WEB));
    let p = Packet::parse(bytes).unwrap();
    assert_eq!(p.id(), 0x3333);
    assert_eq!(p.rcode(), RCODE::ServerFailure);
    assert_eq!(p.questions[0].qname.to_string(), "example.com");
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.poll_at(), None);
    assert_eq!(s.counters().snapshot().timeouts, 1);
}

#[test]
fn servfail_or_refused_moves_to_the_next_resolver() {
    for rc in [RCODE::ServerFailure, RCODE::Refused] {
        let mut s = server();
        let (_, fwd) = forward(&mut s, Duration::ZERO, udp(WEB), 1, "example.com");
        let bad = upstream_answer(&fwd, 0, rc);
        assert_eq!(
            s.upstream(Duration::ZERO, up1(), &bad),
            Some(Outgoing::Forward(up2(), fwd.clone()))
        );
        // The last resolver's SERVFAIL is passed on.
        let Some(Outgoing::Answer(_, bytes)) = s.upstream(Duration::ZERO, up2(), &bad) else {
            panic!()
        };
        assert_eq!(rcode(&bytes), rc);
        assert_eq!(s.in_flight(), 0);
    }
}

#[test]
fn in_flight_is_bounded() {
    let mut cfg = DnsConfig::new("n1", true);
    cfg.max_in_flight = 3;
    let mut s = DnsServer::new(cfg, Arc::new(names()), vec![up1()], 1);
    for i in 0..3 {
        forward(&mut s, Duration::ZERO, udp(WEB), i, "example.com");
    }
    let bytes = ask(&mut s, udp(WEB), "example.com", TYPE::A);
    assert_eq!(rcode(&bytes), RCODE::Refused);
    assert_eq!(s.in_flight(), 3);
    let c = s.counters().snapshot();
    assert_eq!((c.forwarded, c.refused), (3, 1));
    // Local names still answer.
    assert_eq!(addrs(&ask(&mut s, udp(WEB), "db", TYPE::A)), vec![DB1]);
}

#[test]
fn tcp_closed_drops_its_queries() {
    let mut s = server();
    let tcp = Asker::Tcp { conn: 9, src: WEB };
    let (_, fwd) = forward(&mut s, Duration::ZERO, tcp, 1, "example.com");
    forward(&mut s, Duration::ZERO, udp(WEB), 2, "example.org");
    s.tcp_closed(8);
    assert_eq!(s.in_flight(), 2);
    s.tcp_closed(9);
    assert_eq!(s.in_flight(), 1);
    let ans = upstream_answer(&fwd, 1, RCODE::NoError);
    assert_eq!(s.upstream(Duration::ZERO, up1(), &ans), None);
    let mut out = Vec::new();
    s.poll(FORWARD_TIMEOUT * 2, &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], Outgoing::Forward(a, _) if a == up2()));
}

#[test]
fn large_forwarded_answers_are_truncated_for_udp() {
    let mut s = server();
    let (_, fwd) = forward(&mut s, Duration::ZERO, udp(WEB), 0x5555, "example.com");
    let ans = upstream_answer(&fwd, 40, RCODE::NoError);
    assert!(ans.len() > UDP_MAX);
    let Some(Outgoing::Answer(_, bytes)) = s.upstream(Duration::ZERO, up1(), &ans) else {
        panic!()
    };
    let p = Packet::parse(&bytes).unwrap();
    assert!(bytes.len() <= UDP_MAX);
    assert_eq!(p.id(), 0x5555);
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert_eq!(p.questions[0].qname.to_string(), "example.com");
    // Over TCP it passes whole.
    let tcp = Asker::Tcp { conn: 1, src: WEB };
    let (_, fwd) = forward(&mut s, Duration::ZERO, tcp, 0x5556, "example.com");
    let ans = upstream_answer(&fwd, 40, RCODE::NoError);
    let Some(Outgoing::Answer(_, bytes)) = s.upstream(Duration::ZERO, up1(), &ans) else {
        panic!()
    };
    assert_eq!(bytes.len(), ans.len());
}

#[test]
fn set_upstreams_applies_to_new_queries() {
    let mut s = server();
    let (_, fwd) = forward(&mut s, Duration::ZERO, udp(WEB), 1, "example.com");
    s.set_upstreams(vec![up2()]);
    let (to, _) = forward(&mut s, Duration::ZERO, udp(WEB), 2, "example.org");
    assert_eq!(to, up2());
    // The first one still finishes with the old list.
    let ans = upstream_answer(&fwd, 1, RCODE::NoError);
    assert!(matches!(
        s.upstream(Duration::ZERO, up1(), &ans),
        Some(Outgoing::Answer(..))
    ));
    // A single resolver gets the whole timeout.
    assert_eq!(s.poll_at(), Some(FORWARD_TIMEOUT));
}

// --- Rate limit ----------------------------------------------------------------

#[test]
fn rate_limit_per_asker() {
    let mut cfg = DnsConfig::new("n1", true);
    cfg.rate = 10;
    cfg.burst = 5;
    let mut s = DnsServer::new(cfg, Arc::new(names()), vec![up1()], 1);
    let q = query_msg(1, "db", TYPE::A, None);
    let t0 = Duration::from_secs(1);
    for _ in 0..5 {
        assert!(s.query(t0, udp(WEB), &q).is_some());
    }
    assert_eq!(s.query(t0, udp(WEB), &q), None);
    // Another asker is not limited by the first.
    assert!(s.query(t0, udp(D), &q).is_some());
    // 100 ms later one more token.
    assert!(
        s.query(t0 + Duration::from_millis(100), udp(WEB), &q)
            .is_some()
    );
    assert_eq!(s.query(t0 + Duration::from_millis(100), udp(WEB), &q), None);
    let c = s.counters().snapshot();
    assert_eq!(c.rate_limited, 2);
    assert_eq!(s.askers(), 2);
    // Off.
    let mut cfg = DnsConfig::new("n1", true);
    cfg.rate = 0;
    let mut s = DnsServer::new(cfg, Arc::new(names()), vec![up1()], 1);
    for _ in 0..10_000 {
        assert!(s.query(t0, udp(WEB), &q).is_some());
    }
}

#[test]
fn rate_table_is_bounded() {
    let mut l = Limiter::new(10, 1);
    for i in 0..(MAX_ASKERS as u32 + 500) {
        assert!(l.allow(Duration::from_millis(u64::from(i)), Ipv4Addr::from(i)));
    }
    assert_eq!(l.len(), MAX_ASKERS);
    // The oldest went first: 0.0.0.0 is new again (a full bucket).
    assert!(l.allow(Duration::from_millis(5000), Ipv4Addr::from(0)));
    // Idle entries go after a minute.
    assert!(l.allow(Duration::from_secs(200), Ipv4Addr::new(1, 1, 1, 1)));
    assert_eq!(l.len(), 1);
}

// --- resolv.conf ---------------------------------------------------------------

#[test]
fn resolv_conf_parse() {
    let rc = ResolvConf::parse(
        "# comment\n; other\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n\
         domain a.example\nsearch b.example c.example\noptions edns0 ndots:3\n\
         nameserver ::1\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n  options trust-ad\nsortlist x\n",
    );
    assert_eq!(
        rc.nameservers,
        vec![
            IpAddr::from([127, 0, 0, 53]),
            "::1".parse::<IpAddr>().unwrap(),
            IpAddr::from([10, 0, 0, 1]),
        ]
    );
    assert_eq!(rc.search, vec!["b.example", "c.example"]);
    assert_eq!(rc.options, vec!["edns0", "ndots:3", "trust-ad"]);
    assert_eq!(
        rc.upstreams(),
        vec![
            "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap()
        ]
    );
    assert_eq!(
        rc.for_sandbox(Ipv4Addr::new(172, 18, 0, 1)),
        "nameserver 172.18.0.1\nsearch b.example c.example\noptions ndots:0 edns0 trust-ad\n"
    );
    // `domain` after `search` wins.
    let rc = ResolvConf::parse("search a b\ndomain c\n");
    assert_eq!(rc.search, vec!["c"]);
    assert_eq!(
        ResolvConf::parse("").for_sandbox(Ipv4Addr::new(10, 0, 0, 1)),
        "nameserver 10.0.0.1\noptions ndots:0\n"
    );
}

// --- Properties ------------------------------------------------------------------

/// Whatever the server sends parses; UDP answers fit 512 bytes unless the query had
/// an OPT.
fn check(out: &Option<Outgoing>, edns: bool, udp: bool) {
    match out {
        Some(Outgoing::Answer(_, b)) => {
            assert!(Packet::parse(b).is_ok(), "answer does not parse: {b:02x?}");
            if udp && !edns {
                assert!(b.len() <= UDP_MAX);
            }
            assert!(b.len() <= usize::from(EDNS_MAX) || !udp);
        }
        Some(Outgoing::Forward(_, b)) => assert!(Packet::parse(b).is_ok()),
        None => {}
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp in any::<bool>()) {
        let mut s = server();
        let asker = if tcp { Asker::Tcp { conn: 1, src: WEB } } else { udp(WEB) };
        let out = s.query(Duration::ZERO, asker, &bytes);
        // Without a well-formed OPT the limit is 512.
        let edns = super::message::walk(&bytes).is_some_and(|s| s.edns.is_some());
        check(&out, edns, !tcp);
        let _ = s.upstream(Duration::ZERO, up1(), &bytes);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in "[a-zA-Z0-9.]{0,20}",
        qtype in any::<u16>(),
        edns in proptest::option::of(any::<u16>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut s = server_on("many", true, vec![up1()]);
        let mut p = Packet::new_query(3);
        let Ok(qname) = Name::new(&name) else { return Ok(()) };
        p.questions.push(Question::new(qname, QTYPE::TYPE(TYPE::from(qtype)), QCLASS::CLASS(CLASS::IN), false));
        if let Some(size) = edns {
            *p.opt_mut() = Some(OPT { opt_codes: Vec::new(), udp_packet_size: size, version: 0 });
        }
        let mut bytes = p.build_bytes_vec().unwrap();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        let asker = udp(Ipv4Addr::new(10, 9, 0, 2));
        let out = s.query(Duration::ZERO, asker, &bytes);
        let edns = super::message::walk(&bytes).is_some_and(|s| s.edns.is_some());
        check(&out, edns, true);
        if let Some(Outgoing::Forward(to, fwd)) = out {
            let ans = upstream_answer(&fwd, 50, RCODE::NoError);
            let back = s.upstream(Duration::ZERO, to, &ans);
            check(&back, edns, true);
        }
    }
}

/// Local answers per second on one core (`cargo test --release -p tapnet-nat
/// local_answer_rate -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, run by hand in release"]
fn local_answer_rate() {
    let mut cfg = DnsConfig::new("n1", true);
    cfg.rate = 0;
    let mut s = DnsServer::new(cfg, Arc::new(names()), vec![up1()], 1);
    let q = query_msg(1, "db.pets", TYPE::A, None);
    let n = 1_000_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(s.query(Duration::ZERO, udp(WEB), std::hint::black_box(&q)));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} local answers/s ({:.0} ns each)",
        f64::from(n) / secs,
        secs * 1e9 / f64::from(n)
    );
}
