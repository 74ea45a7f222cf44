//! The switch's ingress guards through its public API: port bindings
//! (anti-spoofing), the per-port flood rate, the per-port learning limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tapnet_switch::{
    Decision, DomainConfig, DomainCountersSnapshot, DomainId, DropReason, FloodLimit, MacAddr,
    PortBinding, PortGuardCountersSnapshot, PortId, PortRole, Switch, SwitchError, TableConfig,
};

const D: DomainId = DomainId(0);
const A: PortId = PortId(1);
const B: PortId = PortId(2);
const GW: PortId = PortId(3);
const MAC_A: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
const MAC_B: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 3]);
const MAC_GW: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 1]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const IP_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn ipv6(src: Ipv6Addr, next_header: u8) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = next_header;
    p[7] = 255;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
    p
}

/// An Ethernet/IPv4 ARP request.
fn arp(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    p.extend_from_slice(&sha.0);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    p
}

/// Ports A and B (endpoints) and GW (gateway) in D, with the usual static
/// entries; A and B bound to their MAC and address.
fn bound(cfg: DomainConfig) -> Switch {
    let mut sw = Switch::new();
    sw.add_domain(D, cfg).unwrap();
    sw.attach(A, D).unwrap();
    sw.attach(B, D).unwrap();
    sw.attach_as(GW, D, PortRole::Gateway).unwrap();
    sw.add_static(D, MAC_A, A).unwrap();
    sw.add_static(D, MAC_B, B).unwrap();
    sw.add_static(D, MAC_GW, GW).unwrap();
    sw.set_binding(A, Some(PortBinding::new(MAC_A, [IpAddr::V4(IP_A)])))
        .unwrap();
    sw.set_binding(B, Some(PortBinding::new(MAC_B, [IpAddr::V4(IP_B)])))
        .unwrap();
    sw
}

fn dc(sw: &Switch) -> DomainCountersSnapshot {
    sw.domain_counters(D).unwrap().snapshot()
}

fn pc(sw: &Switch, p: PortId) -> PortGuardCountersSnapshot {
    sw.port_counters(p).unwrap().snapshot()
}

const SPOOFED: Decision = Decision::Drop(DropReason::Spoofed);

#[test]
fn legit_traffic_of_a_bound_port_passes() {
    let mut sw = bound(DomainConfig::default());
    let to_gw = eth(
        MAC_GW,
        MAC_A,
        0x0800,
        &ipv4(IP_A, Ipv4Addr::new(1, 1, 1, 1)),
    );
    assert_eq!(sw.process(A, &to_gw, t(0)), Decision::Forward(GW));
    let to_b = eth(MAC_B, MAC_A, 0x0800, &ipv4(IP_A, IP_B));
    assert_eq!(sw.process(A, &to_b, t(0)), Decision::Forward(B));
    let who_has = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_A, IP_GW));
    assert_eq!(sw.process(A, &who_has, t(0)), Decision::Flood(D));
    // An ARP probe (RFC 5227) has sender address 0.0.0.0.
    let probe = eth(
        MacAddr::BROADCAST,
        MAC_A,
        0x0806,
        &arp(MAC_A, Ipv4Addr::UNSPECIFIED, IP_A),
    );
    assert_eq!(sw.process(A, &probe, t(0)), Decision::Flood(D));
    // IPv6 from the MAC's own link-local address, and `::` for DAD and MLD.
    let ll = PortBinding::link_local(MAC_A);
    assert_eq!(ll.to_string(), "fe80::42:aff:fe00:2");
    let from_ll = eth(
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MAC_A,
        0x86dd,
        &ipv6(ll, 58),
    );
    assert_eq!(sw.process(A, &from_ll, t(0)), Decision::Flood(D));
    let dad = eth(
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MAC_A,
        0x86dd,
        &ipv6(Ipv6Addr::UNSPECIFIED, 58),
    );
    assert_eq!(sw.process(A, &dad, t(0)), Decision::Flood(D));
    // Other EtherTypes pass on the MAC check.
    let other = eth(MAC_B, MAC_A, 0x88b5, &[0; 46]);
    assert_eq!(sw.process(A, &other, t(0)), Decision::Forward(B));
    assert_eq!(dc(&sw).spoof_drops, 0);
    assert_eq!(pc(&sw, A), PortGuardCountersSnapshot::default());
}

#[test]
fn spoofed_source_mac_is_dropped_counted_and_not_learned() {
    let mut sw = bound(DomainConfig::default());
    let evil = MacAddr([0x02, 0x42, 10, 0, 0, 99]);
    let f = eth(MAC_GW, evil, 0x0800, &ipv4(IP_A, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // The neighbour's MAC: not stolen either (and the static entry holds).
    let f = eth(MAC_GW, MAC_B, 0x0800, &ipv4(IP_A, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    let table = sw.table(D).unwrap();
    assert_eq!(table.lookup(evil, t(0)), None);
    assert_eq!(table.lookup(MAC_B, t(0)), Some(B));
    assert_eq!(dc(&sw).spoof_drops, 2);
    assert_eq!(dc(&sw).learned, 0);
    assert_eq!(pc(&sw, A).spoof_drops, 2);
    assert_eq!(pc(&sw, B).spoof_drops, 0);
}

#[test]
fn spoofed_ipv4_source_is_dropped() {
    let mut sw = bound(DomainConfig::default());
    // A's MAC with B's address: what diverts B's replies at the gateway.
    let f = eth(MAC_GW, MAC_A, 0x0800, &ipv4(IP_B, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Any address not bound, 0.0.0.0 included.
    for src in [Ipv4Addr::new(10, 0, 0, 200), Ipv4Addr::UNSPECIFIED, IP_GW] {
        let f = eth(MAC_GW, MAC_A, 0x0800, &ipv4(src, IP_GW));
        assert_eq!(sw.process(A, &f, t(0)), SPOOFED, "{src}");
    }
    // Behind a VLAN tag too.
    let mut tagged = vec![0x00, 0x05, 0x08, 0x00];
    tagged.extend_from_slice(&ipv4(IP_B, IP_GW));
    let f = eth(MAC_GW, MAC_A, 0x8100, &tagged);
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Too short to show its source: not let through unchecked.
    let f = eth(MAC_GW, MAC_A, 0x0800, &[]);
    let short = &f[..14 + 12];
    assert_eq!(sw.process(A, short, t(0)), SPOOFED);
    assert_eq!(dc(&sw).spoof_drops, 6);
    assert_eq!(pc(&sw, A).spoof_drops, 6);
}

#[test]
fn arp_with_a_spoofed_sender_is_dropped() {
    let mut sw = bound(DomainConfig::default());
    // Gratuitous ARP claiming B's address.
    let f = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_B, IP_B));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Claiming the gateway's address.
    let f = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_GW, IP_B));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Own address, someone else's hardware address in the ARP body.
    let f = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_B, IP_A, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Not Ethernet/IPv4 ARP, or cut short.
    let mut odd = arp(MAC_A, IP_A, IP_GW);
    odd[5] = 16;
    let f = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &odd);
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    let f = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_A, IP_GW));
    assert_eq!(sw.process(A, &f[..14 + 20], t(0)), SPOOFED);
    assert_eq!(dc(&sw).spoof_drops, 5);
    assert_eq!(dc(&sw).flooded, 0);
}

#[test]
fn spoofed_ipv6_sources_are_dropped() {
    let mut sw = bound(DomainConfig::default());
    let mc = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    for (src, nh) in [
        // B's link-local address.
        (PortBinding::link_local(MAC_B), 58),
        // A global address never bound.
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 17),
        // `::` outside ICMPv6 and hop-by-hop.
        (Ipv6Addr::UNSPECIFIED, 17),
    ] {
        let f = eth(mc, MAC_A, 0x86dd, &ipv6(src, nh));
        assert_eq!(sw.process(A, &f, t(0)), SPOOFED, "{src}");
    }
    // A bound IPv6 address is allowed.
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    sw.set_binding(
        A,
        Some(PortBinding::new(MAC_A, [IpAddr::V4(IP_A), IpAddr::V6(v6)])),
    )
    .unwrap();
    let f = eth(mc, MAC_A, 0x86dd, &ipv6(v6, 17));
    assert_eq!(sw.process(A, &f, t(0)), Decision::Flood(D));
}

#[test]
fn mac_only_bindings_and_unbound_ports() {
    let mut sw = bound(DomainConfig::default());
    sw.set_binding(A, Some(PortBinding::mac_only(MAC_A)))
        .unwrap();
    let f = eth(
        MAC_GW,
        MAC_A,
        0x0800,
        &ipv4(Ipv4Addr::new(192, 0, 2, 9), IP_GW),
    );
    assert_eq!(sw.process(A, &f, t(0)), Decision::Forward(GW));
    let f = eth(MAC_GW, MAC_B, 0x0800, &ipv4(IP_A, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), SPOOFED);
    // Without a binding, as before: anything goes.
    sw.set_binding(A, None).unwrap();
    assert_eq!(sw.binding(A), None);
    let stranger = MacAddr([0x02, 0, 0, 0, 0, 7]);
    let f = eth(MAC_GW, stranger, 0x0800, &ipv4(IP_B, IP_GW));
    assert_eq!(sw.process(A, &f, t(0)), Decision::Forward(GW));
    // The gateway port has none.
    let f = eth(
        MAC_A,
        MAC_GW,
        0x0800,
        &ipv4(Ipv4Addr::new(8, 8, 8, 8), IP_A),
    );
    assert_eq!(sw.process(GW, &f, t(0)), Decision::Forward(A));
    assert_eq!(dc(&sw).spoof_drops, 1);
}

#[test]
fn bindings_go_with_the_port() {
    let mut sw = bound(DomainConfig::default());
    assert_eq!(
        sw.binding(A),
        Some(&PortBinding::new(MAC_A, [IpAddr::V4(IP_A)]))
    );
    sw.detach(A).unwrap();
    assert_eq!(sw.binding(A), None);
    assert!(sw.port_counters(A).is_none());
    sw.attach(A, D).unwrap();
    assert_eq!(sw.binding(A), None, "a re-attached port starts unbound");
    assert_eq!(
        sw.set_binding(PortId(40), Some(PortBinding::mac_only(MAC_A))),
        Err(SwitchError::UnknownPort(PortId(40)))
    );
    assert_eq!(
        sw.set_binding(A, Some(PortBinding::mac_only(MacAddr::BROADCAST))),
        Err(SwitchError::InvalidBindingMac(MacAddr::BROADCAST))
    );
    let many = (0..17u8).map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)));
    assert_eq!(
        sw.set_binding(A, Some(PortBinding::new(MAC_A, many))),
        Err(SwitchError::TooManyBoundAddresses { count: 17, max: 16 })
    );
}

// ----- flood rate -----

fn limited(rate: u32, burst: u32) -> Switch {
    bound(DomainConfig {
        flood_limit: Some(FloodLimit { rate, burst }),
        ..DomainConfig::default()
    })
}

#[test]
fn default_flood_limit() {
    assert_eq!(
        DomainConfig::default().flood_limit,
        Some(FloodLimit {
            rate: 4000,
            burst: 1000
        })
    );
}

#[test]
fn broadcast_storm_is_rate_limited_per_port() {
    let mut sw = limited(100, 10);
    let bcast = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_A, IP_GW));
    let got: Vec<Decision> = (0..50).map(|_| sw.process(A, &bcast, t(0))).collect();
    assert!(
        got[..10].iter().all(|d| *d == Decision::Flood(D)),
        "{got:?}"
    );
    assert!(
        got[10..]
            .iter()
            .all(|d| *d == Decision::Drop(DropReason::FloodRate)),
        "{got:?}"
    );
    // Other ports keep their own budget; unicast of the storming port still goes.
    let b_bcast = eth(MacAddr::BROADCAST, MAC_B, 0x0806, &arp(MAC_B, IP_B, IP_GW));
    assert_eq!(sw.process(B, &b_bcast, t(0)), Decision::Flood(D));
    let to_gw = eth(MAC_GW, MAC_A, 0x0800, &ipv4(IP_A, IP_GW));
    assert_eq!(sw.process(A, &to_gw, t(0)), Decision::Forward(GW));
    // 100 ms at 100/s buys 10 more.
    let later: Vec<Decision> = (0..20).map(|_| sw.process(A, &bcast, t(100))).collect();
    let passed = later.iter().filter(|d| **d == Decision::Flood(D)).count();
    assert_eq!(passed, 10, "{later:?}");
    assert_eq!(dc(&sw).flood_rate_drops, 40 + 10);
    assert_eq!(pc(&sw, A).flood_rate_drops, 50);
    assert_eq!(pc(&sw, B).flood_rate_drops, 0);
    assert_eq!(dc(&sw).flooded, 10 + 1 + 10);
}

#[test]
fn multicast_and_unknown_unicast_spend_the_same_budget() {
    let mut sw = limited(1, 4);
    let unknown = MacAddr([0x02, 0x42, 10, 0, 0, 77]);
    let uni = eth(
        unknown,
        MAC_A,
        0x0800,
        &ipv4(IP_A, Ipv4Addr::new(10, 0, 0, 77)),
    );
    let mc = eth(
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        MAC_A,
        0x0800,
        &ipv4(IP_A, IP_GW),
    );
    for f in [&uni, &mc, &uni, &mc] {
        assert_eq!(sw.process(A, f, t(0)), Decision::Flood(D));
    }
    assert_eq!(
        sw.process(A, &uni, t(0)),
        Decision::Drop(DropReason::FloodRate)
    );
    assert_eq!(
        sw.process(A, &mc, t(0)),
        Decision::Drop(DropReason::FloodRate)
    );
    // A clock that goes back refills nothing.
    assert_eq!(
        sw.process(A, &mc, Duration::ZERO),
        Decision::Drop(DropReason::FloodRate)
    );
    assert_eq!(sw.process(A, &mc, t(1000)), Decision::Flood(D));
    assert_eq!(dc(&sw).flood_rate_drops, 3);
}

#[test]
fn gateway_and_unlimited_domains_are_not_rate_limited() {
    let mut sw = limited(1, 1);
    let from_gw = eth(
        MacAddr::BROADCAST,
        MAC_GW,
        0x0806,
        &arp(MAC_GW, IP_GW, IP_A),
    );
    for _ in 0..100 {
        assert_eq!(sw.process(GW, &from_gw, t(0)), Decision::Flood(D));
    }
    let mut sw = bound(DomainConfig {
        flood_limit: None,
        ..DomainConfig::default()
    });
    let bcast = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &arp(MAC_A, IP_A, IP_GW));
    for _ in 0..10_000 {
        assert_eq!(sw.process(A, &bcast, t(0)), Decision::Flood(D));
    }
    assert_eq!(dc(&sw).flood_rate_drops, 0);
}

// ----- learning limit -----

#[test]
fn one_port_cannot_fill_the_mac_table() {
    let mut sw = Switch::new();
    sw.add_domain(
        D,
        DomainConfig {
            table: TableConfig {
                capacity: 64,
                port_capacity: 8,
                ..TableConfig::default()
            },
            flood_limit: None,
            ..DomainConfig::default()
        },
    )
    .unwrap();
    sw.attach(A, D).unwrap();
    sw.attach(B, D).unwrap();
    for i in 0..100u8 {
        let src = MacAddr([0x02, 0, 0, 0, 1, i]);
        let _ = sw.process(A, &eth(MacAddr::BROADCAST, src, 0x0806, &[0; 46]), t(0));
    }
    let table = sw.table(D).unwrap();
    assert_eq!(table.port_len(A), 8);
    assert_eq!(table.learned_len(), 8);
    assert_eq!(dc(&sw).learn_limit_drops, 92);
    assert_eq!(pc(&sw, A).learn_limit_drops, 92);
    // Another port still learns, and is still reached.
    let f = eth(MacAddr::BROADCAST, MAC_B, 0x0806, &[0; 46]);
    let _ = sw.process(B, &f, t(0));
    let to_b = eth(MAC_B, MacAddr([0x02, 0, 0, 0, 1, 0]), 0x0800, &[0; 46]);
    assert_eq!(sw.process(A, &to_b, t(0)), Decision::Forward(B));
    assert_eq!(sw.table(D).unwrap().port_len(B), 1);
}

/// A million random source MACs from one port on a default domain: the
/// table holds at most the port's share, another port keeps learning and
/// being reached, the storm's floods are rate limited.
#[test]
fn a_million_random_source_macs() {
    let mut sw = Switch::new();
    sw.add_domain(D, DomainConfig::default()).unwrap();
    sw.attach(A, D).unwrap();
    sw.attach(B, D).unwrap();
    sw.attach_as(GW, D, PortRole::Gateway).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut frame = eth(MacAddr::BROADCAST, MAC_A, 0x0806, &[0; 46]);
    let mut flooded = 0u64;
    for i in 0..1_000_000u64 {
        // xorshift64*: cheap, deterministic.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes();
        frame[6] = 0x02;
        frame[7..12].copy_from_slice(&r[..5]);
        // 1 µs apart: a million frames a second.
        if sw.process(A, &frame, Duration::from_micros(i)) == Decision::Flood(D) {
            flooded += 1;
        }
    }
    let table = sw.table(D).unwrap();
    assert_eq!(table.port_len(A), TableConfig::DEFAULT_PORT_CAPACITY);
    assert_eq!(table.learned_len(), TableConfig::DEFAULT_PORT_CAPACITY);
    let c = dc(&sw);
    assert_eq!(c.learn_limit_drops, 1_000_000 - 256);
    // One second of storm: the burst plus a second's rate, no more.
    let most = u64::from(FloodLimit::DEFAULT_BURST + FloodLimit::DEFAULT_RATE);
    assert!(flooded <= most, "{flooded} floods passed");
    assert_eq!(c.flood_rate_drops, 1_000_000 - flooded);
    let f = eth(MAC_A, MAC_B, 0x0806, &[0; 46]);
    let _ = sw.process(B, &f, t(1000));
    let to_b = eth(MAC_B, MAC_GW, 0x0800, &[0; 46]);
    assert_eq!(sw.process(GW, &to_b, t(1000)), Decision::Forward(B));
}
