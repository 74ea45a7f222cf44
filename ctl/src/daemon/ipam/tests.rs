//! Every rule and error text of the IPAM, Docker's pool order, serde round trips;
//! moby's own test vectors in `moby`, property tests in `props`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::addrset::AddrSet;
use super::*;
use crate::daemon::server::ipam_status;

mod moby;
mod props;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn subnet(s: &str) -> PoolRequest {
    PoolRequest {
        subnet: Some(net(s)),
        ..PoolRequest::default()
    }
}

fn default_pool(ipam: &mut Ipam) -> Pool {
    ipam.request_pool(&PoolRequest::default(), &[]).unwrap()
}

/// Marks `n` allocated without any checks (moby's tests set `allocated` directly).
fn alloc_raw(ipam: &mut Ipam, n: &str) {
    let n = net(n);
    ipam.subnets
        .insert(n.masked(), SubnetState::new(n.masked()));
}

// ---------------------------------------------------------------- Ipv4Net, AddrSet

#[test]
fn ipv4net_parses_like_netip() {
    let n = net("172.30.0.1/16");
    assert_eq!(n.addr(), ip("172.30.0.1"));
    assert_eq!(n.prefix_len(), 16);
    assert!(!n.is_masked());
    assert_eq!(n.masked(), net("172.30.0.0/16"));
    assert_eq!(n.to_string(), "172.30.0.1/16");
    assert_eq!(n.network(), ip("172.30.0.0"));
    assert_eq!(n.last(), ip("172.30.255.255"));
    assert_eq!(n.netmask(), ip("255.255.0.0"));
    assert_eq!(n.size(), 65536);
    assert_eq!(net("0.0.0.0/0").size(), 1 << 32);
    assert_eq!(net("0.0.0.0/0").last(), ip("255.255.255.255"));
    assert_eq!(net("10.0.0.7/32").size(), 1);
    for bad in [
        "172.30.0.0",
        "172.30.0.0/33",
        "172.30.0.0/016",
        "172.30.0.0/+16",
        "172.30.0.0/",
        "172.30.0/16",
        "foo/8",
        "fd00::/64",
        " 10.0.0.0/8",
        "010.0.0.0/8",
    ] {
        assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} parsed");
    }
    assert!("10.0.0.0/0".parse::<Ipv4Net>().is_ok());
}

#[test]
fn ipv4net_contains_and_overlaps() {
    let a = net("10.0.0.0/8");
    assert!(a.contains(ip("10.255.255.255")));
    assert!(!a.contains(ip("11.0.0.0")));
    assert!(a.overlaps(net("10.1.0.0/16")));
    assert!(net("10.1.0.0/16").overlaps(a));
    assert!(!net("10.1.0.0/16").overlaps(net("10.2.0.0/16")));
    assert!(net("0.0.0.0/0").overlaps(net("1.2.3.4/32")));
    // Ordered like moby's PrefixCompare: by address, shorter prefix first.
    let mut v = vec![net("10.0.0.0/24"), net("10.0.0.0/8"), net("9.0.0.0/8")];
    v.sort();
    assert_eq!(
        v,
        vec![net("9.0.0.0/8"), net("10.0.0.0/8"), net("10.0.0.0/24")]
    );
}

#[test]
fn ipv4net_serde_is_the_cidr_string() {
    let n = net("172.17.0.0/16");
    assert_eq!(serde_json::to_string(&n).unwrap(), "\"172.17.0.0/16\"");
    assert_eq!(
        serde_json::from_str::<Ipv4Net>("\"172.17.0.0/16\"").unwrap(),
        n
    );
    assert!(serde_json::from_str::<Ipv4Net>("\"172.17.0.0\"").is_err());
}

#[test]
fn addrset_runs_merge_and_split() {
    let mut s = AddrSet::default();
    assert_eq!(s.first_free(0, 10), Some(0));
    for x in [0, 2, 1, 5, 4] {
        assert!(s.insert(x));
    }
    assert!(!s.insert(1));
    assert_eq!(Vec::<[u32; 2]>::from(s.clone()).len(), 2);
    assert_eq!(s.first_free(0, 10), Some(3));
    assert_eq!(s.first_free(4, 10), Some(6));
    assert_eq!(s.first_free(4, 5), None);
    assert_eq!(s.first_free(7, 6), None);
    assert!(s.insert(3));
    assert_eq!(Vec::<[u32; 2]>::from(s.clone()), vec![[0, 5]]);
    assert_eq!(s.len(), 6);
    assert_eq!(s.count_in(2, 4), 3);
    assert_eq!(s.count_in(5, 5), 1);
    assert_eq!(s.count_in(6, 100), 0);
    assert!(s.remove(2));
    assert!(!s.remove(2));
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 3, 4, 5]);
    assert_eq!(s.count_in(0, 5), 5);
    assert!(s.insert(u32::MAX));
    assert_eq!(s.first_free(u32::MAX, u32::MAX), None);
    assert_eq!(s.count_in(u32::MAX, u32::MAX), 1);
}

#[test]
fn addrset_rejects_broken_runs() {
    let ok: Result<AddrSet, _> = vec![[0, 1], [3, 4]].try_into();
    assert!(ok.is_ok());
    for bad in [
        vec![[2, 1]],
        vec![[0, 1], [2, 3]],
        vec![[3, 4], [0, 1]],
        vec![[0, 5], [3, 8]],
    ] {
        let r: Result<AddrSet, _> = bad.clone().try_into();
        assert!(r.is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------- pools: order

#[test]
fn default_pools_come_in_dockers_order_then_run_out() {
    let mut ipam = Ipam::new();
    let mut got = Vec::new();
    loop {
        match ipam.request_pool(&PoolRequest::default(), &[]) {
            Ok(p) => got.push(p.subnet.to_string()),
            Err(e) => {
                assert_eq!(e, IpamError::NoMoreSubnets);
                assert_eq!(
                    e.to_string(),
                    "all predefined address pools have been fully subnetted"
                );
                assert_eq!(ipam_status(&e), 400);
                break;
            }
        }
    }
    let mut want: Vec<String> = (17..=31).map(|b| format!("172.{b}.0.0/16")).collect();
    want.extend((0..16).map(|i| format!("192.168.{}.0/20", i * 16)));
    assert_eq!(got, want);
}

#[test]
fn first_network_gets_gateway_dot_one_and_containers_follow() {
    let mut ipam = Ipam::new();
    let p = default_pool(&mut ipam);
    assert_eq!(p.id, "172.17.0.0/16");
    assert_eq!(p.gateway, ip("172.17.0.1"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.17.0.2"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.17.0.3"));
    assert!(ipam.is_allocated(&p.id, ip("172.17.0.0")));
    assert!(ipam.is_allocated(&p.id, ip("172.17.255.255")));
    assert!(ipam.is_allocated(&p.id, ip("172.17.0.1")));
}

#[test]
fn user_subnet_in_between_is_skipped_by_first_fit() {
    let mut ipam = Ipam::new();
    ipam.request_pool(&subnet("172.18.0.0/16"), &[]).unwrap();
    ipam.request_pool(&subnet("172.20.5.0/24"), &[]).unwrap();
    let got: Vec<String> = (0..4)
        .map(|_| default_pool(&mut ipam).subnet.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "172.17.0.0/16",
            "172.19.0.0/16",
            "172.21.0.0/16",
            "172.22.0.0/16"
        ]
    );
}

#[test]
fn avoided_prefixes_are_skipped() {
    let mut ipam = Ipam::new();
    let avoid = [net("172.17.0.0/16"), net("172.19.5.7/32")];
    let a = ipam.request_pool(&PoolRequest::default(), &avoid).unwrap();
    let b = ipam.request_pool(&PoolRequest::default(), &avoid).unwrap();
    assert_eq!(
        (a.subnet, b.subnet),
        (net("172.18.0.0/16"), net("172.20.0.0/16"))
    );
    // A host route covering 172.16/12 pushes everything to 192.168.
    let c = ipam
        .request_pool(&PoolRequest::default(), &[net("172.16.0.0/12")])
        .unwrap();
    assert_eq!(c.subnet, net("192.168.0.0/20"));
    // `avoid` is not a check on user subnets.
    ipam.request_pool(&subnet("10.9.0.0/16"), &[net("10.0.0.0/8")])
        .unwrap();
}

#[test]
fn released_pool_is_reused_first() {
    let mut ipam = Ipam::new();
    let a = default_pool(&mut ipam);
    let b = default_pool(&mut ipam);
    default_pool(&mut ipam);
    ipam.release_pool(&b.id).unwrap();
    assert_eq!(default_pool(&mut ipam).subnet, b.subnet);
    ipam.release_pool(&a.id).unwrap();
    assert_eq!(default_pool(&mut ipam).subnet, a.subnet);
    assert_eq!(default_pool(&mut ipam).subnet, net("172.20.0.0/16"));
}

#[test]
fn any_subnet_of_a_size() {
    let mut ipam = Ipam::new();
    let a = ipam.request_pool(&subnet("0.0.0.0/24"), &[]).unwrap();
    let b = ipam.request_pool(&subnet("0.0.0.0/24"), &[]).unwrap();
    assert_eq!(
        (a.subnet, b.subnet),
        (net("172.17.0.0/24"), net("172.17.1.0/24"))
    );
    assert_eq!(a.gateway, ip("172.17.0.1"));
    // /0 means the pools' own size; it skips the /16 that now holds the /24s.
    assert_eq!(
        ipam.request_pool(&subnet("0.0.0.0/0"), &[]).unwrap().subnet,
        net("172.18.0.0/16")
    );
    // /12 is bigger than every predefined block.
    let e = ipam.request_pool(&subnet("0.0.0.0/12"), &[]).unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("invalid address pool", 400)
    );
    // /14 fits only the three /14 blocks.
    let c = ipam.request_pool(&subnet("0.0.0.0/14"), &[]).unwrap();
    assert_eq!(c.subnet, net("172.20.0.0/14"));
    let e = ipam
        .request_pool(
            &PoolRequest {
                ip_range: Some(net("0.0.0.0/25")),
                ..subnet("0.0.0.0/24")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to parse pool request for address space \"LocalDefault\" pool \"\" subpool \"0.0.0.0/25\": invalid address subpool"
    );
    assert_eq!(ipam_status(&e), 500);
}

#[test]
fn global_scope_pools_are_24s_of_10_slash_8() {
    let mut ipam = Ipam::with_predefined(PredefinedPool::global_defaults()).unwrap();
    assert_eq!(default_pool(&mut ipam).subnet, net("10.0.0.0/24"));
    assert_eq!(default_pool(&mut ipam).subnet, net("10.0.1.0/24"));
}

#[test]
fn predefined_pools_are_sorted_and_deduplicated() {
    let pp = |s: &str, size| PredefinedPool { base: net(s), size };
    let ipam = Ipam::with_predefined(vec![
        pp("10.0.0.0/8", 16),
        pp("10.0.0.0/8", 24),
        pp("10.10.0.0/8", 24),
        pp("10.0.100.0/8", 24),
        pp("192.168.0.0/24", 24),
    ])
    .unwrap();
    assert_eq!(
        ipam.predefined(),
        [pp("10.0.0.0/8", 16), pp("192.168.0.0/24", 24)]
    );
    assert_eq!(
        Ipam::with_predefined(PredefinedPool::local_defaults()).unwrap(),
        Ipam::new()
    );
    let e = Ipam::with_predefined(vec![pp("10.0.0.0/24", 16)]).unwrap_err();
    assert_eq!(
        e,
        IpamError::BadDefaultPool {
            base: net("10.0.0.0/24"),
            size: 16
        }
    );
    assert!(Ipam::with_predefined(vec![pp("10.0.0.0/8", 33)]).is_err());
}

// ---------------------------------------------------------------- user subnets

#[test]
fn overlapping_user_subnet_is_refused() {
    let mut ipam = Ipam::new();
    default_pool(&mut ipam);
    for s in ["172.17.0.0/16", "172.17.5.0/24", "172.16.0.0/12"] {
        let e = ipam.request_pool(&subnet(s), &[]).unwrap_err();
        assert_eq!(e, IpamError::PoolOverlap, "{s}");
        assert_eq!(
            e.to_string(),
            "invalid pool request: Pool overlaps with other one on this address space"
        );
        assert_eq!(ipam_status(&e), 403);
    }
    ipam.request_pool(&subnet("172.30.0.0/16"), &[]).unwrap();
}

#[test]
fn ip_range_on_the_same_subnet_shares_its_addresses() {
    // moby#46756: the same subnet as docker0, with a range, is accepted.
    let mut ipam = Ipam::new();
    let bridge = default_pool(&mut ipam);
    let req = PoolRequest {
        ip_range: Some(net("172.17.5.0/24")),
        ..subnet("172.17.0.0/16")
    };
    let p = ipam.request_pool(&req, &[]).unwrap();
    assert_eq!(p.id, "172.17.0.0/16/172.17.5.0/24");
    // Its gateway is the first free address of the range: the range's ".0".
    assert_eq!(p.gateway, ip("172.17.5.0"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.17.5.1"));
    // One address set: a static address taken in one is in use in the other.
    ipam.request_address(&bridge.id, Some(ip("172.17.5.9")))
        .unwrap();
    assert_eq!(
        ipam.request_address(&p.id, Some(ip("172.17.5.9"))),
        Err(IpamError::AddressInUse(ip("172.17.5.9")))
    );
    // The same subnet and range twice is an overlap; the subnet without range too.
    assert_eq!(ipam.request_pool(&req, &[]), Err(IpamError::PoolOverlap));
    assert_eq!(
        ipam.request_pool(&subnet("172.17.0.0/16"), &[]),
        Err(IpamError::PoolOverlap)
    );
    // Another range on the same subnet is fine.
    let other = PoolRequest {
        ip_range: Some(net("172.17.6.0/24")),
        ..subnet("172.17.0.0/16")
    };
    let q = ipam.request_pool(&other, &[]).unwrap();
    // Releasing the master pool keeps the subnet while range pools use it.
    ipam.release_pool(&bridge.id).unwrap();
    assert!(ipam.is_allocated(&p.id, ip("172.17.5.9")));
    assert!(
        !ipam.is_allocated(&p.id, ip("172.17.0.1")),
        "bridge gateway went with its pool"
    );
    assert!(ipam.is_allocated(&p.id, p.gateway));
    ipam.release_pool(&p.id).unwrap();
    ipam.release_pool(&q.id).unwrap();
    assert!(!ipam.subnets.contains_key(&net("172.17.0.0/16")));
}

#[test]
fn ip_range_does_not_skip_the_overlap_check() {
    // A range made the subnet unchecked: `128.0.0.0/1` over docker0's 172.17/16 was
    // accepted, and its isolation entry covered half the Internet.
    let mut ipam = Ipam::new();
    default_pool(&mut ipam);
    for (s, r) in [
        ("128.0.0.0/1", "128.0.0.0/24"),
        ("172.16.0.0/12", "172.16.0.0/24"),
        ("172.17.5.0/24", "172.17.5.0/25"),
    ] {
        let req = PoolRequest {
            ip_range: Some(net(r)),
            ..subnet(s)
        };
        assert_eq!(
            ipam.request_pool(&req, &[]),
            Err(IpamError::PoolOverlap),
            "{s} {r}"
        );
    }
    // Nothing was allocated by the refusals.
    assert_eq!(ipam.pools().count(), 1);
    ipam.request_pool(&subnet("172.16.0.0/16"), &[]).unwrap();
}

#[test]
fn ip_range_is_where_dynamic_addresses_come_from() {
    let mut ipam = Ipam::new();
    let req = PoolRequest {
        ip_range: Some(net("172.30.5.0/30")),
        gateway: Some(ip("172.30.0.1")),
        ..subnet("172.30.0.0/16")
    };
    let p = ipam.request_pool(&req, &[]).unwrap();
    let got: Vec<Ipv4Addr> = (0..4)
        .map(|_| ipam.request_address(&p.id, None).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            ip("172.30.5.0"),
            ip("172.30.5.1"),
            ip("172.30.5.2"),
            ip("172.30.5.3")
        ]
    );
    assert_eq!(
        ipam.request_address(&p.id, None),
        Err(IpamError::NoAvailableAddresses)
    );
    // A static address may be outside the range, inside the subnet.
    assert_eq!(
        ipam.request_address(&p.id, Some(ip("172.30.9.9"))).unwrap(),
        ip("172.30.9.9")
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn subnet_with_host_bits_is_refused_with_the_fix() {
    let mut ipam = Ipam::new();
    let e = ipam
        .request_pool(&subnet("172.30.0.1/16"), &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid network config:\ninvalid subnet 172.30.0.1/16: it should be 172.30.0.0/16"
    );
    assert_eq!(ipam_status(&e), 400);
    assert_eq!(ipam, Ipam::new());
}

#[test]
fn validation_texts_match_docker() {
    let v = |r: PoolRequest| r.check().unwrap_err().to_string();
    let s = subnet("172.30.0.0/16");
    assert_eq!(
        v(PoolRequest {
            gateway: Some(ip("10.0.0.1")),
            ..s.clone()
        }),
        "invalid network config:\ninvalid gateway 10.0.0.1: parent subnet 172.30.0.0/16 doesn't contain this address"
    );
    assert_eq!(
        v(PoolRequest {
            aux_addresses: [("host".into(), ip("10.0.0.1"))].into(),
            ..s.clone()
        }),
        "invalid network config:\ninvalid auxiliary address host: parent subnet 172.30.0.0/16 doesn't contain this address"
    );
    assert_eq!(
        v(PoolRequest {
            ip_range: Some(net("172.0.0.0/8")),
            ..s.clone()
        }),
        "invalid network config:\ninvalid ip-range 172.0.0.0/8: CIDR block is bigger than its parent subnet 172.30.0.0/16"
    );
    // Several problems: a bullet list, in Docker's field order.
    let all = PoolRequest {
        subnet: Some(net("10.0.0.0/8")),
        ip_range: Some(net("192.168.0.1/24")),
        gateway: Some(ip("192.168.0.1")),
        aux_addresses: [("DefaultGatewayIPv4".into(), ip("192.168.0.1"))].into(),
        serial: false,
    };
    assert_eq!(
        v(all),
        "invalid network config:\n\
         * invalid ip-range 192.168.0.1/24: it should be 192.168.0.0/24\n\
         * invalid ip-range 192.168.0.1/24: parent subnet 10.0.0.0/8 doesn't contain ip-range\n\
         * invalid gateway 192.168.0.1: parent subnet 10.0.0.0/8 doesn't contain this address\n\
         * invalid auxiliary address DefaultGatewayIPv4: parent subnet 10.0.0.0/8 doesn't contain this address"
    );
    let e = PoolRequest {
        gateway: Some(ip("10.0.0.1")),
        ..PoolRequest::default()
    }
    .check()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "every ip-range or gateway must have a corresponding subnet"
    );
    assert_eq!(ipam_status(&e), 400);
    let e = PoolRequest {
        aux_addresses: [("a".into(), ip("10.0.0.1"))].into(),
        ..PoolRequest::default()
    }
    .check()
    .unwrap_err();
    assert_eq!(e.to_string(), "no matching subnet for aux-address 10.0.0.1");
}

#[test]
fn parse_reads_the_api_strings() {
    let none = BTreeMap::new();
    let p = PoolRequest::parse(
        "172.30.0.0/16",
        "172.30.5.0/24",
        "172.30.0.254",
        &[("h".to_string(), "172.30.0.9".to_string())].into(),
    )
    .unwrap();
    assert_eq!(p.subnet, Some(net("172.30.0.0/16")));
    assert_eq!(p.ip_range, Some(net("172.30.5.0/24")));
    assert_eq!(p.gateway, Some(ip("172.30.0.254")));
    assert_eq!(p.aux_addresses["h"], ip("172.30.0.9"));
    assert_eq!(
        PoolRequest::parse("", "", "", &none).unwrap(),
        PoolRequest::default()
    );
    let err = |s, r, g, a: &BTreeMap<String, String>| {
        PoolRequest::parse(s, r, g, a).unwrap_err().to_string()
    };
    assert_eq!(
        err("foo", "", "", &none),
        "invalid network config:\ninvalid subnet foo: invalid CIDR block notation"
    );
    assert_eq!(
        err("172.30.0.0", "", "", &none),
        "invalid network config:\ninvalid subnet 172.30.0.0: invalid CIDR block notation"
    );
    assert_eq!(
        err(
            "172.30.0.0/16",
            "bar",
            "x",
            &[("a".into(), "2001:db8::1".into())].into()
        ),
        "invalid network config:\n\
         * invalid ip-range bar: invalid CIDR block notation\n\
         * invalid gateway x: invalid address\n\
         * invalid auxiliary address a: parent subnet is an IPv4 block"
    );
    assert_eq!(
        err("10.10.10.0/24", "2001:db8::/32", "2001:db8::1", &none),
        "invalid network config:\n\
         * invalid ip-range 2001:db8::/32: parent subnet is an IPv4 block\n\
         * invalid gateway 2001:db8::1: parent subnet is an IPv4 block"
    );
    assert_eq!(
        err("10.10.10.0/8", "", "", &none),
        "invalid network config:\ninvalid subnet 10.10.10.0/8: it should be 10.0.0.0/8"
    );
    assert_eq!(
        err("10.0.0.0/8", "10.10.10.0/16", "", &none),
        "invalid network config:\ninvalid ip-range 10.10.10.0/16: it should be 10.10.0.0/16"
    );
    assert!(err("fd00::/64", "", "", &none).contains("IPv6"));
    assert_eq!(
        err("", "10.0.0.0/24", "", &none),
        "every ip-range or gateway must have a corresponding subnet"
    );
    assert_eq!(
        err("", "", "", &[("a".into(), "10.0.0.1".into())].into()),
        "no matching subnet for aux-address 10.0.0.1"
    );
}

// ---------------------------------------------------------------- gateway, aux, /31, /32

#[test]
fn user_gateway_is_reserved_and_must_be_free() {
    let mut ipam = Ipam::new();
    let p = ipam
        .request_pool(
            &PoolRequest {
                gateway: Some(ip("172.30.0.254")),
                ..subnet("172.30.0.0/16")
            },
            &[],
        )
        .unwrap();
    assert_eq!(p.gateway, ip("172.30.0.254"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.30.0.1"));
    assert_eq!(
        ipam.request_address(&p.id, Some(ip("172.30.0.254"))),
        Err(IpamError::AddressInUse(ip("172.30.0.254")))
    );
    let e = ipam
        .request_pool(
            &PoolRequest {
                gateway: Some(ip("172.31.0.0")),
                ..subnet("172.31.0.0/16")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate gateway (172.31.0.0): Address already in use"
    );
    assert_eq!(ipam_status(&e), 500);
    // `0.0.0.0/n` validates the gateway against 0.0.0.0/n; the pool then refuses it.
    let e = ipam
        .request_pool(
            &PoolRequest {
                gateway: Some(ip("0.0.0.1")),
                ..subnet("0.0.0.0/24")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate gateway (0.0.0.1): requested address is out of range"
    );
    let before = ipam.clone();
    assert!(ipam.request_pool(&subnet("172.30.0.0/16"), &[]).is_err());
    assert_eq!(ipam, before, "a failed request changes nothing");
}

#[test]
fn aux_addresses_are_reserved_and_never_handed_out() {
    let mut ipam = Ipam::new();
    let aux: BTreeMap<String, Ipv4Addr> = [
        ("a".into(), ip("172.30.0.2")),
        ("b".into(), ip("172.30.0.4")),
    ]
    .into();
    let p = ipam
        .request_pool(
            &PoolRequest {
                aux_addresses: aux.clone(),
                ..subnet("172.30.0.0/29")
            },
            &[],
        )
        .unwrap();
    assert_eq!(p.aux, aux);
    let got: Vec<Ipv4Addr> = (0..3)
        .map(|_| ipam.request_address(&p.id, None).unwrap())
        .collect();
    assert_eq!(got, [ip("172.30.0.3"), ip("172.30.0.5"), ip("172.30.0.6")]);
    assert_eq!(
        ipam.request_address(&p.id, None),
        Err(IpamError::NoAvailableAddresses)
    );

    let clash: BTreeMap<String, Ipv4Addr> = [("gw".into(), ip("172.31.0.1"))].into();
    let e = ipam
        .request_pool(
            &PoolRequest {
                aux_addresses: clash,
                ..subnet("172.31.0.0/16")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate secondary ip address (gw:172.31.0.1): Address already in use"
    );
    assert_eq!(ipam_status(&e), 500);
    let outside: BTreeMap<String, Ipv4Addr> = [("x".into(), ip("0.0.0.5"))].into();
    let e = ipam
        .request_pool(
            &PoolRequest {
                aux_addresses: outside,
                ..subnet("0.0.0.0/24")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "auxiliary address: (x:0.0.0.5) must belong to the master pool: 172.17.0.0/24"
    );
    assert_eq!(ipam_status(&e), 403);
}

#[test]
fn slash_31_and_32_have_no_network_or_broadcast() {
    let mut ipam = Ipam::new();
    let p = ipam.request_pool(&subnet("10.1.0.0/31"), &[]).unwrap();
    assert_eq!(p.gateway, ip("10.1.0.0"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("10.1.0.1"));
    assert_eq!(
        ipam.request_address(&p.id, None),
        Err(IpamError::NoAvailableAddresses)
    );
    let q = ipam.request_pool(&subnet("10.2.0.7/32"), &[]).unwrap();
    assert_eq!(q.gateway, ip("10.2.0.7"));
    let e = ipam.request_address(&q.id, None).unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("no available addresses on this pool", 503)
    );
    let r = ipam.request_pool(&subnet("10.3.0.0/30"), &[]).unwrap();
    assert_eq!(ipam.request_address(&r.id, None).unwrap(), ip("10.3.0.2"));
    assert_eq!(
        ipam.request_address(&r.id, None),
        Err(IpamError::NoAvailableAddresses)
    );
}

// ---------------------------------------------------------------- addresses

#[test]
fn lowest_free_address_is_reused() {
    let mut ipam = Ipam::new();
    let p = default_pool(&mut ipam);
    let a: Vec<Ipv4Addr> = (0..3)
        .map(|_| ipam.request_address(&p.id, None).unwrap())
        .collect();
    ipam.release_address(&p.id, a[1]).unwrap();
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), a[1]);
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.17.0.5"));
}

#[test]
fn serial_allocation_continues_after_the_last_and_wraps() {
    let mut ipam = Ipam::new();
    let p = ipam
        .request_pool(
            &PoolRequest {
                serial: true,
                ..subnet("10.0.0.0/29")
            },
            &[],
        )
        .unwrap();
    assert!(p.serial);
    let a: Vec<Ipv4Addr> = (0..3)
        .map(|_| ipam.request_address(&p.id, None).unwrap())
        .collect();
    assert_eq!(a, [ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")]);
    ipam.release_address(&p.id, a[0]).unwrap();
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("10.0.0.5"));
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("10.0.0.6"));
    // Past the end: wraps to the freed one.
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("10.0.0.2"));
    assert_eq!(
        ipam.request_address(&p.id, None),
        Err(IpamError::NoAvailableAddresses)
    );
}

#[test]
fn static_addresses() {
    let mut ipam = Ipam::new();
    let p = default_pool(&mut ipam);
    assert_eq!(
        ipam.request_address(&p.id, Some(ip("172.17.3.4"))).unwrap(),
        ip("172.17.3.4")
    );
    let e = ipam
        .request_address(&p.id, Some(ip("172.17.3.4")))
        .unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("Address already in use", 403)
    );
    for reserved in ["172.17.0.0", "172.17.0.1", "172.17.255.255"] {
        assert_eq!(
            ipam.request_address(&p.id, Some(ip(reserved))),
            Err(IpamError::AddressInUse(ip(reserved)))
        );
    }
    let e = ipam
        .request_address(&p.id, Some(ip("10.0.0.1")))
        .unwrap_err();
    assert_eq!(
        e,
        IpamError::OutOfRange {
            addr: ip("10.0.0.1"),
            subnet: net("172.17.0.0/16")
        }
    );
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("requested address is out of range", 400)
    );
    // Dynamic allocation skips the static one.
    ipam.request_address(&p.id, Some(ip("172.17.0.2"))).unwrap();
    assert_eq!(ipam.request_address(&p.id, None).unwrap(), ip("172.17.0.3"));
}

#[test]
fn release_rules() {
    let mut ipam = Ipam::new();
    let p = ipam
        .request_pool(
            &PoolRequest {
                aux_addresses: [("a".into(), ip("172.17.0.9"))].into(),
                ..subnet("172.17.0.0/16")
            },
            &[],
        )
        .unwrap();
    let a = ipam.request_address(&p.id, None).unwrap();
    ipam.release_address(&p.id, a).unwrap();
    ipam.release_address(&p.id, a).unwrap(); // a free address: no error, as in moby
    // Reserved addresses stay reserved.
    for r in ["172.17.0.0", "172.17.0.1", "172.17.0.9", "172.17.255.255"] {
        ipam.release_address(&p.id, ip(r)).unwrap();
        assert!(ipam.is_allocated(&p.id, ip(r)), "{r}");
    }
    assert_eq!(
        ipam.release_address(&p.id, ip("10.0.0.1")),
        Err(IpamError::OutOfRange {
            addr: ip("10.0.0.1"),
            subnet: p.subnet
        })
    );
    let e = ipam.release_address("10.9.0.0/16", a).unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("cannot find address pool for poolID:10.9.0.0/16", 404)
    );
    let e = ipam.request_address("nope", None).unwrap_err();
    assert_eq!(ipam_status(&e), 404);
    let e = ipam.release_pool("nope").unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), ipam_status(&e)),
        ("address space does not contain specified address pool", 400)
    );
    ipam.release_pool(&p.id).unwrap();
    assert!(ipam.pool(&p.id).is_none());
    assert_eq!(
        ipam.release_pool(&p.id),
        Err(IpamError::BadPool(p.id.clone()))
    );
    assert_eq!(ipam, Ipam::new());
}

// ---------------------------------------------------------------- status counters

#[test]
fn status_counts_like_inspect() {
    let mut ipam = Ipam::new();
    let p = default_pool(&mut ipam);
    assert_eq!((ipam.in_use(&p.id), ipam.available(&p.id)), (3, 65533));
    ipam.request_address(&p.id, None).unwrap();
    assert_eq!((ipam.in_use(&p.id), ipam.available(&p.id)), (4, 65532));
    assert_eq!((ipam.in_use("nope"), ipam.available("nope")), (0, 0));
}

// ---------------------------------------------------------------- serde, scale, misc

fn busy_ipam() -> Ipam {
    let mut ipam = Ipam::new();
    let a = default_pool(&mut ipam);
    let b = ipam
        .request_pool(
            &PoolRequest {
                ip_range: Some(net("10.5.1.0/24")),
                gateway: Some(ip("10.5.0.1")),
                aux_addresses: [("h".into(), ip("10.5.1.7"))].into(),
                serial: true,
                ..subnet("10.5.0.0/16")
            },
            &[],
        )
        .unwrap();
    for _ in 0..10 {
        ipam.request_address(&a.id, None).unwrap();
        ipam.request_address(&b.id, None).unwrap();
    }
    ipam.release_address(&a.id, ip("172.17.0.4")).unwrap();
    ipam.release_address(&b.id, ip("10.5.1.3")).unwrap();
    ipam
}

#[test]
fn serde_round_trip_preserves_state_and_what_comes_next() {
    let mut ipam = busy_ipam();
    let json = serde_json::to_string(&ipam).unwrap();
    let mut back: Ipam = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ipam);
    for id in ["172.17.0.0/16", "10.5.0.0/16/10.5.1.0/24"] {
        for _ in 0..5 {
            assert_eq!(
                back.request_address(id, None),
                ipam.request_address(id, None)
            );
        }
    }
    assert_eq!(
        back.request_pool(&PoolRequest::default(), &[]),
        ipam.request_pool(&PoolRequest::default(), &[])
    );
    assert_eq!(back, ipam);
    // A state without the predefined list (older file) gets Docker's defaults.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_object_mut().unwrap().remove("predefined");
    let old: Ipam = serde_json::from_value(v).unwrap();
    assert_eq!(old.predefined(), PredefinedPool::local_defaults());
}

#[test]
fn state_is_compact_and_allocation_fast_for_a_busy_slash_16() {
    let mut ipam = Ipam::new();
    let p = default_pool(&mut ipam);
    for i in 0..5000u32 {
        let a = ipam.request_address(&p.id, None).unwrap();
        assert_eq!(a, Ipv4Addr::from_bits(ip("172.17.0.2").to_bits() + i));
    }
    // Free every other one of the first thousand: 500 holes, still small.
    for i in (0..1000u32).step_by(2) {
        ipam.release_address(&p.id, Ipv4Addr::from_bits(ip("172.17.0.2").to_bits() + i))
            .unwrap();
    }
    let json = serde_json::to_string(&ipam).unwrap();
    assert!(json.len() < 16_000, "{} bytes", json.len());
    assert_eq!(ipam.in_use(&p.id), 3 + 4500);
    // Fill the whole /16, then it is full.
    let mut n = 0;
    while ipam.request_address(&p.id, None).is_ok() {
        n += 1;
    }
    assert_eq!(n, 65533 - 4500);
    assert_eq!(ipam.available(&p.id), 0);
    assert!(serde_json::to_string(&ipam).unwrap().len() < 1_000);
}

#[test]
fn corrupt_state_is_refused() {
    let ok = r#"{"addrs":[[0,1],[5,6]],"next":0}"#;
    assert!(serde_json::from_str::<SubnetState>(ok).is_ok());
    for bad in [
        r#"{"addrs":[[5,6],[0,1]],"next":0}"#,
        r#"{"addrs":[[0,5],[6,7]],"next":0}"#,
        r#"{"addrs":[[3,1]],"next":0}"#,
    ] {
        assert!(serde_json::from_str::<SubnetState>(bad).is_err(), "{bad}");
    }
}

#[test]
fn mac_is_02_42_and_the_address() {
    assert_eq!(
        mac_from_ipv4(ip("172.17.0.2")),
        [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
    );
}
