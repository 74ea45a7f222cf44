//! The IPAM's errors, with Docker's texts (the API server gives each Docker's HTTP
//! status).

use std::net::Ipv4Addr;

use super::Ipv4Net;

/// Why an IPAM operation failed. `Display` is the text Docker returns for the same
/// case; the API server answers it with Docker's status (`server::ipam_status`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The request's subnet, ip-range, gateway or auxiliary addresses are malformed or
    /// inconsistent: one line per problem, each as `validateIpamConfig` words it
    /// (e.g. "invalid subnet 172.30.0.1/16: it should be 172.30.0.0/16").
    #[error("invalid network config:\n{}", join_problems(.0))]
    InvalidConfig(Vec<String>),
    /// An ip-range or gateway came without a subnet (the docker CLI's check; the daemon
    /// itself has none that reads well).
    #[error("every ip-range or gateway must have a corresponding subnet")]
    MissingSubnet,
    /// An auxiliary address came without a subnet (the docker CLI's wording).
    #[error("no matching subnet for aux-address {0}")]
    AuxWithoutSubnet(String),
    /// `0.0.0.0/n` (any subnet) together with an ip-range: there is no parent subnet the
    /// range could be checked against yet.
    #[error(
        "failed to parse pool request for address space \"LocalDefault\" pool \"\" subpool \"{0}\": invalid address subpool"
    )]
    SubPoolWithoutPool(Ipv4Net),
    /// `0.0.0.0/n` with a size no predefined pool can be split into (e.g. /8).
    #[error("invalid address pool")]
    InvalidPool,
    /// The subnet overlaps one already allocated (or is the same subnet and range).
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    PoolOverlap,
    /// Every block of every predefined pool is allocated or avoided.
    #[error("all predefined address pools have been fully subnetted")]
    NoMoreSubnets,
    /// The gateway could not be reserved: the requested one is in use (e.g. the network
    /// address) or outside the pool, or the pool has no free address for it.
    #[error("failed to allocate gateway ({}): {cause}", display_opt(.requested))]
    Gateway {
        /// The gateway the user asked for, if any.
        requested: Option<Ipv4Addr>,
        /// What the pool answered.
        cause: Box<IpamError>,
    },
    /// An auxiliary address is outside the pool's subnet (reachable only through
    /// `0.0.0.0/n`: validation rejects it earlier otherwise).
    #[error("auxiliary address: ({name}:{addr}) must belong to the master pool: {pool}")]
    AuxNotInPool {
        /// The auxiliary address's name.
        name: String,
        /// The address.
        addr: Ipv4Addr,
        /// The subnet it had to be in.
        pool: Ipv4Net,
    },
    /// An auxiliary address could not be reserved (it is the gateway, another aux
    /// address, or the network or broadcast address).
    #[error("failed to allocate secondary ip address ({name}:{addr}): {cause}")]
    AuxAddress {
        /// The auxiliary address's name.
        name: String,
        /// The address.
        addr: Ipv4Addr,
        /// What the pool answered.
        cause: Box<IpamError>,
    },
    /// The address is not in the pool's subnet. (The daemon checks first and tells the
    /// user "no configured subnet contains IP address X"; this carries X and the subnet.)
    #[error("requested address is out of range")]
    OutOfRange {
        /// The address asked for.
        addr: Ipv4Addr,
        /// The pool's subnet.
        subnet: Ipv4Net,
    },
    /// The address is already held (by an endpoint, or reserved).
    #[error("Address already in use")]
    AddressInUse(Ipv4Addr),
    /// The ip-range (or subnet) has no free address left.
    #[error("no available addresses on this pool")]
    NoAvailableAddresses,
    /// No pool has this id (address operations).
    #[error("cannot find address pool for poolID:{0}")]
    PoolNotFound(String),
    /// No pool has this id (releasing a pool).
    #[error("address space does not contain specified address pool")]
    BadPool(String),
    /// A configured default address pool cannot be split as asked (its prefix is longer
    /// than the subnet size, or the size is over 32).
    #[error(
        "default address pool {base} cannot be split into /{size} subnets: the size must be between /{} and /32",
        .base.prefix_len()
    )]
    BadDefaultPool {
        /// The pool's base prefix.
        base: Ipv4Net,
        /// The subnet size asked for.
        size: u8,
    },
}

/// `internal/multierror.Join`: one problem bare, several as a bullet list.
fn join_problems(p: &[String]) -> String {
    match p {
        [one] => one.trim().to_owned(),
        many => {
            let items: Vec<String> = many.iter().map(|e| e.replace('\n', "\n\t")).collect();
            format!("* {}", items.join("\n* "))
        }
    }
}

fn display_opt(a: &Option<Ipv4Addr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}
