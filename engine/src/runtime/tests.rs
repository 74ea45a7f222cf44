use std::time::{Duration, Instant};

use super::*;
use crate::port::{MemPeer, MemPort};

#[test]
fn mapping_parse_and_validate() {
    assert_eq!(
        WorkerMapping::parse("rx,switch,tx").unwrap(),
        WorkerMapping::run_to_completion()
    );
    assert_eq!(
        WorkerMapping::parse("rx/switch,tx").unwrap(),
        WorkerMapping::pipeline()
    );
    assert_eq!(WorkerMapping::parse("rx/switch/tx").unwrap().0.len(), 3);
    assert_eq!(WorkerMapping::pipeline().to_string(), "rx/switch,tx");
    let e = WorkerMapping::parse("rx,switch").unwrap_err().to_string();
    assert!(e.contains("stage tx appears 0 times"), "{e}");
    let e = WorkerMapping::parse("rx,rx/switch,tx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stage rx appears 2 times"), "{e}");
    let e = WorkerMapping::parse("rx,nat,switch,tx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown stage \"nat\""), "{e}");
}

fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f[14] = tag;
    f
}

const A: [u8; 6] = [2, 0x42, 10, 0, 0, 1];
const B: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
const C: [u8; 6] = [2, 0x42, 10, 0, 0, 3];
const BCAST: [u8; 6] = [0xff; 6];

/// How long a wait for the workers may take (real time): on a loaded machine they may
/// not run for a while.
const LIMIT: Duration = Duration::from_secs(20);

/// Collect what `peer` receives until `n` frames or [`LIMIT`].
fn collect(peer: &mut MemPeer, n: usize, engine: Option<&Engine>) -> Vec<Vec<u8>> {
    collect_for(peer, n, engine, LIMIT)
}

/// Wait until `done`, up to [`LIMIT`]; whether it came.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Collect what `peer` receives until `n` frames or `wait`.
fn collect_for(
    peer: &mut MemPeer,
    n: usize,
    engine: Option<&Engine>,
    wait: Duration,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + wait;
    let mut t = Duration::ZERO;
    while got.len() < n && Instant::now() < deadline {
        if let Some(e) = engine {
            t += Duration::from_micros(100);
            e.step(t);
        }
        if peer.recv(&mut buf) {
            got.push(buf.clone());
        } else {
            std::thread::yield_now();
        }
    }
    got
}

struct Net {
    engine: Engine,
    peers: Vec<MemPeer>,
    ports: Vec<PortId>,
}

fn net(cfg: EngineConfig) -> Net {
    let engine = Engine::start(cfg).unwrap();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let mut peers = Vec::new();
    let mut ports = Vec::new();
    for (i, mac) in [A, B, C].into_iter().enumerate() {
        let (port, peer) = MemPort::pair(&format!("m{i}"), engine.pool().clone(), 256, 1500, false);
        let id = engine.add_port(Box::new(port), d).unwrap();
        engine.add_static_mac(d, MacAddr(mac), id).unwrap();
        peers.push(peer);
        ports.push(id);
    }
    Net {
        engine,
        peers,
        ports,
    }
}

fn unicast_and_flood(cfg: EngineConfig) {
    let manual = cfg.manual;
    let mut n = net(cfg);
    for i in 0..100u8 {
        assert!(n.peers[0].send(&frame(B, A, i)));
    }
    let got = collect(&mut n.peers[1], 100, manual.then_some(&n.engine));
    assert_eq!(got.len(), 100, "unicast A→B");
    assert!(
        got.iter().enumerate().all(|(i, f)| f[14] == i as u8),
        "order kept"
    );
    assert!(n.peers[0].send(&frame(BCAST, A, 200)));
    let e = manual.then_some(&n.engine);
    let b = collect(&mut n.peers[1], 1, e);
    let c = collect(&mut n.peers[2], 1, e);
    assert_eq!((b.len(), c.len()), (1, 1), "broadcast reaches B and C");
    assert!(
        collect_for(&mut n.peers[0], 1, e, Duration::from_millis(200)).is_empty(),
        "never back to the ingress port"
    );
    // A tx stage counts a batch after it handed it to the port, and a worker may free
    // a slot after the frame left: wait for the figures themselves.
    let settled = |e: &Engine| {
        let st = e.stats();
        let c_stats = &st.ports.iter().find(|p| p.id == n.ports[2]).unwrap().stats;
        c_stats.tx_packets == 1 && st.pool_free.small == e.config().pool.small_slots as usize
    };
    eventually(|| settled(&n.engine));
    let st = n.engine.stats();
    let c_stats = &st.ports.iter().find(|p| p.id == n.ports[2]).unwrap().stats;
    assert_eq!(c_stats.tx_packets, 1, "C saw only the broadcast");
    assert_eq!(
        st.pool_free.small,
        n.engine.config().pool.small_slots as usize,
        "no slot leaked"
    );
    n.engine.shutdown();
}

#[test]
fn run_to_completion_worker() {
    unicast_and_flood(EngineConfig {
        pin: false,
        ..Default::default()
    });
}

#[test]
fn pipeline_workers() {
    unicast_and_flood(EngineConfig {
        pin: false,
        mapping: WorkerMapping::pipeline(),
        ..Default::default()
    });
}

#[test]
fn three_workers() {
    let mapping = WorkerMapping::parse("rx/switch/tx").unwrap();
    unicast_and_flood(EngineConfig {
        pin: false,
        mapping,
        ..Default::default()
    });
}

#[test]
fn manual_mode() {
    unicast_and_flood(EngineConfig {
        manual: true,
        ..Default::default()
    });
}

#[test]
fn removed_port_gets_nothing_and_control_errors_are_clear() {
    let mut n = net(EngineConfig {
        pin: false,
        ..Default::default()
    });
    n.engine.remove_port(n.ports[1]).unwrap();
    assert!(n.peers[0].send(&frame(B, A, 1)));
    // B's MAC went with its port: the frame is now unknown unicast, flooded to C only.
    assert_eq!(collect(&mut n.peers[2], 1, None).len(), 1);
    assert!(collect_for(&mut n.peers[1], 1, None, Duration::from_millis(200)).is_empty());
    let e = n.engine.remove_port(n.ports[1]).unwrap_err().to_string();
    assert!(e.contains(&format!("no port {}", n.ports[1].0)), "{e}");
    let (port, _peer) = MemPort::pair("x", n.engine.pool().clone(), 8, 1500, false);
    let e = n
        .engine
        .add_port(Box::new(port), DomainId(77))
        .unwrap_err()
        .to_string();
    assert!(e.contains("77"), "error names the missing domain: {e}");
    n.engine.shutdown();
    assert!(matches!(
        n.engine.add_domain(DomainConfig::default()),
        Err(EngineError::Stopped)
    ));
}

#[test]
fn sleeping_worker_is_woken_by_a_memory_peer() {
    for mapping in [
        WorkerMapping::run_to_completion(),
        WorkerMapping::pipeline(),
    ] {
        let cfg = EngineConfig {
            pin: false,
            mapping,
            busy_poll: Duration::ZERO,
            // Far longer than the test: only a wake-up can deliver in time.
            max_sleep: Duration::from_secs(30),
            ..Default::default()
        };
        let mut n = net(cfg);
        // Bounded wait: on a loaded machine the workers may take a while to run at all.
        let asleep = || n.engine.stats().stages.iter().all(|s| s.stats.sleeps > 0);
        assert!(eventually(asleep), "idle workers sleep instead of spinning");
        // A worker counts a sleep after it marked itself sleeping and found its inputs
        // empty, just before it waits: from here, only a wake-up delivers in time.
        let t = Instant::now();
        assert!(n.peers[0].send(&frame(B, A, 9)));
        assert_eq!(collect(&mut n.peers[1], 1, None).len(), 1);
        // Far below `max_sleep`, with room for a loaded machine.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "woken, not timed out: {:?}",
            t.elapsed()
        );
        n.engine.shutdown();
    }
}

#[test]
fn frames_of_a_removed_port_never_enter_the_port_that_reuses_its_slot() {
    // Manual mode, one worker: rx reads up to `batch` frames per port per pass while
    // the switch takes `batch` per pass, so two busy ports leave frames in the ring.
    let engine = Engine::start(EngineConfig {
        manual: true,
        ..Default::default()
    })
    .unwrap();
    let red = engine.add_domain(DomainConfig::default()).unwrap();
    let blue = engine.add_domain(DomainConfig::default()).unwrap();
    let mem = |name: &str| MemPort::pair(name, engine.pool().clone(), 512, 1500, false);
    let (pw, mut w) = mem("w");
    let (px, mut x) = mem("x");
    let (pz, mut z) = mem("z");
    engine.add_port(Box::new(pw), red).unwrap();
    let x_id = engine.add_port(Box::new(px), red).unwrap();
    engine.add_port(Box::new(pz), blue).unwrap();
    for i in 0..256u32 {
        assert!(w.send(&frame(BCAST, A, i as u8)));
        assert!(x.send(&frame(BCAST, B, i as u8)));
    }
    engine.step(Duration::from_millis(1));
    // x goes; y, on the other network, takes its slot while x's frames are queued.
    engine.remove_port(x_id).unwrap();
    let (py, _y) = mem("y");
    let y_id = engine.add_port(Box::new(py), blue).unwrap();
    assert_ne!(y_id, x_id, "a reused slot gets a new generation");
    for t in 2..10 {
        engine.step(Duration::from_millis(t));
    }
    let mut buf = Vec::new();
    let mut leaked = 0;
    while z.recv(&mut buf) {
        leaked += 1;
    }
    assert_eq!(leaked, 0, "frames of red's removed port reached blue");
    let st = engine.stats();
    let switch = st
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Switch)
        .unwrap();
    assert!(
        switch.stats.drop_no_port > 0,
        "stale frames are counted: {:?}",
        switch.stats
    );
    assert!(
        engine.remove_port(x_id).is_err(),
        "the old id no longer names a port"
    );
    drop(w);
}

#[test]
fn a_memory_port_from_another_pool_is_refused() {
    let engine = Engine::start(EngineConfig {
        manual: true,
        ..Default::default()
    })
    .unwrap();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let other = Arc::new(crate::pool::BufferPool::new(
        crate::pool::PoolConfig::default(),
    ));
    let (port, _peer) = MemPort::pair("stray", other, 8, 1500, false);
    let e = engine.add_port(Box::new(port), d).unwrap_err().to_string();
    assert!(e.contains("another pool"), "{e}");
}

/// An IPv4 frame `src_ip` → 10.0.0.99 (UDP, no checksum needed by the switch).
fn ipv4_frame(dst: [u8; 6], src: [u8; 6], src_ip: [u8; 4], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src_ip);
    f[30..34].copy_from_slice(&[10, 0, 0, 99]);
    f[42] = tag;
    f
}

#[test]
fn bound_port_frames_with_foreign_sources_are_dropped() {
    let mut n = net(EngineConfig {
        manual: true,
        ..Default::default()
    });
    let e = &n.engine;
    let a_ip = std::net::IpAddr::from([10, 0, 0, 1]);
    e.set_port_binding(
        n.ports[0],
        Some(tapnet_switch::PortBinding::new(MacAddr(A), [a_ip])),
    )
    .unwrap();
    // B's MAC, B's address, then A's own.
    assert!(n.peers[0].send(&ipv4_frame(C, B, [10, 0, 0, 1], 1)));
    assert!(n.peers[0].send(&ipv4_frame(C, A, [10, 0, 0, 2], 2)));
    assert!(n.peers[0].send(&ipv4_frame(C, A, [10, 0, 0, 1], 3)));
    let got = collect_for(&mut n.peers[2], 3, Some(e), Duration::from_millis(300));
    let tags: Vec<u8> = got.iter().map(|f| f[42]).collect();
    assert_eq!(tags, [3], "only the frame from A's own addresses reaches C");
    let guard = e.port_guard_stats().unwrap();
    let a = guard.iter().find(|(p, _)| *p == n.ports[0]).unwrap();
    assert_eq!(a.1.spoof_drops, 2);
    assert_eq!(e.stats().domains[0].1.spoof_drops, 2);
    // Unbound, A may send from anything again.
    e.set_port_binding(n.ports[0], None).unwrap();
    assert!(n.peers[0].send(&ipv4_frame(C, A, [10, 0, 0, 2], 4)));
    let got = collect(&mut n.peers[2], 1, Some(e));
    assert_eq!(got.len(), 1);
    // A removed port cannot be bound (nor can its slot's next tenant by the old id).
    let old = n.ports[1];
    e.remove_port(old).unwrap();
    let err = e
        .set_port_binding(old, Some(tapnet_switch::PortBinding::mac_only(MacAddr(B))))
        .unwrap_err();
    assert!(err.to_string().contains("not attached"), "{err}");
    n.engine.shutdown();
}

fn threaded(mapping: WorkerMapping) -> Engine {
    Engine::start(EngineConfig {
        pin: false,
        mapping,
        ..Default::default()
    })
    .unwrap()
}

/// Longer than any deadline a control call ever had (10 s): a call to a stage this slow
/// must wait for it, not return while its message stays queued.
const SLOW: Duration = Duration::from_millis(10_500);

#[test]
fn a_call_to_a_slow_stage_is_applied_once_and_answered() {
    let engine = threaded(WorkerMapping::run_to_completion());
    engine
        .inject_fault(StageKind::Switch, Fault::Stall(SLOW))
        .unwrap();
    let t = Instant::now();
    let first = engine.add_domain(DomainConfig::default());
    assert!(
        first.is_ok(),
        "a slow stage is no failure: {first:?} after {:?}",
        t.elapsed()
    );
    // Had the first call given up while its message stayed queued, the stage would have
    // taken that id later, and this create would fail with "domain exists".
    let second = engine.add_domain(DomainConfig::default());
    assert!(second.is_ok(), "{second:?}");
    assert_ne!(first.unwrap(), second.unwrap());
    engine.shutdown();
}

#[test]
fn removing_a_port_behind_a_slow_stage_removes_it_everywhere() {
    // rx on one worker, switch and tx on the other: only the rx worker is slow.
    let engine = threaded(WorkerMapping::pipeline());
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let mem = |name: &str| MemPort::pair(name, engine.pool().clone(), 64, 1500, false);
    let (pa, _a) = mem("a");
    let a = engine.add_port(Box::new(pa), d).unwrap();
    engine.add_static_mac(d, MacAddr(A), a).unwrap();
    engine
        .inject_fault(StageKind::Rx, Fault::Stall(SLOW))
        .unwrap();
    let removed = engine.remove_port(a);
    assert!(removed.is_ok(), "{removed:?}");
    // The port, and its static MAC, left the switch: the MAC can go to a new port (an
    // endpoint that reuses the address, so the MAC).
    let (pb, _b) = mem("b");
    let b = engine.add_port(Box::new(pb), d).unwrap();
    let again = engine.add_static_mac(d, MacAddr(A), b);
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(engine.stats().ports.len(), 1, "only b is left");
    engine.shutdown();
}

#[test]
fn domain_ids_are_reused_after_removal() {
    let engine = Engine::start(EngineConfig {
        manual: true,
        ..Default::default()
    })
    .unwrap();
    for i in 0..5_000 {
        let d = engine
            .add_domain(DomainConfig::default())
            .unwrap_or_else(|e| panic!("create {i}: {e}"));
        engine.remove_domain(d).unwrap();
    }
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    // A reused id starts afresh: no counters, no learned MACs of the domain before.
    let mem = |name: &str| MemPort::pair(name, engine.pool().clone(), 64, 1500, false);
    let (pa, mut a) = mem("a");
    let (pb, mut b) = mem("b");
    let ia = engine.add_port(Box::new(pa), d).unwrap();
    let ib = engine.add_port(Box::new(pb), d).unwrap();
    assert!(a.send(&frame(BCAST, A, 1)));
    assert_eq!(collect(&mut b, 1, Some(&engine)).len(), 1);
    let counters = |d| {
        engine
            .stats()
            .domains
            .iter()
            .find(|(x, _)| *x == d)
            .map(|(_, c)| c.clone())
    };
    assert_eq!(counters(d).unwrap().learned, 1);
    engine.remove_port(ia).unwrap();
    engine.remove_port(ib).unwrap();
    engine.remove_domain(d).unwrap();
    assert!(counters(d).is_none(), "a removed domain has no counters");
    let again = engine.add_domain(DomainConfig::default()).unwrap();
    assert_eq!(again, d, "the lowest free id is reused");
    let c = counters(again).unwrap();
    assert_eq!((c.received, c.learned, c.flooded), (0, 0, 0), "{c:?}");
    // A's MAC is unknown in the new domain: a frame to it is flooded, not forwarded.
    let (pc, mut pc_peer) = mem("c");
    let (pd, mut pd_peer) = mem("d");
    engine.add_port(Box::new(pc), again).unwrap();
    engine.add_port(Box::new(pd), again).unwrap();
    assert!(pc_peer.send(&frame(A, B, 2)));
    assert_eq!(collect(&mut pd_peer, 1, Some(&engine)).len(), 1);
    let c = counters(again).unwrap();
    assert_eq!((c.forwarded, c.flooded_unknown), (0, 1), "{c:?}");
}

#[test]
fn a_panicking_worker_is_reported_and_calls_fail() {
    for stage in [StageKind::Rx, StageKind::Switch, StageKind::Tx] {
        let engine = threaded(WorkerMapping::pipeline());
        let d = engine.add_domain(DomainConfig::default()).unwrap();
        engine.inject_fault(stage, Fault::Panic).unwrap();
        eventually(|| engine.failed().is_some());
        let why = engine.failed().expect("the failure is reported");
        let worker = engine.config().mapping.worker_of(stage);
        assert!(
            why.contains(&format!("tapnet-w{worker}")) && why.contains("fault injected"),
            "{why}"
        );
        // A call to the dead worker fails at once (it could never be applied), as does
        // any call once the engine has failed: none waits.
        let t = Instant::now();
        let (p, _peer) = MemPort::pair("late", engine.pool().clone(), 8, 1500, false);
        let e = engine.add_port(Box::new(p), d).unwrap_err();
        assert!(matches!(e, EngineError::Failed(_)), "{stage:?}: {e:?}");
        assert!(e.to_string().contains("panicked"), "{e}");
        let e = engine.add_domain(DomainConfig::default()).unwrap_err();
        assert!(matches!(e, EngineError::Failed(_)), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        engine.shutdown();
    }
}

#[test]
fn a_port_over_its_flood_rate_is_read_a_few_frames_per_period() {
    let engine = Engine::start(EngineConfig {
        manual: true,
        batch: 32,
        ..Default::default()
    })
    .unwrap();
    let d = engine
        .add_domain(DomainConfig {
            flood_limit: Some(tapnet_switch::FloodLimit { rate: 1, burst: 4 }),
            ..DomainConfig::default()
        })
        .unwrap();
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for (i, mac) in [A, B].into_iter().enumerate() {
        let (port, peer) = MemPort::pair(&format!("f{i}"), engine.pool().clone(), 256, 1500, false);
        let id = engine.add_port(Box::new(port), d).unwrap();
        engine.add_static_mac(d, MacAddr(mac), id).unwrap();
        peers.push(peer);
        ids.push(id);
    }
    // A storm of 200 broadcasts from A.
    for tag in 0..200u8 {
        assert!(peers[0].send(&frame(BCAST, A, tag)));
    }
    let read = |e: &Engine| {
        let s = e.stats();
        let p = s.ports.iter().find(|p| p.id == ids[0]).unwrap();
        (p.stats.rx_packets, p.stats.rx_flood_throttled)
    };
    let now = Duration::from_secs(1);
    // The first pass reads a whole batch; the switch passes the burst and drops the
    // rest for the flood rate, which throttles A.
    engine.step(now);
    assert_eq!(read(&engine), (32, 0));
    // Within the period A gets one read of a few frames, however often the stages run.
    for _ in 0..10 {
        engine.step(now);
    }
    assert_eq!(read(&engine), (32 + FLOOD_READ_BATCH as u64, 1));
    // B is not throttled: its frame reaches A in the same period.
    let mut buf = Vec::new();
    while peers[0].recv(&mut buf) {}
    assert!(peers[1].send(&frame(A, B, 1)));
    engine.step(now);
    assert!(peers[0].recv(&mut buf), "B's frame was held back with A's");
    assert_eq!(buf[6..12], B);
    // Each read period, a few frames more; they are floods too, so A stays throttled.
    for k in 1..=3u32 {
        engine.step(now + FLOOD_READ_PERIOD * k);
        assert_eq!(
            read(&engine),
            (
                32 + FLOOD_READ_BATCH as u64 * u64::from(k + 1),
                u64::from(k + 1)
            )
        );
    }
    // Once the throttle has run out, A is read in whole batches again.
    let read_so_far = read(&engine).0;
    engine.step(now + FLOOD_THROTTLE * 5);
    assert_eq!(read(&engine).0, read_so_far + 32);
}

/// A DNS query over UDP from `mac`/`src` port 5353 to `gw`:53 (IPv4 header checksum
/// filled, no UDP checksum).
fn dns_query(mac: [u8; 6], src: std::net::Ipv4Addr, gw: std::net::Ipv4Addr, id: u16) -> Vec<u8> {
    let mut dns = id.to_be_bytes().to_vec();
    dns.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    dns.extend_from_slice(b"\x03web\x00\x00\x01\x00\x01");
    let mut udp = vec![0x14, 0xe9, 0, 53, 0, 0, 0, 0];
    udp[4..6].copy_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&dns);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&gw.octets());
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = MacAddr::from_ipv4(gw).0.to_vec();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

#[test]
fn dns_queries_over_the_rate_are_dropped_on_the_worker_and_throttle_their_port() {
    use std::net::Ipv4Addr;
    use std::sync::OnceLock;

    use rtrb::RingBuffer;
    use tapnet_nat::GatewayConfig;
    use tapnet_nat::dns::DnsCounters;

    use crate::port::GatewayPort;
    use crate::port::gateway::{DnsLimit, Uplink};

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    let engine = Engine::start(EngineConfig {
        manual: true,
        batch: 32,
        ..Default::default()
    })
    .unwrap();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    // The gateway's uplink, with this test as the host thread.
    let (to_host, mut from_engine) = RingBuffer::new(1024);
    let (_to_engine, from_host) = RingBuffer::new(1024);
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let dns = Arc::new(DnsCounters::default());
    let cfg = GatewayConfig {
        mac: MacAddr::from_ipv4(GW),
        ip: GW,
        prefix_len: 24,
        internal: false,
    };
    let (gw, _) = GatewayPort::with_uplink(
        cfg,
        engine.pool().clone(),
        1500,
        Uplink {
            to_host,
            from_host,
            wake_host: waker,
            notifier: Arc::new(OnceLock::new()),
            dns_limit: Some(DnsLimit {
                rate: 1,
                burst: 4,
                counters: dns.clone(),
            }),
        },
    );
    let gw_id = engine.add_gateway_port(Box::new(gw), d).unwrap();
    engine
        .add_static_mac(d, MacAddr::from_ipv4(GW), gw_id)
        .unwrap();
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for (i, mac) in [A, B].into_iter().enumerate() {
        let (port, peer) = MemPort::pair(&format!("q{i}"), engine.pool().clone(), 256, 1500, false);
        let id = engine.add_port(Box::new(port), d).unwrap();
        engine.add_static_mac(d, MacAddr(mac), id).unwrap();
        peers.push(peer);
        ids.push(id);
    }
    // A floods the gateway with 200 queries.
    for id in 0..200u16 {
        assert!(peers[0].send(&dns_query(A, IP_A, GW, id)));
    }
    let read = |e: &Engine| {
        let s = e.stats();
        let p = s.ports.iter().find(|p| p.id == ids[0]).unwrap();
        (p.stats.rx_packets, p.stats.rx_flood_throttled)
    };
    let up = |ring: &mut rtrb::Consumer<crate::pool::Handle>| {
        let mut srcs = Vec::new();
        while let Ok(h) = ring.pop() {
            srcs.push(engine.pool().frame(&h)[26..30].to_vec());
            engine.pool().free(h);
        }
        srcs
    };
    let now = Duration::from_secs(1);
    // The first pass reads a whole batch: the burst goes up to the host thread, the
    // rest is dropped on the worker and counted, and A is throttled.
    engine.step(now);
    assert_eq!(up(&mut from_engine).len(), 4);
    assert_eq!(dns.snapshot().rate_limited, 28);
    assert_eq!(read(&engine), (32, 0));
    // Within the period A gets one read of a few frames, however often the stages run;
    // they are over the rate too.
    for _ in 0..10 {
        engine.step(now);
    }
    assert_eq!(read(&engine), (32 + FLOOD_READ_BATCH as u64, 1));
    assert!(up(&mut from_engine).is_empty());
    assert_eq!(dns.snapshot().rate_limited, 28 + FLOOD_READ_BATCH as u64);
    // B asks in the same period: its query goes up.
    assert!(peers[1].send(&dns_query(B, IP_B, GW, 1)));
    engine.step(now);
    assert_eq!(up(&mut from_engine), vec![IP_B.octets().to_vec()]);
    // A keeps being read a few frames per period while it floods.
    engine.step(now + FLOOD_READ_PERIOD);
    assert_eq!(read(&engine), (32 + 2 * FLOOD_READ_BATCH as u64, 2));
}
