//! Software segmentation's bounds through the engine: a superframe with a tiny
//! `gso_size` towards a port without offloads is refused and counted, not fanned out over
//! the pool; an ordinary one is segmented as before.

use tapnet_engine::{DomainConfig, Engine, EngineConfig, MacAddr, MemPeer, MemPort, PortId};

const A: [u8; 6] = [2, 0x42, 10, 0, 0, 1];
const B: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
const PAYLOAD: usize = 8192;

/// An Ethernet + IPv4 + TCP frame from A to B with `PAYLOAD` bytes, full checksums left
/// to segmentation (no `F_NEEDS_CSUM`).
fn superframe() -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + PAYLOAD);
    f.extend_from_slice(&B);
    f.extend_from_slice(&A);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + PAYLOAD) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    // Ports 40000 → 5201, seq 1, ack 1, data offset 5, ACK, window 501.
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10]);
    f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]);
    f.extend((0..PAYLOAD).map(|i| i as u8));
    f
}

struct Net {
    engine: Engine,
    a: MemPeer,
    b: MemPeer,
    b_port: PortId,
}

fn net() -> Net {
    let engine = Engine::start(EngineConfig {
        pin: false,
        manual: true,
        ..Default::default()
    })
    .unwrap();
    let d = engine.add_domain(DomainConfig::default()).unwrap();
    let pool = engine.pool().clone();
    let (pa, a) = MemPort::pair("ga", pool.clone(), 256, 1500, false);
    let (pb, b) = MemPort::pair("gb", pool, 256, 1500, false);
    let a_port = engine.add_port(Box::new(pa), d).unwrap();
    let b_port = engine.add_port(Box::new(pb), d).unwrap();
    engine.add_static_mac(d, MacAddr(A), a_port).unwrap();
    engine.add_static_mac(d, MacAddr(B), b_port).unwrap();
    Net {
        engine,
        a,
        b,
        b_port,
    }
}

/// Sends the superframe from A with `gso_size`, runs the engine until it is idle (bounded)
/// and returns what B received plus B's counters.
fn send(n: &mut Net, gso_size: u16) -> (Vec<Vec<u8>>, tapnet_engine::port::PortStats) {
    let pool = n.a.pool().clone();
    let mut h = pool.alloc_copy(&superframe()).unwrap();
    let m = pool.get_mut(&mut h).meta;
    m.vnet.gso_type = 1; // GSO_TCPV4
    m.vnet.gso_size = gso_size;
    n.a.send_handle(h).unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut t = std::time::Duration::ZERO;
    for _ in 0..10_000 {
        t += std::time::Duration::from_micros(100);
        let moved = n.engine.step(t);
        while n.b.recv(&mut buf) {
            got.push(buf.clone());
        }
        if moved == 0 {
            break;
        }
    }
    let stats = n.engine.stats();
    let b = stats.ports.iter().find(|p| p.id == n.b_port).unwrap();
    (got, b.stats.clone())
}

#[test]
fn gso_size_one_is_refused_and_counted() {
    let mut n = net();
    let free = n.engine.pool().available();
    let (got, st) = send(&mut n, 1);
    assert!(
        got.is_empty(),
        "{} segments of a gso_size 1 superframe",
        got.len()
    );
    assert_eq!(st.tx_gso_refused, 1, "{st:?}");
    assert_eq!(st.tx_offload_errors, 1, "{st:?}");
    assert_eq!(st.tx_queue_full, 0, "{st:?}");
    assert_eq!(n.engine.pool().available(), free, "every slot is back");
    n.engine.shutdown();
}

#[test]
fn ordinary_gso_size_still_segments() {
    let mut n = net();
    let (got, st) = send(&mut n, 1448);
    assert_eq!(got.len(), PAYLOAD.div_ceil(1448), "{st:?}");
    assert!(got.iter().all(|f| f.len() <= 14 + 1500));
    let payload: Vec<u8> = got.iter().flat_map(|f| f[54..].to_vec()).collect();
    assert_eq!(payload, (0..PAYLOAD).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(st.tx_segmented, 1, "{st:?}");
    assert_eq!(st.tx_gso_refused, 0, "{st:?}");
    n.engine.shutdown();
}
