//! End to end: published ports (`-p`) of the real `tapnet daemon`, driven by the
//! `tapnet` binary: Docker's allocation rules and errors, `tapnet port`, ports freed
//! with their sandbox and bound again after a restart (SIGTERM or SIGKILL); and the data
//! path through a published port (TCP with the client's real address, UDP echo).
//!
//! Root only; each test skips with a note otherwise. Networks here use 10.253.<n>.0/24.
//! Traffic goes only to loopback and to a veth pair the test creates (and removes).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, root_or_skip};
use serde_json::Value;
use tapnet_engine::netns::NetNs;

/// The host's ephemeral port range (where ports without a host port come from).
fn ephemeral_range() -> (u16, u16) {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// A TCP port free on 0.0.0.0 right now, outside the ephemeral range (so that no
/// dynamic allocation of this test takes it), with the next `span` ports free too.
fn free_tcp_port(span: u16) -> u16 {
    let (lo, _) = ephemeral_range();
    for base in (20000..lo.saturating_sub(100)).step_by(37) {
        if (base..=base + span).all(|p| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok()) {
            return base;
        }
    }
    panic!("no free TCP port range below {lo}");
}

fn tcp_bound(ip: Ipv4Addr, port: u16) -> bool {
    match TcpListener::bind((ip, port)) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::AddrInUse => true,
        Err(e) => panic!("bind {ip}:{port}: {e}"),
    }
}

fn udp_bound(ip: Ipv4Addr, port: u16) -> bool {
    match UdpSocket::bind((ip, port)) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::AddrInUse => true,
        Err(e) => panic!("bind udp {ip}:{port}: {e}"),
    }
}

/// `Ports` of a sandbox's inspect: (key, host ip, host port) triples, sorted.
fn ports(d: &Daemon, sb: &str) -> Vec<(String, Ipv4Addr, u16)> {
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

fn all_bound(list: &[(String, Ipv4Addr, u16)]) -> bool {
    list.iter().all(|(k, ip, p)| {
        if k.ends_with("/udp") {
            udp_bound(*ip, *p)
        } else {
            tcp_bound(*ip, *p)
        }
    })
}

fn none_bound(list: &[(String, Ipv4Addr, u16)]) -> bool {
    list.iter().all(|(k, ip, p)| {
        if k.ends_with("/udp") {
            !udp_bound(*ip, *p)
        } else {
            !tcp_bound(*ip, *p)
        }
    })
}

/// Allocation (a random port in range, a range, a taken port), `tapnet port`, bad specs,
/// and every port freed by `sandbox rm`.
#[test]
fn publish_allocates_like_docker_and_frees_on_rm() {
    if !root_or_skip("publish_allocates_like_docker_and_frees_on_rm") {
        return;
    }
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
    let fixed = free_tcp_port(12);
    let fixed_s = fixed.to_string();
    let spec_fixed = format!("{fixed}:81");
    let spec_range = format!("{fixed}-{}:82", fixed + 10);
    d.sandbox(
        "web",
        &["pub1"],
        &["-p", "80", "-p", "127.0.0.1::53/udp", "-p", &spec_fixed],
    );
    let p = ports(&d, "web");
    let (lo, hi) = ephemeral_range();
    assert_eq!(p.len(), 3, "{p:?}");
    let (ref k, ip, dynamic) = p[1];
    assert_eq!((k.as_str(), ip), ("80/tcp", Ipv4Addr::UNSPECIFIED));
    assert!((lo..=hi).contains(&dynamic), "{dynamic} not in {lo}-{hi}");
    assert_eq!(p[0].0, "53/udp");
    assert_eq!(p[0].1, Ipv4Addr::LOCALHOST);
    assert!((lo..=hi).contains(&p[0].2));
    assert_eq!(p[2], ("81/tcp".into(), Ipv4Addr::UNSPECIFIED, fixed));
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
    want.sort();
    let mut got: Vec<String> = out.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(d.ok(&["port", "web", "81"]), format!("0.0.0.0:{fixed}\n"));
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
    assert_eq!(r.len(), 1);
    assert!(r[0].2 > fixed && r[0].2 <= fixed + 10, "{r:?}");
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

    // Removal frees every port: a plain bind then succeeds.
    d.ok(&["sandbox", "rm", "web", "range"]);
    assert!(none_bound(&p), "ports still bound after rm: {p:?}");
    assert!(none_bound(&r));
}

/// Ports survive a graceful restart and a SIGKILL: the same ports, bound again.
#[test]
fn published_ports_are_bound_again_after_restart_and_kill_9() {
    if !root_or_skip("published_ports_are_bound_again_after_restart_and_kill_9") {
        return;
    }
    let mut d = Daemon::start("publish-restart");
    d.ok(&["network", "create", "--subnet", "10.253.2.0/24", "pub2"]);
    d.sandbox("keep", &["pub2"], &["-p", "80", "-p", "53/udp"]);
    let p = ports(&d, "keep");
    assert_eq!(p.len(), 2);
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
fn disconnect_takes_the_ports_with_the_endpoint() {
    if !root_or_skip("disconnect_takes_the_ports_with_the_endpoint") {
        return;
    }
    let mut d = Daemon::start("publish-disconnect");
    d.ok(&["network", "create", "--subnet", "10.253.5.0/24", "pub5"]);
    d.ok(&["network", "create", "--subnet", "10.253.6.0/24", "pub6"]);
    // Both networks have a gateway; the default route (and the ports) go to pub5, the
    // name that sorts first. (A dynamic port: a fixed one could race with the other
    // tests' choice of a free port.)
    let web = d.sandbox("web", &["pub5", "pub6"], &["-p", "80"]);
    let p = ports(&d, "web");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "80/tcp");
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

/// One request through a published TCP port: the server in the sandbox echoes the
/// client's address as it sees it, and the bytes come back.
fn echo_peer_through(ns: &str, ctr: SocketAddrV4, to: SocketAddrV4) -> SocketAddr {
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
    let mut c = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"hello").unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello");
    server.join().unwrap()
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
fn published_tcp_reaches_the_sandbox_from_the_clients_address() {
    if !root_or_skip("published_tcp_reaches_the_sandbox_from_the_clients_address") {
        return;
    }
    let d = Daemon::start("publish-tcp");
    d.ok(&["network", "create", "--subnet", "10.253.3.0/24", "pub3"]);
    let sb = d.sandbox("srv", &["pub3"], &["-p", "8080"]);
    let host_port = ports(&d, "srv")[0].2;
    let ctr = SocketAddrV4::new(sb.ip("pub3").parse().unwrap(), 8080);
    let peer = echo_peer_through(
        &sb.netns,
        ctr,
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port),
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
fn published_udp_echoes() {
    if !root_or_skip("published_udp_echoes") {
        return;
    }
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
