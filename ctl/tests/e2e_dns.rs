//! End to end: the embedded DNS at every network's gateway, asked by real resolvers
//! (glibc's `getent`, `dig`, bash's `/dev/tcp`) inside sandboxes of a real daemon, with
//! the host's resolvers stood in for by small UDP responders the test runs on loopback
//! addresses (port 53: a resolv.conf names no port), named in a resolv.conf of the
//! test's own (`tapnet daemon --resolv-conf`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Daemon, Sb, in_ns};
use serde_json::Value;
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, RCODE, ResourceRecord};
use tapnet_engine::sys::netns::NetNs;

/// The one name the test's resolver knows, and its address.
const FIXED: &str = "fixed.example";
const FIXED_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// A resolver on `addr:53` standing for the host's: it answers [`FIXED`] (NXDOMAIN for
/// anything else), or with `silent` never answers at all. Counts what it receives.
struct Resolver {
    addr: Ipv4Addr,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    fn start(addr: Ipv4Addr, silent: bool) -> Resolver {
        let sock = UdpSocket::bind((addr, 53))
            .unwrap_or_else(|e| panic!("binding the test's resolver on {addr}:53: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if silent {
                    continue;
                }
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Resolver {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test resolver's answer to `msg`: [`FIXED`]'s A record, or NXDOMAIN.
fn answer(msg: &[u8]) -> Option<Vec<u8>> {
    let q = Packet::parse(msg).ok()?;
    let question = q.questions.first()?.clone();
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if question.qname.to_string().eq_ignore_ascii_case(FIXED) {
        r.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            60,
            RData::A(A {
                address: u32::from(FIXED_ADDR),
            }),
        ));
    } else {
        *r.rcode_mut() = RCODE::NameError;
    }
    r.questions.push(question);
    r.build_bytes_vec().ok()
}

/// A resolv.conf naming `servers`, in a file of the test's (removed on drop).
struct ResolvFile(PathBuf);

impl ResolvFile {
    fn new(tag: &str, servers: &[Ipv4Addr]) -> ResolvFile {
        let path = std::env::temp_dir().join(format!(
            "tapnet-e2e-dns-{tag}-{}.resolv.conf",
            std::process::id()
        ));
        let mut text = String::from("# the test's host resolvers\n");
        for s in servers {
            text.push_str(&format!("nameserver {s}\n"));
        }
        text.push_str("options edns0\n");
        std::fs::write(&path, text).unwrap();
        ResolvFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ResolvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A daemon forwarding to the resolvers of `resolv`.
fn daemon(tag: &str, resolv: &ResolvFile) -> Daemon {
    Daemon::start_with(tag, &["--resolv-conf", resolv.path()])
}

/// `dig ARGS` inside `sb`'s namespace (one try, 2 s): its output.
fn dig(sb: &Sb, args: &[&str]) -> String {
    let mut all = vec!["dig", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let o = in_ns(&sb.netns, &all);
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// dig's `Query time:` in milliseconds.
fn query_ms(out: &str) -> u64 {
    out.split("Query time: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no query time in dig's output:\n{out}"))
}

/// The `status:` of a full `dig` answer (`NOERROR`, `NXDOMAIN`, …).
fn status(out: &str) -> String {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's output:\n{out}"))
        .to_string()
}

/// `getent hosts NAME` inside `sb` (through its resolv.conf, as `ip netns exec` mounts
/// it): the addresses, separated by spaces.
fn getent(sb: &Sb, name: &str) -> String {
    let o = in_ns(&sb.netns, &["getent", "hosts", name]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sandbox on `net` with `--network-alias` `aliases`.
fn sandbox(d: &Daemon, name: &str, net: &str, aliases: &[&str]) -> Sb {
    let mut extra = Vec::new();
    for a in aliases {
        extra.extend(["--network-alias", a]);
    }
    d.sandbox(name, &[net], &extra)
}

/// A TCP server inside `sb` on port 7000 answering each line with `pong LINE`.
fn listen_7000(sb: &Sb) {
    let l = NetNs::open(&sb.netns)
        .unwrap()
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut line = String::new();
            if BufReader::new(&c).read_line(&mut line).is_ok() {
                let _ = writeln!(c, "pong {}", line.trim());
            }
        }
    });
}

/// The DNS counters of network `net` (`tapnet stats`).
fn dns_stats(d: &Daemon, net: &str) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    v["Dns"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["Network"] == net).cloned())
        .unwrap_or_else(|| panic!("no DNS counters of {net}: {v}"))
}

#[test]
#[ignore = "needs root"]
fn sandboxes_find_each_other_by_name_alias_and_address() {
    let resolv = ResolvFile::new("names", &[Ipv4Addr::new(127, 53, 0, 9)]);
    let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let d = daemon("dns-names", &resolv);
    d.ok(&["network", "create", "pets"]);
    let db = sandbox(&d, "db", "pets", &["database"]);
    let web = sandbox(&d, "web", "pets", &[]);
    let gw = web.gateway("pets").to_string();
    let db_ip = db.ip("pets");
    // The sandbox's resolv.conf names its gateway.
    let conf = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", web.netns)).unwrap();
    assert!(conf.contains(&format!("nameserver {gw}")), "{conf}");

    assert_eq!(getent(&web, "db"), db_ip);
    assert_eq!(getent(&web, "DB.pets"), db_ip);
    assert_eq!(getent(&web, "database"), db_ip);
    assert_eq!(
        dig(&web, &["+short", &format!("@{gw}"), "database"]).trim(),
        db_ip
    );
    assert_eq!(
        dig(&web, &["+short", "-x", &db_ip, &format!("@{gw}")]).trim(),
        "db.pets."
    );
    // Over TCP too.
    assert_eq!(
        dig(&web, &["+short", "+tcp", &format!("@{gw}"), "db"]).trim(),
        db_ip
    );

    // A TCP client connecting to db:7000 by name, in a `tapnet run` (its own mount of
    // the sandbox's resolv.conf).
    listen_7000(&db);
    let script =
        "exec 3<>/dev/tcp/db/7000 && echo hello >&3 && read -t 3 line <&3 && echo \"$line\"";
    let out = d.ok(&[
        "run",
        "--network",
        "pets",
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        script,
    ]);
    assert_eq!(out.trim(), "pong hello");
    let out = d.ok(&["run", "--network", "pets", "--", "getent", "hosts", "web"]);
    assert!(out.starts_with(&web.ip("pets")), "{out}");

    let s = dns_stats(&d, "pets");
    assert!(s["Queries"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["Answered"].as_u64().unwrap() >= 6, "{s}");
    // The runs' mounts stayed theirs: the host's resolv.conf is as it was.
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        host_conf
    );
    // The sandbox's file goes with it.
    d.ok(&["sandbox", "rm", "web"]);
    assert!(!std::path::Path::new(&format!("/etc/netns/{}", web.netns)).exists());
}

#[test]
#[ignore = "needs root"]
fn names_of_other_networks_resolve_only_while_connected() {
    let resolv = ResolvFile::new("scope", &[Ipv4Addr::new(127, 53, 0, 9)]);
    let mut d = daemon("dns-scope", &resolv);
    d.ok(&["network", "create", "pets"]);
    d.ok(&["network", "create", "other"]);
    let web = sandbox(&d, "web", "pets", &[]);
    let cache = sandbox(&d, "cache", "other", &["store"]);
    let gw = format!("@{}", web.gateway("pets"));
    let cache_ip = cache.ip("other");
    let out = dig(&web, &[&gw, "cache"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert_eq!(status(&dig(&web, &[&gw, "cache.other"])), "NXDOMAIN");
    assert!(getent(&web, "cache").is_empty());

    d.ok(&["network", "connect", "other", "web"]);
    // At once, through web's first network's gateway.
    assert_eq!(dig(&web, &["+short", &gw, "cache"]).trim(), cache_ip);
    assert_eq!(dig(&web, &["+short", &gw, "store"]).trim(), cache_ip);
    assert_eq!(getent(&web, "cache.other"), cache_ip);

    d.ok(&["network", "disconnect", "other", "web"]);
    let out = dig(&web, &[&gw, "cache"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(getent(&web, "store").is_empty());
    // Such names are never forwarded.
    assert_eq!(dns_stats(&d, "pets")["Forwarded"], 0);

    // A restarted daemon answers the same names.
    d.ok(&["network", "connect", "other", "web"]);
    d.restart();
    assert_eq!(dig(&web, &["+short", &gw, "store"]).trim(), cache_ip);
    // Its own name: an address on each of its networks.
    let own = getent(&web, "web");
    assert!(own.split(' ').any(|a| a == web.ip("pets")), "{own}");
    assert_eq!(own.split(' ').count(), 2, "{own}");
}

#[test]
#[ignore = "needs root"]
fn other_names_are_forwarded_to_the_hosts_resolver() {
    let resolver = Resolver::start(Ipv4Addr::new(127, 53, 0, 1), false);
    let resolv = ResolvFile::new("forward", &[resolver.addr]);
    let d = daemon("dns-forward", &resolv);
    d.ok(&["network", "create", "pets"]);
    let web = sandbox(&d, "web", "pets", &[]);
    let gw = format!("@{}", web.gateway("pets"));
    assert_eq!(
        dig(&web, &["+short", &gw, FIXED]).trim(),
        FIXED_ADDR.to_string()
    );
    assert_eq!(getent(&web, FIXED), FIXED_ADDR.to_string());
    let out = dig(&web, &[&gw, "unknown.example"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(resolver.queries() >= 3, "{}", resolver.queries());
    let s = dns_stats(&d, "pets");
    assert!(s["Forwarded"].as_u64().unwrap() >= 3, "{s}");
    // The default bridge forwards too (it serves no names of its own).
    let plain = d.sandbox("plain", &[], &[]);
    let bridge_gw = format!("@{}", plain.gateway("bridge"));
    assert_eq!(
        dig(&plain, &["+short", &bridge_gw, FIXED]).trim(),
        FIXED_ADDR.to_string()
    );

    // The host's resolv.conf changes: forwarding follows it (looked at once a second).
    let next = Resolver::start(Ipv4Addr::new(127, 53, 0, 4), false);
    std::fs::write(&resolv.0, format!("nameserver {}\n", next.addr)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(
            dig(&web, &["+short", &gw, FIXED]).trim(),
            FIXED_ADDR.to_string()
        );
        if next.queries() > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding did not follow the new resolv.conf"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs root"]
fn a_silent_resolver_gives_servfail_in_time_while_local_names_answer() {
    let silent = Resolver::start(Ipv4Addr::new(127, 53, 0, 2), true);
    let resolv = ResolvFile::new("silent", &[silent.addr]);
    let d = daemon("dns-silent", &resolv);
    d.ok(&["network", "create", "pets"]);
    let db = sandbox(&d, "db", "pets", &[]);
    let web = sandbox(&d, "web", "pets", &[]);
    let gw = format!("@{}", web.gateway("pets"));
    let db_ip = db.ip("pets");
    let ns = web.netns.clone();
    let gw2 = gw.clone();
    let t0 = Instant::now();
    let slow = std::thread::spawn(move || {
        let o = in_ns(
            &ns,
            &["dig", "+time=8", "+tries=1", &gw2, "nowhere.example"],
        );
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            t0.elapsed(),
        )
    });
    // Meanwhile local names answer at once, again and again.
    std::thread::sleep(Duration::from_millis(300));
    let mut local = 0;
    while !slow.is_finished() && t0.elapsed() < Duration::from_secs(6) {
        // The answer line and dig's own measure of the query: the command's start-up,
        // slow on a loaded machine, is not the server's.
        let out = dig(&web, &["+noall", "+answer", "+stats", &gw, "db"]);
        let answer = out
            .lines()
            .find(|l| !l.starts_with(';') && !l.trim().is_empty())
            .and_then(|l| l.split_whitespace().last());
        assert_eq!(answer, Some(db_ip.as_str()), "{out}");
        let took = query_ms(&out);
        assert!(took < 1000, "a local name took {took} ms");
        local += 1;
    }
    let (out, took) = slow.join().unwrap();
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    // dig's own measure of the query (the command's start-up left out).
    let query_ms = query_ms(&out);
    // The server's 4 s, give or take its timer on a loaded machine; under dig's own 5 s.
    assert!(
        (3500..=4900).contains(&query_ms),
        "SERVFAIL after {query_ms} ms ({took:?} with dig's start)"
    );
    assert!(local >= 3, "only {local} local answers while waiting");
    assert!(silent.queries() >= 1);
    let s = dns_stats(&d, "pets");
    assert!(s["Timeouts"].as_u64().unwrap() >= 1, "{s}");
}

#[test]
#[ignore = "needs root"]
fn an_internal_network_answers_its_names_and_forwards_nothing() {
    let resolver = Resolver::start(Ipv4Addr::new(127, 53, 0, 3), false);
    let resolv = ResolvFile::new("internal", &[resolver.addr]);
    let d = daemon("dns-internal", &resolv);
    d.ok(&["network", "create", "--internal", "vault"]);
    let a = sandbox(&d, "a", "vault", &[]);
    let b = sandbox(&d, "b", "vault", &["safe"]);
    let gw = format!("@{}", a.gateway("vault"));
    assert_eq!(dig(&a, &["+short", &gw, "safe"]).trim(), b.ip("vault"));
    assert_eq!(getent(&a, "b"), b.ip("vault"));
    let out = dig(&a, &[&gw, FIXED]);
    assert!(!out.contains(&FIXED_ADDR.to_string()), "{out}");
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert_eq!(resolver.queries(), 0);
    let s = dns_stats(&d, "vault");
    assert_eq!(s["Forwarded"], 0, "{s}");
    assert!(s["Nxdomain"].as_u64().unwrap() >= 1, "{s}");
}
