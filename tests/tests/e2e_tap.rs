//! End to end through the engine's library API, on real TAPs in network namespaces this
//! test creates (root only: `#[ignore = "needs root"]`). Kernel TCP on both sides.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::NetNsGuard;
use tapnet_engine::sys::tap::{TapConfig, create_tap_in};
use tapnet_engine::{DomainConfig, DomainId, Engine, EngineConfig, PortId, TapPort, WorkerMapping};

/// One namespace with a TAP `eth0` attached to the engine.
struct Host {
    ns: NetNsGuard,
    addr: Ipv4Addr,
    port: PortId,
}

struct HostSpec {
    tag: &'static str,
    addr: Ipv4Addr,
    vnet_hdr: bool,
    /// MTU the engine is told for the port (the interface keeps 1500).
    port_mtu: u32,
}

fn host(engine: &Engine, dom: DomainId, s: HostSpec) -> Host {
    let name = format!("tne{}{}", std::process::id(), s.tag);
    let ns = NetNsGuard::create(&name).expect("create netns");
    let cfg = TapConfig {
        name: "eth0".into(),
        vnet_hdr: s.vnet_hdr,
        ..Default::default()
    };
    let tap = create_tap_in(&ns, &cfg).expect("create tap in netns");
    let mut nl = Netlink::open_in(&ns).expect("netlink in netns");
    let idx = nl.link_index("eth0").expect("eth0 index");
    nl.set_up(1).expect("lo up");
    nl.set_txqueuelen(idx, 10_000).expect("txqueuelen");
    nl.add_address(idx, IpAddr::V4(s.addr), 24)
        .expect("address");
    nl.set_up(idx).expect("eth0 up");
    let port = engine
        .add_port(Box::new(TapPort::new(tap, s.port_mtu)), dom)
        .expect("add port");
    Host {
        ns,
        addr: s.addr,
        port,
    }
}

/// `ping` until it succeeds, for up to 20 s: a reachability check that a loaded machine
/// does not fail by answering late.
fn reach(from: &Host, to: Ipv4Addr, count: u32) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if ping(from, to, count) {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
    }
}

fn ping(from: &Host, to: Ipv4Addr, count: u32) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", from.ns.name(), "ping", "-n", "-q", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.2", "-W", "1"])
        .arg(to.to_string())
        .output()
        .expect("run ping (iputils-ping and iproute2 must be installed)");
    out.status.success()
}

/// Deterministic stream of bytes and a word-wise hash of it.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for w in buf.chunks_exact_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            w.copy_from_slice(&self.0.to_le_bytes());
        }
    }
}

fn hash(h: &mut u64, buf: &[u8]) {
    for w in buf.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap_or_default());
        *h = (*h ^ v).wrapping_mul(0x100_0000_01b3);
    }
}

const CHUNK: usize = 64 * 1024;

/// Send `bytes` from `a` to `b` over kernel TCP; returns (sent hash, received hash).
fn transfer(a: &Host, b: &Host, bytes: usize) -> (u64, u64) {
    assert_eq!(bytes % CHUNK, 0);
    let dst = SocketAddr::new(IpAddr::V4(b.addr), 5201);
    let listener =
        b.ns.run(|| TcpListener::bind(dst))
            .expect("netns")
            .expect("listen");
    let client =
        a.ns.run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(20)));
    let mut client = client.expect("netns").expect("connect through tapnet");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::thread::scope(|s| {
        let rx = s.spawn(move || {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..bytes / CHUNK {
                server.read_exact(&mut buf).expect("receive");
                hash(&mut h, &buf);
            }
            h
        });
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut src = Stream(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..bytes / CHUNK {
            src.fill(&mut buf);
            hash(&mut h, &buf);
            client.write_all(&buf).expect("send");
        }
        client.shutdown(std::net::Shutdown::Write).ok();
        (h, rx.join().expect("receiver thread"))
    })
}

fn engine() -> Engine {
    Engine::start(EngineConfig {
        mapping: WorkerMapping::run_to_completion(),
        ..Default::default()
    })
    .expect("engine")
}

fn spec(tag: &'static str, last: u8) -> HostSpec {
    HostSpec {
        tag,
        addr: Ipv4Addr::new(10, 213, 0, last),
        vnet_hdr: true,
        port_mtu: 1500,
    }
}

#[test]
#[ignore = "needs root"]
fn ping_tcp_256mib_and_isolation() {
    let engine = engine();
    let d1 = engine.add_domain(DomainConfig::default()).unwrap();
    let d2 = engine.add_domain(DomainConfig::default()).unwrap();
    let a = host(&engine, d1, spec("a", 1));
    let b = host(&engine, d1, spec("b", 2));
    // Same subnet, other network: only the switch keeps it apart.
    let c = host(&engine, d2, spec("c", 3));

    assert!(reach(&a, b.addr, 3), "a cannot ping b");
    assert!(reach(&b, a.addr, 3), "b cannot ping a");

    let (sent, got) = transfer(&a, &b, 256 << 20);
    assert_eq!(sent, got, "256 MiB arrived altered");

    assert!(!ping(&c, a.addr, 1), "c reached a across networks");
    assert!(!ping(&c, b.addr, 1), "c reached b across networks");
    assert!(!ping(&a, c.addr, 1), "a reached c across networks");

    let st = engine.stats();
    let port = |id: PortId| {
        st.ports
            .iter()
            .find(|p| p.id == id)
            .expect("port")
            .stats
            .clone()
    };
    let (pa, pc) = (port(a.port), port(c.port));
    assert!(pa.rx_packets > 0 && port(b.port).tx_packets > 0);
    // Nothing of network 1 (its ARP broadcasts included) ever left through c's port.
    let c_in = pc.rx_packets;
    assert!(c_in > 0, "c sent its ARP requests");
    assert_eq!(
        port(c.port).tx_packets,
        0,
        "frames leaked into the other network"
    );
    // The kernel handed over TSO superframes and they crossed unsegmented.
    assert!(
        pa.rx_bytes / pa.rx_packets > 3000,
        "no superframes seen: {pa:?}"
    );
    assert_eq!(port(b.port).tx_segmented, 0);
    engine.shutdown();
}

#[test]
#[ignore = "needs root"]
fn engine_segments_for_port_without_vnet_header() {
    let engine = engine();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let a = host(&engine, d, spec("s", 1));
    let b = host(
        &engine,
        d,
        HostSpec {
            vnet_hdr: false,
            ..spec("t", 2)
        },
    );
    let (sent, got) = transfer(&a, &b, 64 << 20);
    assert_eq!(sent, got, "segmented stream arrived altered");
    let st = engine.stats();
    let pb = &st.ports.iter().find(|p| p.id == b.port).unwrap().stats;
    assert!(
        pb.tx_segmented > 0,
        "expected software segmentation: {pb:?}"
    );
    assert_eq!(pb.tx_offload_errors, 0);
    // And the other way: plain frames from b reach a's offload port.
    let (sent, got) = transfer(&b, &a, 8 << 20);
    assert_eq!(sent, got);
    engine.shutdown();
}

#[test]
#[ignore = "needs root"]
fn engine_segments_for_smaller_mtu() {
    let engine = engine();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let a = host(&engine, d, spec("m", 1));
    let b = host(
        &engine,
        d,
        HostSpec {
            port_mtu: 1280,
            ..spec("n", 2)
        },
    );
    let (sent, got) = transfer(&a, &b, 64 << 20);
    assert_eq!(sent, got);
    let st = engine.stats();
    let pb = &st.ports.iter().find(|p| p.id == b.port).unwrap().stats;
    assert!(
        pb.tx_segmented > 0,
        "expected segmentation to the 1280 MTU: {pb:?}"
    );
    engine.shutdown();
}
