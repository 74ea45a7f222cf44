//! moby's own test vectors for the default IPAM driver, run against ours.

use super::super::*;
use super::{alloc_raw, default_pool, ip, net};

/// `address_space_test.go` `TestDynamicPoolAllocation`, one case a line:
/// `predefined (base:size …) | allocated | reserved | expected subnet or "none"`.
/// (Its cases with duplicate allocations are left out: they cannot exist here.)
const DYNAMIC_POOL_ALLOCATION: &[&str] = &[
    "192.168.0.0/16:24 | 192.168.255.0/24 | | 192.168.0.0/24",
    "10.0.0.0/8:24 192.168.0.0/16:24 | 10.0.0.0/8 | 10.0.0.0/7 | 192.168.0.0/24",
    "10.20.0.0/16:24 192.168.0.0/16:24 | 10.0.0.0/8 192.168.128.0/24 | | 192.168.0.0/24",
    "10.20.0.0/16:24 192.168.0.0/16:24 | 10.0.0.0/8 192.168.0.0/24 192.168.128.0/24 | | 192.168.1.0/24",
    "10.20.0.0/22:24 192.168.0.0/16:24 | 10.20.0.0/24 10.20.1.0/24 10.20.2.0/24 192.168.128.0/24 | 10.20.3.0/24 | 192.168.0.0/24",
    "10.20.0.0/16:24 192.168.0.0/16:24 | 10.20.0.0/17 10.20.128.0/17 | 200.1.2.0/24 | 192.168.0.0/24",
    "10.10.0.0/22:24 192.168.0.0/16:24 | 10.10.0.0/24 10.10.1.0/24 10.10.2.0/24 10.10.3.0/24 | 10.10.3.0/24 | 192.168.0.0/24",
    "192.168.0.0/16:24 | 192.168.0.0/24 192.168.1.0/24 192.168.2.0/23 192.168.4.3/30 | | 192.168.5.0/24",
    "10.0.0.0/31:31 192.168.0.0/16:24 | 10.0.0.0/32 100.0.0.0/32 200.0.0.0/32 | | 192.168.0.0/24",
    "192.168.0.0/16:24 | 192.168.0.0/24 192.168.1.0/24 192.168.2.3/30 | 192.168.2.4/30 192.168.3.0/30 192.168.4.0/23 | 192.168.6.0/24",
    "192.168.0.0/16:24 | 192.168.0.0/24 | 192.168.0.0/24 | 192.168.1.0/24",
    "10.0.0.0/8:24 192.168.0.0/16:24 | 10.0.0.0/24 | 192.168.0.0/24 | 10.0.1.0/24",
    "10.0.0.0/8:24 10.0.0.0/16:24 10.10.0.0/16:24 192.168.0.0/16:24 | | 10.0.0.0/8 | 192.168.0.0/24",
    "172.16.0.0/15:16 | 172.16.0.0/16 | | 172.17.0.0/16",
    "172.16.0.0/15:16 192.168.0.0/16:24 | 172.16.0.0/16 172.17.0.0/17 | | 192.168.0.0/24",
    "172.16.0.0/15:16 | 172.16.0.0/16 172.17.0.0/17 | | none",
    "172.16.0.0/15:16 | 172.16.0.0/16 172.17.0.0/16 192.168.0.0/24 | | none",
    "172.16.0.0/15:16 | 172.16.0.0/16 172.17.0.0/16 | 192.168.0.0/24 | none",
    "172.16.0.0/15:16 192.168.0.0/23:24 | 172.16.0.0/16 172.17.0.0/16 192.168.0.0/24 192.168.1.0/24 | | none",
    "172.16.0.0/15:16 192.168.0.0/23:24 | 172.16.0.0/16 172.17.128.0/17 192.168.0.1/32 192.168.1.0/24 | | none",
    "172.16.0.0/15:16 192.168.0.0/23:24 | 172.16.0.0/16 172.16.120.0/24 172.17.128.0/17 172.17.128.0/24 | | 192.168.0.0/24",
];

#[test]
fn dynamic_pool_allocation() {
    for case in DYNAMIC_POOL_ALLOCATION {
        let f: Vec<&str> = case.split('|').map(str::trim).collect();
        let predefined = f[0]
            .split_whitespace()
            .map(|p| {
                let (base, size) = p.split_once(':').unwrap();
                PredefinedPool {
                    base: net(base),
                    size: size.parse().unwrap(),
                }
            })
            .collect();
        let mut ipam = Ipam::with_predefined(predefined).unwrap();
        for a in f[1].split_whitespace() {
            alloc_raw(&mut ipam, a);
        }
        let reserved: Vec<Ipv4Net> = f[2].split_whitespace().map(net).collect();
        let want = match f[3] {
            "none" => Err(IpamError::NoMoreSubnets),
            s => Ok(net(s)),
        };
        assert_eq!(ipam.next_predefined(&reserved, None), want, "{case}");
    }
}

/// `address_space_test.go` `TestPoolAllocateAndRelease` (regression test for moby#48069).
#[test]
fn pool_allocate_and_release() {
    let pp = |s: &str| PredefinedPool {
        base: net(s),
        size: 24,
    };
    let mut ipam = Ipam::with_predefined(vec![
        pp("10.0.0.0/24"),
        pp("10.0.1.0/24"),
        pp("10.1.0.0/16"),
    ])
    .unwrap();
    let avoid = [net("10.0.0.0/16")];
    let n1 = ipam.request_pool(&PoolRequest::default(), &avoid).unwrap();
    let n2 = ipam.request_pool(&PoolRequest::default(), &avoid).unwrap();
    assert_eq!(
        (n1.subnet, n2.subnet),
        (net("10.1.0.0/24"), net("10.1.1.0/24"))
    );

    let mut ipam = Ipam::with_predefined(vec![PredefinedPool {
        base: net("10.0.0.0/8"),
        size: 24,
    }])
    .unwrap();
    let n: Vec<Pool> = (0..4).map(|_| default_pool(&mut ipam)).collect();
    ipam.release_pool(&n[1].id).unwrap();
    ipam.release_pool(&n[2].id).unwrap();
    let again: Vec<Ipv4Net> = (0..3).map(|_| default_pool(&mut ipam).subnet).collect();
    assert_eq!(
        again,
        [net("10.0.1.0/24"), net("10.0.2.0/24"), net("10.0.4.0/24")]
    );
}

/// Integration test `TestBridgeIPAMStatus` (`integration/network/bridge`), IPv4 half.
#[test]
fn bridge_ipam_status() {
    let mut ipam = Ipam::new();
    let req = PoolRequest {
        subnet: Some(net("192.168.0.0/24")),
        ip_range: Some(net("192.168.0.64/31")),
        gateway: Some(ip("192.168.0.1")),
        aux_addresses: [
            ("reserved".into(), ip("192.168.0.65")),
            ("reserved_1".into(), ip("192.168.0.128")),
        ]
        .into(),
        serial: false,
    };
    let p = ipam.request_pool(&req, &[]).unwrap();
    let st = |ipam: &Ipam| ipam.status(&p.id).unwrap();
    assert_eq!(
        st(&ipam),
        SubnetStatus {
            ips_in_use: 5,
            dynamic_ips_available: 1
        }
    );
    let a = ipam.request_address(&p.id, None).unwrap();
    assert_eq!(a, ip("192.168.0.64"));
    assert_eq!(
        st(&ipam),
        SubnetStatus {
            ips_in_use: 6,
            dynamic_ips_available: 0
        }
    );
    let b = ipam
        .request_address(&p.id, Some(ip("192.168.0.129")))
        .unwrap();
    assert_eq!(
        st(&ipam),
        SubnetStatus {
            ips_in_use: 7,
            dynamic_ips_available: 0
        }
    );
    ipam.release_address(&p.id, a).unwrap();
    ipam.release_address(&p.id, b).unwrap();
    assert_eq!(
        st(&ipam),
        SubnetStatus {
            ips_in_use: 5,
            dynamic_ips_available: 1
        }
    );
}
