//! End to end: published ports (`-p`) of the real `tapnet daemon`, driven by the
//! `tapnet` binary: Docker's allocation rules and errors, `tapnet port`, ports freed
//! with their sandbox and bound again after a restart (SIGTERM or SIGKILL); and the data
//! path through a published port (TCP with the client's real address, UDP echo). IPv6
//! host addresses: `0.0.0.0` and `::` for a port without an address, `[::1]`-style
//! specs, IPv6 clients seen as the gateway (or spliced, as loopback clients).
//!
//! Root only: each test is `#[ignore = "needs root"]`; the IPv6 tests need IPv6 on the
//! loopback and fail without it (a test without an address expects IPv4 bindings only
//! on a host without IPv6).
//! Networks here use 10.253.<n>.0/24. Traffic goes only to loopback and to a veth pair
//! the test creates (and removes).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::Value;
use tapnet_engine::sys::netns::NetNs;

/// The host's ephemeral port range (where ports without a host port come from).
fn ephemeral_range() -> (u16, u16) {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Whether this host has IPv6 (its loopback can be bound).
fn host_has_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Fails the test on a host without IPv6: these tests are about IPv6.
fn need_ipv6(test: &str) {
    if let Err(e) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        panic!("{test} needs IPv6 on the loopback (binding [::1]: {e})");
    }
}

/// The local addresses (hex, as /proc/net/`table` shows them) of this namespace's
/// sockets on `port` that are not connected: TCP listeners, UDP sockets without a peer.
fn unconnected_on(table: &str, port: u16) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap();
    let port = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (f[1], f[2], f[3]);
            let unconnected = if table.starts_with("tcp") {
                state == "0A"
            } else {
                remote.bytes().all(|b| b == b'0' || b == b':')
            };
            (local.ends_with(&port) && unconnected).then(|| local.to_string())
        })
        .collect()
}

const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// A socket bound to `ip:port` as the daemon binds (TCP: `SO_REUSEADDR`, listening;
/// IPv6: IPv6-only, so each family is taken on its own).
fn bind_like_daemon(udp: bool, ip: IpAddr, port: u16) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{self as so, sockopt};
    let family = if ip.is_ipv4() {
        so::AddressFamily::Inet
    } else {
        so::AddressFamily::Inet6
    };
    let ty = if udp {
        so::SockType::Datagram
    } else {
        so::SockType::Stream
    };
    let fd = so::socket(family, ty, so::SockFlag::SOCK_CLOEXEC, None)?;
    if ip.is_ipv6() {
        so::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if !udp {
        so::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    so::bind(
        fd.as_raw_fd(),
        &so::SockaddrStorage::from(SocketAddr::new(ip, port)),
    )?;
    if !udp {
        so::listen(&fd, so::Backlog::MAXCONN)?;
    }
    Ok(fd)
}

/// Whether `ip:port` is taken (binding it fails with EADDRINUSE).
fn is_bound(udp: bool, ip: IpAddr, port: u16) -> bool {
    match bind_like_daemon(udp, ip, port) {
        Ok(_) => false,
        Err(nix::errno::Errno::EADDRINUSE) => true,
        Err(e) => panic!(
            "bind {} {ip} port {port}: {e}",
            if udp { "udp" } else { "tcp" }
        ),
    }
}

/// A TCP port free on 0.0.0.0 (and on :: where the host has IPv6) right now, outside
/// the ephemeral range (so that no dynamic allocation of this test takes it), with the
/// next `span` ports free too. Each test searches from its own `base` (tests run at
/// once, and two must not pick the same port).
fn free_tcp_port(base: u16, span: u16) -> u16 {
    let (lo, _) = ephemeral_range();
    let v6 = host_has_ipv6();
    let taken = |p| is_bound(false, ANY4, p) || (v6 && is_bound(false, ANY6, p));
    for first in (base..lo.saturating_sub(100)).step_by(37) {
        if (first..=first + span).all(|p| !taken(p)) {
            return first;
        }
    }
    panic!("no free TCP port range in {base}-{lo}");
}

fn tcp_bound(ip: IpAddr, port: u16) -> bool {
    is_bound(false, ip, port)
}

fn udp_bound(ip: IpAddr, port: u16) -> bool {
    is_bound(true, ip, port)
}

/// `Ports` of a sandbox's inspect: (key, host ip, host port) triples, sorted (IPv4
/// before IPv6).
fn ports(d: &Daemon, sb: &str) -> Vec<(String, IpAddr, u16)> {
    let v = d.inspect("sandbox", sb);
    let mut out = Vec::new();
    for (k, list) in v["Ports"].as_object().expect("inspect has Ports") {
        for b in list.as_array().unwrap() {
            out.push((
                k.clone(),
                b["HostIp"].as_str().unwrap().parse().unwrap(),
                b["HostPort"].as_str().unwrap().parse().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn all_bound(list: &[(String, IpAddr, u16)]) -> bool {
    list.iter().all(|(k, ip, p)| {
        if k.ends_with("/udp") {
            udp_bound(*ip, *p)
        } else {
            tcp_bound(*ip, *p)
        }
    })
}

/// No socket listens (TCP) or waits unconnected (UDP) on any of `list`. Read from
/// /proc/net rather than by binding: a freed ephemeral port may at once serve as the
/// local port of a client of another test, whose TIME-WAIT would block a bind.
fn none_bound(list: &[(String, IpAddr, u16)]) -> bool {
    list.iter().all(|(k, ip, p)| {
        let table = match (k.ends_with("/udp"), ip.is_ipv4()) {
            (false, true) => "tcp",
            (false, false) => "tcp6",
            (true, true) => "udp",
            (true, false) => "udp6",
        };
        !unconnected_on(table, *p).contains(&proc_addr(*ip, *p))
    })
}

/// `ip:port` as /proc/net shows a local address: each 32-bit word of the address in
/// the host's byte order, in hex.
fn proc_addr(ip: IpAddr, port: u16) -> String {
    let octets = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let hex: String = octets
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{hex}:{port:04X}")
}

/// Allocation (a random port in range, a range, a taken port), `tapnet port`, bad specs,
/// and every port freed by `sandbox rm`.
#[test]
#[ignore = "needs root"]
fn publish_allocates_like_docker_and_frees_on_rm() {
    let d = Daemon::start("publish");
    let err = d.fails(
        &[
            "network",
            "create",
            "-o",
            "tapnet.host_loopback=yes",
            "--subnet",
            "10.253.1.0/24",
            "pub1",
        ],
        1,
    );
    assert!(
        err.contains(
            r#"invalid value "yes" for option tapnet.host_loopback: expected true or false"#
        ),
        "{err}"
    );
    d.ok(&[
        "network",
        "create",
        "-o",
        "tapnet.host_loopback=true",
        "--subnet",
        "10.253.1.0/24",
        "pub1",
    ]);
    let net = d.inspect("network", "pub1");
    assert_eq!(net["Options"]["tapnet.host_loopback"], "true");
    let fixed = free_tcp_port(20000, 12);
    let fixed_s = fixed.to_string();
    let spec_fixed = format!("{fixed}:81");
    let spec_range = format!("{fixed}-{}:82", fixed + 10);
    d.sandbox(
        "web",
        &["pub1"],
        &["-p", "80", "-p", "127.0.0.1::53/udp", "-p", &spec_fixed],
    );
    let all = ports(&d, "web");
    let (lo, hi) = ephemeral_range();
    let p: Vec<_> = all.iter().filter(|x| x.1.is_ipv4()).cloned().collect();
    assert_eq!(p.len(), 3, "{all:?}");
    let (ref k, ip, dynamic) = p[1];
    assert_eq!((k.as_str(), ip), ("80/tcp", ANY4));
    assert!((lo..=hi).contains(&dynamic), "{dynamic} not in {lo}-{hi}");
    assert_eq!(p[0].0, "53/udp");
    assert_eq!(p[0].1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert!((lo..=hi).contains(&p[0].2));
    assert_eq!(p[2], ("81/tcp".into(), ANY4, fixed));
    // No host address: `::` too, on the same port, where the host has IPv6.
    let v6 = host_has_ipv6();
    let p6: Vec<_> = all.iter().filter(|x| x.1.is_ipv6()).cloned().collect();
    let want6 = if v6 {
        vec![
            ("80/tcp".to_string(), ANY6, dynamic),
            ("81/tcp".to_string(), ANY6, fixed),
        ]
    } else {
        Vec::new()
    };
    assert_eq!(p6, want6);
    let p = all;
    assert!(
        all_bound(&p),
        "published ports are bound on the host: {p:?}"
    );

    // `tapnet port`, as `docker port` prints it.
    let out = d.ok(&["port", "web"]);
    let mut want = vec![
        format!("53/udp -> 127.0.0.1:{}", p[0].2),
        format!("80/tcp -> 0.0.0.0:{dynamic}"),
        format!("81/tcp -> 0.0.0.0:{fixed}"),
    ];
    if v6 {
        want.push(format!("80/tcp -> [::]:{dynamic}"));
        want.push(format!("81/tcp -> [::]:{fixed}"));
    }
    want.sort();
    let mut got: Vec<String> = out.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want);
    let want81 = if v6 {
        format!("0.0.0.0:{fixed}\n[::]:{fixed}\n")
    } else {
        format!("0.0.0.0:{fixed}\n")
    };
    assert_eq!(d.ok(&["port", "web", "81"]), want81);
    assert_eq!(
        d.ok(&["port", "web", "53/udp"]),
        format!("127.0.0.1:{}\n", p[0].2)
    );
    let err = d.fails(&["port", "web", "7890/udp"], 1);
    assert_eq!(
        err.trim(),
        "Error: No public port '7890/udp' published for web"
    );
    let j: Value = serde_json::from_str(&d.ok(&["port", "web", "--format", "json"])).unwrap();
    assert_eq!(j["81/tcp"][0]["HostPort"], fixed_s.as_str());

    // The same host port again: Docker's error (500), and nothing is stored.
    let before = d.ok(&["sandbox", "ls", "-q"]);
    let err = d.fails(
        &[
            "sandbox",
            "create",
            "--name",
            "db",
            "--network",
            "pub1",
            "-p",
            &format!("{fixed}:90"),
        ],
        1,
    );
    assert!(
        err.contains(&format!(
            "Bind for 0.0.0.0:{fixed} failed: port is already allocated"
        )),
        "{err}"
    );
    let r = d.post(
        "/sandboxes",
        &format!(
            r#"{{"Name": "db", "Networks": [{{"Network": "pub1"}}], "PortBindings": {{"90/tcp": [{{"HostPort": "{fixed}"}}]}}}}"#
        ),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.message()
            .starts_with("driver failed programming external connectivity on endpoint db (")
    );
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]), before);
    let net = d.inspect("network", "pub1");
    assert_eq!(
        net["Containers"].as_object().unwrap().len(),
        1,
        "the failed sandbox left an endpoint: {net}"
    );

    // A range whose first port is taken: the first free one after it.
    d.sandbox("range", &["pub1"], &["-p", &spec_range]);
    let r = ports(&d, "range");
    assert_eq!(r.len(), if v6 { 2 } else { 1 }, "{r:?}");
    assert!(r[0].2 > fixed && r[0].2 <= fixed + 10, "{r:?}");
    assert!(r.iter().all(|x| x.2 == r[0].2), "one port on both: {r:?}");
    assert!(all_bound(&r));

    // Bad specs and networks without external access: clear errors, nothing stored.
    let err = d.fails(&["sandbox", "create", "-p", "80/sctp"], 1);
    assert!(err.contains("invalid proto: sctp"), "{err}");
    let err = d.fails(&["sandbox", "create", "-p", "x:80"], 1);
    assert!(err.contains("invalid hostPort: x"), "{err}");
    let err = d.fails(
        &[
            "sandbox",
            "create",
            "--name",
            "lonely",
            "--network",
            "none",
            "-p",
            "80",
        ],
        1,
    );
    assert!(err.contains("no network with external access"), "{err}");
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]).lines().count(), 2);

    // Removal frees every port: nothing listens on them any more.
    d.ok(&["sandbox", "rm", "web", "range"]);
    assert!(none_bound(&p), "ports still bound after rm: {p:?}");
    assert!(none_bound(&r));
}

/// Ports survive a graceful restart and a SIGKILL: the same ports, bound again.
#[test]
#[ignore = "needs root"]
fn published_ports_are_bound_again_after_restart_and_kill_9() {
    let mut d = Daemon::start("publish-restart");
    d.ok(&["network", "create", "--subnet", "10.253.2.0/24", "pub2"]);
    d.sandbox("keep", &["pub2"], &["-p", "80", "-p", "53/udp"]);
    let p = ports(&d, "keep");
    assert_eq!(p.len(), if host_has_ipv6() { 4 } else { 2 }, "{p:?}");
    assert!(all_bound(&p));

    d.restart();
    assert_eq!(
        ports(&d, "keep"),
        p,
        "ports changed across SIGTERM + restart"
    );
    assert!(all_bound(&p), "not bound again after restart: {}", d.log());

    d.kill9();
    assert!(none_bound(&p), "a dead daemon holds no port");
    d.spawn();
    assert_eq!(
        ports(&d, "keep"),
        p,
        "ports changed across kill -9 + restart"
    );
    assert!(all_bound(&p), "not bound again after kill -9: {}", d.log());

    d.ok(&["sandbox", "rm", "keep"]);
    assert!(none_bound(&p));
    d.restart();
    assert!(none_bound(&p), "a removed sandbox's ports came back");
}

/// Disconnecting a sandbox from the network its ports lead into takes the ports with
/// the endpoint: its address goes back to IPAM and the next sandbox may get it, so a
/// port left open would lead to that one. A network the ports do not lead into leaves
/// them alone.
#[test]
#[ignore = "needs root"]
fn disconnect_takes_the_ports_with_the_endpoint() {
    let mut d = Daemon::start("publish-disconnect");
    d.ok(&["network", "create", "--subnet", "10.253.5.0/24", "pub5"]);
    d.ok(&["network", "create", "--subnet", "10.253.6.0/24", "pub6"]);
    // Both networks have a gateway; the default route (and the ports) go to pub5, the
    // name that sorts first. (A dynamic port: a fixed one could race with the other
    // tests' choice of a free port.)
    let web = d.sandbox("web", &["pub5", "pub6"], &["-p", "80"]);
    let p = ports(&d, "web");
    assert_eq!(p.len(), if host_has_ipv6() { 2 } else { 1 }, "{p:?}");
    assert!(p.iter().all(|x| x.0 == "80/tcp"), "{p:?}");
    assert!(all_bound(&p));

    d.ok(&["network", "disconnect", "pub6", "web"]);
    assert_eq!(
        ports(&d, "web"),
        p,
        "a network the ports do not use took them"
    );
    assert!(all_bound(&p));

    d.ok(&["network", "disconnect", "pub5", "web"]);
    assert!(ports(&d, "web").is_empty(), "{:?}", ports(&d, "web"));
    assert!(
        none_bound(&p),
        "the host port still leads to the released address"
    );
    assert_eq!(d.ok(&["port", "web"]), "");

    // The next sandbox on pub5 gets web's old address; the host port stays free.
    let db = d.sandbox("db", &["pub5"], &[]);
    assert_eq!(db.ip("pub5"), web.ip("pub5"));
    assert!(none_bound(&p));
    // Nor do the ports come back with a restart (the record lost them too).
    d.restart();
    assert!(ports(&d, "web").is_empty());
    assert!(
        none_bound(&p),
        "a restart published the dropped ports again"
    );
}

#[test]
#[ignore = "needs root"]
fn host_binding_ipv4_is_the_address_of_ports_published_without_one() {
    let d = Daemon::start("publish-binding");
    let err = d.fails(
        &[
            "network",
            "create",
            "-o",
            "com.docker.network.bridge.host_binding_ipv4=nowhere",
            "bad",
        ],
        1,
    );
    assert!(
        err.contains(
            "failed to parse com.docker.network.bridge.host_binding_ipv4 value: nowhere (nil ip)"
        ),
        "{err}"
    );
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.253.7.0/24",
        "-o",
        "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
        "lo-only",
    ]);
    d.sandbox("web", &["lo-only"], &["-p", "80", "-p", "0.0.0.0::81"]);
    let p = ports(&d, "web");
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let any: IpAddr = "0.0.0.0".parse().unwrap();
    // No address given: only the network's; an address given: that one.
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0.as_str(), p[0].1), ("80/tcp", lo), "{p:?}");
    assert_eq!((p[1].0.as_str(), p[1].1), ("81/tcp", any), "{p:?}");
    assert!(all_bound(&p));
}

// ----- the data path (host relay) -----

/// Accept one connection within `limit`.
fn accept_within(l: &TcpListener, limit: Duration) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).unwrap();
                return (s, a);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection reached the sandbox's server: {e}"),
        }
    }
}

/// One request through a published TCP port: the server in the sandbox echoes the bytes.
/// Returns the client's address as the server saw it, and the client's own address.
fn echo_peer_through(ns: &str, ctr: SocketAddrV4, to: SocketAddr) -> (SocketAddr, SocketAddr) {
    let listener = NetNs::open(ns)
        .unwrap()
        .run(|| TcpListener::bind(ctr))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = accept_within(&listener, Duration::from_secs(10));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        peer
    });
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"hello").unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello");
    (server.join().unwrap(), c.local_addr().unwrap())
}

/// A veth pair `tpv-<tag>` (host side, `host_ip/24`) and its peer in a namespace the
/// test creates (`peer_ip/24`); removed on drop.
struct Veth {
    host: String,
    ns: Option<NetNs>,
}

impl Veth {
    fn new(tag: &str, host_ip: &str, peer_ip: &str) -> Veth {
        let host = format!("tpv-{tag}");
        let ns = NetNs::create(&format!("tapnet-test-{tag}-{}", std::process::id())).unwrap();
        let v = Veth {
            host: host.clone(),
            ns: Some(ns),
        };
        let nsname = v.ns.as_ref().unwrap().name().to_string();
        for args in [
            vec![
                "link", "add", &host, "type", "veth", "peer", "name", "tpv-peer", "netns", &nsname,
            ],
            vec!["addr", "add", &format!("{host_ip}/24"), "dev", &host],
            vec!["link", "set", &host, "up"],
            vec![
                "-n",
                &nsname,
                "addr",
                "add",
                &format!("{peer_ip}/24"),
                "dev",
                "tpv-peer",
            ],
            vec!["-n", &nsname, "link", "set", "tpv-peer", "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
        if let Some(ns) = self.ns.take() {
            let _ = ns.delete();
        }
    }
}

/// A host client reaches a TCP server in the sandbox through a published port, and the
/// server sees the client's real address: 127.0.0.1 shows as the network's gateway, a
/// client on another host address as itself.
#[test]
#[ignore = "needs root"]
fn published_tcp_reaches_the_sandbox_from_the_clients_address() {
    let d = Daemon::start("publish-tcp");
    d.ok(&["network", "create", "--subnet", "10.253.3.0/24", "pub3"]);
    let sb = d.sandbox("srv", &["pub3"], &["-p", "8080"]);
    let host_port = ports(&d, "srv")[0].2;
    let ctr = SocketAddrV4::new(sb.ip("pub3").parse().unwrap(), 8080);
    let (peer, _) = echo_peer_through(
        &sb.netns,
        ctr,
        SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)),
    );
    assert_eq!(
        peer.ip().to_string(),
        "10.253.3.1",
        "loopback shows as the gateway"
    );

    // From a host address that is not loopback (a veth this test made): seen as itself.
    let veth = Veth::new("pub3", "10.253.103.1", "10.253.103.2");
    let ns = veth.ns.as_ref().unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 253, 103, 1), host_port);
    let listener = NetNs::open(&sb.netns)
        .unwrap()
        .run(|| TcpListener::bind(ctr))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || accept_within(&listener, Duration::from_secs(10)).1);
    let c = ns
        .run(|| TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {to} from the veth peer: {e}"));
    let peer = server.join().unwrap();
    drop(c);
    assert_eq!(
        peer.ip().to_string(),
        "10.253.103.2",
        "a real client address is kept"
    );
}

/// A UDP echo through a published UDP port, from 127.0.0.1.
#[test]
#[ignore = "needs root"]
fn published_udp_echoes() {
    let d = Daemon::start("publish-udp");
    d.ok(&["network", "create", "--subnet", "10.253.4.0/24", "pub4"]);
    let sb = d.sandbox("echo", &["pub4"], &["-p", "127.0.0.1::5353/udp"]);
    let host_port = ports(&d, "echo")[0].2;
    let ctr = SocketAddrV4::new(sb.ip("pub4").parse().unwrap(), 5353);
    let server_sock = NetNs::open(&sb.netns)
        .unwrap()
        .run(|| UdpSocket::bind(ctr))
        .unwrap()
        .unwrap();
    server_sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, peer) = server_sock.recv_from(&mut buf).unwrap();
        server_sock.send_to(&buf[..n], peer).unwrap();
        peer
    });
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port);
    c.send_to(b"ping", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], SocketAddr::V4(to)));
    let peer = server.join().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "10.253.4.1",
        "loopback shows as the gateway"
    );
}

// ----- IPv6 host addresses -----

/// `-p` without an address binds 0.0.0.0 and :: on one port (random or fixed) and
/// `tapnet port` prints both; `[::1]` binds that address only; a port taken on ::
/// fails with Docker's text and stores nothing; bad bracketed specs get Docker's texts.
#[test]
#[ignore = "needs root"]
fn ipv6_host_addresses_bind_like_docker() {
    need_ipv6("ipv6_host_addresses_bind_like_docker");
    let d = Daemon::start("publish-v6");
    d.ok(&["network", "create", "--subnet", "10.253.7.0/24", "pub7"]);
    let fixed = free_tcp_port(24000, 1);
    let taken = fixed + 1;
    d.sandbox(
        "dual",
        &["pub7"],
        &[
            "-p",
            "0:8080",
            "-p",
            &format!("{fixed}:8081"),
            "-p",
            "[::1]::8082",
            "-p",
            "127.0.0.1::8083/udp",
            "-p",
            "[::]::8084/udp",
        ],
    );
    let p = ports(&d, "dual");
    let (lo, hi) = ephemeral_range();
    let port_of = |key: &str| p.iter().find(|x| x.0 == key).unwrap().2;
    let (random, only6, only4, any6) = (
        port_of("8080/tcp"),
        port_of("8082/tcp"),
        port_of("8083/udp"),
        port_of("8084/udp"),
    );
    assert!((lo..=hi).contains(&random), "{random} not in {lo}-{hi}");
    let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let want = vec![
        ("8080/tcp".to_string(), ANY4, random),
        ("8080/tcp".to_string(), ANY6, random),
        ("8081/tcp".to_string(), ANY4, fixed),
        ("8081/tcp".to_string(), ANY6, fixed),
        ("8082/tcp".to_string(), lo6, only6),
        (
            "8083/udp".to_string(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            only4,
        ),
        ("8084/udp".to_string(), ANY6, any6),
    ];
    assert_eq!(p, want);
    assert!(all_bound(&p), "not all bound: {p:?}");
    // Inspect holds "::" as Docker's `HostIp` does.
    let v = d.inspect("sandbox", "dual");
    assert_eq!(v["Ports"]["8080/tcp"][1]["HostIp"], "::");
    assert_eq!(v["Ports"]["8082/tcp"][0]["HostIp"], "::1");
    // A given address binds that address only: the other family is left alone.
    // (Read from /proc/net rather than by binding: the kernel may hand a port bound
    // on [::1] only to a client connecting from 127.0.0.1, whose TIME-WAIT then
    // blocks a bind there.)
    assert_eq!(unconnected_on("tcp", only6), Vec::<String>::new());
    assert_eq!(unconnected_on("tcp6", only6), [proc_addr(lo6, only6)]);
    assert_eq!(unconnected_on("udp6", only4), Vec::<String>::new());
    assert_eq!(unconnected_on("udp", any6), Vec::<String>::new());

    let out = d.ok(&["port", "dual"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("8080/tcp -> 0.0.0.0:{random}"),
            format!("8080/tcp -> [::]:{random}"),
            format!("8081/tcp -> 0.0.0.0:{fixed}"),
            format!("8081/tcp -> [::]:{fixed}"),
            format!("8082/tcp -> [::1]:{only6}"),
            format!("8083/udp -> 127.0.0.1:{only4}"),
            format!("8084/udp -> [::]:{any6}"),
        ]
    );
    assert_eq!(
        d.ok(&["port", "dual", "8080"]),
        format!("0.0.0.0:{random}\n[::]:{random}\n")
    );

    // A port taken on :: only (by a socket of this test): Docker's text for ::, and
    // nothing stored or left bound (the 0.0.0.0 socket bound first is closed).
    let squatter = bind_like_daemon(false, ANY6, taken).unwrap();
    let before = d.ok(&["sandbox", "ls", "-q"]);
    for spec in [format!("{taken}:90"), format!("[::]:{taken}:90")] {
        let err = d.fails(
            &[
                "sandbox",
                "create",
                "--name",
                "db",
                "--network",
                "pub7",
                "-p",
                &spec,
            ],
            1,
        );
        assert!(
            err.contains(&format!(
                "Bind for :::{taken} failed: port is already allocated"
            )),
            "{spec}: {err}"
        );
        assert_eq!(
            d.ok(&["sandbox", "ls", "-q"]),
            before,
            "{spec} stored a sandbox"
        );
        assert!(!tcp_bound(ANY4, taken), "{spec} left 0.0.0.0:{taken} bound");
    }
    let r = d.post(
        "/sandboxes",
        &format!(
            r#"{{"Name": "db", "Networks": [{{"Network": "pub7"}}], "PortBindings": {{"90/tcp": [{{"HostIp": "::", "HostPort": "{taken}"}}]}}}}"#
        ),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.message().ends_with(&format!(
        "Bind for :::{taken} failed: port is already allocated"
    )));
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]), before);
    let net = d.inspect("network", "pub7");
    assert_eq!(net["Containers"].as_object().unwrap().len(), 1, "{net}");
    // The IPv4 address of that port is still free to publish.
    d.sandbox("v4only", &["pub7"], &["-p", &format!("0.0.0.0:{taken}:90")]);
    assert_eq!(ports(&d, "v4only"), [("90/tcp".to_string(), ANY4, taken)]);
    drop(squatter);

    // Docker's texts for bad bracketed addresses; nothing stored.
    for (spec, text) in [
        (
            "[::1:80:80",
            "invalid IP address [::1: address [::1:: missing ']' in address",
        ),
        (
            "[::1]x:80:80",
            "invalid IP address [::1]x: address [::1]x:: missing port in address",
        ),
        ("[::g]:80:80", "invalid IP address: ::g"),
    ] {
        let err = d.fails(&["sandbox", "create", "--network", "pub7", "-p", spec], 1);
        assert!(err.contains(text), "{spec}: {err}");
    }
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]).lines().count(), 2);

    d.ok(&["sandbox", "rm", "dual", "v4only"]);
    assert!(none_bound(&p), "ports still bound after rm: {p:?}");
    assert!(!tcp_bound(ANY4, taken));
}

/// Through ports bound on :: and [::1], a TCP client and a UDP client on [::1] reach
/// servers in the sandbox, which see the network's gateway address and the client's
/// port; on a network with loopback_splice a [::1] client is spliced (seen as the
/// sandbox's own 127.0.0.1).
#[test]
#[ignore = "needs root"]
fn ipv6_clients_reach_the_sandbox_from_the_gateway_address() {
    need_ipv6("ipv6_clients_reach_the_sandbox_from_the_gateway_address");
    let d = Daemon::start("publish-v6-data");
    d.ok(&["network", "create", "--subnet", "10.253.8.0/24", "pub8"]);
    let sb = d.sandbox("srv", &["pub8"], &["-p", "8080", "-p", "[::1]::5353/udp"]);
    let p = ports(&d, "srv");
    let tcp_port = p
        .iter()
        .find(|x| x.0 == "8080/tcp" && x.1 == ANY6)
        .unwrap()
        .2;
    let udp_port = p.iter().find(|x| x.0 == "5353/udp").unwrap().2;
    let gw: IpAddr = "10.253.8.1".parse().unwrap();
    let ip: Ipv4Addr = sb.ip("pub8").parse().unwrap();

    // TCP from [::1] to the port bound on ::.
    let (peer, me) = echo_peer_through(
        &sb.netns,
        SocketAddrV4::new(ip, 8080),
        SocketAddr::from((Ipv6Addr::LOCALHOST, tcp_port)),
    );
    assert!(me.is_ipv6(), "{me}");
    assert_eq!(
        peer,
        SocketAddr::new(gw, me.port()),
        "an IPv6 client is the gateway, with its port"
    );

    // UDP from [::1] to the port bound on [::1]; the answer comes back from it.
    let ctr = SocketAddrV4::new(ip, 5353);
    let server_sock = NetNs::open(&sb.netns)
        .unwrap()
        .run(|| UdpSocket::bind(ctr))
        .unwrap()
        .unwrap();
    server_sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, peer) = server_sock.recv_from(&mut buf).unwrap();
        server_sock.send_to(&buf[..n], peer).unwrap();
        peer
    });
    let c = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to = SocketAddr::from((Ipv6Addr::LOCALHOST, udp_port));
    c.send_to(b"ping6", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping6"[..], to));
    let peer = server.join().unwrap();
    assert_eq!(
        peer,
        SocketAddr::new(gw, c.local_addr().unwrap().port()),
        "an IPv6 client is the gateway, with its port"
    );

    // loopback_splice: ::1 is a loopback client too.
    d.ok(&[
        "network",
        "create",
        "-o",
        "tapnet.loopback_splice=true",
        "--subnet",
        "10.253.9.0/24",
        "pub9",
    ]);
    let sp = d.sandbox("sp", &["pub9"], &["-p", "8080"]);
    let port6 = ports(&d, "sp").iter().find(|x| x.1 == ANY6).unwrap().2;
    let (peer, _) = echo_peer_through(
        &sp.netns,
        SocketAddrV4::new(sp.ip("pub9").parse().unwrap(), 8080),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port6)),
    );
    assert_eq!(
        peer.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "a [::1] client of a spliced port is spliced"
    );
}

/// IPv6 bindings are recorded and bound again, exactly, after a restart and a kill -9,
/// and freed by `sandbox rm`.
#[test]
#[ignore = "needs root"]
fn ipv6_bindings_are_bound_again_after_restart() {
    need_ipv6("ipv6_bindings_are_bound_again_after_restart");
    let mut d = Daemon::start("publish-v6-restart");
    d.ok(&["network", "create", "--subnet", "10.253.10.0/24", "pub10"]);
    d.sandbox(
        "keep6",
        &["pub10"],
        &["-p", "[::1]::80", "-p", "[::]::53/udp", "-p", "81"],
    );
    let p = ports(&d, "keep6");
    let ips: Vec<IpAddr> = p.iter().map(|x| x.1).collect();
    assert_eq!(
        ips,
        [ANY6, IpAddr::V6(Ipv6Addr::LOCALHOST), ANY4, ANY6],
        "{p:?}"
    );
    assert!(all_bound(&p));

    d.restart();
    assert_eq!(ports(&d, "keep6"), p, "ports changed across a restart");
    assert!(all_bound(&p), "not bound again after restart: {}", d.log());
    d.kill9();
    assert!(none_bound(&p), "a dead daemon holds no port");
    d.spawn();
    assert_eq!(ports(&d, "keep6"), p, "ports changed across kill -9");
    assert!(all_bound(&p), "not bound again after kill -9: {}", d.log());

    d.ok(&["sandbox", "rm", "keep6"]);
    assert!(none_bound(&p));
    d.restart();
    assert!(none_bound(&p), "a removed sandbox's ports came back");
}
