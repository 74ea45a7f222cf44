//! End to end through the engine's library API, on real TAPs in network namespaces this
//! test creates (root only: `#[ignore = "needs root"]`). Kernel TCP on both sides.

use std::net::{IpAddr, Ipv4Addr};

use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::NetNsGuard;
use tapnet_engine::sys::tap::{TapConfig, create_tap_in};
use tapnet_engine::{DomainConfig, DomainId, Engine, EngineConfig, PortId, TapPort, WorkerMapping};
use tapnet_tests::e2e::{ping, reach, tcp};

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

    assert!(reach(&a.ns, b.addr, 3, &[]), "a cannot ping b");
    assert!(reach(&b.ns, a.addr, 3, &[]), "b cannot ping a");

    let (sent, got) = tcp(&a.ns, &b.ns, b.addr, 256 << 20);
    assert_eq!(sent, got, "256 MiB arrived altered");

    assert!(!ping(&c.ns, a.addr, 1, &[]), "c reached a across networks");
    assert!(!ping(&c.ns, b.addr, 1, &[]), "c reached b across networks");
    assert!(!ping(&a.ns, c.addr, 1, &[]), "a reached c across networks");

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
    let (sent, got) = tcp(&a.ns, &b.ns, b.addr, 64 << 20);
    assert_eq!(sent, got, "segmented stream arrived altered");
    let st = engine.stats();
    let pb = &st.ports.iter().find(|p| p.id == b.port).unwrap().stats;
    assert!(
        pb.tx_segmented > 0,
        "expected software segmentation: {pb:?}"
    );
    assert_eq!(pb.tx_offload_errors, 0);
    // And the other way: plain frames from b reach a's offload port.
    let (sent, got) = tcp(&b.ns, &a.ns, a.addr, 8 << 20);
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
    let (sent, got) = tcp(&a.ns, &b.ns, b.addr, 64 << 20);
    assert_eq!(sent, got);
    let st = engine.stats();
    let pb = &st.ports.iter().find(|p| p.id == b.port).unwrap().stats;
    assert!(
        pb.tx_segmented > 0,
        "expected segmentation to the 1280 MTU: {pb:?}"
    );
    engine.shutdown();
}
