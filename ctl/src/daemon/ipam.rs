//! IPv4 address management with Docker's semantics: the default IPAM driver of
//! libnetwork (`daemon/libnetwork/ipams/defaultipam`) plus the checks the daemon makes
//! before calling it (`daemon/network.go` `validateIpamConfig`). Pure logic: the daemon
//! persists an [`Ipam`] with serde and passes in what it knows about the host.
//!
//! What it does, and where moby does the same:
//! - **Subnets.** Without a subnet (or with `0.0.0.0/n`, Docker 29: "any subnet of size
//!   n") a network gets the first free block of the predefined pools, in order:
//!   172.17/16, 172.18/16, 172.19/16, 172.20/14 → /16s, 172.24/14 → /16s, 172.28/14 →
//!   /16s, 192.168/16 → /20s (`ipamutils/utils.go`). First fit: a block is skipped if it
//!   overlaps an allocated subnet or one of the `avoid` prefixes (the host's routes and
//!   nameservers, `netutils.InferReservedNetworks`); a freed block is reused
//!   (`address_space.go` `allocatePredefinedPool`).
//! - **User subnets** must not overlap an allocated one ("Pool overlaps with other one on
//!   this address space"), with or without an ip-range. One exception, moby#46756: with
//!   an ip-range, the very same subnet as an allocated one is accepted and the new pool
//!   shares its addresses (`allocateSubnetL`); the same subnet *and* range twice is
//!   refused. (moby skips the check altogether when a range is given; tapnet does not:
//!   a subnet such as `128.0.0.0/1` would enter the isolation table over every other
//!   network's egress.)
//! - **The host's networks** ([`HostNetwork`], from the plumbing): automatic subnets skip
//!   the host's on-link routes, addresses and nameservers ([`avoid_list`]); a user
//!   subnet that overlaps an on-link route or holds one of the host's addresses is
//!   refused ([`check_host`]).
//! - **Reserved addresses.** The network and broadcast addresses, except in a /31 or /32
//!   (RFC 3021; `newPoolData`). The gateway: the user's, else the first free address of
//!   the ip-range if there is one, else of the subnet (`network.go`
//!   `ipamAllocateVersion` asks the pool for "any address"; with an ip-range that can be
//!   the range's own first address, e.g. `172.30.5.0` for `--ip-range 172.30.5.0/24` —
//!   docker/for-linux#170). Auxiliary addresses, wherever they are in the subnet.
//! - **Dynamic addresses** come from the ip-range if set, else the subnet: the *lowest*
//!   free one. Docker's bitmap scans from the start unless the pool asks for serial
//!   allocation (`com.docker.network.ipam.serial`, which only swarm sets on its
//!   networks: `cnmallocator`); then it continues after the last address handed out and
//!   wraps (`bitmap.SetAny(serial)`). [`PoolRequest::serial`] selects that. Unlike
//!   moby, the serial position is persisted, so a restart continues identically.
//! - **Static addresses** may be anywhere in the subnet, ip-range or not.
//! - **Counters** for inspect's `Status.IPAM.Subnets`: `IPsInUse` counts every held
//!   address of the subnet including network, broadcast, gateway and aux;
//!   `DynamicIPsAvailable` is the range's (else the subnet's) size minus what is held in
//!   it (`address_space.go` `allocationStatus`; integration test `TestBridgeIPAMStatus`).
//!
//! IPv6 is not handled here yet.

pub(crate) mod addrset;
mod error;
mod host;
mod net;
mod request;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use addrset::AddrSet;
pub use error::IpamError;
pub use host::{HostNetwork, avoid_list, check_host};
pub use net::{Ipv4Net, Ipv4NetParseError};
pub use request::PoolRequest;

/// An allocated pool: one network's IPAM config as granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The pool's id: the subnet, or `subnet/ip-range` when a range was given (moby's
    /// `PoolID` without the address-space prefix).
    pub id: String,
    /// The subnet.
    pub subnet: Ipv4Net,
    /// Where dynamic addresses come from, if not the whole subnet.
    pub ip_range: Option<Ipv4Net>,
    /// The gateway (reserved).
    pub gateway: Ipv4Addr,
    /// Reserved auxiliary addresses by name.
    pub aux: BTreeMap<String, Ipv4Addr>,
    /// Whether dynamic allocation is serial (see [`PoolRequest::serial`]).
    #[serde(default)]
    pub serial: bool,
}

/// Inspect's `Status.IPAM.Subnets[subnet]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetStatus {
    /// Every held address of the subnet: endpoints, gateway, aux, network, broadcast.
    pub ips_in_use: u64,
    /// Free addresses left in the ip-range (or the subnet).
    pub dynamic_ips_available: u64,
}

/// One block of the predefined pools: `base` split into subnets of `/size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredefinedPool {
    /// The block.
    pub base: Ipv4Net,
    /// The prefix length of the subnets cut from it.
    pub size: u8,
}

impl PredefinedPool {
    const fn new(a: [u8; 4], len: u8, size: u8) -> Self {
        Self {
            base: match Ipv4Net::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), len) {
                Some(n) => n,
                None => panic!("prefix length over 32"),
            },
            size,
        }
    }

    /// Docker's local-scope pools (`ipamutils.GetLocalScopeDefaultNetworks`).
    pub fn local_defaults() -> Vec<Self> {
        vec![
            Self::new([172, 17, 0, 0], 16, 16),
            Self::new([172, 18, 0, 0], 16, 16),
            Self::new([172, 19, 0, 0], 16, 16),
            Self::new([172, 20, 0, 0], 14, 16),
            Self::new([172, 24, 0, 0], 14, 16),
            Self::new([172, 28, 0, 0], 14, 16),
            Self::new([192, 168, 0, 0], 16, 20),
        ]
    }

    /// Docker's swarm-scope pool: 10.0.0.0/8 in /24s
    /// (`ipamutils.GetGlobalScopeDefaultNetworks`).
    pub fn global_defaults() -> Vec<Self> {
        vec![Self::new([10, 0, 0, 0], 8, 24)]
    }
}

/// One allocated subnet's addresses (shared by every pool on that subnet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SubnetState {
    /// Held host offsets.
    addrs: AddrSet,
    /// Where a serial scan resumes: one past the last dynamic allocation (moby's
    /// `Bitmap.curr`, which every "any address" allocation moves).
    next: u32,
}

impl SubnetState {
    /// A fresh subnet: network and broadcast reserved, except in a /31 or /32.
    fn new(subnet: Ipv4Net) -> Self {
        let mut addrs = AddrSet::default();
        if subnet.prefix_len() < 31 {
            addrs.insert(0);
            addrs.insert(subnet.offset_of(subnet.last()));
        }
        Self { addrs, next: 0 }
    }

    /// A dynamic address from `range` (else the whole subnet): the lowest free one, or
    /// with `serial` the first free at or after `next`, wrapping to the start.
    fn allocate(
        &mut self,
        subnet: Ipv4Net,
        range: Option<Ipv4Net>,
        serial: bool,
    ) -> Option<Ipv4Addr> {
        let r = range.unwrap_or(subnet);
        let (lo, hi) = (subnet.offset_of(r.network()), subnet.offset_of(r.last()));
        let from = if serial && self.next != 0 && self.next > lo {
            self.next
        } else {
            lo
        };
        let off = self.addrs.first_free(from, hi).or_else(|| {
            (from != lo)
                .then(|| self.addrs.first_free(lo, hi))
                .flatten()
        })?;
        self.addrs.insert(off);
        self.next = off.wrapping_add(1);
        Some(subnet.at(off))
    }
}

/// Every allocated pool and address of the local address space, plus the predefined
/// pools new networks draw from. Serialises compactly (runs of held addresses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// Sorted, without overlapping blocks.
    #[serde(default = "PredefinedPool::local_defaults")]
    predefined: Vec<PredefinedPool>,
    /// Allocated subnets (masked) and their addresses.
    subnets: BTreeMap<Ipv4Net, SubnetState>,
    /// Pools by id.
    pools: BTreeMap<String, Pool>,
}

impl Default for Ipam {
    fn default() -> Self {
        Self::new()
    }
}

impl Ipam {
    /// An empty local address space with Docker's default pools.
    pub fn new() -> Ipam {
        Ipam {
            predefined: PredefinedPool::local_defaults(),
            subnets: BTreeMap::new(),
            pools: BTreeMap::new(),
        }
    }

    /// An empty address space drawing from `pools` (the daemon's
    /// `default-address-pools`, or [`PredefinedPool::global_defaults`]). Sorted, and a
    /// block inside an earlier one is dropped, as moby's `newAddrSpace` does.
    pub fn with_predefined(pools: Vec<PredefinedPool>) -> Result<Ipam, IpamError> {
        let mut pools = pools
            .into_iter()
            .map(|p| {
                if p.size > 32 || p.base.prefix_len() > p.size {
                    Err(IpamError::BadDefaultPool {
                        base: p.base,
                        size: p.size,
                    })
                } else {
                    Ok(PredefinedPool {
                        base: p.base.masked(),
                        size: p.size,
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        pools.sort_by_key(|p| p.base);
        let mut kept: Vec<PredefinedPool> = Vec::with_capacity(pools.len());
        for p in pools {
            if kept.last().is_none_or(|k| !k.base.overlaps(p.base)) {
                kept.push(p);
            }
        }
        Ok(Ipam {
            predefined: kept,
            ..Ipam::new()
        })
    }

    /// The predefined pools, in the order they are tried.
    pub fn predefined(&self) -> &[PredefinedPool] {
        &self.predefined
    }

    /// Reserves a pool: the subnet (given, or the next free predefined block not
    /// overlapping `avoid`), its gateway and auxiliary addresses. All or nothing.
    pub fn request_pool(
        &mut self,
        req: &PoolRequest,
        avoid: &[Ipv4Net],
    ) -> Result<Pool, IpamError> {
        req.check()?;
        let subnet = match req.subnet {
            Some(s) if !s.addr().is_unspecified() => s,
            any => {
                if let Some(r) = req.ip_range {
                    return Err(IpamError::SubPoolWithoutPool(r));
                }
                let size = any.map(|s| s.prefix_len()).filter(|&l| l > 0);
                self.next_predefined(avoid, size)?
            }
        };
        let range = req.ip_range;
        let id = pool_id(subnet, range);
        if self.pools.contains_key(&id) {
            return Err(IpamError::PoolOverlap);
        }
        // With an ip-range the very same subnet may be shared (moby#46756); any other
        // overlap is refused whatever the options: moby skips the check with a range,
        // which let `--subnet 128.0.0.0/1 --ip-range 128.0.0.0/24` over 172.17/16 in.
        let mut state = match (range, self.subnets.get(&subnet)) {
            (Some(_), Some(shared)) => shared.clone(),
            _ if self.subnets.keys().any(|s| s.overlaps(subnet)) => {
                return Err(IpamError::PoolOverlap);
            }
            _ => SubnetState::new(subnet),
        };
        let gateway = match req.gateway {
            Some(g) => {
                let cause = if !subnet.contains(g) {
                    Some(IpamError::OutOfRange { addr: g, subnet })
                } else if !state.addrs.insert(subnet.offset_of(g)) {
                    Some(IpamError::AddressInUse(g))
                } else {
                    None
                };
                if let Some(cause) = cause {
                    return Err(IpamError::Gateway {
                        requested: Some(g),
                        cause: Box::new(cause),
                    });
                }
                g
            }
            None => state
                .allocate(subnet, range, false)
                .ok_or_else(|| IpamError::Gateway {
                    requested: None,
                    cause: Box::new(IpamError::NoAvailableAddresses),
                })?,
        };
        for (name, &addr) in &req.aux_addresses {
            if !subnet.contains(addr) {
                return Err(IpamError::AuxNotInPool {
                    name: name.clone(),
                    addr,
                    pool: subnet,
                });
            }
            if !state.addrs.insert(subnet.offset_of(addr)) {
                return Err(IpamError::AuxAddress {
                    name: name.clone(),
                    addr,
                    cause: Box::new(IpamError::AddressInUse(addr)),
                });
            }
        }
        let pool = Pool {
            id: id.clone(),
            subnet,
            ip_range: range,
            gateway,
            aux: req.aux_addresses.clone(),
            serial: req.serial,
        };
        self.subnets.insert(subnet, state);
        self.pools.insert(id, pool.clone());
        Ok(pool)
    }

    /// The first predefined block (of `size`, else each pool's own size) that overlaps
    /// no allocated subnet and nothing in `avoid`.
    fn next_predefined(&self, avoid: &[Ipv4Net], size: Option<u8>) -> Result<Ipv4Net, IpamError> {
        let candidates: Vec<PredefinedPool> = match size {
            None => self.predefined.clone(),
            Some(n) => self
                .predefined
                .iter()
                .filter(|p| p.base.prefix_len() <= n && n <= 32)
                .map(|p| PredefinedPool {
                    base: p.base,
                    size: n,
                })
                .collect(),
        };
        if candidates.is_empty() {
            return Err(IpamError::InvalidPool);
        }
        let span = |n: &Ipv4Net| {
            (
                u64::from(n.network().to_bits()),
                u64::from(n.last().to_bits()),
            )
        };
        let blockers: Vec<(u64, u64)> = self.subnets.keys().chain(avoid).map(span).collect();
        for p in candidates {
            let step = 1u64 << (32 - u32::from(p.size));
            let (base_start, base_end) = span(&p.base);
            let mut cand = base_start;
            while cand + step - 1 <= base_end {
                let cand_end = cand + step - 1;
                let blocked_to = blockers
                    .iter()
                    .filter(|&&(s, e)| s <= cand_end && e >= cand)
                    .map(|&(_, e)| e)
                    .max();
                match blocked_to {
                    None => {
                        let a = Ipv4Addr::from_bits(cand as u32);
                        return Ipv4Net::new(a, p.size).ok_or(IpamError::InvalidPool);
                    }
                    // Skip to the first block boundary past the blocker.
                    Some(e) => cand = base_start + (e + 1 - base_start).div_ceil(step) * step,
                }
            }
        }
        Err(IpamError::NoMoreSubnets)
    }

    /// Releases a pool, its gateway and auxiliary addresses; the subnet is freed when
    /// no other pool shares it. Endpoint addresses must be released first (Docker
    /// refuses to remove a network with endpoints).
    pub fn release_pool(&mut self, pool_id: &str) -> Result<(), IpamError> {
        let pool = self
            .pools
            .remove(pool_id)
            .ok_or_else(|| IpamError::BadPool(pool_id.to_owned()))?;
        if self.pools.values().any(|p| p.subnet == pool.subnet) {
            if let Some(st) = self.subnets.get_mut(&pool.subnet) {
                for a in std::iter::once(pool.gateway).chain(pool.aux.values().copied()) {
                    st.addrs.remove(pool.subnet.offset_of(a));
                }
            }
        } else {
            self.subnets.remove(&pool.subnet);
        }
        Ok(())
    }

    /// An address for an endpoint: `preferred` (a static `--ip`, anywhere in the
    /// subnet) or a dynamic one from the ip-range (else the subnet).
    pub fn request_address(
        &mut self,
        pool_id: &str,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        let not_found = || IpamError::PoolNotFound(pool_id.to_owned());
        let pool = self.pools.get(pool_id).ok_or_else(not_found)?;
        let (subnet, range, serial) = (pool.subnet, pool.ip_range, pool.serial);
        let st = self.subnets.get_mut(&subnet).ok_or_else(not_found)?;
        match preferred {
            Some(a) if !subnet.contains(a) => Err(IpamError::OutOfRange { addr: a, subnet }),
            Some(a) if !st.addrs.insert(subnet.offset_of(a)) => Err(IpamError::AddressInUse(a)),
            Some(a) => Ok(a),
            None => st
                .allocate(subnet, range, serial)
                .ok_or(IpamError::NoAvailableAddresses),
        }
    }

    /// Frees an endpoint's address. Freeing a free address is not an error (as in
    /// moby); the network and broadcast addresses and the gateway and auxiliary
    /// addresses of the subnet's pools stay reserved (they go with the pool).
    pub fn release_address(&mut self, pool_id: &str, addr: Ipv4Addr) -> Result<(), IpamError> {
        let not_found = || IpamError::PoolNotFound(pool_id.to_owned());
        let subnet = self.pools.get(pool_id).ok_or_else(not_found)?.subnet;
        if !subnet.contains(addr) {
            return Err(IpamError::OutOfRange { addr, subnet });
        }
        if self.is_reserved(subnet, addr) {
            return Ok(());
        }
        let st = self.subnets.get_mut(&subnet).ok_or_else(not_found)?;
        st.addrs.remove(subnet.offset_of(addr));
        Ok(())
    }

    /// Network/broadcast, or a gateway or aux address of a pool on `subnet`.
    fn is_reserved(&self, subnet: Ipv4Net, a: Ipv4Addr) -> bool {
        (subnet.prefix_len() < 31 && (a == subnet.network() || a == subnet.last()))
            || self
                .pools
                .values()
                .filter(|p| p.subnet == subnet)
                .any(|p| p.gateway == a || p.aux.values().any(|&x| x == a))
    }

    /// The pool with this id.
    pub fn pool(&self, id: &str) -> Option<&Pool> {
        self.pools.get(id)
    }

    /// Every pool, by id.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// Whether `addr` is held in the pool's subnet (by anyone sharing it).
    pub fn is_allocated(&self, pool_id: &str, addr: Ipv4Addr) -> bool {
        self.pools.get(pool_id).is_some_and(|p| {
            p.subnet.contains(addr)
                && self
                    .subnets
                    .get(&p.subnet)
                    .is_some_and(|st| st.addrs.contains(p.subnet.offset_of(addr)))
        })
    }

    /// Inspect's `IPsInUse` and `DynamicIPsAvailable` for a pool; `None` if unknown.
    pub fn status(&self, pool_id: &str) -> Option<SubnetStatus> {
        let p = self.pools.get(pool_id)?;
        let st = self.subnets.get(&p.subnet)?;
        let r = p.ip_range.unwrap_or(p.subnet);
        let held = st.addrs.count_in(
            p.subnet.offset_of(r.network()),
            p.subnet.offset_of(r.last()),
        );
        Some(SubnetStatus {
            ips_in_use: st.addrs.len(),
            dynamic_ips_available: r.size().saturating_sub(held),
        })
    }

    /// `IPsInUse`: held addresses of the pool's subnet (0 for an unknown pool).
    pub fn in_use(&self, pool_id: &str) -> usize {
        self.status(pool_id)
            .map_or(0, |s| usize::try_from(s.ips_in_use).unwrap_or(usize::MAX))
    }

    /// `DynamicIPsAvailable`: free addresses of the pool's ip-range, else its subnet (0
    /// for an unknown pool).
    pub fn available(&self, pool_id: &str) -> u64 {
        self.status(pool_id).map_or(0, |s| s.dynamic_ips_available)
    }
}

/// moby's `PoolID` minus the address space: `subnet` or `subnet/range`.
fn pool_id(subnet: Ipv4Net, range: Option<Ipv4Net>) -> String {
    match range {
        Some(r) => format!("{subnet}/{r}"),
        None => subnet.to_string(),
    }
}

/// The MAC Docker derives from an IPv4 address: `02:42` and the four address bytes
/// (`netutils.GenerateMACFromIP`). Overlay still uses it; bridge has used random MACs
/// since v28.
pub fn mac_from_ipv4(a: Ipv4Addr) -> [u8; 6] {
    let [b0, b1, b2, b3] = a.octets();
    [0x02, 0x42, b0, b1, b2, b3]
}
