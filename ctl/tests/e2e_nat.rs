//! End to end: external access through host networking (egress NAT, the access table
//! of the seed, bounds). A real `tapnet daemon` per test, sandboxes in real network
//! namespaces, kernel TCP/UDP/ICMP inside them.
//!
//! Traffic stays on this host: servers listen on 127.0.0.1 (reached through the
//! gateway address of networks made with `-o tapnet.host_loopback=true`) or inside a
//! namespace the test makes itself, joined to the host by a veth pair
//! ([`Outside`]). Root only: each test is `#[ignore = "needs root"]`. Subnets
//! 10.250.<n>.0/24.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Sb, assert_no_ping, assert_pings};
use tapnet_engine::sys::netns::NetNs;

const IO_LIMIT: Duration = Duration::from_secs(20);

/// Run `f` inside the sandbox's network namespace.
fn inside<T: Send>(sb: &Sb, f: impl FnOnce() -> T + Send) -> T {
    NetNs::open(&sb.netns).unwrap().run(f).unwrap()
}

/// A namespace standing for "the outside": a veth pair with 10.250.<100+k>.1/30 on the
/// host and .2/30 in the namespace (each test its own `k`). Removed on drop.
struct Outside {
    ns: String,
    host_if: String,
    /// The host's end.
    host: Ipv4Addr,
    /// The namespace's end.
    addr: Ipv4Addr,
}

impl Outside {
    fn new(k: u8) -> Outside {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = std::process::id() % 100_000;
        let n = N.fetch_add(1, Ordering::Relaxed);
        let o = Outside {
            ns: format!("tnt-out-{id}-{n}"),
            host_if: format!("tnto{id}x{n}"),
            host: Ipv4Addr::new(10, 250, 100 + k, 1),
            addr: Ipv4Addr::new(10, 250, 100 + k, 2),
        };
        let (host_cidr, ns_cidr) = (format!("{}/30", o.host), format!("{}/30", o.addr));
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?} failed");
        };
        run(&["netns", "add", &o.ns]);
        run(&[
            "link", "add", &o.host_if, "type", "veth", "peer", "name", "eth0", "netns", &o.ns,
        ]);
        run(&["addr", "add", &host_cidr, "dev", &o.host_if]);
        run(&["link", "set", &o.host_if, "up"]);
        run(&["-n", &o.ns, "addr", "add", &ns_cidr, "dev", "eth0"]);
        run(&["-n", &o.ns, "link", "set", "eth0", "up"]);
        run(&["-n", &o.ns, "link", "set", "lo", "up"]);
        o
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        NetNs::open(&self.ns).unwrap().run(f).unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Serve one connection: read until EOF, answer the bytes reversed, and report the
/// peer's address.
fn reverse_once(l: TcpListener) -> std::thread::JoinHandle<SocketAddrV4> {
    std::thread::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        s.set_read_timeout(Some(IO_LIMIT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(&got).unwrap();
        match peer {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => panic!("IPv6 peer"),
        }
    })
}

/// From inside `sb`: send `len` bytes to `to`, half-close, read the answer; check it is
/// the bytes reversed.
fn reverse_client(sb: &Sb, to: SocketAddrV4, len: usize) {
    let data = pattern(len, 0x3c);
    let back = inside(sb, move || {
        let mut s = TcpStream::connect_timeout(&to.into(), IO_LIMIT).unwrap();
        s.set_read_timeout(Some(IO_LIMIT)).unwrap();
        let d2 = data.clone();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        (back, data)
    });
    let (back, mut data) = back;
    data.reverse();
    assert_eq!(back.len(), data.len(), "answer length");
    assert!(back == data, "the bytes that came back differ");
}

/// Try a TCP connect from inside `sb`; the error kind on failure.
fn try_connect(sb: &Sb, to: SocketAddrV4, limit: Duration) -> Result<(), ErrorKind> {
    inside(sb, move || {
        TcpStream::connect_timeout(&to.into(), limit)
            .map(|_| ())
            .map_err(|e| e.kind())
    })
}

#[test]
#[ignore = "needs root"]
fn egress_tcp_udp_and_ping_leave_through_the_host() {
    let d = Daemon::start("egress");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.250.1.0/24",
        "-o",
        "tapnet.host_loopback=true",
        "out",
    ]);
    d.ok(&["network", "create", "--subnet", "10.250.2.0/24", "plain"]);
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.250.3.0/24",
        "inner",
    ]);
    let a = d.sandbox("a", &["out"], &[]);
    let b = d.sandbox("b", &["plain"], &[]);
    let c = d.sandbox("c", &["inner"], &[]);
    let outside = Outside::new(1);
    let (out_ns, out_host) = (outside.addr, outside.host);
    let gw = a.gateway("out");

    // TCP to the host's loopback through the gateway address: 8 MiB each way.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = reverse_once(l);
    reverse_client(&a, SocketAddrV4::new(gw, port), 8 << 20);
    server.join().unwrap();

    // TCP to an outside address: the server sees the host's address (masquerade).
    let l = outside.run(|| TcpListener::bind((out_ns, 0)).unwrap());
    let oport = l.local_addr().unwrap().port();
    let server = reverse_once(l);
    reverse_client(&a, SocketAddrV4::new(out_ns, oport), 1 << 20);
    let peer = server.join().unwrap();
    assert_eq!(*peer.ip(), out_host, "the outside sees the host's address");

    // UDP both ways, to loopback and to the outside.
    for (target, in_outside) in [(Ipv4Addr::LOCALHOST, false), (out_ns, true)] {
        let bind = move || UdpSocket::bind((target, 0)).unwrap();
        let echo = if in_outside {
            outside.run(bind)
        } else {
            bind()
        };
        echo.set_read_timeout(Some(IO_LIMIT)).unwrap();
        let uport = echo.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        });
        let dst = if in_outside { out_ns } else { gw };
        let got = inside(&a, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            for _ in 0..5 {
                s.send_to(b"tapnet udp", (dst, uport)).unwrap();
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    return Some((buf[..n].to_vec(), from));
                }
            }
            None
        });
        t.join().unwrap();
        let (data, from) = got.expect("a UDP answer");
        assert_eq!(data, b"tapnet udp");
        assert_eq!(
            from,
            (dst, uport).into(),
            "the answer comes from where it went"
        );
    }

    // Ping to the outside.
    assert_pings(&a.netns, &out_ns.to_string());

    // Without host loopback, the gateway address serves nothing: refused at once.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let r = try_connect(&b, SocketAddrV4::new(b.gateway("plain"), port), IO_LIMIT);
    assert_eq!(r, Err(ErrorKind::ConnectionRefused));
    drop(l);
    // ...but the outside is reachable.
    assert_pings(&b.netns, &out_ns.to_string());

    // An internal network reaches nothing outside its subnet.
    assert_no_ping(&c.netns, &out_ns.to_string());
    assert!(try_connect(&c, SocketAddrV4::new(out_ns, oport), Duration::from_secs(2)).is_err());
}

#[test]
#[ignore = "needs root"]
fn access_table_of_the_seed() {
    let d = Daemon::start("access");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.250.11.0/24",
        "-o",
        "tapnet.host_loopback=true",
        "front",
    ]);
    d.ok(&["network", "create", "--subnet", "10.250.12.0/24", "back"]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.250.13.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    let f1 = d.sandbox("f1", &["front"], &["-p", "127.0.0.1::8080"]);
    let f2 = d.sandbox("f2", &["front"], &[]);
    let b1 = d.sandbox("b1", &["back"], &[]);
    let q1 = d.sandbox("q1", &["quiet"], &[]);
    let q2 = d.sandbox("q2", &["quiet"], &[]);
    let outside = Outside::new(2);
    let out_ns = outside.addr;

    // Servers on every sandbox on two ports each; f1 publishes 8080 only.
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for sb in [&f1, &f2, &b1, &q1, &q2] {
        for port in [8080u16, 9090] {
            let addr = sb.nets[0].1.parse::<Ipv4Addr>().unwrap();
            let l = inside(sb, move || TcpListener::bind((addr, port)).unwrap());
            l.set_nonblocking(true).unwrap();
            let stop = Arc::clone(&stop);
            servers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(b"ok");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
    }
    let short = Duration::from_secs(2);
    let cell = |from: &Sb, to: SocketAddrV4| try_connect(from, to, short).is_ok();

    // Within a network: every port open.
    for port in [8080, 9090] {
        assert!(
            cell(&f2, SocketAddrV4::new(f1.ipv4("front"), port)),
            "front, port {port}"
        );
    }
    // Within an icc=false network: nothing.
    for port in [8080, 9090] {
        assert!(
            !cell(&q1, SocketAddrV4::new(q2.ipv4("quiet"), port)),
            "quiet, port {port}"
        );
    }
    // Between networks: denied both ways, all ports.
    for port in [8080, 9090] {
        assert!(
            !cell(&f1, SocketAddrV4::new(b1.ipv4("back"), port)),
            "front to back"
        );
        assert!(
            !cell(&b1, SocketAddrV4::new(f1.ipv4("front"), port)),
            "back to front"
        );
    }
    // Egress: allowed and stateful (the reply comes back).
    let l = outside.run(|| TcpListener::bind((out_ns, 0)).unwrap());
    let oport = l.local_addr().unwrap().port();
    let server = reverse_once(l);
    reverse_client(&b1, SocketAddrV4::new(out_ns, oport), 4096);
    server.join().unwrap();
    // Ingress: only published ports. f1's 8080 is published on 127.0.0.1.
    let ports = d.ok(&["port", "f1", "8080/tcp"]);
    let host_port: u16 = ports
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("tapnet port output: {ports:?}"));
    let mut s = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    s.set_read_timeout(Some(IO_LIMIT)).unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok", "a published port reaches the sandbox");
    // The outside has no way in: the sandbox addresses are not routed on the host.
    let r = outside.run(move || {
        TcpStream::connect_timeout(&SocketAddrV4::new(f1.ipv4("front"), 9090).into(), short).is_ok()
    });
    assert!(!r, "an unpublished port is reachable from outside");
    // A published port is reachable from another network through the host.
    let via_host = SocketAddrV4::new(f2.gateway("front"), host_port);
    assert!(cell(&f2, via_host), "hairpin through the published port");
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "needs root"]
fn flows_are_bounded_and_leave_no_descriptors() {
    let d = Daemon::start("bounds");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.250.21.0/24",
        "-o",
        "tapnet.host_loopback=true",
        "n",
    ]);
    let a = d.sandbox("a", &["n"], &[]);
    let gw = a.gateway("n");
    let pid = d.pid().unwrap().as_raw() as u32;

    // A server on the host's loopback that accepts and closes, many times over.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        let mut n = 0u64;
        while !st.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"x");
                    n += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        n
    });
    // Warm up (the first flow allocates the network's structures), then count.
    let one = |a: &Sb| {
        inside(a, move || {
            let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(gw, port).into(), IO_LIMIT)?;
            s.set_read_timeout(Some(IO_LIMIT))?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
        })
    };
    one(&a).unwrap();
    // The count starts once the warm-up flow's host socket is closed (bounded wait).
    let host_sockets = || d.get("/stats").json()["Host"]["Sockets"].as_u64().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while host_sockets() > 0 {
        assert!(
            Instant::now() < end,
            "the warm-up flow's host socket is still open: {}",
            d.get("/stats").body
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = fds(pid);

    // 100,000 short connections from 4 threads in the sandbox, within a time bound.
    const TOTAL: usize = 100_000;
    const THREADS: usize = 4;
    let failed = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(600);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let failed = Arc::clone(&failed);
            let ns = NetNs::open(&a.netns).unwrap();
            std::thread::spawn(move || {
                ns.run(|| {
                    let mut done = 0;
                    for _ in 0..TOTAL / THREADS {
                        if Instant::now() > deadline {
                            break;
                        }
                        let r = TcpStream::connect_timeout(
                            &SocketAddrV4::new(gw, port).into(),
                            IO_LIMIT,
                        )
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(IO_LIMIT))?;
                            let mut b = [0u8; 1];
                            s.read_exact(&mut b)
                        });
                        match r {
                            Ok(()) => done += 1,
                            Err(e) => failed.lock().unwrap().push(e.to_string()),
                        }
                    }
                    done
                })
                .unwrap()
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let served = server.join().unwrap();
    let failed = failed.lock().unwrap();
    assert_eq!(
        done,
        TOTAL,
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(served >= TOTAL as u64);
    // Every flow ended: the daemon holds no more descriptors than before.
    let end = Instant::now() + IO_LIMIT;
    while fds(pid) > before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        fds(pid) <= before,
        "descriptors: {before} before, {} after 100,000 connections",
        fds(pid)
    );

    // A scan of closed ports: each is refused, nothing stays open.
    let refused = inside(&a, move || {
        let mut refused = 0;
        for p in 1..=2000u16 {
            if p == port {
                continue;
            }
            // A refusal comes at once; the bound only ends a connect that hangs.
            let r = TcpStream::connect_timeout(&SocketAddrV4::new(gw, p).into(), IO_LIMIT);
            if matches!(r, Err(ref e) if e.kind() == ErrorKind::ConnectionRefused) {
                refused += 1;
            }
        }
        refused
    });
    assert!(
        refused >= 1990,
        "only {refused} of the scanned ports were refused"
    );
    // A SYN flood toward an address that never answers: the pending connects stay
    // bounded (the relay resets those beyond its bound at once), the daemon answers
    // its API, and its descriptors stay bounded.
    let outside = Outside::new(3);
    let out_ns = outside.addr;
    // The outside drops every SYN: its replies go nowhere.
    let st = Command::new("ip")
        .args([
            "-n",
            &outside.ns,
            "route",
            "add",
            "blackhole",
            &format!("{}/32", outside.host),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    const RESET_AT_LEAST: usize = 500;
    let reset_at_once = inside(&a, move || {
        // Non-blocking connects: 1000 SYNs in flight at once.
        let mut socks = Vec::new();
        for _ in 0..1000 {
            let s = socket2_connect_nonblocking(SocketAddrV4::new(out_ns, 7));
            socks.push(s);
        }
        // Those the relay refused are reset at once: their connect fails within 10 s
        // on a loaded machine (those it let through wait on the outside, which never
        // answers, for minutes).
        let end = Instant::now() + Duration::from_secs(10);
        let mut reset = vec![false; socks.len()];
        loop {
            for (s, r) in socks.iter().zip(&mut reset) {
                *r = *r || matches!(s.take_error(), Ok(Some(_)));
            }
            let n = reset.iter().filter(|r| **r).count();
            if n >= RESET_AT_LEAST || Instant::now() >= end {
                break n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert!(
        reset_at_once >= RESET_AT_LEAST,
        "only {reset_at_once} of 1000 connects beyond the bound were reset"
    );
    let open = fds(pid);
    assert!(
        open < before + 400,
        "{open} descriptors open during the flood"
    );
    assert_eq!(
        d.get("/_ping").status,
        200,
        "the daemon answers during the flood"
    );
}

/// A non-blocking TCP connect from the current namespace (the socket comes back
/// connecting).
fn socket2_connect_nonblocking(to: SocketAddrV4) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    assert!(fd >= 0);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in for the length given.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert!(r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS));
    // SAFETY: `fd` is a fresh socket owned by the stream from here on.
    unsafe { TcpStream::from_raw_fd(fd) }
}

#[test]
#[ignore = "needs root"]
fn loopback_splice_is_an_option_of_the_network() {
    let d = Daemon::start("splice");
    d.ok(&["network", "create", "--subnet", "10.250.31.0/24", "relayed"]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.250.32.0/24",
        "-o",
        "tapnet.loopback_splice=true",
        "spliced",
    ]);
    // A bad value is refused with the option's name, and nothing is created.
    let err = d.fails(
        &[
            "network",
            "create",
            "-o",
            "tapnet.loopback_splice=maybe",
            "bad",
        ],
        1,
    );
    assert!(err.contains("tapnet.loopback_splice"), "{err}");
    for (net, spliced) in [("relayed", false), ("spliced", true)] {
        let sb = d.sandbox(&format!("s-{net}"), &[net], &["-p", "127.0.0.1::7000"]);
        let me = sb.ipv4(net);
        let l = inside(&sb, move || TcpListener::bind((me, 7000)).unwrap());
        let server = reverse_once(l);
        let out = d.ok(&["port", &sb.name, "7000"]);
        let port: u16 = out.trim().rsplit(':').next().unwrap().parse().unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(IO_LIMIT)).unwrap();
        let data = pattern(3 << 20, 0x11);
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        let peer = server.join().unwrap();
        let mut want = data;
        want.reverse();
        assert!(back == want, "{net}: the bytes that came back differ");
        // The relay shows the gateway and the client's port; a spliced connection
        // comes from the sandbox's own loopback.
        let expect = if spliced {
            Ipv4Addr::LOCALHOST
        } else {
            sb.gateway(net)
        };
        assert_eq!(*peer.ip(), expect, "{net}: the peer the sandbox sees");
        if !spliced {
            assert_eq!(peer.port(), c.local_addr().unwrap().port());
        }
    }
}
