//! The switch's control-plane errors.

use crate::{DomainId, MacAddr, PortId};

/// Errors from the control-plane methods of [`Switch`](crate::Switch) and [`MacTable`](crate::MacTable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// No domain has this id.
    #[error("domain {0} does not exist; create it with add_domain first")]
    UnknownDomain(DomainId),
    /// `add_domain` with an id already in use.
    #[error("domain {0} already exists; remove it first or pick another id")]
    DomainExists(DomainId),
    /// Domain ids index a vector and must stay below [`Switch::MAX_DOMAINS`](crate::Switch::MAX_DOMAINS).
    #[error("domain id {domain} is too large; ids must be dense and below {max}")]
    DomainIdOutOfRange {
        /// The id given.
        domain: DomainId,
        /// The exclusive upper bound.
        max: u32,
    },
    /// `remove_domain` while ports are still attached.
    #[error("domain {domain} still has {ports} attached port(s); detach them before removing it")]
    DomainNotEmpty {
        /// The domain.
        domain: DomainId,
        /// How many ports are attached.
        ports: usize,
    },
    /// The domain's MAC table capacity exceeds [`TableConfig::MAX_CAPACITY`](crate::TableConfig::MAX_CAPACITY).
    #[error("MAC table capacity {capacity} is too large; the maximum is {max}")]
    CapacityTooLarge {
        /// The capacity asked for.
        capacity: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The port is not attached to any domain.
    #[error("port {0} is not attached to any domain; attach it first")]
    UnknownPort(PortId),
    /// Port ids index a vector and must stay below [`Switch::MAX_PORTS`](crate::Switch::MAX_PORTS).
    #[error("port id {port} is too large; ids must be dense and below {max}")]
    PortIdOutOfRange {
        /// The id given.
        port: PortId,
        /// The exclusive upper bound.
        max: u32,
    },
    /// `attach` of a port already attached to that same domain.
    #[error("port {port} is already attached to domain {domain}")]
    PortAlreadyAttached {
        /// The port.
        port: PortId,
        /// Its domain.
        domain: DomainId,
    },
    /// The port belongs to another domain than the one named (for `attach`:
    /// detach it first; for `add_static`: use the port's own domain).
    #[error("port {port} is attached to domain {attached}, not domain {domain}")]
    PortInOtherDomain {
        /// The port.
        port: PortId,
        /// The domain the call named.
        domain: DomainId,
        /// The domain the port is attached to.
        attached: DomainId,
    },
    /// Static entries must be unicast and non-zero: multicast and broadcast
    /// frames are always flooded, and no frame comes from 00:00:00:00:00:00.
    #[error(
        "static MAC {0} is not a usable unicast address (multicast, broadcast and \
         00:00:00:00:00:00 cannot be static entries)"
    )]
    InvalidStaticMac(MacAddr),
    /// The table already holds its maximum of static entries.
    #[error("static MAC table full ({limit} entries); remove unused static entries first")]
    StaticTableFull {
        /// [`MacTable::MAX_STATIC`].
        limit: usize,
    },
    /// A port binding's MAC must be one a station can send from.
    #[error(
        "binding MAC {0} is not a usable unicast address (multicast, broadcast and \
         00:00:00:00:00:00 cannot be sent from)"
    )]
    InvalidBindingMac(MacAddr),
    /// A port binding with more addresses than [`PortBinding::MAX_ADDRS`](crate::PortBinding::MAX_ADDRS).
    #[error("a port binding holds at most {max} addresses, not {count}")]
    TooManyBoundAddresses {
        /// The addresses given.
        count: usize,
        /// The most allowed.
        max: usize,
    },
}
