//! Rig tests across engines: smoltcp hosts on several sites (each its own engine in
//! manual mode) joined by VXLAN overlay networks over the rig's simulated underlay, with
//! seeded underlay faults, on one simulated clock.

use std::time::Duration;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use tapnet_engine::overlay::Vni;
use tapnet_engine::rig::{Direction, Fate, HostId, LinkFaults, OverlayId, Rig, SiteId};

const SEC: Duration = Duration::from_secs(1);
const KIB: u64 = 1024;

fn ip(last: u8) -> Ipv4Address {
    Ipv4Address::new(10, 0, 0, last)
}

fn cidr(last: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(ip(last), 24)
}

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

/// A rig with `n` sites and one overlay network (VNI 100) spanning them all.
fn sites(seed: u64, n: usize) -> (Rig, Vec<SiteId>, OverlayId) {
    let mut rig = Rig::new(seed);
    let mut s = vec![SiteId(0)];
    for i in 1..n {
        s.push(rig.add_site(&format!("site{i}")).unwrap());
    }
    let net = rig.add_overlay_network("blue", vni(100), &s).unwrap();
    (rig, s, net)
}

/// 1 % loss and up to 2 ms of jitter (datagrams overtake each other) on every underlay
/// link, over a fixed 200 µs.
fn lossy() -> LinkFaults {
    LinkFaults {
        loss: 0.01,
        delay: Duration::from_micros(200),
        jitter: Duration::from_millis(2),
    }
}

/// Whether the trace shows a datagram arriving before one sent earlier on the same link.
fn reordered(rig: &Rig) -> bool {
    let mut last_due = std::collections::HashMap::new();
    for e in rig.underlay_trace() {
        if let (Direction::Up, Fate::Queued { due }) = (e.dir, e.fate) {
            let prev = last_due.insert(e.site, due).unwrap_or_default();
            if due < prev {
                return true;
            }
        }
    }
    false
}

/// Ping `to` from `from` 3 times and check every echo but the first came back: a host
/// learns a remote neighbour only by asking (proxy ARP answers the asker's own VTEP, so
/// the remote host never sees the request), and smoltcp drops the first echo reply while
/// its ARP request is out.
fn ping_ok(rig: &mut Rig, from: HostId, to: Ipv4Address) {
    let r = rig.ping(from, to, 3, 2 * SEC);
    assert!(
        r.rtts[1..].iter().all(Option::is_some),
        "{from} -> {to}: {r:?}"
    );
}

#[test]
fn ping_across_two_engines() {
    let (mut rig, s, net) = sites(1, 2);
    let a = rig.add_overlay_host("a", net, s[0], cidr(2), None).unwrap();
    let b = rig.add_overlay_host("b", net, s[1], cidr(3), None).unwrap();
    assert_eq!(rig.host(a).site, s[0]);
    assert_eq!(rig.host(b).site, s[1]);

    let r = rig.ping(a, ip(3), 5, SEC);
    // The first reply is lost to b's ARP for a (see `ping_ok`); then both know each other.
    assert_eq!(r.rtts[0], None, "{r:?}");
    assert_eq!((r.sent, r.received), (5, 4), "{r:?}");
    let r = rig.ping(b, ip(2), 5, SEC);
    assert_eq!((r.sent, r.received), (5, 5), "{r:?}");
    assert_eq!((r.sent, r.received), (5, 5), "{r:?}");
    // No faults: a round trip crosses the underlay twice within a few ticks.
    assert!(r.replies().all(|t| t <= Duration::from_millis(1)), "{r:?}");

    for site in [s[0], s[1]] {
        let o = rig.overlay(site).unwrap().stats();
        // ARP for the remote host is answered by the local VTEP.
        assert!(o.proxy_arp >= 1, "{site}: {o:?}");
        assert!(o.rx_frames >= 5 && o.tx_datagrams >= 5, "{site}: {o:?}");
        assert_eq!(
            o.drop_unknown_vni + o.drop_unknown_vtep + o.drop_spoofed_source + o.drop_short,
            0,
            "{site}: {o:?}"
        );
        let u = rig.underlay_stats(site);
        assert_eq!(u.unroutable, 0);
        assert!(u.sent.delivered >= 5 && u.received.delivered >= 5, "{u:?}");
        assert_eq!(u.sent.lost + u.sent.cut + u.received.overflow, 0, "{u:?}");
    }
}

#[test]
fn tcp_across_a_lossy_reordering_underlay() {
    for seed in [11, 12, 13] {
        let (mut rig, s, net) = sites(seed, 2);
        let a = rig.add_overlay_host("a", net, s[0], cidr(2), None).unwrap();
        let b = rig.add_overlay_host("b", net, s[1], cidr(3), None).unwrap();
        // Underlay faults only: the hosts' own links stay clean.
        rig.set_all_underlay_faults(lossy());
        rig.set_trace(true);
        let t = rig
            .tcp_transfer(a, b, 5001, 512 * KIB, 60 * SEC)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(t.bytes, 512 * KIB);
        let back = rig
            .tcp_transfer(b, a, 5002, 128 * KIB, 60 * SEC)
            .unwrap_or_else(|e| panic!("seed {seed}, back: {e}"));
        assert_eq!(back.bytes, 128 * KIB);

        let (u0, u1) = (rig.underlay_stats(s[0]), rig.underlay_stats(s[1]));
        assert!(u0.sent.lost + u1.sent.lost > 0, "seed {seed}: no loss");
        assert!(reordered(&rig), "seed {seed}: no reordering");
        for h in [a, b] {
            let l = rig.link_stats(h);
            assert_eq!(l.up.lost + l.down.lost, 0);
        }
        eprintln!(
            "seed {seed}: {:?} ({:.1} Mbit/s), lost {} of {} datagrams",
            t.elapsed,
            t.goodput_bps() / 1e6,
            u0.sent.lost + u1.sent.lost,
            u0.sent.offered + u1.sent.offered,
        );
    }
}

#[test]
fn tcp_with_underlay_gso_and_gro() {
    for (seed, faults) in [
        (31, LinkFaults::new(0.0, Duration::from_micros(200))),
        (32, lossy()),
    ] {
        let mut rig = Rig::new(seed);
        rig.set_underlay_offloads(true);
        let east = rig.add_site("east").unwrap();
        let s = [SiteId(0), east];
        let net = rig.add_overlay_network("blue", vni(100), &s).unwrap();
        let a = rig.add_overlay_host("a", net, s[0], cidr(2), None).unwrap();
        let b = rig.add_overlay_host("b", net, s[1], cidr(3), None).unwrap();
        rig.set_all_underlay_faults(faults);
        assert_eq!(rig.overlay(s[0]).unwrap().offloads(), (true, true));
        let t = rig
            .tcp_transfer(a, b, 5001, 512 * KIB, 60 * SEC)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(t.bytes, 512 * KIB);
        let (tx, rx) = (
            rig.overlay(s[0]).unwrap().stats(),
            rig.overlay(s[1]).unwrap().stats(),
        );
        // Runs of full-sized segments left as GSO messages and were read as GRO runs,
        // their inner segments merged into superframes (segmented again for b's port).
        assert!(tx.tx_gso_messages > 0, "seed {seed}: {tx:?}");
        assert!(rx.rx_merged > 0, "seed {seed}: {rx:?}");
        assert!(rx.rx_datagrams > rx.rx_syscalls, "seed {seed}: {rx:?}");
        assert_eq!(rx.rx_truncated + rx.rx_no_buffer, 0, "seed {seed}: {rx:?}");
        eprintln!(
            "seed {seed}: {:?}, {} GSO messages, {} segments merged",
            t.elapsed, tx.tx_gso_messages, rx.rx_merged
        );
    }
}

#[test]
fn another_vni_on_the_same_sites_receives_nothing() {
    let (mut rig, s, blue) = sites(3, 2);
    let red = rig.add_overlay_network("red", vni(200), &s).unwrap();
    let b2 = rig
        .add_overlay_host("blue-2", blue, s[0], cidr(2), None)
        .unwrap();
    let b3 = rig
        .add_overlay_host("blue-3", blue, s[1], cidr(3), None)
        .unwrap();
    // Same addresses (hence same MACs) as blue's hosts, on the other VNI.
    let r2 = rig
        .add_overlay_host("red-2", red, s[0], cidr(2), None)
        .unwrap();
    let r3 = rig
        .add_overlay_host("red-3", red, s[1], cidr(3), None)
        .unwrap();

    ping_ok(&mut rig, b2, ip(3));
    rig.tcp_transfer(b2, b3, 80, 256 * KIB, 10 * SEC).unwrap();
    rig.tcp_transfer(b3, b2, 81, 64 * KIB, 10 * SEC).unwrap();
    for h in [r2, r3] {
        assert_eq!(rig.link_stats(h).down.delivered, 0, "{h} got blue frames");
    }
    for site in &s {
        let d = rig.overlay_domain(red, *site).unwrap();
        let counters = rig
            .site_engine(*site)
            .stats()
            .domains
            .into_iter()
            .find(|(id, _)| *id == d)
            .map(|(_, c)| c)
            .unwrap_or_default();
        assert_eq!(counters.received, 0, "{site}: red domain saw traffic");
    }

    // Red works on its own with the same addresses, and blue hears nothing of it (once
    // blue's last ACKs have settled).
    rig.run_for(5 * SEC);
    let before: Vec<u64> = [b2, b3]
        .iter()
        .map(|&h| rig.link_stats(h).down.delivered)
        .collect();
    ping_ok(&mut rig, r3, ip(2));
    let after: Vec<u64> = [b2, b3]
        .iter()
        .map(|&h| rig.link_stats(h).down.delivered)
        .collect();
    assert_eq!(before, after);
}

#[test]
fn underlay_partition_stops_traffic_and_healing_restores_it() {
    let (mut rig, s, net) = sites(6, 2);
    let a = rig.add_overlay_host("a", net, s[0], cidr(2), None).unwrap();
    rig.add_overlay_host("b", net, s[1], cidr(3), None).unwrap();
    ping_ok(&mut rig, a, ip(3));
    rig.partition_underlay(s[1], true);
    rig.set_trace(true);
    let r = rig.ping(a, ip(3), 3, SEC);
    assert_eq!(r.received, 0, "{r:?}");
    // The requests crossed a's link and were dropped on arrival at the cut site.
    let cut: Vec<_> = rig
        .underlay_trace()
        .iter()
        .filter(|e| e.fate == Fate::Cut)
        .collect();
    assert_eq!(cut.len(), 3, "{:?}", rig.underlay_trace());
    assert!(
        cut.iter()
            .all(|e| e.site == s[1] && e.dir == Direction::Down && e.to == rig.vtep(s[1]))
    );
    assert_eq!(rig.underlay_stats(s[1]).received.cut, 3);
    rig.partition_underlay(s[1], false);
    let r = rig.ping(a, ip(3), 3, SEC);
    assert_eq!(r.received, 3, "{r:?}");
}

/// A lossy two-site transfer and a ping, observed.
fn faulty_run(seed: u64) -> (u64, Duration, usize) {
    let (mut rig, s, net) = sites(seed, 2);
    let a = rig.add_overlay_host("a", net, s[0], cidr(2), None).unwrap();
    let b = rig.add_overlay_host("b", net, s[1], cidr(3), None).unwrap();
    rig.set_all_underlay_faults(lossy());
    rig.set_trace(true);
    let t = rig.tcp_transfer(a, b, 7000, 128 * KIB, 60 * SEC).unwrap();
    rig.ping(b, ip(2), 3, SEC);
    (rig.digest(), t.elapsed, rig.underlay_trace().len())
}

#[test]
fn same_seed_same_run() {
    let one = faulty_run(21);
    assert_eq!(one, faulty_run(21));
    assert!(one.2 > 0);
    assert_ne!(one.0, faulty_run(22).0);
}

#[test]
fn three_engines_with_hosts_on_all() {
    let (mut rig, s, net) = sites(4, 3);
    let hosts: Vec<HostId> = s
        .iter()
        .enumerate()
        .flat_map(|(i, &site)| {
            (0..2u8)
                .map(|k| (i as u8 * 2 + k + 2, site))
                .collect::<Vec<_>>()
        })
        .map(|(last, site)| {
            rig.add_overlay_host(&format!("h{last}"), net, site, cidr(last), None)
                .unwrap()
        })
        .collect();
    rig.set_all_underlay_faults(LinkFaults::new(0.0, Duration::from_micros(300)));
    // Every host reaches every other, on its own site and across.
    for &a in &hosts {
        for &b in &hosts {
            if a != b {
                let to = rig.ip(b);
                ping_ok(&mut rig, a, to);
            }
        }
    }
    // A transfer around the ring of sites.
    for i in 0..3 {
        let (from, to) = (hosts[2 * i], hosts[(2 * i + 3) % 6]);
        assert_ne!(rig.host(from).site, rig.host(to).site);
        rig.tcp_transfer(from, to, 6000 + i as u16, 128 * KIB, 10 * SEC)
            .unwrap();
    }
    for &site in &s {
        let o = rig.overlay(site).unwrap().stats();
        assert_eq!(
            o.drop_unknown_vni + o.drop_unknown_vtep + o.drop_spoofed_source,
            0,
            "{site}: {o:?}"
        );
        assert!(rig.underlay_stats(site).received.delivered > 0);
        // Each site's VTEP knows the four hosts on the other two sites.
        let tables = rig.overlay(site).unwrap().tables();
        assert_eq!(tables.network(vni(100)).unwrap().len(), 4);
        assert_eq!(tables.network(vni(100)).unwrap().peers().len(), 2);
    }
}

#[test]
fn single_engine_rigs_are_unchanged() {
    // No overlay network: no VTEP, no underlay events, only site 0.
    let mut rig = Rig::new(5);
    let net = rig.add_network("lan").unwrap();
    let a = rig.add_host("a", net, cidr(2), None).unwrap();
    rig.add_host("b", net, cidr(3), None).unwrap();
    rig.set_trace(true);
    assert_eq!(rig.ping(a, ip(3), 2, SEC).received, 2);
    assert_eq!(rig.site_ids().count(), 1);
    assert!(rig.overlay(SiteId(0)).is_none());
    assert!(rig.underlay_trace().is_empty());
    assert_eq!(rig.host(a).site, SiteId(0));
}
