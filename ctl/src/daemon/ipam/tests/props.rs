//! Property tests: random sequences of pool and address requests and releases keep
//! every invariant, and a failed request changes nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::super::*;
use super::net;

/// A pool request in the making. `kind`: 0 = default pool, 1 = user subnet, 2 = user
/// subnet with an ip-range, 3 = `0.0.0.0/len`.
#[derive(Clone, Debug)]
struct PoolOp {
    kind: u8,
    third: u8,
    len: u8,
    rlen: u8,
    roff: u32,
    gw: Option<u32>,
    aux: Vec<u32>,
    serial: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Pool(PoolOp),
    ReleasePool(usize),
    Addr { pool: usize, preferred: Option<u32> },
    ReleaseAddr(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let pool = (
        0u8..4,
        0u8..8,
        24u8..=31,
        0u8..5,
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u32>(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(kind, third, len, rlen, roff, gw, aux, serial)| {
            Op::Pool(PoolOp {
                kind,
                third,
                len,
                rlen,
                roff,
                gw,
                aux,
                serial,
            })
        });
    let addr = (any::<usize>(), proptest::option::weighted(0.2, 0u32..300))
        .prop_map(|(pool, preferred)| Op::Addr { pool, preferred });
    prop_oneof![
        3 => pool,
        1 => any::<usize>().prop_map(Op::ReleasePool),
        8 => addr,
        3 => any::<usize>().prop_map(Op::ReleaseAddr),
    ]
}

/// The request for `o`, over subnets of 10.0.0.0/21 (where the predefined pools of
/// `run` are too); `ranges` allows ip-ranges.
fn pool_request(o: &PoolOp, ranges: bool) -> PoolRequest {
    // Range pools use whole /24s so that several land on the same subnet and share it.
    let len = if o.kind == 2 && ranges { 24 } else { o.len };
    let s = Ipv4Net::new(Ipv4Addr::new(10, 0, o.third, 0), len)
        .unwrap()
        .masked();
    let within = |x: u32| s.at(x % (s.size() as u32));
    let mut r = PoolRequest {
        serial: o.serial,
        ..PoolRequest::default()
    };
    match o.kind {
        0 => return r,
        3 => {
            r.subnet = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, len.min(30));
            return r;
        }
        _ => r.subnet = Some(s),
    }
    if o.kind == 2 && ranges {
        let rl = (len + o.rlen).min(32);
        r.ip_range = Ipv4Net::new(within(o.roff), rl).map(Ipv4Net::masked);
    }
    r.gateway = o.gw.map(within);
    r.aux_addresses = o
        .aux
        .iter()
        .enumerate()
        .map(|(i, &x)| (format!("a{i}"), within(x)))
        .collect();
    r
}

/// Runs `ops`, checking the invariants after each; `ranges` allows ip-range pools
/// (which may share the very same subnet, moby#46756, and overlap no other).
fn run(ops: Vec<Op>, ranges: bool) -> Result<(), TestCaseError> {
    // Small predefined pools overlapping the user subnets' space so they collide.
    let pre = vec![
        PredefinedPool {
            base: net("10.0.0.0/22"),
            size: 26,
        },
        PredefinedPool {
            base: net("10.0.8.0/24"),
            size: 28,
        },
    ];
    let mut ipam = Ipam::with_predefined(pre).unwrap();
    let mut held: Vec<(String, Ipv4Addr)> = Vec::new();
    for op in ops {
        let before = ipam.clone();
        let ids: Vec<String> = ipam.pools().map(|p| p.id.clone()).collect();
        match op {
            Op::Pool(o) => {
                let req = pool_request(&o, ranges);
                let avoid = [net("10.0.1.0/26")];
                match ipam.request_pool(&req, &avoid) {
                    Ok(p) => {
                        prop_assert!(p.subnet.contains(p.gateway));
                        prop_assert!(p.aux.values().all(|&a| p.subnet.contains(a)));
                        if req.subnet.is_none_or(|s| s.addr().is_unspecified()) {
                            prop_assert!(!p.subnet.overlaps(avoid[0]));
                        }
                    }
                    Err(_) => prop_assert_eq!(&ipam, &before, "failed request_pool changed state"),
                }
            }
            Op::ReleasePool(i) if !ids.is_empty() => {
                let id = &ids[i % ids.len()];
                // The daemon releases endpoints first.
                for (_, a) in held.iter().filter(|(p, _)| p == id) {
                    ipam.release_address(id, *a).unwrap();
                }
                held.retain(|(p, _)| p != id);
                ipam.release_pool(id).unwrap();
            }
            Op::Addr { pool, preferred } if !ids.is_empty() => {
                let id = ids[pool % ids.len()].clone();
                let p = ipam.pool(&id).unwrap().clone();
                let preferred = preferred
                    .map(|x| Ipv4Addr::from_bits(p.subnet.network().to_bits().wrapping_add(x)));
                let was_held = preferred.is_some_and(|a| ipam.is_allocated(&id, a));
                match ipam.request_address(&id, preferred) {
                    Ok(a) => {
                        prop_assert!(!was_held);
                        prop_assert!(p.subnet.contains(a));
                        if preferred.is_none() {
                            prop_assert!(p.ip_range.unwrap_or(p.subnet).contains(a));
                        } else {
                            prop_assert_eq!(Some(a), preferred);
                        }
                        held.push((id, a));
                    }
                    Err(e) => {
                        prop_assert_eq!(&ipam, &before, "failed request_address changed state");
                        match preferred {
                            Some(a) if !p.subnet.contains(a) => prop_assert_eq!(
                                e,
                                IpamError::OutOfRange {
                                    addr: a,
                                    subnet: p.subnet
                                }
                            ),
                            Some(a) => prop_assert!(was_held && e == IpamError::AddressInUse(a)),
                            None => prop_assert_eq!(e, IpamError::NoAvailableAddresses),
                        }
                    }
                }
            }
            Op::ReleaseAddr(i) if !held.is_empty() => {
                let (id, a) = held.swap_remove(i % held.len());
                ipam.release_address(&id, a).unwrap();
                prop_assert!(!ipam.is_allocated(&id, a));
            }
            _ => {}
        }
        check_invariants(&ipam, &held, ranges)?;
    }
    let back: Ipam = serde_json::from_str(&serde_json::to_string(&ipam).unwrap()).unwrap();
    prop_assert_eq!(back, ipam);
    Ok(())
}

fn check_invariants(
    ipam: &Ipam,
    held: &[(String, Ipv4Addr)],
    ranges: bool,
) -> Result<(), TestCaseError> {
    let pools: Vec<&Pool> = ipam.pools().collect();
    // Held endpoint addresses: distinct per subnet (globally without range pools),
    // inside their pool, never network/broadcast/gateway/aux of any pool on the subnet.
    let mut seen: BTreeSet<(Option<Ipv4Net>, Ipv4Addr)> = BTreeSet::new();
    for (id, a) in held {
        let p = ipam.pool(id).unwrap();
        prop_assert!(p.subnet.contains(*a));
        prop_assert!(ipam.is_allocated(id, *a));
        let key = if ranges { Some(p.subnet) } else { None };
        prop_assert!(seen.insert((key, *a)), "{} handed out twice", a);
        if p.subnet.prefix_len() < 31 {
            prop_assert!(*a != p.subnet.network() && *a != p.subnet.last());
        }
        for q in pools.iter().filter(|q| q.subnet == p.subnet) {
            prop_assert!(*a != q.gateway && !q.aux.values().any(|x| x == a));
        }
    }
    // Two pools' subnets are the same (a pool with an ip-range sharing another's) or do
    // not overlap at all, with or without ranges.
    for (i, p) in pools.iter().enumerate() {
        prop_assert!(ipam.is_allocated(&p.id, p.gateway));
        for q in &pools[i + 1..] {
            prop_assert!(
                p.subnet == q.subnet || !p.subnet.overlaps(q.subnet),
                "{} overlaps {}",
                p.id,
                q.id
            );
            if p.ip_range.is_none() && q.ip_range.is_none() {
                prop_assert!(p.subnet != q.subnet, "{} shares with {}", p.id, q.id);
            }
        }
    }
    // Counters agree with the address set.
    for p in &pools {
        let st = ipam.status(&p.id).unwrap();
        let r = p.ip_range.unwrap_or(p.subnet);
        prop_assert!(st.dynamic_ips_available <= r.size());
        prop_assert!(st.ips_in_use <= p.subnet.size());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, true)?;
    }

    #[test]
    fn without_ranges_addresses_and_pools_are_globally_unique(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, false)?;
    }
}
