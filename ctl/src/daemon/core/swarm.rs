//! Swarm-scope networks: the overlay driver, and the hooks through which the swarm
//! service lends the core its cluster-wide state.
//!
//! The core does not know Raft or gossip. The swarm service implements [`SwarmHooks`]
//! and installs it with [`Daemon::set_swarm`]; without hooks the node is in no swarm,
//! and creating an overlay network answers Docker's "not a swarm manager" (503).
//!
//! - **Catalogue.** The swarm's networks ([`SwarmHooks::networks`]) are listed,
//!   inspected and resolved by name or id beside the local ones, as NetworkRecords of
//!   driver `overlay`, scope `swarm`, with option
//!   `com.docker.network.driver.overlay.vxlanid_list` = the VNI. They are not stored.
//! - **Instances.** A sandbox created on a swarm network instantiates it here: a stored
//!   record (same id) and a datapath (a bridge domain with the network's overlay port on
//!   the VTEP). Its addresses come from [`SwarmHooks::allocate`]; the first local
//!   endpoint calls [`SwarmHooks::attach`]`(true)`, each one [`SwarmHooks::endpoint_up`]
//!   once plumbed. Removal reverses it: `endpoint_down`, `release`, and with the last
//!   local endpoint `attach(false)`; the local record and datapath go.
//! - **No external access.** Docker gives overlay containers a second interface on
//!   `docker_gwbridge` for egress and published ports; tapnet does not. An overlay
//!   network's gateway address answers the embedded DNS (local and remote names) and
//!   nothing else: no default route through it, no published ports toward it (a sandbox
//!   whose only networks are overlay ones cannot publish ports).
//! - **Remote endpoints** come from the swarm's gossip ([`Daemon::remote_endpoint_set`]):
//!   kept in memory (never stored), placed in the network's VTEP tables while the
//!   network is instantiated here (kept, and placed when it is), and served by the
//!   network's embedded DNS under their names and aliases.
//! - **The VTEP and restarts.** The overlay datapath needs the VTEP, which the swarm
//!   service starts with [`Daemon::set_vtep`] once it knows its data path address (before
//!   [`Daemon::set_swarm`]). At start, reconcile leaves stored overlay networks and their
//!   endpoints unplumbed while no VTEP is set; `set_vtep` then brings them up and plugs
//!   their endpoints. The service then publishes [`Daemon::local_swarm_endpoints`] again.
//!
//! Hooks are called with the daemon's state lock held, in the order of the changes that
//! call them: they must not call back into the [`Daemon`]'s changing methods from the
//! calling thread (events such as remote endpoints come from the service's own threads).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use super::dns::endpoint_names;
use super::hooks::{LocalEndpoint, OPT_VXLANID, OVERLAY, RemoteEndpoint, SwarmHooks};
use super::{Daemon, DaemonError, Records, Result, State, lock_any, mac_of, parse_ip};
use crate::cluster::{NetworkSpec as SwarmSpec, SwarmNetwork};
use crate::daemon::chain::chain;
use crate::daemon::ipam::Ipv4Net;
use crate::daemon::model::{
    EndpointRecord, IpamConfigRecord, NetworkRecord, SandboxRecord, new_id, now_rfc3339,
};
use crate::daemon::store::Change;

/// Creation time shown for a swarm network not instantiated here (the catalogue has
/// none; Go's zero time, as Docker shows an unknown one).
const UNKNOWN_TIME: &str = "0001-01-01T00:00:00Z";

/// Swarm network `sw` as a NetworkRecord (not instantiated: no creation time, no pool).
pub fn overlay_record(sw: &SwarmNetwork) -> NetworkRecord {
    NetworkRecord {
        id: sw.id.clone(),
        name: sw.name.clone(),
        driver: OVERLAY.into(),
        scope: "swarm".into(),
        created: UNKNOWN_TIME.into(),
        internal: false,
        attachable: sw.attachable,
        ingress: false,
        enable_ipv4: true,
        enable_ipv6: false,
        options: BTreeMap::from([(OPT_VXLANID.to_string(), sw.vni.to_string())]),
        labels: sw.labels.clone(),
        ipam_driver: "default".into(),
        ipam_options: BTreeMap::new(),
        ipam: vec![IpamConfigRecord {
            subnet: sw.subnet.to_string(),
            ip_range: None,
            gateway: Some(sw.gateway),
            aux: BTreeMap::new(),
            pool_id: String::new(),
        }],
        predefined: false,
    }
}

/// Overlay network `n`'s VNI, from its options.
pub(super) fn vni_of(n: &NetworkRecord) -> Result<u32> {
    n.options
        .get(OPT_VXLANID)
        .and_then(|v| v.split(',').next()?.trim().parse().ok())
        .ok_or_else(|| DaemonError::StoredVni(n.name.clone()))
}

/// Endpoint `e` of sandbox `sb` as the swarm publishes it (none without an address).
fn local_endpoint(sb: &SandboxRecord, e: &EndpointRecord) -> Option<LocalEndpoint> {
    let names = endpoint_names(sb, e);
    Some(LocalEndpoint {
        id: e.id.clone(),
        name: sb.name.clone(),
        aliases: names.iter().skip(1).map(|s| s.to_string()).collect(),
        ip: e.ipv4?,
        mac: mac_of(e),
    })
}

/// The overlay user network spec as the swarm takes it, or why tapnet cannot make it.
fn swarm_spec(spec: super::NetworkSpec) -> Result<SwarmSpec> {
    let unsupported = |what: &str| Err(DaemonError::OverlayUnsupported(what.to_string()));
    if !spec.ipam_driver.is_empty() && spec.ipam_driver != "default" {
        return Err(DaemonError::PluginNotFound(spec.ipam_driver));
    }
    if spec.enable_ipv6 {
        return Err(DaemonError::Ipv6Unavailable);
    }
    if spec.ingress {
        return unsupported("--ingress is not supported");
    }
    if spec.internal {
        return unsupported("--internal is not supported (no overlay network has external access)");
    }
    if let Some(k) = spec.options.keys().next() {
        return unsupported(&format!("driver option {k} is not supported"));
    }
    if spec.ipam.len() > 1 {
        return Err(DaemonError::OneSubnetOnly);
    }
    let want = spec.ipam.into_iter().next().unwrap_or_default();
    if !want.ip_range.is_empty() || !want.aux.is_empty() {
        return unsupported("--ip-range and --aux-address are not supported");
    }
    let subnet = match want.subnet.as_str() {
        "" => None,
        s => Some(s.parse::<Ipv4Net>().map_err(|_| DaemonError::InvalidIpv4 {
            what: "subnet",
            value: s.to_string(),
        })?),
    };
    if !want.gateway.is_empty() {
        let gw = parse_ip("gateway", &want.gateway)?;
        let first = subnet.map(|s| Ipv4Addr::from(u32::from(s.network()) + 1));
        if Some(gw) != first {
            return unsupported("the gateway is the subnet's first address");
        }
    }
    Ok(SwarmSpec {
        id: new_id(),
        name: spec.name,
        subnet,
        attachable: spec.attachable,
        labels: spec.labels,
    })
}

impl Daemon {
    /// Install the swarm service's hooks (`None`: the node left the swarm). The local
    /// overlay endpoints are taken to be published and their networks attached from now
    /// on: the service publishes [`Daemon::local_swarm_endpoints`] when it installs its
    /// hooks (one `attach(true)` per network, one `endpoint_up` per endpoint).
    pub fn set_swarm(&self, hooks: Option<Arc<dyn SwarmHooks>>) {
        let mut st = self.lock();
        let on = hooks.is_some();
        *lock_any(&self.swarm) = hooks;
        st.swarm_up.clear();
        st.swarm_attached.clear();
        if !on {
            return;
        }
        let eps: Vec<(String, String)> = st
            .endpoints
            .values()
            .filter(|e| {
                st.networks
                    .get(&e.network_id)
                    .is_some_and(|n| n.driver == OVERLAY)
            })
            .map(|e| (e.id.clone(), e.network_id.clone()))
            .collect();
        for (ep, net) in eps {
            st.swarm_up.insert(ep);
            st.swarm_attached.insert(net);
        }
    }

    /// The swarm's hooks, if the node is in a swarm.
    pub(super) fn swarm(&self) -> Option<Arc<dyn SwarmHooks>> {
        lock_any(&self.swarm).clone()
    }

    /// Start the VXLAN tunnel endpoint at `local` (this node's data path address and
    /// port), then bring up the overlay networks instantiated here and plug their
    /// endpoints (reconcile left them down while no VTEP was set). Again with the same
    /// address: nothing new is started.
    pub fn set_vtep(&self, local: SocketAddrV4) -> Result<()> {
        let mut st = self.lock();
        self.plumbing.start_vtep(local)?;
        st.vtep = Some(local);
        let nets: Vec<NetworkRecord> = st
            .networks
            .values()
            .filter(|n| n.driver == OVERLAY)
            .cloned()
            .collect();
        for n in &nets {
            if let Err(e) = self.realize_network(&mut st, n) {
                tracing::warn!(network = %n.name, error = %chain(&e), "could not restore overlay network");
            }
        }
        let sbs: Vec<SandboxRecord> = st
            .sandboxes
            .values()
            .filter(|s| s.rootless.is_none())
            .filter(|s| {
                s.endpoints.iter().any(|id| {
                    st.endpoints
                        .get(id)
                        .is_some_and(|e| nets.iter().any(|n| n.id == e.network_id))
                })
            })
            .cloned()
            .collect();
        for sb in &sbs {
            if let Err(e) = self.realize_sandbox(&mut st, sb) {
                tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not restore sandbox");
            }
        }
        Ok(())
    }

    /// Every network a name or id may mean: the records, and the swarm's networks not
    /// instantiated here (as [`overlay_record`] shows them).
    pub(super) fn all_networks(
        &self,
        local: &BTreeMap<String, NetworkRecord>,
    ) -> BTreeMap<String, NetworkRecord> {
        let mut all = local.clone();
        if let Some(h) = self.swarm() {
            for sw in h.networks() {
                all.entry(sw.id.clone())
                    .or_insert_with(|| overlay_record(&sw));
            }
        }
        all
    }

    /// Create overlay network `spec` through the swarm.
    pub(super) fn create_overlay(&self, spec: super::NetworkSpec) -> Result<NetworkRecord> {
        let hooks = self.swarm().ok_or(DaemonError::NotSwarmManager)?;
        let sw = hooks.create_network(swarm_spec(spec)?)?;
        Ok(overlay_record(&sw))
    }

    /// Remove overlay network `n` (no local endpoints): through the swarm, and its local
    /// instance if any (alone when the node left the swarm).
    pub(super) fn remove_overlay(&self, st: &mut State, n: &NetworkRecord) -> Result<()> {
        let local = st.networks.contains_key(&n.id);
        match self.swarm() {
            Some(h) => h.remove_network(&n.id)?,
            None if local => {}
            None => return Err(DaemonError::NotSwarmManager),
        }
        st.remote.remove(&n.id);
        self.drop_overlay_instance(st, &n.id)
    }

    /// The local instance of swarm network `id` for a new endpoint: the stored record,
    /// or a new one (stored and plumbed; `fresh` notes it).
    pub(super) fn instantiate(
        &self,
        st: &mut State,
        n: &NetworkRecord,
        fresh: &mut Vec<String>,
    ) -> Result<()> {
        if st.vtep.is_none() {
            return Err(crate::daemon::plumbing::PlumbingError::NoVtep.into());
        }
        if st.networks.contains_key(&n.id) {
            return Ok(());
        }
        let rec = NetworkRecord {
            created: now_rfc3339(),
            ..n.clone()
        };
        self.store.commit(&[Change::PutNetwork(&rec)], None)?;
        st.networks.insert(rec.id.clone(), rec.clone());
        fresh.push(rec.id.clone());
        if let Err(e) = self.realize_network(st, &rec) {
            let _ = self.drop_overlay_instance(st, &rec.id);
            fresh.retain(|x| *x != rec.id);
            return Err(e);
        }
        Ok(())
    }

    /// Take down and forget the local instance of overlay network `id` (its remote
    /// endpoints stay known, for a next instance).
    pub(super) fn drop_overlay_instance(&self, st: &mut State, id: &str) -> Result<()> {
        if !st.networks.contains_key(id) {
            return Ok(());
        }
        self.store.commit(&[Change::DelNetwork(id)], None)?;
        st.networks.remove(id);
        self.unrealize_network(st, id);
        Ok(())
    }

    /// An address for new endpoint `ep_id` on overlay network `n`, from the swarm.
    pub(super) fn swarm_address(
        &self,
        n: &NetworkRecord,
        ep_id: &str,
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        let hooks = self.swarm().ok_or(DaemonError::NotSwarmManager)?;
        Ok(hooks.allocate(&n.id, ep_id, want)?)
    }

    /// Give back the swarm addresses of planned endpoints `eps` that were never
    /// committed (or were rolled back).
    pub(super) fn release_planned(&self, st: &State, eps: &[EndpointRecord]) {
        for e in eps.iter().filter(|e| is_overlay(st, e)) {
            self.release_swarm(&e.network_id, &e.id);
        }
    }

    fn release_swarm(&self, net: &str, ep: &str) {
        let Some(h) = self.swarm() else {
            tracing::warn!(network = %net, endpoint = %ep, "not in a swarm: the endpoint's address stays allocated");
            return;
        };
        if let Err(e) = h.release(net, ep) {
            tracing::warn!(network = %net, endpoint = %ep, error = %e, "could not release the swarm address");
        }
    }

    /// Drop the fresh overlay instances of a failed creation that no endpoint uses.
    pub(super) fn drop_unused(&self, st: &mut State, fresh: &[String]) {
        for id in fresh {
            if st.endpoints_of_network(id).next().is_none() {
                let _ = self.drop_overlay_instance(st, id);
            }
        }
    }

    /// Tell the swarm about sandbox `sb`'s new overlay endpoints (committed and plumbed).
    pub(super) fn swarm_endpoints_up(&self, st: &mut State, sb: &SandboxRecord) {
        let Some(h) = self.swarm() else { return };
        for id in &sb.endpoints {
            let Some(e) = st.endpoints.get(id).cloned() else {
                continue;
            };
            if !is_overlay(st, &e) || st.swarm_up.contains(&e.id) {
                continue;
            }
            let Some(local) = local_endpoint(sb, &e) else {
                continue;
            };
            if st.swarm_attached.insert(e.network_id.clone()) {
                h.attach(&e.network_id, true);
            }
            h.endpoint_up(&e.network_id, &local);
            st.swarm_up.insert(e.id.clone());
        }
    }

    /// Overlay endpoints `gone` are out of the records: withdraw them, free their
    /// addresses, and let go of the networks where none is left.
    pub(super) fn swarm_endpoints_gone(&self, st: &mut State, gone: &[EndpointRecord]) {
        let hooks = self.swarm();
        for e in gone {
            if st.swarm_up.remove(&e.id) {
                if let Some(h) = &hooks {
                    h.endpoint_down(&e.network_id, &e.id);
                }
            }
            self.release_swarm(&e.network_id, &e.id);
        }
        for e in gone {
            let net = &e.network_id;
            if st.endpoints_of_network(net).next().is_some() {
                continue;
            }
            if st.swarm_attached.remove(net) {
                if let Some(h) = &hooks {
                    h.attach(net, false);
                }
            }
            if let Err(err) = self.drop_overlay_instance(st, net) {
                tracing::warn!(network = %net, error = %chain(&err), "could not remove the overlay network's local instance");
            }
        }
    }

    /// The overlay endpoints among `eps`.
    pub(super) fn overlay_endpoints(st: &State, eps: &[String]) -> Vec<EndpointRecord> {
        eps.iter()
            .filter_map(|id| st.endpoints.get(id))
            .filter(|e| is_overlay(st, e))
            .cloned()
            .collect()
    }

    /// Remote endpoint `key` of swarm network `net_id` is `ep` (new, or changed): placed
    /// in the network's VTEP tables if it is instantiated here (else when it is), and
    /// answered by its DNS. A datapath failure is logged; the endpoint stays known.
    pub fn remote_endpoint_set(&self, net_id: &str, key: &str, ep: RemoteEndpoint) {
        let mut st = self.lock();
        let old = st
            .remote
            .entry(net_id.to_string())
            .or_default()
            .insert(key.to_string(), ep.clone());
        if !st.live_nets.contains(net_id) {
            return;
        }
        if let Some(o) = old.filter(|o| o.mac != ep.mac) {
            self.program_remote(net_id, &o, false);
        }
        self.program_remote(net_id, &ep, true);
    }

    /// Remote endpoint `key` of swarm network `net_id` is gone.
    pub fn remote_endpoint_remove(&self, net_id: &str, key: &str) {
        let mut st = self.lock();
        let Some(eps) = st.remote.get_mut(net_id) else {
            return;
        };
        let Some(old) = eps.remove(key) else { return };
        if eps.is_empty() {
            st.remote.remove(net_id);
        }
        if st.live_nets.contains(net_id) {
            self.program_remote(net_id, &old, false);
        }
    }

    /// Forget every remote endpoint (the node left the swarm).
    pub fn remote_endpoints_clear(&self) {
        let mut st = self.lock();
        let all = std::mem::take(&mut st.remote);
        for (net, eps) in &all {
            if st.live_nets.contains(net) {
                for ep in eps.values() {
                    self.program_remote(net, ep, false);
                }
            }
        }
    }

    /// Place (or remove) remote endpoint `ep` in network `net`'s VTEP tables.
    fn program_remote(&self, net: &str, ep: &RemoteEndpoint, on: bool) {
        let vtep = on.then_some(ep.vtep);
        if let Err(e) = self.plumbing.overlay_entry(net, ep.mac, ep.ip, vtep) {
            tracing::warn!(network = %net, ip = %ep.ip, error = %chain(&e), "could not program a remote endpoint");
        }
    }

    /// Place every known remote endpoint of network `net` (just brought up).
    pub(super) fn program_remotes(&self, st: &State, net: &str) {
        for ep in st.remote.get(net).into_iter().flat_map(|m| m.values()) {
            self.program_remote(net, ep, true);
        }
    }

    /// The other nodes that have endpoints on swarm network `net_id` (their VTEP
    /// addresses), as gossip shows them now: `network inspect`'s `Peers`.
    pub fn network_peers(&self, net_id: &str) -> Vec<std::net::Ipv4Addr> {
        self.view().peers.get(net_id).cloned().unwrap_or_default()
    }

    /// This node's endpoints on swarm networks, with their network ids: what the swarm
    /// service publishes again after a restart or when it installs its hooks.
    pub fn local_swarm_endpoints(&self) -> Vec<(String, LocalEndpoint)> {
        let v = self.view();
        v.endpoints
            .values()
            .filter(|e| {
                v.networks
                    .get(&e.network_id)
                    .is_some_and(|n| n.driver == OVERLAY)
            })
            .filter_map(|e| {
                let sb = v.sandboxes.get(&e.sandbox_id)?;
                Some((e.network_id.clone(), local_endpoint(sb, e)?))
            })
            .collect()
    }
}

/// Whether endpoint `e` is on an overlay network.
fn is_overlay(st: &State, e: &EndpointRecord) -> bool {
    st.networks
        .get(&e.network_id)
        .is_some_and(|n| n.driver == OVERLAY)
}
