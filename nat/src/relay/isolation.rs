//! Docker's isolation between networks, as the relays apply it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::GatewayConfig;

/// The subnets of every network of a host: traffic between networks is denied (Docker's
/// isolation rule), so a flow toward another network's subnet is dropped rather than
/// carried out through the host. A plain value: whoever runs the relays owns it, keeps it
/// current, and hands it to [`Relay::input`](super::Relay::input).
#[derive(Clone, Debug, Default)]
pub struct Isolation(HashMap<String, (Ipv4Addr, u8)>);

impl Isolation {
    /// Network `key` has subnet `addr/prefix`.
    pub fn insert(&mut self, key: &str, addr: Ipv4Addr, prefix: u8) {
        self.0.insert(key.to_string(), (addr, prefix.min(32)));
    }

    /// Network `key` is gone.
    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// Whether `addr` is inside one of the subnets.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.contains_other(addr, None)
    }

    /// Whether `addr` is inside one of the subnets other than `own`'s.
    pub(super) fn contains_other(&self, addr: Ipv4Addr, own: Option<&GatewayConfig>) -> bool {
        if own.is_some_and(|g| g.contains(addr)) {
            return false;
        }
        let a = u32::from(addr);
        self.0.values().any(|&(net, p)| {
            let m = if p == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p))
            };
            a & m == u32::from(net) & m
        })
    }
}
