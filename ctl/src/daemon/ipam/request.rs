//! What a network asks of IPAM, and the daemon's validation of it
//! (`daemon/network.go` `validateIpamConfig`), in Docker's order and words.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{IpamError, Ipv4Net};

/// What a network asks of IPAM: one `IPAM.Config` entry. All fields optional; no subnet
/// means "the next free predefined block".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolRequest {
    /// `--subnet`. Must have no host bits set; `0.0.0.0/n` means any free predefined
    /// block of size n (`0.0.0.0/0`: the pool's own size).
    pub subnet: Option<Ipv4Net>,
    /// `--ip-range`: dynamic addresses come from here. Must lie in the subnet.
    pub ip_range: Option<Ipv4Net>,
    /// `--gateway`. Must lie in the subnet; default: the first free address.
    pub gateway: Option<Ipv4Addr>,
    /// `--aux-address name=addr`: reserved, never handed out.
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// Serial allocation (`com.docker.network.ipam.serial=true`): continue after the
    /// last address handed out instead of taking the lowest free one.
    pub serial: bool,
}

impl PoolRequest {
    /// Parses one `IPAM.Config` entry as the API carries it (strings; empty = not
    /// given), with Docker's validation and wording (`validateIpamConfig`, and
    /// `api/types/network/ipam.go` for unparsable text). Collects every problem.
    pub fn parse(
        subnet: &str,
        ip_range: &str,
        gateway: &str,
        aux_addresses: &BTreeMap<String, String>,
    ) -> Result<Self, IpamError> {
        if subnet.is_empty() {
            if !ip_range.is_empty() || !gateway.is_empty() {
                return Err(IpamError::MissingSubnet);
            }
            if let Some(a) = aux_addresses.values().next() {
                return Err(IpamError::AuxWithoutSubnet(a.clone()));
            }
            return Ok(PoolRequest::default());
        }
        let s = match subnet.parse::<Ipv4Net>() {
            Ok(s) => s,
            // Docker stops checking an entry whose subnet does not parse.
            Err(_) if is_ipv6_prefix(subnet) => {
                return Err(IpamError::InvalidConfig(vec![format!(
                    "invalid subnet {subnet}: IPv6 subnets are not supported by this IPAM"
                )]));
            }
            Err(_) => {
                return Err(IpamError::InvalidConfig(vec![format!(
                    "invalid subnet {subnet}: invalid CIDR block notation"
                )]));
            }
        };
        let mut p = Vec::new();
        let mut req = PoolRequest {
            subnet: Some(s),
            ..PoolRequest::default()
        };
        check_subnet(s, &mut p);
        if !ip_range.is_empty() {
            match ip_range.parse::<Ipv4Net>() {
                Ok(r) => {
                    check_range(r, s, &mut p);
                    req.ip_range = Some(r);
                }
                Err(_) if is_ipv6_prefix(ip_range) => p.push(format!(
                    "invalid ip-range {ip_range}: parent subnet is an IPv4 block"
                )),
                Err(_) => p.push(format!(
                    "invalid ip-range {ip_range}: invalid CIDR block notation"
                )),
            }
        }
        if !gateway.is_empty() {
            match parse_addr(gateway) {
                Ok(g) => {
                    check_addr(format_args!("gateway {g}"), g, s, &mut p);
                    req.gateway = Some(g);
                }
                Err(why) => p.push(format!("invalid gateway {gateway}: {why}")),
            }
        }
        for (name, a) in aux_addresses {
            match parse_addr(a) {
                Ok(a) => {
                    check_addr(format_args!("auxiliary address {name}"), a, s, &mut p);
                    req.aux_addresses.insert(name.clone(), a);
                }
                Err(why) => p.push(format!("invalid auxiliary address {name}: {why}")),
            }
        }
        if p.is_empty() {
            Ok(req)
        } else {
            Err(IpamError::InvalidConfig(p))
        }
    }

    /// The daemon's validation of a typed request (`validateIpamConfig`, in its order
    /// and words), plus the CLI's "needs a subnet" checks.
    pub(super) fn check(&self) -> Result<(), IpamError> {
        let Some(s) = self.subnet else {
            if self.ip_range.is_some() || self.gateway.is_some() {
                return Err(IpamError::MissingSubnet);
            }
            if let Some(a) = self.aux_addresses.values().next() {
                return Err(IpamError::AuxWithoutSubnet(a.to_string()));
            }
            return Ok(());
        };
        let mut p = Vec::new();
        check_subnet(s, &mut p);
        if let Some(r) = self.ip_range {
            check_range(r, s, &mut p);
        }
        if let Some(g) = self.gateway {
            check_addr(format_args!("gateway {g}"), g, s, &mut p);
        }
        for (name, &a) in &self.aux_addresses {
            check_addr(format_args!("auxiliary address {name}"), a, s, &mut p);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(IpamError::InvalidConfig(p))
        }
    }
}

fn check_subnet(s: Ipv4Net, p: &mut Vec<String>) {
    if !s.is_masked() {
        p.push(format!("invalid subnet {s}: it should be {}", s.masked()));
    }
}

fn check_range(r: Ipv4Net, s: Ipv4Net, p: &mut Vec<String>) {
    if r.prefix_len() < s.prefix_len() {
        p.push(format!(
            "invalid ip-range {r}: CIDR block is bigger than its parent subnet {s}"
        ));
    }
    if !r.is_masked() {
        p.push(format!("invalid ip-range {r}: it should be {}", r.masked()));
    }
    if !s.overlaps(r) {
        p.push(format!(
            "invalid ip-range {r}: parent subnet {s} doesn't contain ip-range"
        ));
    }
}

fn check_addr(what: std::fmt::Arguments<'_>, a: Ipv4Addr, s: Ipv4Net, p: &mut Vec<String>) {
    if !s.contains(a) {
        p.push(format!(
            "invalid {what}: parent subnet {s} doesn't contain this address"
        ));
    }
}

fn is_ipv6_prefix(s: &str) -> bool {
    let a = s.split_once('/').map_or(s, |(a, _)| a);
    a.parse::<std::net::Ipv6Addr>().is_ok()
}

/// An address field: "invalid address" or, for IPv6, the family mismatch.
fn parse_addr(s: &str) -> Result<Ipv4Addr, &'static str> {
    match s.parse::<Ipv4Addr>() {
        Ok(a) => Ok(a),
        Err(_) if s.parse::<std::net::Ipv6Addr>().is_ok() => Err("parent subnet is an IPv4 block"),
        Err(_) => Err("invalid address"),
    }
}
