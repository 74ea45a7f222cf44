//! The engine-owned gateway address and the ICC policy, through the rig: smoltcp hosts
//! resolve and ping the gateway of their network (a `GatewayPort` attached as the domain's
//! gateway), and with `enable_icc=false` reach it but not each other.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use tapnet_engine::port::{GatewayHandle, GatewayPort};
use tapnet_engine::rig::{HostId, Rig, RigError};
use tapnet_engine::{
    DomainConfig, DomainId, Engine, EngineConfig, MacAddr, MemPort, PortId, StageKind,
    WorkerMapping,
};
use tapnet_nat::{GatewayConfig, GatewayCountersSnapshot};
use tapnet_switch::DomainCountersSnapshot;

const SEC: Duration = Duration::from_secs(1);

/// An address of 10.0.`net`.0/24.
fn ip(net: u8, last: u8) -> Ipv4Address {
    Ipv4Address::new(10, 0, net, last)
}

fn cidr(net: u8, last: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(ip(net, last), 24)
}

/// TEST-NET-1 (RFC 5737): outside every rig network; nothing leaves the process anyway.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Gives `net` a gateway at 10.0.`subnet`.1/24 and pins its MAC, as the daemon will.
fn add_gateway(rig: &Rig, net: DomainId, subnet: u8, internal: bool) -> (GatewayHandle, PortId) {
    let gw = ip(subnet, 1);
    let cfg = GatewayConfig {
        mac: MacAddr::from_ipv4(gw),
        ip: gw,
        prefix_len: 24,
        internal,
    };
    let (port, handle) = GatewayPort::new(cfg, rig.engine().pool().clone(), rig.config().mtu);
    let engine = rig.engine();
    let id = engine.add_gateway_port(Box::new(port), net).unwrap();
    engine.add_static_mac(net, cfg.mac, id).unwrap();
    (handle, id)
}

/// Hosts 10.0.`subnet`.2, .3, … on `net`, with the gateway .1 as default route.
fn hosts(rig: &mut Rig, net: DomainId, subnet: u8, n: u8) -> Vec<HostId> {
    (0..n)
        .map(|i| {
            let name = format!("n{subnet}-h{i}");
            rig.add_host(&name, net, cidr(subnet, 2 + i), Some(ip(subnet, 1)))
                .unwrap()
        })
        .collect()
}

fn domain(rig: &Rig, d: DomainId) -> DomainCountersSnapshot {
    rig.engine()
        .stats()
        .domains
        .into_iter()
        .find(|(id, _)| *id == d)
        .map(|(_, c)| c)
        .unwrap_or_default()
}

#[test]
fn hosts_resolve_and_ping_the_gateway() {
    let mut rig = Rig::new(11);
    let lan = rig.add_network("lan").unwrap();
    let (gw, gw_port) = add_gateway(&rig, lan, 0, false);
    let h = hosts(&mut rig, lan, 0, 2);
    for &a in &h {
        let r = rig.ping(a, ip(0, 1), 3, 2 * SEC);
        assert_eq!((r.sent, r.received), (3, 3), "{a} -> gateway: {r:?}");
        assert!(
            rig.arp_seen(a, ip(0, 1)),
            "{a} never heard the gateway's ARP"
        );
    }
    let c = gw.snapshot();
    assert_eq!(c.echo_replies, 6, "{c:?}");
    assert!(c.arp_replies >= 2, "{c:?}");
    assert_eq!(
        c.drop_malformed + c.drop_no_room + c.drop_unsupported,
        0,
        "{c:?}"
    );

    // The gateway's port saw every request and sent every reply back.
    let stats = rig.engine().stats();
    let port = stats.ports.iter().find(|p| p.id == gw_port).unwrap();
    assert_eq!(port.stats.rx_packets, c.echo_replies + c.arp_replies);
    assert_eq!(port.stats.tx_packets, c.received);

    // Outside the subnet there is no route yet (NAT comes later): no answer, counted.
    let r = rig.ping(h[0], OUTSIDE, 2, SEC);
    assert_eq!(r.received, 0, "{r:?}");
    assert_eq!(gw.snapshot().drop_no_route, 2);
}

#[test]
fn hosts_on_other_networks_cannot_reach_the_gateway() {
    let mut rig = Rig::new(12);
    let lan = rig.add_network("lan").unwrap();
    let (gw, _) = add_gateway(&rig, lan, 0, false);
    let _lan_hosts = hosts(&mut rig, lan, 0, 1);
    // Another network with another subnet whose own gateway does not exist, and one with
    // the very same subnet: neither reaches lan's gateway.
    let other = rig.add_network("other").unwrap();
    let o = hosts(&mut rig, other, 1, 1)[0];
    let twin = rig.add_network("twin").unwrap();
    let t = hosts(&mut rig, twin, 0, 1)[0];
    let before = gw.snapshot();
    for from in [o, t] {
        let r = rig.ping(from, ip(0, 1), 2, SEC);
        assert_eq!(r.received, 0, "{from} reached lan's gateway: {r:?}");
        assert!(!rig.arp_seen(from, ip(0, 1)));
    }
    assert_eq!(gw.snapshot(), before);
}

#[test]
fn icc_off_reaches_the_gateway_but_not_the_neighbour() {
    let mut rig = Rig::new(13);
    let cfg = DomainConfig {
        icc: false,
        ..DomainConfig::default()
    };
    let net = rig.add_network_with("no-icc", cfg).unwrap();
    let (gw, _) = add_gateway(&rig, net, 0, false);
    let h = hosts(&mut rig, net, 0, 2);
    for &a in &h {
        let r = rig.ping(a, ip(0, 1), 3, 2 * SEC);
        assert_eq!(r.received, 3, "{a} -> gateway: {r:?}");
    }
    let r = rig.ping(h[0], rig.ip(h[1]), 3, SEC);
    assert_eq!(r.received, 0, "ICC off, yet h0 reached h1: {r:?}");
    let t = rig.tcp_transfer(h[1], h[0], 5001, 64 * 1024, 3 * SEC);
    assert!(
        matches!(
            t,
            Err(RigError::Timeout { done: 0, .. } | RigError::Reset { received: 0 })
        ),
        "ICC off, yet TCP went through: {t:?}"
    );
    // The neighbours' ARP requests went to the gateway only, which ignored them.
    for a in [h[0], h[1]] {
        let other = if a == h[0] { h[1] } else { h[0] };
        assert!(
            !rig.arp_seen(other, rig.ip(a)),
            "{other} heard ARP from {a}"
        );
    }
    assert!(gw.snapshot().drop_not_for_us > 0);
    let d = domain(&rig, net);
    assert_eq!(d.drop_isolated, 0, "{d:?}"); // nothing unicast between them at all
}

#[test]
fn icc_on_lets_neighbours_talk_beside_the_gateway() {
    let mut rig = Rig::new(14);
    let net = rig.add_network("icc").unwrap();
    let (gw, _) = add_gateway(&rig, net, 0, false);
    let h = hosts(&mut rig, net, 0, 2);
    let r = rig.ping(h[0], rig.ip(h[1]), 3, 2 * SEC);
    assert_eq!(r.received, 3, "{r:?}");
    let t = rig
        .tcp_transfer(h[1], h[0], 5001, 64 * 1024, 5 * SEC)
        .unwrap();
    assert_eq!(t.bytes, 64 * 1024);
    let r = rig.ping(h[1], ip(0, 1), 3, 2 * SEC);
    assert_eq!(r.received, 3, "{r:?}");
    assert_eq!(gw.snapshot().echo_replies, 3);
}

#[test]
fn internal_network_answers_inside_and_drops_outside() {
    let mut rig = Rig::new(15);
    let net = rig.add_network("internal").unwrap();
    let (gw, _) = add_gateway(&rig, net, 0, true);
    let h = hosts(&mut rig, net, 0, 1)[0];
    let r = rig.ping(h, ip(0, 1), 3, 2 * SEC);
    assert_eq!(r.received, 3, "{r:?}");
    let r = rig.ping(h, OUTSIDE, 2, SEC);
    assert_eq!(r.received, 0, "{r:?}");
    let c = gw.snapshot();
    assert_eq!(
        (c.echo_replies, c.drop_internal, c.drop_no_route),
        (3, 2, 0),
        "{c:?}"
    );
    assert_eq!(
        GatewayCountersSnapshot {
            received: 0,
            arp_replies: 0,
            drop_not_for_us: 0,
            ..c.clone()
        },
        GatewayCountersSnapshot {
            echo_replies: 3,
            drop_internal: 2,
            ..Default::default()
        },
        "only echo replies and internal drops besides ARP"
    );
}

/// A threaded engine with a gateway port and one memory host on one network.
fn threaded(mapping: &WorkerMapping) -> (Engine, GatewayHandle, tapnet_engine::MemPeer) {
    let engine = Engine::start(EngineConfig {
        mapping: mapping.clone(),
        pin: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let net = engine.add_domain(DomainConfig::default()).unwrap();
    let gw_ip = ip(0, 1);
    let cfg = GatewayConfig {
        mac: MacAddr::from_ipv4(gw_ip),
        ip: gw_ip,
        prefix_len: 24,
        internal: false,
    };
    let (port, gw) = GatewayPort::new(cfg, engine.pool().clone(), 1500);
    engine.add_gateway_port(Box::new(port), net).unwrap();
    let (port, peer) = MemPort::pair("h", engine.pool().clone(), 64, 1500, false);
    engine.add_port(Box::new(port), net).unwrap();
    (engine, gw, peer)
}

/// How often the rx and the tx stage have gone to sleep.
fn sleeps(e: &Engine) -> Vec<u64> {
    let stats = e.stats();
    [StageKind::Rx, StageKind::Tx]
        .iter()
        .map(|k| {
            stats
                .stages
                .iter()
                .find(|s| s.kind == *k)
                .map_or(0, |s| s.stats.sleeps)
        })
        .collect()
}

/// Waits until the rx and the tx stage have each gone to sleep more often than `than`
/// says; returns their counts. Bounded: 20 s (a loaded machine may not run them for a
/// while), polling every millisecond at most 20,000 times.
fn slept_since(e: &Engine, than: &[u64], what: &str) -> Vec<u64> {
    let deadline = Instant::now() + 20 * SEC;
    for _ in 0..20_000 {
        let now = sleeps(e);
        if now.iter().zip(than).all(|(n, t)| n > t) {
            return now;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "{what}: a worker did not sleep ({than:?} -> {:?})",
        sleeps(e)
    );
}

/// The gateway on a threaded engine, with every stage on one worker and with rx on its
/// own: the reply made on the tx stage's thread reaches the rx stage.
#[test]
fn threaded_engine_answers() {
    for mapping in [
        WorkerMapping::run_to_completion(),
        WorkerMapping::pipeline(),
    ] {
        let (engine, gw, mut peer) = threaded(&mapping);
        // 10.0.0.2 asks who has 10.0.0.1.
        let host = MacAddr::from_ipv4(ip(0, 2));
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&host.0);
        req.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        req.extend_from_slice(&host.0);
        req.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        for round in 0..3 {
            assert!(peer.send(&req));
            let deadline = Instant::now() + 20 * SEC;
            let mut reply = Vec::new();
            while !peer.recv(&mut reply) {
                assert!(Instant::now() < deadline, "{mapping}: no ARP reply");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(reply.len(), 42, "{mapping}");
            assert_eq!(&reply[..6], &host.0);
            assert_eq!(&reply[22..28], &gw.config().mac.0);
            assert_eq!(gw.snapshot().arp_replies, round + 1);
            // The workers go idle between rounds: the next reply must wake them.
            slept_since(&engine, &sleeps(&engine), &format!("{mapping}"));
        }
        engine.shutdown();
    }
}

/// Once idle, the workers of an engine with a gateway port sleep instead of spinning on
/// its polled ring.
#[test]
fn threaded_engine_idles_with_a_gateway() {
    for mapping in [
        WorkerMapping::run_to_completion(),
        WorkerMapping::pipeline(),
    ] {
        let (engine, _gw, _peer) = threaded(&mapping);
        let what = format!("{mapping}");
        // Gone idle, then asleep again and again: a worker spinning on the ring never is.
        let mut seen = slept_since(&engine, &[0, 0], &what);
        for _ in 0..3 {
            seen = slept_since(&engine, &seen, &what);
        }
        engine.shutdown();
    }
}
