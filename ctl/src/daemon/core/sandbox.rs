//! Sandboxes: create one with an endpoint on each network asked for, list, inspect,
//! remove.

use tapnet_nat::portspec::PortMapping;

use super::{Daemon, DaemonError, OVERLAY, Records, Result, State, lookup_network_id};
use crate::daemon::ipam::Ipam;
use crate::daemon::model::{
    EndpointRecord, NetworkRecord, RootlessOwner, SandboxRecord, new_id, now_rfc3339,
};
use crate::daemon::store::Change;

/// One network a new sandbox (or a connect) asks for.
#[derive(Clone, Debug, Default)]
pub struct AttachSpec {
    /// Network name or id.
    pub network: String,
    /// Static IPv4 address.
    pub ipv4: Option<String>,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Default-route priority.
    pub gw_priority: i64,
}

/// Name of a sandbox's namespace (under /run/netns).
pub fn netns_name(sandbox_id: &str) -> String {
    format!("tapnet-{}", &sandbox_id[..12.min(sandbox_id.len())])
}

/// Docker's rule for container names.
pub(super) fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl Daemon {
    /// Create a sandbox with an endpoint on each network asked for (the default
    /// `bridge` when none is).
    pub fn create_sandbox(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[PortMapping],
    ) -> Result<SandboxRecord> {
        self.create_sandbox_as(name, hostname, nets, ports, None)
    }

    /// [`Daemon::create_sandbox`]; with an `owner` the sandbox is rootless: endpoints
    /// only, no namespace and no TAPs (see [`super::rootless`]).
    pub(super) fn create_sandbox_as(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[PortMapping],
        owner: Option<RootlessOwner>,
    ) -> Result<SandboxRecord> {
        // Every caller of the core is bounded, not only the API (which checks first, to
        // count the refusal before queueing the call).
        super::check_port_bounds(ports)?;
        if owner.is_none() && !self.plumbing.can_make_namespaces() {
            return Err(DaemonError::NeedsRoot);
        }
        let mut st = self.lock();
        if owner.is_some() {
            self.reap_rootless(&mut st);
        }
        let id = new_id();
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("sandbox-{}", &id[..12]));
        if !valid_name(&name) {
            return Err(DaemonError::InvalidSandboxName(name));
        }
        if let Some(other) = st.sandboxes.values().find(|s| s.name == name) {
            return Err(DaemonError::SandboxNameTaken {
                name,
                id: other.id.clone(),
            });
        }
        let nets = if nets.is_empty() {
            vec![AttachSpec {
                network: "bridge".into(),
                ..Default::default()
            }]
        } else {
            nets
        };
        let sb = SandboxRecord {
            id: id.clone(),
            name: name.clone(),
            created: now_rfc3339(),
            netns: match owner {
                Some(_) => String::new(),
                None => netns_name(&id),
            },
            hostname: hostname.unwrap_or_else(|| id[..12].to_string()),
            endpoints: Vec::new(),
            ports: Vec::new(),
            rootless: owner,
            external: None,
        };
        self.add_sandbox(&mut st, sb, &nets, ports, None)
    }

    /// Add new sandbox `sb` on `nets` with published `ports`: plan its endpoints (named
    /// `ifname` when given), bind the host ports, commit, then bring it up (a rootless
    /// sandbox's interfaces come later) and publish. Host ports are bound before the
    /// commit, so a taken one fails the call with nothing stored; a failure after the
    /// commit removes the sandbox again.
    pub(super) fn add_sandbox(
        &self,
        st: &mut State,
        mut sb: SandboxRecord,
        nets: &[AttachSpec],
        ports: &[PortMapping],
        ifname: Option<&str>,
    ) -> Result<SandboxRecord> {
        let mut ipam = st.ipam.clone();
        let mut eps: Vec<EndpointRecord> = Vec::new();
        // Swarm networks instantiated here for this sandbox.
        let mut fresh: Vec<String> = Vec::new();
        let planned = self
            .plan_sandbox(st, &mut ipam, &mut sb, nets, &mut eps, &mut fresh)
            .and_then(|()| self.bind_ports(st, &sb, &eps, ports));
        let bound = match planned {
            Ok(b) => b,
            Err(err) => {
                self.release_planned(st, &eps);
                self.drop_unused(st, &fresh);
                return Err(err);
            }
        };
        sb.ports = bound.iter().map(|b| b.record.clone()).collect();
        if let Some(name) = ifname {
            for e in &mut eps {
                e.ifname = name.to_string();
            }
        }
        self.commit_planned(st, ipam, &sb, &eps, &fresh)?;
        // A rootless sandbox's interfaces come later from its process; its ports are
        // published now (the relay reaches its address once they exist).
        let realized = if sb.rootless.is_some() {
            Ok(())
        } else {
            self.realize_sandbox(st, &sb)
        };
        if let Err(err) = realized.and_then(|()| self.publish_ports(st, &sb, bound)) {
            let _ = self.drop_sandbox(st, &sb.id);
            self.drop_unused(st, &fresh);
            return Err(err);
        }
        self.swarm_endpoints_up(st, &sb);
        Ok(sb)
    }

    /// Commit new sandbox `sb` with its planned endpoints `eps` and the IPAM state
    /// `ipam` they were planned in, and take them into the state. When the commit
    /// fails, the planned addresses and the swarm networks instantiated for it
    /// (`fresh`) are given back.
    pub(super) fn commit_planned(
        &self,
        st: &mut State,
        ipam: Ipam,
        sb: &SandboxRecord,
        eps: &[EndpointRecord],
        fresh: &[String],
    ) -> Result<()> {
        let mut changes: Vec<Change<'_>> = eps.iter().map(Change::PutEndpoint).collect();
        changes.push(Change::PutSandbox(sb));
        let committed = State::ipam_bytes(&ipam)
            .and_then(|bytes| Ok(self.store.commit(&changes, Some(&bytes))?));
        if let Err(err) = committed {
            self.release_planned(st, eps);
            self.drop_unused(st, fresh);
            return Err(err);
        }
        st.ipam = ipam;
        for e in eps {
            st.endpoints.insert(e.id.clone(), e.clone());
        }
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        Ok(())
    }

    /// Plan the endpoints of new sandbox `sb` on `nets` into `eps` (instantiating the
    /// swarm networks it is the first to use, noted in `fresh`), without committing.
    pub(super) fn plan_sandbox(
        &self,
        st: &mut State,
        ipam: &mut Ipam,
        sb: &mut SandboxRecord,
        nets: &[AttachSpec],
        eps: &mut Vec<EndpointRecord>,
        fresh: &mut Vec<String>,
    ) -> Result<()> {
        let mut seen = Vec::new();
        for a in nets {
            let all = self.all_networks(&st.networks);
            let net_id = lookup_network_id(&all, &a.network)?;
            let n = &all[&net_id];
            if seen.contains(&net_id) {
                return Err(DaemonError::NetworkGivenTwice(n.name.clone()));
            }
            seen.push(net_id.clone());
            match n.driver.as_str() {
                "host" => return Err(DaemonError::HostNetworkSandbox),
                "null" if nets.len() > 1 => return Err(DaemonError::NoneCombined),
                OVERLAY if !n.attachable => return Err(DaemonError::NotAttachable(n.name.clone())),
                OVERLAY => self.instantiate(st, n, fresh)?,
                _ => {}
            }
            let taken: Vec<String> = eps.iter().map(|e| e.ifname.clone()).collect();
            let e = self.plan_endpoint(st, ipam, sb, &net_id, a, &taken)?;
            sb.endpoints.push(e.id.clone());
            eps.push(e);
        }
        Ok(())
    }

    /// Remove sandbox `id`: records, addresses, published ports, plumbing.
    pub(super) fn drop_sandbox(&self, st: &mut State, id: &str) -> Result<()> {
        let sb = st.sandboxes[id].clone();
        // Out of the datapath first: an endpoint the datapath cannot let go of keeps
        // the sandbox, with its addresses (and the MACs made from them).
        self.detach_sandbox(st, &sb)?;
        let mut ipam = st.ipam.clone();
        let mut changes = Vec::new();
        for ep in &sb.endpoints {
            if let Some(e) = st.endpoints.get(ep).filter(|e| !e.ipam_held) {
                if let (Some(a), Some(cfg)) = (
                    e.ipv4,
                    st.networks.get(&e.network_id).and_then(|n| n.ipam.first()),
                ) {
                    let _ = ipam.release_address(&cfg.pool_id, a);
                }
            }
            changes.push(Change::DelEndpoint(ep));
        }
        changes.push(Change::DelSandbox(id));
        // With the record goes a note that the namespace is ours to delete, so a crash
        // before it is deleted leaves nothing that reconcile cannot find.
        if sb.rootless.is_none() && sb.external.is_none() {
            changes.push(Change::NetnsGone(&sb.netns));
        }
        let committed = State::ipam_bytes(&ipam)
            .and_then(|bytes| Ok(self.store.commit(&changes, Some(&bytes))?));
        if let Err(err) = committed {
            // Not removed after all: its interfaces go back into the datapath.
            if sb.rootless.is_none() && !sb.netns.is_empty() {
                let _ = self.realize_sandbox(st, &sb);
            }
            return Err(err);
        }
        st.ipam = ipam;
        self.unpublish(st, id);
        if self.unrealize_sandbox(st, &sb) {
            let _ = self.store.forget_netns(&[&sb.netns]);
        }
        let overlay = Self::overlay_endpoints(st, &sb.endpoints);
        for ep in &sb.endpoints {
            st.endpoints.remove(ep);
        }
        st.sandboxes.remove(id);
        self.swarm_endpoints_gone(st, &overlay);
        Ok(())
    }

    /// Remove a sandbox and free everything it held.
    pub fn remove_sandbox(&self, id_or_name: &str) -> Result<()> {
        let mut st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        let sb = &st.sandboxes[&id];
        if let Some(x) = &sb.external {
            return Err(DaemonError::ExternalSandbox {
                name: sb.name.clone(),
                runtime: x.runtime(),
            });
        }
        self.drop_sandbox(&mut st, &id)
    }

    /// All sandboxes with their endpoints.
    pub fn sandboxes(&self) -> Vec<(SandboxRecord, Vec<(EndpointRecord, NetworkRecord)>)> {
        let v = self.view();
        v.sandboxes
            .values()
            .map(|s| (s.clone(), v.sandbox_eps(s)))
            .collect()
    }

    /// One sandbox with its endpoints.
    pub fn sandbox(
        &self,
        id_or_name: &str,
    ) -> Result<(SandboxRecord, Vec<(EndpointRecord, NetworkRecord)>)> {
        let v = self.view();
        let id = v.sandbox_id(id_or_name)?;
        let s = v.sandboxes[&id].clone();
        let eps = v.sandbox_eps(&s);
        Ok((s, eps))
    }
}
