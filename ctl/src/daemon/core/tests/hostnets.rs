//! Subnets and the host's own networks: overlap is checked whatever the options, user
//! subnets keep clear of the host's routes and addresses, automatic ones skip them.

use super::*;
use crate::daemon::core::IpamSpec;
use crate::daemon::ipam::HostNetwork;

fn with_pool(name: &str, subnet: &str, ip_range: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipam: vec![IpamSpec {
            subnet: subnet.into(),
            ip_range: ip_range.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn route(net: &str, dev: &str) -> HostNetwork {
    HostNetwork::Route {
        net: net.parse().unwrap(),
        dev: dev.into(),
    }
}

fn address(addr: &str, dev: &str) -> HostNetwork {
    HostNetwork::Address {
        addr: ip(addr),
        dev: dev.into(),
    }
}

#[test]
fn an_ip_range_does_not_skip_the_overlap_check() {
    let r = Rig::new();
    let before = r.d().networks().len();
    // Over the default bridge's 172.17/16: half the Internet in the isolation table.
    let e = r
        .d()
        .create_network(with_pool("half", "128.0.0.0/1", "128.0.0.0/24"), false)
        .unwrap_err();
    assert_eq!(
        api(e),
        (
            403,
            "invalid pool request: Pool overlaps with other one on this address space".into()
        )
    );
    assert_eq!(r.d().networks().len(), before);
    // The same subnet as the bridge with a range of its own is Docker's sharing.
    r.d()
        .create_network(with_pool("shared", "172.17.0.0/16", "172.17.9.0/24"), false)
        .unwrap();
}

#[test]
fn a_user_subnet_over_the_hosts_routes_or_addresses_is_refused() {
    let r = Rig::new();
    r.p().set_host_networks(vec![
        route("10.1.0.0/24", "eth0"),
        address("10.1.0.5", "eth0"),
        address("192.0.2.2", "eth1"),
        address("127.0.0.1", "lo"),
        HostNetwork::Nameserver(ip("10.9.0.53")),
    ]);
    let before = r.d().networks().len();
    let err = |subnet: &str| {
        api(r
            .d()
            .create_network(with_pool("x", subnet, ""), false)
            .unwrap_err())
    };
    assert_eq!(
        err("10.1.0.128/25"),
        (
            400,
            "invalid network config:\nsubnet 10.1.0.128/25 overlaps the host's on-link route \
             10.1.0.0/24 (dev eth0): choose a subnet the host does not use"
                .into()
        )
    );
    assert_eq!(
        err("192.0.0.0/16"),
        (
            400,
            "invalid network config:\nsubnet 192.0.0.0/16 overlaps the host's address \
             192.0.2.2 (dev eth1): choose a subnet the host does not use"
                .into()
        )
    );
    assert_eq!(
        err("127.5.0.0/16"),
        (
            400,
            "invalid network config:\nsubnet 127.5.0.0/16 overlaps the host's loopback network \
             127.0.0.0/8 (dev lo): choose a subnet the host does not use"
                .into()
        )
    );
    // With an ip-range too; both collisions are named.
    let (status, text) = api(r
        .d()
        .create_network(with_pool("x", "10.0.0.0/8", "10.2.0.0/24"), false)
        .unwrap_err());
    assert_eq!(status, 400);
    assert!(text.contains("route 10.1.0.0/24") && text.contains("address 10.1.0.5"));
    assert_eq!(r.d().networks().len(), before, "nothing stored");
    // A nameserver reached through a gateway does not forbid a subnet; a free one is fine.
    r.create_net("dns", "10.9.0.0/24");
    r.create_net("free", "10.2.0.0/16");
}

#[test]
fn automatic_subnets_skip_the_hosts_networks() {
    let r = Rig::with({
        let p = MemoryPlumbing::new();
        // Docker on the same host: its docker0 is an on-link route.
        p.set_host_networks(vec![route("172.17.0.0/16", "docker0")]);
        p
    });
    assert_eq!(r.network("bridge").ipam[0].subnet, "172.18.0.0/16");
    r.p().set_host_networks(vec![
        route("172.17.0.0/16", "docker0"),
        route("172.19.0.0/16", "eth0"),
        address("172.20.3.4", "eth1"),
        HostNetwork::Nameserver(ip("172.21.0.53")),
    ]);
    let n = r
        .d()
        .create_network(with_pool("pets", "", ""), false)
        .unwrap();
    assert_eq!(n.ipam[0].subnet, "172.22.0.0/16");
}
