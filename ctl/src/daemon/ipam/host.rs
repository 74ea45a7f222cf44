//! The host's own networks, which a network's subnet must keep clear of: containers on
//! a subnet that holds the host's address or one of its on-link networks could not
//! reach that network (the relay would take it for theirs), and the isolation table
//! would cut every other network off from it.
//!
//! Docker (v27+, `netutils.InferReservedNetworks`) skips the host's on-link routes and
//! its resolv.conf nameservers when it picks a predefined subnet, and checks nothing for
//! a user's `--subnet`. tapnet does the same for automatic subnets ([`avoid_list`], which
//! also skips the host's addresses) and refuses a user subnet that overlaps an on-link
//! route or holds one of the host's addresses ([`check_host`]). Nameservers are only
//! avoided: one reached through a gateway does not make a user subnet unusable.

use std::fmt;
use std::net::Ipv4Addr;

use super::{IpamError, Ipv4Net};

/// One network of the host, as the plumbing reads it (the daemon's network namespace:
/// the host's own, rootless or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostNetwork {
    /// An on-link route of the main routing table (`10.1.0.0/24 dev eth0`).
    Route {
        /// The destination.
        net: Ipv4Net,
        /// The interface.
        dev: String,
    },
    /// An address of one of the host's interfaces. An address of the loopback network
    /// (127.0.0.0/8) stands for the whole of it: the host answers every one of them.
    Address {
        /// The address.
        addr: Ipv4Addr,
        /// The interface.
        dev: String,
    },
    /// A nameserver of the host's `/etc/resolv.conf` (avoided, not refused).
    Nameserver(Ipv4Addr),
}

/// The loopback network: the host answers every address of it.
const LOOPBACK: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8) {
    Some(n) => n,
    None => panic!("prefix length over 32"),
};

impl HostNetwork {
    /// The prefix a subnet must not overlap.
    pub fn prefix(&self) -> Ipv4Net {
        let host = |a: Ipv4Addr| Ipv4Net::new(a, 32).unwrap_or(LOOPBACK);
        match self {
            HostNetwork::Route { net, .. } => net.masked(),
            HostNetwork::Address { addr, .. } if LOOPBACK.contains(*addr) => LOOPBACK,
            HostNetwork::Address { addr, .. } => host(*addr),
            HostNetwork::Nameserver(a) => host(*a),
        }
    }
}

impl fmt::Display for HostNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostNetwork::Route { net, dev } => write!(f, "on-link route {net} (dev {dev})"),
            HostNetwork::Address { addr, dev } if LOOPBACK.contains(*addr) => {
                write!(f, "loopback network {LOOPBACK} (dev {dev})")
            }
            HostNetwork::Address { addr, dev } => write!(f, "address {addr} (dev {dev})"),
            HostNetwork::Nameserver(a) => write!(f, "nameserver {a}"),
        }
    }
}

/// What automatic subnets skip: every host network's prefix (routes, addresses,
/// nameservers), for [`super::Ipam::request_pool`]'s `avoid`.
pub fn avoid_list(host: &[HostNetwork]) -> Vec<Ipv4Net> {
    host.iter().map(HostNetwork::prefix).collect()
}

/// Refuse a user's `subnet` that overlaps one of the host's on-link routes or holds one
/// of its addresses: [`IpamError::InvalidConfig`] (400), naming the subnet, what of the
/// host's it collides with, and what to do.
pub fn check_host(subnet: Ipv4Net, host: &[HostNetwork]) -> Result<(), IpamError> {
    let subnet = subnet.masked();
    let problems: Vec<String> = host
        .iter()
        .filter(|h| !matches!(h, HostNetwork::Nameserver(_)))
        .filter(|h| h.prefix().overlaps(subnet))
        .map(|h| {
            format!(
                "subnet {subnet} overlaps the host's {h}: choose a subnet the host does not use"
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IpamError::InvalidConfig(problems))
    }
}
