use super::*;
use crate::DomainCountersSnapshot;

const D0: DomainId = DomainId(0);
const D1: DomainId = DomainId(1);

const fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, n])
}

fn frame(dst: MacAddr, src: MacAddr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn t(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// D0 has ports 1, 2, 3; D1 has ports 10, 11.
fn two_domains() -> Switch {
    let mut sw = Switch::new();
    sw.add_domain(D0, DomainConfig::default()).unwrap();
    sw.add_domain(D1, DomainConfig::default()).unwrap();
    for p in [1, 2, 3] {
        sw.attach(PortId(p), D0).unwrap();
    }
    for p in [10, 11] {
        sw.attach(PortId(p), D1).unwrap();
    }
    sw
}

fn dc(sw: &Switch, id: DomainId) -> DomainCountersSnapshot {
    sw.domain_counters(id).unwrap().snapshot()
}

#[test]
fn learn_then_forward() {
    let mut sw = two_domains();
    // Unknown destination: flooded, source learned.
    assert_eq!(
        sw.process(PortId(1), &frame(mac(2), mac(1)), t(0)),
        Decision::Flood(D0)
    );
    // The reply goes straight back, and now both are known.
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(1)),
        Decision::Forward(PortId(1))
    );
    assert_eq!(
        sw.process(PortId(1), &frame(mac(2), mac(1)), t(2)),
        Decision::Forward(PortId(2))
    );
    assert_eq!(
        dc(&sw, D0),
        DomainCountersSnapshot {
            received: 3,
            forwarded: 2,
            flooded: 1,
            flooded_unknown: 1,
            learned: 2,
            ..Default::default()
        }
    );
    assert_eq!(sw.counters().snapshot().processed, 3);
}

#[test]
fn broadcast_and_multicast_flood() {
    let mut sw = two_domains();
    for dst in [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
    ] {
        assert_eq!(
            sw.process(PortId(2), &frame(dst, mac(2)), t(0)),
            Decision::Flood(D0)
        );
    }
    let targets: Vec<_> = sw.flood_targets(D0, PortId(2)).collect();
    assert_eq!(targets, [PortId(1), PortId(3)]);
    assert_eq!(dc(&sw, D0).flooded, 3);
    assert_eq!(dc(&sw, D0).flooded_unknown, 0);
}

#[test]
fn malformed_and_unattached_drop() {
    let mut sw = two_domains();
    let f = frame(mac(2), mac(1));
    assert_eq!(
        sw.process(PortId(1), &f[..13], t(0)),
        Decision::Drop(DropReason::Malformed)
    );
    assert_eq!(
        sw.process(PortId(1), &[], t(0)),
        Decision::Drop(DropReason::Malformed)
    );
    // 14 bytes is enough.
    assert_eq!(sw.process(PortId(1), &f[..14], t(0)), Decision::Flood(D0));
    assert_eq!(
        sw.process(PortId(4), &f, t(0)),
        Decision::Drop(DropReason::NoDomain)
    );
    assert_eq!(
        sw.process(PortId(u32::MAX), &f, t(0)),
        Decision::Drop(DropReason::NoDomain)
    );
    let c = sw.counters().snapshot();
    assert_eq!((c.processed, c.drop_malformed, c.drop_no_domain), (5, 2, 2));
}

#[test]
fn bad_sources_drop_and_are_not_learned() {
    let mut sw = two_domains();
    for src in [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        MacAddr::ZERO,
    ] {
        assert_eq!(
            sw.process(PortId(1), &frame(mac(2), src), t(0)),
            Decision::Drop(DropReason::BadSource)
        );
    }
    assert_eq!(dc(&sw, D0).drop_bad_source, 3);
    assert!(sw.table(D0).unwrap().is_empty());
}

#[test]
fn hairpin_drops() {
    let mut sw = two_domains();
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0));
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(5)), t(0));
    // mac(5) -> mac(1), both behind port 1 (e.g. a nested bridge).
    assert_eq!(
        sw.process(PortId(1), &frame(mac(1), mac(5)), t(1)),
        Decision::Drop(DropReason::Hairpin)
    );
    assert_eq!(dc(&sw, D0).drop_hairpin, 1);
}

#[test]
fn station_move_is_counted_and_followed() {
    let mut sw = two_domains();
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0));
    let _ = sw.process(PortId(3), &frame(MacAddr::BROADCAST, mac(1)), t(1));
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(2)),
        Decision::Forward(PortId(3))
    );
    assert_eq!(dc(&sw, D0).moved, 1);
}

#[test]
fn domains_are_isolated() {
    let mut sw = two_domains();
    // mac(1) lives in D0 behind port 1.
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0));
    // A D1 port asking for mac(1) floods within D1 only.
    assert_eq!(
        sw.process(PortId(10), &frame(mac(1), mac(10)), t(1)),
        Decision::Flood(D1)
    );
    let targets: Vec<_> = sw.flood_targets(D1, PortId(10)).collect();
    assert_eq!(targets, [PortId(11)]);
    // The same MAC may exist independently in both domains.
    let _ = sw.process(PortId(11), &frame(MacAddr::BROADCAST, mac(1)), t(2));
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(3)),
        Decision::Forward(PortId(1))
    );
    assert_eq!(
        sw.process(PortId(10), &frame(mac(1), mac(10)), t(3)),
        Decision::Forward(PortId(11))
    );
}

#[test]
fn static_entries() {
    let mut sw = two_domains();
    sw.add_static(D0, mac(9), PortId(3)).unwrap();
    assert_eq!(
        sw.process(PortId(1), &frame(mac(9), mac(1)), t(0)),
        Decision::Forward(PortId(3))
    );
    // A spoofed source does not move a static entry.
    let _ = sw.process(PortId(2), &frame(MacAddr::BROADCAST, mac(9)), t(1));
    assert_eq!(
        sw.process(PortId(1), &frame(mac(9), mac(1)), t(2)),
        Decision::Forward(PortId(3))
    );
    // Statics never age.
    sw.handle_timeout(t(100_000));
    assert_eq!(
        sw.process(PortId(1), &frame(mac(9), mac(1)), t(100_000)),
        Decision::Forward(PortId(3))
    );
    sw.remove_static(D0, mac(9)).unwrap();
    sw.remove_static(D0, mac(9)).unwrap(); // idempotent
    assert_eq!(
        sw.process(PortId(1), &frame(mac(9), mac(1)), t(100_001)),
        Decision::Flood(D0)
    );
}

#[test]
fn static_entry_errors() {
    let mut sw = two_domains();
    assert_eq!(
        sw.add_static(DomainId(7), mac(9), PortId(1)),
        Err(SwitchError::UnknownDomain(DomainId(7)))
    );
    assert_eq!(
        sw.add_static(D0, mac(9), PortId(10)),
        Err(SwitchError::PortInOtherDomain {
            port: PortId(10),
            domain: D0,
            attached: D1
        })
    );
    assert_eq!(
        sw.add_static(D0, mac(9), PortId(99)),
        Err(SwitchError::UnknownPort(PortId(99)))
    );
    for bad in [
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        MacAddr([0x01, 0, 0, 0, 0, 1]),
    ] {
        assert_eq!(
            sw.add_static(D0, bad, PortId(1)),
            Err(SwitchError::InvalidStaticMac(bad))
        );
    }
    assert_eq!(
        sw.remove_static(DomainId(7), mac(9)),
        Err(SwitchError::UnknownDomain(DomainId(7)))
    );
}

#[test]
fn detach_flushes_learned_and_static_entries() {
    let mut sw = two_domains();
    let _ = sw.process(PortId(3), &frame(MacAddr::BROADCAST, mac(3)), t(0));
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0));
    sw.add_static(D0, mac(33), PortId(3)).unwrap();
    sw.detach(PortId(3)).unwrap();
    assert_eq!(sw.domain_of(PortId(3)), None);
    assert_eq!(sw.ports(D0), &[PortId(1), PortId(2)]);
    assert_eq!(sw.table(D0).unwrap().len(), 1);
    assert_eq!(dc(&sw, D0).flushed, 2);
    assert_eq!(
        sw.process(PortId(1), &frame(mac(3), mac(1)), t(1)),
        Decision::Flood(D0)
    );
    assert_eq!(
        sw.process(PortId(3), &frame(mac(1), mac(3)), t(1)),
        Decision::Drop(DropReason::NoDomain)
    );
    assert_eq!(
        sw.detach(PortId(3)),
        Err(SwitchError::UnknownPort(PortId(3)))
    );
    // It can join another domain now.
    sw.attach(PortId(3), D1).unwrap();
    assert_eq!(sw.ports(D1), &[PortId(10), PortId(11), PortId(3)]);
}

#[test]
fn domain_and_attach_errors() {
    let mut sw = two_domains();
    assert_eq!(
        sw.add_domain(D0, DomainConfig::default()),
        Err(SwitchError::DomainExists(D0))
    );
    assert_eq!(
        sw.add_domain(DomainId(Switch::MAX_DOMAINS), DomainConfig::default()),
        Err(SwitchError::DomainIdOutOfRange {
            domain: DomainId(4096),
            max: 4096
        })
    );
    let huge = DomainConfig {
        table: TableConfig {
            capacity: TableConfig::MAX_CAPACITY + 1,
            ..TableConfig::default()
        },
        ..DomainConfig::default()
    };
    assert!(matches!(
        sw.add_domain(DomainId(5), huge),
        Err(SwitchError::CapacityTooLarge { .. })
    ));
    assert_eq!(
        sw.attach(PortId(1), D0),
        Err(SwitchError::PortAlreadyAttached {
            port: PortId(1),
            domain: D0
        })
    );
    assert_eq!(
        sw.attach(PortId(1), D1),
        Err(SwitchError::PortInOtherDomain {
            port: PortId(1),
            domain: D1,
            attached: D0
        })
    );
    assert_eq!(
        sw.attach(PortId(4), DomainId(9)),
        Err(SwitchError::UnknownDomain(DomainId(9)))
    );
    assert_eq!(
        sw.attach(PortId(Switch::MAX_PORTS), D0),
        Err(SwitchError::PortIdOutOfRange {
            port: PortId(65536),
            max: 65536
        })
    );
    assert_eq!(
        sw.remove_domain(D1),
        Err(SwitchError::DomainNotEmpty {
            domain: D1,
            ports: 2
        })
    );
    assert_eq!(
        sw.remove_domain(DomainId(9)),
        Err(SwitchError::UnknownDomain(DomainId(9)))
    );
    sw.detach(PortId(10)).unwrap();
    sw.detach(PortId(11)).unwrap();
    sw.remove_domain(D1).unwrap();
    assert_eq!(sw.domains().collect::<Vec<_>>(), [D0]);
    assert!(sw.ports(D1).is_empty());
    assert_eq!(sw.flood_targets(D1, PortId(1)).count(), 0);
    assert!(sw.domain_counters(D1).is_none());
}

#[test]
fn error_messages_say_what_to_do() {
    let e = SwitchError::PortInOtherDomain {
        port: PortId(3),
        domain: D1,
        attached: D0,
    };
    assert_eq!(
        e.to_string(),
        "port 3 is attached to domain 0, not domain 1"
    );
    let e = SwitchError::DomainNotEmpty {
        domain: D0,
        ports: 2,
    };
    assert_eq!(
        e.to_string(),
        "domain 0 still has 2 attached port(s); detach them before removing it"
    );
}

#[test]
fn aging_through_timer_interface() {
    let mut sw = Switch::new();
    let cfg = DomainConfig {
        table: TableConfig {
            capacity: 16,
            aging: t(10),
            port_capacity: usize::MAX,
        },
        ..DomainConfig::default()
    };
    sw.add_domain(D0, cfg).unwrap();
    sw.attach(PortId(1), D0).unwrap();
    sw.attach(PortId(2), D0).unwrap();
    assert_eq!(sw.poll_timeout(), None);
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(100));
    let deadline = sw.poll_timeout().unwrap();
    assert!(deadline >= t(110) && deadline <= t(111), "{deadline:?}");
    // Before expiry: forwarded. At expiry: flooded even before the timer ran.
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(109)),
        Decision::Forward(PortId(1))
    );
    assert_eq!(
        sw.process(PortId(1), &frame(mac(2), mac(1)), t(100)),
        Decision::Forward(PortId(2))
    );
    sw.handle_timeout(t(50)); // early call: harmless
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(110)),
        Decision::Flood(D0)
    );
    sw.handle_timeout(deadline);
    assert_eq!(dc(&sw, D0).aged, 1);
    // mac(2), learned at 109/110, remains.
    assert_eq!(sw.table(D0).unwrap().len(), 1);
    sw.handle_timeout(t(1000));
    assert_eq!(sw.poll_timeout(), None);
    assert_eq!(dc(&sw, D0).aged, 2);
}

#[test]
fn table_full_still_switches() {
    let mut sw = Switch::new();
    let cfg = DomainConfig {
        table: TableConfig {
            capacity: 2,
            aging: t(300),
            port_capacity: usize::MAX,
        },
        ..DomainConfig::default()
    };
    sw.add_domain(D0, cfg).unwrap();
    for p in 1..=3 {
        sw.attach(PortId(p), D0).unwrap();
    }
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0));
    let _ = sw.process(PortId(2), &frame(MacAddr::BROADCAST, mac(2)), t(0));
    assert_eq!(
        sw.process(PortId(3), &frame(mac(1), mac(3)), t(0)),
        Decision::Forward(PortId(1))
    );
    assert_eq!(dc(&sw, D0).table_full, 1);
    // mac(3) was not learned: traffic to it floods.
    assert_eq!(
        sw.process(PortId(1), &frame(mac(3), mac(1)), t(1)),
        Decision::Flood(D0)
    );
}

/// D0 with ICC off: endpoints 1, 2, 3 and gateway 4. D1 (ICC on): endpoints
/// 10, 11 and gateway 12.
fn icc_off() -> Switch {
    let mut sw = Switch::new();
    let cfg = DomainConfig {
        icc: false,
        ..DomainConfig::default()
    };
    sw.add_domain(D0, cfg).unwrap();
    sw.add_domain(D1, DomainConfig::default()).unwrap();
    for p in [1, 2, 3] {
        sw.attach(PortId(p), D0).unwrap();
    }
    sw.attach_as(PortId(4), D0, PortRole::Gateway).unwrap();
    for p in [10, 11] {
        sw.attach(PortId(p), D1).unwrap();
    }
    sw.attach_as(PortId(12), D1, PortRole::Gateway).unwrap();
    sw
}

#[test]
fn default_config_allows_icc_and_attach_is_endpoint() {
    assert!(DomainConfig::default().icc);
    let sw = icc_off();
    assert_eq!(sw.icc(D0), Some(false));
    assert_eq!(sw.icc(D1), Some(true));
    assert_eq!(sw.icc(DomainId(9)), None);
    assert_eq!(sw.role_of(PortId(1)), Some(PortRole::Endpoint));
    assert_eq!(sw.role_of(PortId(4)), Some(PortRole::Gateway));
    assert_eq!(sw.role_of(PortId(5)), None);
    assert_eq!(sw.gateways(D0), &[PortId(4)]);
    assert_eq!(sw.ports(D0), &[PortId(1), PortId(2), PortId(3), PortId(4)]);
}

#[test]
fn icc_off_endpoints_reach_only_the_gateway() {
    let mut sw = icc_off();
    // Endpoint broadcast (an ARP request): learned, flooded to the gateway only.
    assert_eq!(
        sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0)),
        Decision::Flood(D0)
    );
    assert_eq!(
        sw.flood_targets(D0, PortId(1)).collect::<Vec<_>>(),
        [PortId(4)]
    );
    // The gateway floods to everyone.
    assert_eq!(
        sw.process(PortId(4), &frame(MacAddr::BROADCAST, mac(4)), t(0)),
        Decision::Flood(D0)
    );
    assert_eq!(
        sw.flood_targets(D0, PortId(4)).collect::<Vec<_>>(),
        [PortId(1), PortId(2), PortId(3)]
    );
    // Unknown unicast from an endpoint: flooded, to the gateway only.
    assert_eq!(
        sw.process(PortId(2), &frame(mac(3), mac(2)), t(1)),
        Decision::Flood(D0)
    );
    assert_eq!(
        sw.flood_targets(D0, PortId(2)).collect::<Vec<_>>(),
        [PortId(4)]
    );
    // Known endpoint to known endpoint: isolated, either way.
    assert_eq!(
        sw.process(PortId(2), &frame(mac(1), mac(2)), t(2)),
        Decision::Drop(DropReason::Isolated)
    );
    assert_eq!(
        sw.process(PortId(1), &frame(mac(2), mac(1)), t(2)),
        Decision::Drop(DropReason::Isolated)
    );
    // Endpoint to gateway and back: forwarded.
    assert_eq!(
        sw.process(PortId(1), &frame(mac(4), mac(1)), t(3)),
        Decision::Forward(PortId(4))
    );
    assert_eq!(
        sw.process(PortId(4), &frame(mac(2), mac(4)), t(3)),
        Decision::Forward(PortId(2))
    );
    let c = dc(&sw, D0);
    assert_eq!(c.drop_isolated, 2);
    assert_eq!(c.forwarded, 2);
    assert_eq!(c.flooded, 3);
    // Learning is unchanged: every source seen is known.
    assert_eq!(sw.table(D0).unwrap().len(), 3);
    // Hairpin still comes first.
    let _ = sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(7)), t(4));
    assert_eq!(
        sw.process(PortId(1), &frame(mac(7), mac(1)), t(4)),
        Decision::Drop(DropReason::Hairpin)
    );
}

#[test]
fn icc_on_is_unchanged_by_roles() {
    let mut sw = icc_off();
    let _ = sw.process(PortId(10), &frame(MacAddr::BROADCAST, mac(10)), t(0));
    assert_eq!(
        sw.flood_targets(D1, PortId(10)).collect::<Vec<_>>(),
        [PortId(11), PortId(12)]
    );
    assert_eq!(
        sw.process(PortId(11), &frame(mac(10), mac(11)), t(1)),
        Decision::Forward(PortId(10))
    );
    assert_eq!(dc(&sw, D1).drop_isolated, 0);
}

#[test]
fn icc_off_without_gateway_drops_floods() {
    let mut sw = icc_off();
    sw.detach(PortId(4)).unwrap();
    assert!(sw.gateways(D0).is_empty());
    assert_eq!(
        sw.process(PortId(1), &frame(MacAddr::BROADCAST, mac(1)), t(0)),
        Decision::Drop(DropReason::Isolated)
    );
    assert_eq!(
        sw.process(PortId(1), &frame(mac(9), mac(1)), t(0)),
        Decision::Drop(DropReason::Isolated)
    );
    assert_eq!(sw.flood_targets(D0, PortId(1)).count(), 0);
    let c = dc(&sw, D0);
    assert_eq!((c.drop_isolated, c.flooded, c.learned), (2, 0, 1));
    // A port of another domain asking about D0 gets the restrictive answer.
    sw.attach_as(PortId(4), D0, PortRole::Gateway).unwrap();
    assert_eq!(
        sw.flood_targets(D0, PortId(10)).collect::<Vec<_>>(),
        [PortId(4)]
    );
    assert_eq!(
        sw.flood_targets(D0, PortId(99)).collect::<Vec<_>>(),
        [PortId(4)]
    );
}

#[test]
fn static_entries_obey_icc() {
    let mut sw = icc_off();
    sw.add_static(D0, mac(3), PortId(3)).unwrap();
    sw.add_static(D0, mac(4), PortId(4)).unwrap();
    assert_eq!(
        sw.process(PortId(1), &frame(mac(3), mac(1)), t(0)),
        Decision::Drop(DropReason::Isolated)
    );
    assert_eq!(
        sw.process(PortId(1), &frame(mac(4), mac(1)), t(0)),
        Decision::Forward(PortId(4))
    );
    // Re-attached as an endpoint, the old gateway is isolated like the rest.
    sw.detach(PortId(4)).unwrap();
    sw.attach(PortId(4), D0).unwrap();
    sw.add_static(D0, mac(4), PortId(4)).unwrap();
    assert_eq!(
        sw.process(PortId(1), &frame(mac(4), mac(1)), t(1)),
        Decision::Drop(DropReason::Isolated)
    );
    assert!(sw.gateways(D0).is_empty());
}
