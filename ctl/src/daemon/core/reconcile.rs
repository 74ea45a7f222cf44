//! Making live state match the records: at start (reconcile) and after every committed
//! change (realize), and taking it down again (unrealize).
//!
//! Overlay networks need the VXLAN tunnel endpoint, which the swarm service starts after
//! the daemon opened ([`Daemon::set_vtep`]): until then reconcile leaves them, and their
//! endpoints, down; `set_vtep` brings them up (see [`super::swarm`]).

use std::collections::BTreeMap;

use tapnet_nat::GatewayConfig;
use tapnet_switch::MacAddr;

use super::options::{DEFAULT_BRIDGE_OPTIONS, bridge_opts};
use super::{Daemon, NetworkSpec, OVERLAY, OVERLAY_MTU, Result, State, default_route, prefix_len};
use crate::daemon::chain::chain;
use crate::daemon::model::{EndpointRecord, External, NetworkRecord, SandboxRecord};
use crate::daemon::plumbing::{EndpointPlan, NetworkPlan};

impl Daemon {
    /// Create `bridge`, `host` and `none` if they do not exist yet (first start).
    pub(super) fn ensure_predefined(&self) -> Result<()> {
        let have: Vec<String> = self
            .lock()
            .networks
            .values()
            .map(|n| n.name.clone())
            .collect();
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if have.iter().any(|n| n == name) {
                continue;
            }
            let mut options = BTreeMap::new();
            if name == "bridge" {
                for (k, v) in DEFAULT_BRIDGE_OPTIONS {
                    options.insert(k.to_string(), v.to_string());
                }
            }
            let spec = NetworkSpec {
                name: name.into(),
                driver: driver.into(),
                options,
                ..Default::default()
            };
            self.create_network(spec, true)?;
        }
        Ok(())
    }

    /// Bring up the datapath of every stored network and sandbox; remove the namespaces
    /// of removed sandboxes that a crash left.
    pub(super) fn reconcile(&self) -> Result<()> {
        let mut st = self.lock();
        let nets: Vec<NetworkRecord> = st.networks.values().cloned().collect();
        for n in &nets {
            self.realize_network(&mut st, n)?;
        }
        // CNI containers that ended without a DEL: their namespaces are gone.
        self.reap_cni(&mut st);
        let sbs: Vec<SandboxRecord> = st.sandboxes.values().cloned().collect();
        // Only namespaces this daemon recorded as gone are removed: every `tapnet-*`
        // namespace without a record of ours may belong to another daemon (another state
        // dir); sweeping them all here tore down other daemons' live sandboxes.
        let gone = std::mem::take(&mut st.gone_netns);
        let mut removed: Vec<&str> = Vec::new();
        for ns in &gone {
            if sbs.iter().any(|s| &s.netns == ns) || self.plumbing.remove_namespace(ns).is_ok() {
                removed.push(ns);
            }
        }
        if !removed.is_empty() {
            let _ = self.store.forget_netns(&removed);
        }
        self.reap_rootless(&mut st);
        // A CNI container's TAP persists in its namespace and is found again, as a
        // Docker container's is, under the name Docker gave it (`restore_docker`).
        let docker = |s: &&SandboxRecord| matches!(s.external, Some(External::Docker { .. }));
        for sb in sbs.iter().filter(docker) {
            if let Err(e) = self.restore_docker(&mut st, sb) {
                tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not restore a Docker endpoint");
            }
        }
        let restorable = |s: &&SandboxRecord| s.rootless.is_none() && !docker(s);
        for sb in sbs.iter().filter(restorable) {
            if let Err(e) = self.realize_sandbox(&mut st, sb) {
                tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not restore sandbox");
            } else {
                self.restore_ports(&mut st, sb);
            }
        }
        // A rootless sandbox whose process lives on gets its interfaces back when the
        // process sends its TAPs again; its ports are bound now, as they were.
        let kept: Vec<&SandboxRecord> = sbs
            .iter()
            .filter(|s| s.rootless.is_some() && st.sandboxes.contains_key(&s.id))
            .collect();
        for sb in kept {
            self.restore_ports(&mut st, sb);
        }
        Ok(())
    }

    /// Bring up network `n`'s datapath (bridge networks, and overlay ones once the VTEP
    /// is up; host and null have none).
    pub(super) fn realize_network(&self, st: &mut State, n: &NetworkRecord) -> Result<()> {
        if st.live_nets.contains(&n.id) {
            return Ok(());
        }
        if n.driver == OVERLAY {
            return self.realize_overlay(st, n);
        }
        if n.driver != "bridge" {
            return Ok(());
        }
        let opts = bridge_opts(&n.options)?;
        let gateway = match n.ipam.first() {
            Some(cfg) => match (cfg.gateway, prefix_len(&cfg.subnet)) {
                (Some(gw), Ok(prefix)) => Some(GatewayConfig {
                    mac: MacAddr::from_ipv4(gw),
                    ip: gw,
                    prefix_len: prefix,
                    internal: n.internal,
                }),
                _ => None,
            },
            None => None,
        };
        self.plumbing.add_network(&NetworkPlan {
            id: n.id.clone(),
            icc: opts.icc,
            mtu: opts.mtu,
            gateway,
            host_loopback: opts.host_loopback,
            overlay: None,
        })?;
        st.live_nets.insert(n.id.clone());
        Ok(())
    }

    /// Bring up overlay network `n`'s datapath, if the VTEP is up: a bridge domain with
    /// the network's overlay port, and a gateway that answers DNS only (no external
    /// access); then place the remote endpoints known for it.
    fn realize_overlay(&self, st: &mut State, n: &NetworkRecord) -> Result<()> {
        if st.vtep.is_none() {
            return Ok(());
        }
        let vni = super::swarm::vni_of(n)?;
        let gateway = n.ipam.first().and_then(|cfg| {
            let gw = cfg.gateway?;
            Some(GatewayConfig {
                mac: MacAddr::from_ipv4(gw),
                ip: gw,
                prefix_len: prefix_len(&cfg.subnet).ok()?,
                internal: true,
            })
        });
        self.plumbing.add_network(&NetworkPlan {
            id: n.id.clone(),
            icc: true,
            mtu: OVERLAY_MTU,
            gateway,
            host_loopback: false,
            overlay: Some(vni),
        })?;
        st.live_nets.insert(n.id.clone());
        self.program_remotes(st, &n.id);
        Ok(())
    }

    /// Take network `id`'s datapath down.
    pub(super) fn unrealize_network(&self, st: &mut State, id: &str) {
        if st.live_nets.remove(id) {
            self.plumbing.remove_network(id);
        }
    }

    /// Plumb one endpoint of a sandbox with a named namespace: TAP, engine port, MAC.
    pub(super) fn realize_endpoint(
        &self,
        st: &mut State,
        netns: &str,
        e: &EndpointRecord,
    ) -> Result<()> {
        let Some(n) = st.networks.get(&e.network_id) else {
            return Ok(());
        };
        // An overlay network is down until the VTEP is up (`set_vtep` plugs its
        // endpoints then).
        let overlay_down = n.driver == OVERLAY && !st.live_nets.contains(&n.id);
        if (n.driver != "bridge" && n.driver != OVERLAY)
            || overlay_down
            || st.attached.contains(&e.id)
        {
            return Ok(());
        }
        let plan = EndpointPlan {
            id: &e.id,
            network: &e.network_id,
            iface: st.iface(e)?,
        };
        self.plumbing.plug(netns, &plan)?;
        st.attached.insert(e.id.clone());
        Ok(())
    }

    /// Plumb a sandbox with a named namespace: the namespace, every endpoint, the
    /// default route, its `resolv.conf`.
    pub(super) fn realize_sandbox(&self, st: &mut State, sb: &SandboxRecord) -> Result<()> {
        // A container runtime's namespace is its own: it is there, or the container is
        // gone (and plugging fails).
        if sb.external.is_none() {
            self.plumbing.ensure_namespace(&sb.netns)?;
        }
        for id in &sb.endpoints {
            if let Some(e) = st.endpoints.get(id).cloned() {
                self.realize_endpoint(st, &sb.netns, &e)?;
            }
        }
        self.apply_default_route(st, sb)?;
        self.apply_resolv_conf(st, sb);
        Ok(())
    }

    /// Set `sb`'s default route as its endpoints decide it now.
    pub(super) fn apply_default_route(&self, st: &State, sb: &SandboxRecord) -> Result<()> {
        let route = default_route(sb, &st.endpoints, &st.networks);
        // A CNI container's namespace may hold several attachments and other plugins'
        // routes: only the attachment that holds the default route sets it, and none
        // removes one (see `cni`).
        if matches!(sb.external, Some(External::Cni { .. }))
            && (route.is_none() || !self.cni_holds_route(st, sb))
        {
            return Ok(());
        }
        self.plumbing
            .set_default_route(&sb.netns, route.as_ref().map(|(g, i)| (*g, i.as_str())))?;
        Ok(())
    }

    /// Take endpoint `e` out of the datapath and its interface out of namespace `netns`.
    /// When the datapath cannot let go of it, nothing is changed and the error returned:
    /// the endpoint's address, and the MAC made from it, are still in use.
    pub(super) fn unrealize_endpoint(
        &self,
        st: &mut State,
        netns: &str,
        e: &EndpointRecord,
    ) -> Result<()> {
        if st.attached.contains(&e.id) {
            self.plumbing.detach(&e.id)?;
            st.attached.remove(&e.id);
        }
        if !netns.is_empty() {
            let _ = self.plumbing.unplug(netns, &e.ifname);
        }
        Ok(())
    }

    /// Take every endpoint of sandbox `sb` out of the datapath. When one cannot be, the
    /// ones taken out already are put back (a sandbox with a namespace of its own) and
    /// the error returned: the sandbox keeps its addresses.
    pub(super) fn detach_sandbox(&self, st: &mut State, sb: &SandboxRecord) -> Result<()> {
        for id in &sb.endpoints {
            if !st.attached.contains(id) {
                continue;
            }
            if let Err(e) = self.plumbing.detach(id) {
                if sb.rootless.is_none() && !sb.netns.is_empty() {
                    let _ = self.realize_sandbox(st, sb);
                }
                return Err(e.into());
            }
            st.attached.remove(id);
        }
        Ok(())
    }

    /// Take sandbox `sb` down once [`Daemon::detach_sandbox`] has taken its endpoints
    /// out of the datapath; returns whether its namespace is gone.
    pub(super) fn unrealize_sandbox(&self, st: &State, sb: &SandboxRecord) -> bool {
        match &sb.external {
            // Neither runtime's namespace is this daemon's to forget: only the interface
            // goes.
            Some(External::Docker { .. }) => {
                for e in sb.endpoints.iter().filter_map(|id| st.endpoints.get(id)) {
                    self.docker_unplug(sb, e);
                }
                false
            }
            // A CNI container's namespace is its runtime's: only the interface goes.
            Some(External::Cni { .. }) => {
                for e in sb.endpoints.iter().filter_map(|id| st.endpoints.get(id)) {
                    let _ = self.plumbing.unplug(&sb.netns, &e.ifname);
                }
                false
            }
            // A rootless sandbox's namespace belongs to its process; closing the TAPs
            // removed its interfaces.
            None => sb.rootless.is_some() || self.plumbing.remove_namespace(&sb.netns).is_ok(),
        }
    }
}
