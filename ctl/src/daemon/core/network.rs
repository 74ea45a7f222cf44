//! Networks: create, list, inspect, remove, prune. Lists, inspects and lookups by name
//! include the swarm's networks (see [`super::swarm`]).

use std::collections::BTreeMap;

use super::options::bridge_opts;
use super::{Daemon, DaemonError, OVERLAY, PLUGIN_IPAM, Records, Result, State, lookup_network_id};
use crate::daemon::ipam::{PoolRequest, avoid_list, check_host};
use crate::daemon::model::{
    EndpointRecord, IpamConfigRecord, NetworkRecord, SandboxRecord, new_id, now_rfc3339,
};
use crate::daemon::store::Change;

/// One IPAM pool as the user asked for it (strings as given; empty = absent).
#[derive(Clone, Debug, Default)]
pub struct IpamSpec {
    /// `--subnet`.
    pub subnet: String,
    /// `--ip-range`.
    pub ip_range: String,
    /// `--gateway`.
    pub gateway: String,
    /// `--aux-address` name=ip pairs.
    pub aux: BTreeMap<String, String>,
}

/// The user's request for a new network, in the daemon's terms.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    /// The id to give it (Docker's, for a network Docker's engine creates through the
    /// plugin); a fresh one if `None`.
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Driver (`bridge` if empty).
    pub driver: String,
    /// IPAM configs.
    pub ipam: Vec<IpamSpec>,
    /// IPAM driver (`default` if empty).
    pub ipam_driver: String,
    /// IPAM driver options.
    pub ipam_options: BTreeMap<String, String>,
    /// `--internal`.
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    /// `--ingress`.
    pub ingress: bool,
    /// IPv6 requested.
    pub enable_ipv6: bool,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// How much of a pool is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Addresses handed out (and reserved: network, gateway, broadcast, aux).
    pub in_use: u64,
    /// Addresses still free for dynamic allocation.
    pub available: u64,
}

impl Daemon {
    /// Create a network; returns its record. `predefined` is for `bridge`, `host` and
    /// `none`, made at first start. An `overlay` network is created in the swarm (and
    /// only instantiated here when a sandbox uses it).
    pub fn create_network(&self, spec: NetworkSpec, predefined: bool) -> Result<NetworkRecord> {
        let mut st = self.lock();
        if spec.name.is_empty() {
            return Err(DaemonError::EmptyNetworkName);
        }
        if st.networks.values().any(|n| n.name == spec.name) {
            return Err(DaemonError::NetworkNameTaken(spec.name));
        }
        if spec.driver == OVERLAY && !predefined {
            return self.create_overlay(spec);
        }
        let driver = match spec.driver.as_str() {
            "" | "bridge" => "bridge",
            "null" | "none" if predefined => "null",
            "host" if predefined => "host",
            "host" | "null" | "none" => {
                return Err(DaemonError::OnlyOneInstance(
                    if spec.driver == "none" {
                        "null"
                    } else {
                        spec.driver.as_str()
                    }
                    .to_string(),
                ));
            }
            "overlay" | "macvlan" | "ipvlan" => {
                return Err(DaemonError::DriverUnavailable(spec.driver));
            }
            other => return Err(DaemonError::PluginNotFound(other.to_string())),
        };
        if !["", "default", PLUGIN_IPAM].contains(&spec.ipam_driver.as_str()) {
            return Err(DaemonError::PluginNotFound(spec.ipam_driver));
        }
        if spec.enable_ipv6 {
            return Err(DaemonError::Ipv6Unavailable);
        }
        if spec.ingress {
            return Err(DaemonError::IngressNeedsSwarm);
        }
        let mut ipam = st.ipam.clone();
        let mut configs = Vec::new();
        if driver == "bridge" {
            bridge_opts(&spec.options)?;
            if spec.ipam.len() > 1 {
                return Err(DaemonError::OneSubnetOnly);
            }
            let want = spec.ipam.first().cloned().unwrap_or_default();
            let req = PoolRequest::parse(&want.subnet, &want.ip_range, &want.gateway, &want.aux)?;
            // The host's networks: automatic subnets skip them, a user's may not
            // overlap its routes or hold its addresses.
            let pool = if spec.ipam_driver == PLUGIN_IPAM {
                // Docker's engine asked tapnet's IPAM plugin for the pool first: it is
                // held, by its subnet, and its gateway is the one asked for then.
                let mut pool = ipam
                    .pools()
                    .find(|p| p.subnet.to_string() == want.subnet)
                    .cloned()
                    .ok_or_else(|| DaemonError::NoPool(want.subnet.clone()))?;
                pool.gateway = req.gateway.unwrap_or(pool.gateway);
                pool
            } else {
                let host = self.plumbing.host_networks();
                let pool = ipam.request_pool(&req, &avoid_list(&host))?;
                if req.subnet.is_some_and(|s| !s.addr().is_unspecified()) {
                    check_host(pool.subnet, &host)?;
                }
                pool
            };
            configs.push(IpamConfigRecord {
                subnet: pool.subnet.to_string(),
                ip_range: pool.ip_range.map(|r| r.to_string()),
                gateway: Some(pool.gateway),
                aux: pool.aux.clone(),
                pool_id: pool.id.clone(),
            });
        }
        let id = spec.id.unwrap_or_else(new_id);
        if st.networks.contains_key(&id) {
            return Err(DaemonError::NetworkIdTaken(id));
        }
        let rec = NetworkRecord {
            id,
            name: spec.name,
            driver: driver.into(),
            scope: "local".into(),
            created: now_rfc3339(),
            internal: spec.internal,
            attachable: spec.attachable,
            ingress: false,
            enable_ipv4: true,
            enable_ipv6: false,
            options: spec.options,
            labels: spec.labels,
            ipam_driver: if spec.ipam_driver == PLUGIN_IPAM {
                PLUGIN_IPAM.into()
            } else {
                "default".into()
            },
            ipam_options: spec.ipam_options,
            ipam: configs,
            predefined,
        };
        self.store.commit(
            &[Change::PutNetwork(&rec)],
            Some(&State::ipam_bytes(&ipam)?),
        )?;
        st.ipam = ipam;
        st.networks.insert(rec.id.clone(), rec.clone());
        if let Err(e) = self.realize_network(&mut st, &rec) {
            self.drop_network_record(&mut st, &rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    /// Undo a network's commit (its datapath could not be made).
    fn drop_network_record(&self, st: &mut State, id: &str) {
        let Some(rec) = st.networks.get(id).cloned() else {
            return;
        };
        let mut ipam = st.ipam.clone();
        for c in rec.ipam.iter().filter(|_| rec.ipam_driver != PLUGIN_IPAM) {
            let _ = ipam.release_pool(&c.pool_id);
        }
        let Ok(bytes) = State::ipam_bytes(&ipam) else {
            return;
        };
        if self
            .store
            .commit(&[Change::DelNetwork(id)], Some(&bytes))
            .is_ok()
        {
            st.ipam = ipam;
            st.networks.remove(id);
        }
    }

    /// All networks: the local ones and the swarm's.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        self.all_networks(&self.view().networks)
            .into_values()
            .collect()
    }

    /// One network with the endpoints on it (and their sandboxes).
    pub fn network(
        &self,
        id_or_name: &str,
    ) -> Result<(NetworkRecord, Vec<(EndpointRecord, SandboxRecord)>)> {
        let v = self.view();
        let all = self.all_networks(&v.networks);
        let id = lookup_network_id(&all, id_or_name)?;
        let n = all[&id].clone();
        let eps = v
            .endpoints_of_network(&id)
            .filter_map(|e| Some((e.clone(), v.sandboxes.get(&e.sandbox_id)?.clone())))
            .collect();
        Ok((n, eps))
    }

    /// Addresses in use and dynamically available in a network's pool.
    pub fn pool_usage(&self, pool_id: &str) -> PoolUsage {
        self.view().pool_usage(pool_id)
    }

    /// Remove a network that has no endpoints (an overlay network: that has none here,
    /// and that the swarm removes).
    pub fn remove_network(&self, id_or_name: &str) -> Result<()> {
        let mut st = self.lock();
        let all = self.all_networks(&st.networks);
        let id = lookup_network_id(&all, id_or_name)?;
        let n = all[&id].clone();
        if n.predefined {
            return Err(DaemonError::PredefinedNetwork(n.name));
        }
        if let Some(e) = st.endpoints_of_network(&id).next() {
            let sandbox = st
                .sandboxes
                .get(&e.sandbox_id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            return Err(DaemonError::ActiveEndpoints {
                network: n.name,
                sandbox,
                sandbox_id: e.sandbox_id[..12.min(e.sandbox_id.len())].to_string(),
            });
        }
        if n.driver == OVERLAY {
            return self.remove_overlay(&mut st, &n);
        }
        let mut ipam = st.ipam.clone();
        // A pool that Docker's engine asked tapnet's IPAM plugin for goes with its
        // network too: Docker 20.10 sends `ReleasePool` before `DeleteNetwork` (and
        // only warns when it is refused), so the network is the pool's last user.
        for c in &n.ipam {
            ipam.release_pool(&c.pool_id)
                .map_err(DaemonError::ReleasePool)?;
        }
        self.store
            .commit(&[Change::DelNetwork(&id)], Some(&State::ipam_bytes(&ipam)?))?;
        st.ipam = ipam;
        st.networks.remove(&id);
        self.unrealize_network(&mut st, &id);
        Ok(())
    }

    /// Remove every unused user network that `select` picks; returns their names.
    pub fn prune_networks(&self, select: impl Fn(&NetworkRecord) -> bool) -> Result<Vec<String>> {
        let unused: Vec<NetworkRecord> = {
            let v = self.view();
            v.networks
                .values()
                .filter(|n| !n.predefined && v.endpoints_of_network(&n.id).next().is_none())
                .cloned()
                .collect()
        };
        // `select` runs with no lock held: the API's filter builds the network's
        // inspect view (pool usage), and `remove_network` takes the state lock, which
        // is not reentrant (calling `select` under it once hung the daemon).
        let mut removed = Vec::new();
        for n in unused.into_iter().filter(|n| select(n)) {
            if self.remove_network(&n.id).is_ok() {
                removed.push(n.name);
            }
        }
        Ok(removed)
    }
}
