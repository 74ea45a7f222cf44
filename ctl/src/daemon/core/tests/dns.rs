//! What the embedded DNS servers are told: names after every change (asked through a
//! real `DnsServer` on the names the plumbing was last given), and each sandbox's
//! `resolv.conf`.

use std::net::SocketAddrV4;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, RCODE, TYPE};
use tapnet_nat::dns::{Asker, DnsConfig, DnsServer, Outgoing, ResolvConf};

use super::*;

/// What network `net`'s server answers `from` asking for `name` (type `qtype`), on the
/// names the plumbing holds now: the addresses, or the error code.
pub(super) fn ask(
    r: &Rig,
    net: &str,
    from: Ipv4Addr,
    name: &str,
    qtype: TYPE,
) -> Result<Vec<String>, RCODE> {
    let names = r.p().names().expect("names were handed over");
    let net_id = r.network(net).id;
    // No forwarding: a name the server does not own is NXDOMAIN.
    let mut server = DnsServer::new(DnsConfig::new(&net_id, false), names, Vec::new(), 1);
    let mut q = Packet::new_query(7);
    q.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let msg = q.build_bytes_vec().unwrap();
    let asker = Asker::Udp(SocketAddrV4::new(from, 40000));
    let Some(Outgoing::Answer(_, bytes)) = server.query(Duration::ZERO, asker, &msg) else {
        panic!("no answer for {name} from {from} on {net}");
    };
    let p = Packet::parse(&bytes).unwrap();
    match p.rcode() {
        RCODE::NoError => Ok(p
            .answers
            .iter()
            .map(|rr| match &rr.rdata {
                RData::A(a) => Ipv4Addr::from(a.address).to_string(),
                RData::PTR(n) => n.to_string(),
                other => format!("{other:?}"),
            })
            .collect()),
        code => Err(code),
    }
}

fn a(r: &Rig, net: &str, from: Ipv4Addr, name: &str) -> Result<Vec<String>, RCODE> {
    ask(r, net, from, name, TYPE::A)
}

/// Sandbox `name`'s address on `net`.
fn addr(r: &Rig, name: &str, net: &str) -> Ipv4Addr {
    r.endpoints(name)
        .iter()
        .find(|(_, n)| n.name == net)
        .and_then(|(e, _)| e.ipv4)
        .unwrap_or_else(|| panic!("{name} is not on {net}"))
}

fn connect(r: &Rig, net: &str, sb: &str, aliases: &[&str]) {
    r.d()
        .connect(
            net,
            sb,
            AttachSpec {
                network: net.into(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap();
}

#[test]
fn names_aliases_hostnames_and_short_ids_resolve_on_their_network() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let db = r
        .d()
        .create_sandbox(
            Some("db".into()),
            Some("dbhost".into()),
            vec![AttachSpec {
                network: "pets".into(),
                aliases: vec!["database".into()],
                ..Default::default()
            }],
            &[],
        )
        .unwrap();
    r.sandbox("web", &["pets"]);
    let (db_ip, web_ip) = (addr(&r, "db", "pets"), addr(&r, "web", "pets"));
    let want = Ok(vec![db_ip.to_string()]);
    for name in [
        "db",
        "DB",
        "db.",
        "database",
        "dbhost",
        &db.id[..12],
        "db.pets",
    ] {
        assert_eq!(a(&r, "pets", web_ip, name), want, "{name}");
    }
    // PTR: the sandbox's name on the network.
    let o = db_ip.octets();
    let ptr = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
    assert_eq!(
        ask(&r, "pets", web_ip, &ptr, TYPE::PTR),
        Ok(vec!["db.pets".to_string()])
    );
    assert_eq!(a(&r, "pets", web_ip, "nosuch"), Err(RCODE::NameError));
}

#[test]
fn a_connect_adds_names_and_a_disconnect_or_removal_takes_them_away() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    r.create_net("other", "10.2.0.0/24");
    r.sandbox("web", &["pets"]);
    r.sandbox("cache", &["other"]);
    let web_ip = addr(&r, "web", "pets");
    // A name on a network web is not on: NXDOMAIN.
    assert_eq!(a(&r, "pets", web_ip, "cache"), Err(RCODE::NameError));
    let before = r.p().names_set();
    connect(&r, "other", "web", &[]);
    assert!(r.p().names_set() > before, "the connect handed names over");
    let cache_ip = addr(&r, "cache", "other").to_string();
    // At once, asked on either of web's networks.
    assert_eq!(a(&r, "pets", web_ip, "cache"), Ok(vec![cache_ip.clone()]));
    assert_eq!(
        a(&r, "other", addr(&r, "web", "other"), "cache.other"),
        Ok(vec![cache_ip])
    );
    r.d().disconnect("other", "web").unwrap();
    assert_eq!(a(&r, "pets", web_ip, "cache"), Err(RCODE::NameError));
    r.sandbox("db", &["pets"]);
    assert!(a(&r, "pets", web_ip, "db").is_ok());
    r.d().remove_sandbox("db").unwrap();
    assert_eq!(a(&r, "pets", web_ip, "db"), Err(RCODE::NameError));
}

#[test]
fn aliases_belong_to_their_network() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    r.create_net("other", "10.2.0.0/24");
    r.sandbox("db", &["pets"]);
    connect(&r, "other", "db", &["store"]);
    r.sandbox("web", &["pets"]);
    r.sandbox("cache", &["other"]);
    let web_ip = addr(&r, "web", "pets");
    // web shares pets only with db: db's alias on other is not for web.
    assert_eq!(a(&r, "pets", web_ip, "store"), Err(RCODE::NameError));
    assert_eq!(
        a(&r, "pets", web_ip, "db"),
        Ok(vec![addr(&r, "db", "pets").to_string()])
    );
    assert_eq!(
        a(&r, "other", addr(&r, "cache", "other"), "store"),
        Ok(vec![addr(&r, "db", "other").to_string()])
    );
    // Two sandboxes under one alias: both addresses.
    connect(&r, "other", "web", &["store"]);
    let mut got = a(&r, "other", addr(&r, "cache", "other"), "store").unwrap();
    got.sort();
    let mut want = vec![
        addr(&r, "db", "other").to_string(),
        addr(&r, "web", "other").to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn the_default_bridge_serves_no_names() {
    let r = Rig::new();
    r.sandbox("a", &[]);
    r.sandbox("b", &[]);
    assert_eq!(
        a(&r, "bridge", addr(&r, "a", "bridge"), "b"),
        Err(RCODE::NameError)
    );
}

#[test]
fn names_are_handed_over_again_after_a_restart() {
    let mut r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    r.sandbox("db", &["pets"]);
    r.sandbox("web", &["pets"]);
    r.restart();
    assert_eq!(
        a(&r, "pets", addr(&r, "web", "pets"), "db"),
        Ok(vec![addr(&r, "db", "pets").to_string()])
    );
}

#[test]
fn sandboxes_get_their_first_networks_gateway_as_nameserver() {
    let r = Rig::new();
    r.p().set_host_resolv_conf(ResolvConf::parse(
        "nameserver 10.255.255.53\nsearch example.org\noptions edns0\n",
    ));
    r.create_net("pets", "10.1.0.0/24");
    r.create_net("other", "10.2.0.0/24");
    let web = r.sandbox("web", &["pets"]);
    let text = r
        .p()
        .resolv_conf(&web.netns)
        .expect("web has a resolv.conf");
    assert!(text.contains("nameserver 10.1.0.1"), "{text}");
    assert!(!text.contains("10.255.255.53"), "{text}");
    assert!(text.contains("search example.org"), "{text}");
    assert!(text.contains("ndots:0"), "{text}");
    // A second network changes nothing; losing the first moves to the next.
    connect(&r, "other", "web", &[]);
    assert_eq!(r.p().resolv_conf(&web.netns).unwrap(), text);
    r.d().disconnect("pets", "web").unwrap();
    let text = r.p().resolv_conf(&web.netns).unwrap();
    assert!(text.contains("nameserver 10.2.0.1"), "{text}");
    // No network, no file.
    r.d().disconnect("other", "web").unwrap();
    assert_eq!(r.p().resolv_conf(&web.netns), None);
    let none = r.sandbox("alone", &["none"]);
    assert_eq!(r.p().resolv_conf(&none.netns), None);
    // The file goes with the namespace.
    let db = r.sandbox("db", &["pets"]);
    assert!(r.p().resolv_conf(&db.netns).is_some());
    r.d().remove_sandbox("db").unwrap();
    assert_eq!(r.p().resolv_conf(&db.netns), None);
}

#[test]
fn a_rootless_sandbox_gets_its_resolv_conf_in_its_plan() {
    let r = Rig::with(MemoryPlumbing::new().rootless());
    r.create_net("pets", "10.1.0.0/24");
    r.p().start_process(100);
    r.d()
        .create_rootless_sandbox(Some("job".into()), None, attach(&["pets"]), &[], 100)
        .unwrap();
    let plan = r.d().rootless_interfaces("job").unwrap();
    assert!(
        plan.resolv_conf.contains("nameserver 10.1.0.1"),
        "{:?}",
        plan.resolv_conf
    );
    // Names of rootless sandboxes resolve as any others' (their interfaces may come
    // later; their addresses are theirs from the start).
    r.p().start_process(101);
    r.d()
        .create_rootless_sandbox(Some("peer".into()), None, attach(&["pets"]), &[], 101)
        .unwrap();
    assert_eq!(
        a(&r, "pets", addr(&r, "peer", "pets"), "job"),
        Ok(vec![addr(&r, "job", "pets").to_string()])
    );
}
