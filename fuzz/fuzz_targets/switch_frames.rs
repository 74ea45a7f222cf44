//! Sequences of frames from several ports through `tapnet_switch::Switch`, with MAC
//! aging, port moves, statics and detaches in between.
//!
//! Three domains: 0 with ICC on (endpoints 1, 2, 3, gateway 4), 1 with ICC off
//! (endpoints 5, 6, gateway 7), 2 with ICC off and no gateway (endpoint 8); tables of 8
//! learned entries so that a full table is reached. Frames take their MACs from a small
//! set (plus random ones) so that learning, moves and hairpins happen.
//!
//! Invariants, after every frame: a `Forward` goes to another port of the ingress
//! domain (a gateway when the ingress is isolated); a `Flood` is of the ingress domain
//! and its targets are the domain's ports but the ingress (only gateways when
//! isolated); no table holds more than its capacity of learned entries; `processed`
//! counts every call.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet_fuzz::Input;
use tapnet_switch::{
    Decision, DomainConfig, DomainId, MacAddr, PortId, PortRole, Switch, TableConfig,
};

/// Learned entries per table.
const CAPACITY: usize = 8;
/// Ports 1-8 and their domains and roles (see the module docs); 9 is never attached.
const PORTS: [(u32, u32, PortRole); 8] = [
    (1, 0, PortRole::Endpoint),
    (2, 0, PortRole::Endpoint),
    (3, 0, PortRole::Endpoint),
    (4, 0, PortRole::Gateway),
    (5, 1, PortRole::Endpoint),
    (6, 1, PortRole::Endpoint),
    (7, 1, PortRole::Gateway),
    (8, 2, PortRole::Endpoint),
];

fn mac(input: &mut Input<'_>) -> MacAddr {
    match input.u8() % 8 {
        0 => MacAddr::BROADCAST,
        1 => MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        2 => MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        3 => MacAddr::ZERO,
        4 => {
            let b = input.bytes(6);
            let mut m = [0u8; 6];
            m[..b.len()].copy_from_slice(b);
            MacAddr(m)
        }
        n => MacAddr([0x02, 0x42, 0, 0, 0, n + input.u8() % 4]),
    }
}

// Settings added to the switch later keep their defaults.
#[allow(clippy::needless_update)]
fn setup() -> Switch {
    let mut sw = Switch::new();
    for (d, icc) in [(0, true), (1, false), (2, false)] {
        let table = TableConfig {
            capacity: CAPACITY,
            aging: Duration::from_secs(300),
            ..TableConfig::default()
        };
        let cfg = DomainConfig {
            table,
            icc,
            ..DomainConfig::default()
        };
        sw.add_domain(DomainId(d), cfg).unwrap();
    }
    for (p, d, role) in PORTS {
        sw.attach_as(PortId(p), DomainId(d), role).unwrap();
    }
    sw
}

fn check(sw: &Switch, ingress: PortId, decision: Decision) {
    let domain = sw.domain_of(ingress);
    let isolated =
        |d: DomainId| sw.icc(d) == Some(false) && sw.role_of(ingress) != Some(PortRole::Gateway);
    match decision {
        Decision::Forward(p) => {
            assert_ne!(p, ingress, "never back out of the ingress");
            let d = domain.expect("forwarded from an attached port");
            assert_eq!(sw.domain_of(p), Some(d), "frames never cross domains");
            if isolated(d) {
                assert_eq!(sw.role_of(p), Some(PortRole::Gateway));
            }
        }
        Decision::Flood(d) => {
            assert_eq!(domain, Some(d), "flooded in the ingress domain");
            for t in sw.flood_targets(d, ingress) {
                assert_ne!(t, ingress);
                assert_eq!(sw.domain_of(t), Some(d));
                if isolated(d) {
                    assert_eq!(sw.role_of(t), Some(PortRole::Gateway));
                }
            }
        }
        Decision::Drop(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sw = setup();
    let mut input = Input::new(data);
    let mut now = Duration::from_secs(1);
    let mut calls = 0u64;
    while !input.is_empty() {
        let op = input.u8();
        let port = PortId(u32::from(input.u8() % 9) + 1);
        match op % 16 {
            // A frame built from chosen MACs, an ethertype and a payload.
            0..=9 => {
                let (dst, src) = (mac(&mut input), mac(&mut input));
                let mut frame = Vec::with_capacity(64);
                frame.extend_from_slice(&dst.0);
                frame.extend_from_slice(&src.0);
                frame.extend_from_slice(input.bytes(2));
                frame.extend_from_slice(input.chunk());
                let decision = sw.process(port, &frame, now);
                calls += 1;
                check(&sw, port, decision);
            }
            // Raw bytes.
            10 => {
                let frame = input.chunk();
                let decision = sw.process(port, frame, now);
                calls += 1;
                check(&sw, port, decision);
            }
            // Time passes (up to ~18 hours); aging runs when due.
            11 => {
                now += Duration::from_millis(u64::from(input.u16()) * u64::from(input.u8()));
                if sw.poll_timeout().is_some_and(|t| t <= now) {
                    sw.handle_timeout(now);
                }
            }
            // A port leaves, or comes back to its domain.
            12 => match PORTS.iter().find(|(p, _, _)| *p == port.0) {
                Some(&(p, d, role)) if sw.domain_of(port).is_none() => {
                    sw.attach_as(PortId(p), DomainId(d), role).unwrap();
                }
                _ => {
                    let _ = sw.detach(port);
                }
            },
            // A static entry.
            13 => {
                let m = mac(&mut input);
                if let Some(d) = sw.domain_of(port) {
                    let _ = sw.add_static(d, m, port);
                }
            }
            14 => {
                let m = mac(&mut input);
                let _ = sw.remove_static(DomainId(u32::from(input.u8() % 4)), m);
            }
            _ => sw.handle_timeout(now),
        }
        for d in sw.domains() {
            let t = sw.table(d).expect("a listed domain has a table");
            assert!(t.learned_len() <= CAPACITY, "{} learned", t.learned_len());
        }
    }
    assert_eq!(sw.counters().snapshot().processed, calls);
});
