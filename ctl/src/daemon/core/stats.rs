//! The datapath's counters, named: which network and sandbox each engine port and bridge
//! domain belongs to.

use std::collections::HashMap;

use tapnet_nat::dns::DnsStats;
use tapnet_nat::relay::RelayStats;
use tapnet_switch::{DomainId, PortId};

use super::Daemon;
use crate::daemon::plumbing::{DatapathStats, PortUser};

/// Who owns an engine port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// Network name.
    pub network: String,
    /// Sandbox name (empty for a network's gateway).
    pub sandbox: String,
}

/// A network's name and id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkName {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
}

/// The datapath's counters with the names of what they count.
#[derive(Clone, Debug, Default)]
pub struct NamedStats {
    /// The counters as the plumbing gives them.
    pub datapath: DatapathStats,
    /// Owner of each engine port the daemon made.
    pub ports: HashMap<PortId, PortOwner>,
    /// Network of each bridge domain.
    pub domains: HashMap<DomainId, NetworkName>,
    /// Relay counters of each network with external access.
    pub relays: Vec<(NetworkName, RelayStats)>,
    /// DNS server counters of each network with a gateway.
    pub dns: Vec<(NetworkName, DnsStats)>,
    /// Rootless sandboxes removed because their process had exited (`rootless_reaped`).
    pub rootless_reaped: u64,
}

impl Daemon {
    /// The datapath's counters, named.
    pub fn stats(&self) -> NamedStats {
        let datapath = self.plumbing.stats();
        let st = self.view();
        let net = |id: &str| NetworkName {
            name: st
                .networks
                .get(id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            id: id.to_string(),
        };
        let mut ports = HashMap::new();
        for (p, user) in &datapath.ports {
            let owner = match user {
                PortUser::Endpoint(ep) => {
                    let Some(e) = st.endpoints.get(ep) else {
                        continue;
                    };
                    PortOwner {
                        network: net(&e.network_id).name,
                        sandbox: st
                            .sandboxes
                            .get(&e.sandbox_id)
                            .map(|s| s.name.clone())
                            .unwrap_or_default(),
                    }
                }
                PortUser::Gateway(id) => PortOwner {
                    network: net(id).name,
                    sandbox: String::new(),
                },
            };
            ports.insert(*p, owner);
        }
        let domains = datapath
            .domains
            .iter()
            .filter(|(_, id)| st.networks.contains_key(*id))
            .map(|(d, id)| (*d, net(id)))
            .collect();
        let relays = datapath
            .relays
            .iter()
            .filter(|(id, _)| st.networks.contains_key(id))
            .map(|(id, r)| (net(id), r.clone()))
            .collect();
        let dns = datapath
            .dns
            .iter()
            .filter(|(id, _)| st.networks.contains_key(id))
            .map(|(id, s)| (net(id), s.clone()))
            .collect();
        NamedStats {
            datapath,
            ports,
            domains,
            relays,
            dns,
            rootless_reaped: st.rootless_reaped,
        }
    }
}
