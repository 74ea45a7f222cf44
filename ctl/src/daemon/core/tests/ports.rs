//! Published ports: Docker's allocation rules (on the in-memory plumbing, and on real
//! loopback sockets), what is recorded, where the ports lead, and when they close.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};

use tapnet_nat::portspec::{PortMapping, Proto};

use super::*;
use crate::daemon::core::ports::allocate_ports;
use crate::daemon::plumbing::{HostPorts, Op, OsHostPorts};

fn map(host_ip: Option<&str>, ports: Option<(u16, u16)>, ctr: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host_ports: ports,
        container_port: ctr,
        proto,
    }
}

fn publish(
    r: &Rig,
    name: &str,
    nets: &[&str],
    ports: &[PortMapping],
) -> Result<SandboxRecord, DaemonError> {
    r.d()
        .create_sandbox(Some(name.into()), None, attach(nets), ports)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn no_host_address_binds_both_families_on_one_port_of_the_range() {
    let r = Rig::with(MemoryPlumbing::new().with_port_range(40000, 40009));
    let sb = publish(&r, "web", &[], &[map(None, None, 80, Proto::Tcp)]).unwrap();
    assert_eq!(sb.ports.len(), 2);
    let port = sb.ports[0].host_port;
    assert!((40000..=40009).contains(&port));
    let got: Vec<(IpAddr, u16, u16, &str)> = sb
        .ports
        .iter()
        .map(|p| (p.host_ip, p.host_port, p.container_port, p.proto.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("0.0.0.0".parse().unwrap(), port, 80, "tcp"),
            ("::".parse().unwrap(), port, 80, "tcp")
        ]
    );
    // Carried to the sandbox's address on the bridge.
    let live = r.p().published(&sb.id);
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|p| p.target == (ip("172.17.0.2"), 80)));
    assert!(live.iter().all(|p| p.splice_netns.is_none()));
    // And stored: the record is what inspect shows.
    assert_eq!(r.d().sandbox("web").unwrap().0.ports, sb.ports);
}

#[test]
fn a_taken_port_is_dockers_error_and_leaves_nothing() {
    let r = Rig::new();
    publish(
        &r,
        "web",
        &[],
        &[map(None, Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap();
    let bound = r.p().bound();
    let err = publish(
        &r,
        "db",
        &[],
        &[
            map(Some("127.0.0.1"), None, 53, Proto::Udp),
            map(None, Some((8080, 8080)), 90, Proto::Tcp),
        ],
    )
    .unwrap_err();
    let (status, text) = api(err);
    assert_eq!(status, 500);
    assert!(
        text.starts_with("driver failed programming external connectivity on endpoint db ("),
        "{text}"
    );
    assert!(
        text.ends_with("): Bind for 0.0.0.0:8080 failed: port is already allocated"),
        "{text}"
    );
    // Nothing stored, the UDP port bound first was closed again, no address taken. By
    // name: `sandbox("db")` would also find web if its id started with "db".
    assert!(r.d().sandboxes().iter().all(|(s, _)| s.name != "db"));
    assert_eq!(r.p().bound(), bound);
    r.sandbox("next", &[]);
    assert_eq!(r.endpoints("next")[0].0.ipv4, Some(ip("172.17.0.3")));
    // UDP on the same port number is another binding.
    publish(
        &r,
        "dns",
        &[],
        &[map(None, Some((8080, 8080)), 53, Proto::Udp)],
    )
    .unwrap();
}

#[test]
fn an_ipv6_address_taken_is_named_as_docker_prints_it() {
    let r = Rig::new();
    let _held = r.p().occupy(Proto::Tcp, sock("[::]:8080")).unwrap();
    let (_, text) = api(publish(
        &r,
        "web",
        &[],
        &[map(None, Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap_err());
    assert!(
        text.ends_with("Bind for :::8080 failed: port is already allocated"),
        "{text}"
    );
}

#[test]
fn a_range_takes_its_first_free_port_or_says_all_are_allocated() {
    let r = Rig::new();
    let _held = r.p().occupy(Proto::Tcp, sock("0.0.0.0:9000")).unwrap();
    let sb = publish(
        &r,
        "a",
        &[],
        &[map(Some("0.0.0.0"), Some((9000, 9002)), 80, Proto::Tcp)],
    )
    .unwrap();
    assert_eq!(sb.ports[0].host_port, 9001);
    let sb = publish(
        &r,
        "b",
        &[],
        &[map(Some("0.0.0.0"), Some((9000, 9002)), 80, Proto::Tcp)],
    )
    .unwrap();
    assert_eq!(sb.ports[0].host_port, 9002);
    let (_, text) = api(publish(
        &r,
        "c",
        &[],
        &[map(Some("0.0.0.0"), Some((9000, 9002)), 80, Proto::Tcp)],
    )
    .unwrap_err());
    assert!(
        text.ends_with("Bind for 0.0.0.0:9000-9002 failed: all ports are allocated (80/tcp)"),
        "{text}"
    );
}

#[test]
fn a_host_without_ipv6_binds_ipv4_only_and_refuses_an_ipv6_address() {
    let r = Rig::with(MemoryPlumbing::new().without_ipv6());
    let sb = publish(&r, "web", &[], &[map(None, None, 80, Proto::Tcp)]).unwrap();
    assert_eq!(sb.ports.len(), 1);
    assert_eq!(sb.ports[0].host_ip, IpAddr::from([0, 0, 0, 0]));
    let (status, text) = api(publish(
        &r,
        "v6",
        &[],
        &[map(Some("::1"), Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap_err());
    assert_eq!(status, 500);
    assert!(
        text.ends_with(
            "Error starting userland proxy: listen tcp6 [::1]:8080: bind: cannot assign requested address"
        ),
        "{text}"
    );
}

#[test]
fn the_networks_host_binding_stands_for_an_address_not_given() {
    let r = Rig::new();
    r.d()
        .create_network(
            NetworkSpec {
                name: "lo".into(),
                options: [(
                    "com.docker.network.bridge.host_binding_ipv4".to_string(),
                    "127.0.0.1".to_string(),
                )]
                .into(),
                ..Default::default()
            },
            false,
        )
        .unwrap();
    let sb = publish(
        &r,
        "web",
        &["lo"],
        &[map(None, Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap();
    assert_eq!(sb.ports.len(), 1);
    assert_eq!(sb.ports[0].host_ip, IpAddr::from([127, 0, 0, 1]));
}

#[test]
fn ports_need_a_network_with_external_access() {
    let r = Rig::new();
    r.d()
        .create_network(
            NetworkSpec {
                name: "inner".into(),
                internal: true,
                ..Default::default()
            },
            false,
        )
        .unwrap();
    for nets in [&["inner"][..], &["none"][..]] {
        assert_eq!(
            api(publish(&r, "web", nets, &[map(None, None, 80, Proto::Tcp)]).unwrap_err()),
            (
                400,
                "cannot publish ports of web: it has no network with external access (publishing needs a bridge network that is not internal)"
                    .into()
            )
        );
    }
    assert!(r.p().bound().is_empty());
}

#[test]
fn splice_networks_publish_with_the_sandboxes_namespace() {
    let r = Rig::new();
    r.d()
        .create_network(
            NetworkSpec {
                name: "fast".into(),
                options: [("tapnet.loopback_splice".to_string(), "true".to_string())].into(),
                ..Default::default()
            },
            false,
        )
        .unwrap();
    let sb = publish(
        &r,
        "web",
        &["fast"],
        &[map(Some("127.0.0.1"), None, 80, Proto::Tcp)],
    )
    .unwrap();
    let live = r.p().published(&sb.id);
    assert_eq!(live[0].splice_netns.as_deref(), Some(sb.netns.as_str()));
}

#[test]
fn ports_close_with_their_sandbox_and_with_their_endpoint() {
    let r = Rig::new();
    r.create_net("pets", "10.1.0.0/24");
    let sb = publish(
        &r,
        "web",
        &["pets"],
        &[map(None, Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap();
    r.d()
        .connect("bridge", "web", AttachSpec::default())
        .unwrap();
    // Disconnecting another network leaves them.
    r.d().disconnect("bridge", "web").unwrap();
    assert_eq!(r.p().published(&sb.id).len(), 2);
    // Disconnecting the one they lead into closes them, and the record says so.
    r.d().disconnect("pets", "web").unwrap();
    assert!(r.p().published(&sb.id).is_empty());
    assert!(r.p().bound().is_empty());
    assert!(r.d().sandbox("web").unwrap().0.ports.is_empty());
    // Removing a sandbox closes its ports.
    let sb = publish(
        &r,
        "db",
        &[],
        &[map(None, Some((8080, 8080)), 80, Proto::Tcp)],
    )
    .unwrap();
    r.d().remove_sandbox("db").unwrap();
    assert!(r.p().published(&sb.id).is_empty());
    assert!(r.p().bound().is_empty());
}

#[test]
fn a_failed_publish_removes_the_sandbox_and_frees_its_ports() {
    let r = Rig::new();
    r.p().fail(Op::Publish);
    assert_eq!(
        api(publish(
            &r,
            "web",
            &[],
            &[map(None, Some((8080, 8080)), 80, Proto::Tcp)]
        )
        .unwrap_err()),
        (500, "Publish failed (as the test asked)".into())
    );
    assert!(r.d().sandboxes().is_empty());
    assert!(r.p().bound().is_empty());
    assert!(r.p().namespaces().is_empty());
    // An unexpected bind error is Docker's "userland proxy" text.
    r.p().fail(Op::Bind);
    let (status, text) = api(publish(
        &r,
        "web",
        &[],
        &[map(Some("127.0.0.1"), Some((80, 80)), 80, Proto::Tcp)],
    )
    .unwrap_err());
    assert_eq!(status, 500);
    assert!(text.ends_with("Error starting userland proxy: listen tcp4 127.0.0.1:80: bind: bind failed (as the test asked)"), "{text}");
}

// ----- the same rules on real sockets, on loopback -----

/// A port outside the ephemeral range (the kernel never gives it to a connecting
/// socket), free now on both families for TCP and UDP, and a different one for each
/// call in this process: a test may bind it, drop it and bind it again without
/// another test's connection taking it in between. Each call owns the 32 ports from
/// the one returned (a test may publish a range from it).
fn quiet_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (lo, hi) = OsHostPorts.port_range();
    let (first, last) = if hi <= 64535 {
        (hi + 1, 65535)
    } else {
        (1024, lo - 1)
    };
    const BLOCK: u16 = 32;
    let blocks = (last - first + 1) / BLOCK;
    for _ in 0..blocks {
        let p = first + (NEXT.fetch_add(1, Ordering::Relaxed) % blocks) * BLOCK;
        let free = [Proto::Tcp, Proto::Udp].iter().all(|&proto| {
            ["0.0.0.0", "::"].iter().all(|ip| {
                OsHostPorts
                    .bind(proto, SocketAddr::new(ip.parse().unwrap(), p))
                    .is_ok()
            })
        });
        if free {
            return p;
        }
    }
    panic!("no free port in {first}-{last}");
}

/// `f` until it succeeds, for up to ten seconds. Another test of this process that
/// starts a program copies every socket open at that moment into the child until it
/// execs (on a loaded machine, a while): a port just closed can look taken meanwhile.
/// A socket really left open stays taken, and fails the test.
fn eventually<T, E>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Err(_) if std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

#[test]
fn real_sockets_on_loopback() {
    let m = |ports, proto| map(Some("127.0.0.1"), ports, 80, proto);
    // A dynamic port is in the ephemeral range and really bound.
    let b = allocate_ports(&OsHostPorts, &[m(None, Proto::Tcp)], "web (e1)").unwrap();
    let (lo, hi) = OsHostPorts.port_range();
    let port = b[0].record.host_port;
    assert!((lo..=hi).contains(&port));
    assert!(TcpListener::bind((ip("127.0.0.1"), port)).is_err());
    drop(b);
    let port = quiet_port();
    let b = eventually(|| {
        allocate_ports(
            &OsHostPorts,
            &[m(Some((port, port)), Proto::Tcp)],
            "web (e1)",
        )
    })
    .unwrap();
    // The same port again: Docker's error, and nothing of the request stays bound.
    let e = allocate_ports(
        &OsHostPorts,
        &[m(None, Proto::Udp), m(Some((port, port)), Proto::Tcp)],
        "db (e2)",
    )
    .unwrap_err();
    assert_eq!(
        api(e),
        (
            500,
            format!(
                "driver failed programming external connectivity on endpoint db (e2): Bind for 127.0.0.1:{port} failed: port is already allocated"
            )
        )
    );
    // A range whose first port is taken gives the next free one.
    let range = (port, port + 20);
    let r = allocate_ports(&OsHostPorts, &[m(Some(range), Proto::Tcp)], "x").unwrap();
    assert!(r[0].record.host_port > port && r[0].record.host_port <= range.1);
    drop(b);
    assert!(eventually(|| TcpListener::bind((ip("127.0.0.1"), port))).is_ok());
}

#[test]
fn real_sockets_both_families_on_one_port() {
    assert!(
        OsHostPorts.ipv6_listenable(),
        "this test needs IPv6 on the loopback ([::1] bindable)"
    );
    for proto in [Proto::Tcp, Proto::Udp] {
        let b = allocate_ports(&OsHostPorts, &[map(None, None, 80, proto)], "web (e1)").unwrap();
        let got: Vec<(IpAddr, u16)> = b
            .iter()
            .map(|b| (b.record.host_ip, b.record.host_port))
            .collect();
        let port = got[0].1;
        assert_eq!(
            got,
            [
                (IpAddr::from([0, 0, 0, 0]), port),
                (IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
            ]
        );
        // Really bound, each family on its own (IPv6-only) socket.
        for ipa in ["0.0.0.0", "::"] {
            let again = OsHostPorts.bind(proto, SocketAddr::new(ipa.parse().unwrap(), port));
            assert!(
                matches!(&again, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse),
                "{ipa} {proto}: {again:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn real_sockets_without_ipv6_bind_ipv4_only() {
    // A namespace whose IPv6 is off (`disable_ipv6`): `::` could still be bound
    // there, `[::1]` not, and Docker binds IPv4 only.
    let ns = tapnet_engine::sys::netns::NetNsGuard::create(&format!(
        "tapnet-test-{}-noip6",
        std::process::id()
    ))
    .expect("create a scratch namespace");
    let (bound, explicit) = ns
        .run(|| {
            for conf in ["all", "default", "lo"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")
                    .unwrap();
            }
            let mut nl = tapnet_engine::sys::netlink::Netlink::open().unwrap();
            let lo = nl.link_index("lo").unwrap();
            nl.set_up(lo).unwrap();
            assert!(!OsHostPorts.ipv6_listenable());
            let b = allocate_ports(&OsHostPorts, &[map(None, None, 80, Proto::Tcp)], "web (e1)")
                .unwrap();
            let recs: Vec<_> = b.iter().map(|b| b.record.clone()).collect();
            let e = allocate_ports(
                &OsHostPorts,
                &[map(Some("::1"), Some((8080, 8080)), 80, Proto::Tcp)],
                "web (e1)",
            )
            .unwrap_err();
            (recs, api(e).1)
        })
        .unwrap();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(bound[0].host_ip, IpAddr::from([0, 0, 0, 0]));
    // An IPv6 address asked for is an error, not dropped.
    assert_eq!(
        explicit,
        "driver failed programming external connectivity on endpoint web (e1): Error starting userland proxy: listen tcp6 [::1]:8080: bind: cannot assign requested address"
    );
}
