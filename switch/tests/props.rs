//! Property tests of the switch through its public API only.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tapnet_switch::{
    Decision, DomainConfig, DomainId, DropReason, MacAddr, PortId, PortRole, Switch, TableConfig,
};

const DOMAINS: u32 = 4;
const PORTS: u32 = 14;

/// A small MAC pool so that sources are reused as destinations; the last few
/// are broadcast, multicast and zero.
fn pool_mac(i: u8) -> MacAddr {
    match i {
        0..=11 => MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, i]),
        12 => MacAddr::BROADCAST,
        13 => MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]),
        14 => MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]),
        _ => MacAddr::ZERO,
    }
}

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f.truncate(len);
    f
}

#[derive(Debug, Clone)]
enum Step {
    Frame {
        port: u32,
        dst: u8,
        src: u8,
        len: usize,
    },
    Attach {
        port: u32,
        domain: u32,
        role: PortRole,
    },
    Detach {
        port: u32,
    },
    Timer,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (0..PORTS, 0..16u8, 0..16u8, prop_oneof![9 => Just(60usize), 1 => 0..20usize])
            .prop_map(|(port, dst, src, len)| Step::Frame { port, dst, src, len }),
        1 => (0..PORTS, 0..DOMAINS, role())
            .prop_map(|(port, domain, role)| Step::Attach { port, domain, role }),
        1 => (0..PORTS).prop_map(|port| Step::Detach { port }),
        1 => Just(Step::Timer),
    ]
}

/// Mostly endpoints, a gateway now and then.
fn role() -> impl Strategy<Value = PortRole> {
    prop_oneof![4 => Just(PortRole::Endpoint), 1 => Just(PortRole::Gateway)]
}

proptest! {
    /// Frames from random ports across 4 domains, some with inter-container
    /// communication off, with ports (endpoints and gateways) attached and
    /// detached along the way: every Forward/Flood target is in the ingress
    /// port's domain and is never the ingress port; with ICC off no frame ever
    /// goes from an endpoint to an endpoint; and every decision matches a
    /// simple "last port seen" model of the table plus the ICC rule.
    #[test]
    fn frames_never_leave_their_domain(
        icc in proptest::collection::vec(any::<bool>(), DOMAINS as usize),
        initial in proptest::collection::vec(
            proptest::option::of((0..DOMAINS, role())),
            PORTS as usize,
        ),
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let mut sw = Switch::new();
        for (d, &icc) in icc.iter().enumerate() {
            let cfg = DomainConfig { icc, ..DomainConfig::default() };
            sw.add_domain(DomainId(d as u32), cfg).unwrap();
        }
        // port -> (domain, role), kept apart from the switch's own view.
        let mut attached: HashMap<PortId, (DomainId, PortRole)> = HashMap::new();
        for (p, a) in initial.iter().enumerate() {
            if let Some((d, role)) = *a {
                sw.attach_as(PortId(p as u32), DomainId(d), role).unwrap();
                attached.insert(PortId(p as u32), (DomainId(d), role));
            }
        }
        // (domain, mac) -> port it was last seen on. Aging (300 s) never
        // triggers: time advances 1 ms per step.
        let mut model: HashMap<(DomainId, MacAddr), PortId> = HashMap::new();
        let mut now = Duration::ZERO;
        for s in steps {
            now += Duration::from_millis(1);
            match s {
                Step::Attach { port, domain, role } => {
                    if sw.attach_as(PortId(port), DomainId(domain), role).is_ok() {
                        attached.insert(PortId(port), (DomainId(domain), role));
                    }
                }
                Step::Detach { port } => {
                    if sw.detach(PortId(port)).is_ok() {
                        model.retain(|_, p| *p != PortId(port));
                        attached.remove(&PortId(port));
                    }
                }
                Step::Timer => {
                    if sw.poll_timeout().is_some_and(|t| t <= now) {
                        sw.handle_timeout(now);
                    }
                }
                Step::Frame { port, dst, src, len } => {
                    let ingress = PortId(port);
                    let (dst, src) = (pool_mac(dst), pool_mac(src));
                    let decision = sw.process(ingress, &frame(dst, src, len), now);
                    let Some(&(dom, in_role)) = attached.get(&ingress) else {
                        let want = if len < 14 { DropReason::Malformed } else { DropReason::NoDomain };
                        prop_assert_eq!(decision, Decision::Drop(want));
                        continue;
                    };
                    prop_assert_eq!(sw.domain_of(ingress), Some(dom));
                    let isolated = !icc[dom.0 as usize] && in_role == PortRole::Endpoint;
                    let role_of = |p: PortId| attached.get(&p).map(|a| a.1);
                    match decision {
                        Decision::Forward(p) => {
                            prop_assert_ne!(p, ingress);
                            prop_assert_eq!(sw.domain_of(p), Some(dom));
                            if isolated {
                                prop_assert_eq!(role_of(p), Some(PortRole::Gateway));
                            }
                        }
                        Decision::Flood(d) => {
                            prop_assert_eq!(d, dom);
                            for t in sw.flood_targets(d, ingress) {
                                prop_assert_ne!(t, ingress);
                                prop_assert_eq!(sw.domain_of(t), Some(dom));
                                if isolated {
                                    prop_assert_eq!(role_of(t), Some(PortRole::Gateway));
                                }
                            }
                            // Nobody the policy allows is left out.
                            let want: Vec<PortId> = sw
                                .ports(dom)
                                .iter()
                                .copied()
                                .filter(|&p| p != ingress)
                                .filter(|&p| !isolated || role_of(p) == Some(PortRole::Gateway))
                                .collect();
                            let got: Vec<PortId> = sw.flood_targets(d, ingress).collect();
                            prop_assert_eq!(got, want);
                        }
                        Decision::Drop(_) => {}
                    }
                    // The model's answer.
                    let has_gateway = attached
                        .values()
                        .any(|&(d, r)| d == dom && r == PortRole::Gateway);
                    let flood = if isolated && !has_gateway {
                        Decision::Drop(DropReason::Isolated)
                    } else {
                        Decision::Flood(dom)
                    };
                    let want = if len < 14 {
                        Decision::Drop(DropReason::Malformed)
                    } else if src.is_multicast() || src.is_zero() {
                        Decision::Drop(DropReason::BadSource)
                    } else {
                        model.insert((dom, src), ingress);
                        match model.get(&(dom, dst)) {
                            _ if dst.is_multicast() => flood,
                            Some(&p) if p == ingress => Decision::Drop(DropReason::Hairpin),
                            Some(&p) if isolated && role_of(p) != Some(PortRole::Gateway) => {
                                Decision::Drop(DropReason::Isolated)
                            }
                            Some(&p) => Decision::Forward(p),
                            None => flood,
                        }
                    };
                    prop_assert_eq!(decision, want);
                }
            }
        }
        // Counters add up.
        let sc = sw.counters().snapshot();
        let received: u64 = (0..DOMAINS)
            .map(|d| sw.domain_counters(DomainId(d)).unwrap().snapshot().received)
            .sum();
        prop_assert_eq!(received, sc.processed - sc.drop_malformed - sc.drop_no_domain);
    }

    /// A flood of random source MACs never grows a table past its capacity,
    /// and every MAC it could not learn is counted in `table_full`.
    #[test]
    fn mac_flood_is_bounded(
        capacity in 1usize..64,
        srcs in proptest::collection::vec((any::<[u8; 6]>(), 0..3u32), 1..500),
    ) {
        let mut sw = Switch::new();
        let id = DomainId(2);
        let cfg = DomainConfig {
            table: TableConfig { capacity, aging: Duration::from_secs(300), port_capacity: usize::MAX },
            ..DomainConfig::default()
        };
        sw.add_domain(id, cfg).unwrap();
        for p in 0..3 {
            sw.attach(PortId(p), id).unwrap();
        }
        let mut learned: HashSet<MacAddr> = HashSet::new();
        let mut refused = 0u64;
        let mut now = Duration::ZERO;
        for (bytes, port) in srcs {
            now += Duration::from_micros(10);
            let mut src = MacAddr(bytes);
            src.0[0] &= 0xfe; // unicast
            src.0[5] |= 1; // non-zero
            let _ = sw.process(PortId(port), &frame(MacAddr::BROADCAST, src, 60), now);
            if !learned.contains(&src) {
                if learned.len() < capacity {
                    learned.insert(src);
                } else {
                    refused += 1;
                }
            }
            let table = sw.table(id).unwrap();
            prop_assert!(table.len() <= capacity);
            prop_assert_eq!(table.len(), learned.len());
        }
        let c = sw.domain_counters(id).unwrap().snapshot();
        prop_assert_eq!(c.table_full, refused);
        prop_assert_eq!(c.learned, learned.len() as u64);
    }
}
