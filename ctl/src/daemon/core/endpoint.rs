//! Endpoints: a sandbox's attachment to a network. Planning one (name, address, MAC:
//! from the local IPAM, or from the swarm on an overlay network), connecting a live
//! sandbox to a network, disconnecting it.

use tapnet_switch::MacAddr;

use super::sandbox::AttachSpec;
use super::{
    Daemon, DaemonError, OVERLAY, Records, Result, State, default_endpoint, lookup_network_id,
    parse_ip, prefix_len,
};
use crate::daemon::ipam::{Ipam, IpamError};
use crate::daemon::model::{EndpointRecord, SandboxRecord, new_id};
use crate::daemon::store::Change;

impl Daemon {
    /// Work out a new endpoint of sandbox `sb` on network `net_id` (allocating its
    /// address in `ipam`, or from the swarm on an overlay network: the caller releases
    /// it if the endpoint is not committed), without committing.
    pub(super) fn plan_endpoint(
        &self,
        st: &State,
        ipam: &mut Ipam,
        sb: &SandboxRecord,
        net_id: &str,
        a: &AttachSpec,
        taken_ifnames: &[String],
    ) -> Result<EndpointRecord> {
        let n = &st.networks[net_id];
        let mut ifname = String::new();
        // The null driver gives no interface: loopback only.
        for i in (0..).take_while(|_| n.driver != "null") {
            let cand = format!("eth{i}");
            if !taken_ifnames.contains(&cand) {
                ifname = cand;
                break;
            }
        }
        let mut e = EndpointRecord {
            id: new_id(),
            network_id: net_id.to_string(),
            sandbox_id: sb.id.clone(),
            ifname,
            aliases: a.aliases.clone(),
            gw_priority: a.gw_priority,
            ..Default::default()
        };
        let static_ip = a.ipv4.as_deref().filter(|s| !s.is_empty());
        if n.driver == OVERLAY {
            let cfg = n
                .ipam
                .first()
                .ok_or_else(|| DaemonError::NoIpam(n.name.clone()))?;
            let want = static_ip.map(|s| parse_ip("IPv4 address", s)).transpose()?;
            e.prefix_len = prefix_len(&cfg.subnet)?;
            let addr = self.swarm_address(n, &e.id, want)?;
            e.ipv4 = Some(addr);
            e.static_ip = want.is_some();
            e.mac = MacAddr::from_ipv4(addr).to_string();
        } else if let Some(cfg) = n.ipam.first() {
            let want = match static_ip {
                Some(_) if n.predefined => return Err(DaemonError::StaticIpOnPredefined),
                Some(s) => Some(parse_ip("IPv4 address", s)?),
                None => None,
            };
            let addr = ipam
                .request_address(&cfg.pool_id, want)
                .map_err(|err| match err {
                    IpamError::OutOfRange { addr, .. } => DaemonError::NoSubnetContains(addr),
                    // libnetwork rewords a full pool for the user (and answers 500).
                    IpamError::NoAvailableAddresses if want.is_none() => DaemonError::PoolFull {
                        name: n.name.clone(),
                        id: n.id.clone(),
                    },
                    other => other.into(),
                })?;
            e.ipv4 = Some(addr);
            e.prefix_len = prefix_len(&cfg.subnet)?;
            e.static_ip = want.is_some();
            e.mac = MacAddr::from_ipv4(addr).to_string();
        } else if static_ip.is_some() {
            return Err(DaemonError::NoIpam(n.name.clone()));
        }
        Ok(e)
    }

    /// Connect a sandbox to a network (a new interface appears in it, live).
    pub fn connect(&self, net: &str, sandbox_ref: &str, a: AttachSpec) -> Result<EndpointRecord> {
        let mut st = self.lock();
        // Swarm networks too: they are refused below with a clear reason.
        let all = self.all_networks(&st.networks);
        let net_id = lookup_network_id(&all, net)?;
        let sb_id = st.sandbox_id(sandbox_ref)?;
        let n = all[&net_id].clone();
        let mut sb = st.sandboxes[&sb_id].clone();
        if sb.rootless.is_some() {
            return Err(DaemonError::RootlessConnect(sb.name));
        }
        if let Some(x) = &sb.external {
            return Err(DaemonError::ExternalSandbox {
                name: sb.name.clone(),
                runtime: x.runtime(),
            });
        }
        let mine: Vec<EndpointRecord> = sb
            .endpoints
            .iter()
            .filter_map(|id| st.endpoints.get(id).cloned())
            .collect();
        if mine.iter().any(|e| e.network_id == net_id) {
            return Err(DaemonError::AlreadyConnected {
                sandbox: sb.name,
                network: n.name,
            });
        }
        if n.driver != "bridge" {
            return Err(DaemonError::ConnectAtCreationOnly {
                network: n.name,
                driver: n.driver,
            });
        }
        if mine.iter().any(|e| {
            st.networks
                .get(&e.network_id)
                .is_some_and(|n| n.driver == "null")
        }) {
            return Err(DaemonError::OnNoneNetwork(sb.name));
        }
        let mut ipam = st.ipam.clone();
        let taken: Vec<String> = mine.iter().map(|e| e.ifname.clone()).collect();
        let e = self.plan_endpoint(&st, &mut ipam, &sb, &net_id, &a, &taken)?;
        sb.endpoints.push(e.id.clone());
        self.store.commit(
            &[Change::PutEndpoint(&e), Change::PutSandbox(&sb)],
            Some(&State::ipam_bytes(&ipam)?),
        )?;
        st.ipam = ipam;
        st.endpoints.insert(e.id.clone(), e.clone());
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        let res = self
            .plumbing
            .ensure_namespace(&sb.netns)
            .map_err(DaemonError::from)
            .and_then(|()| {
                self.realize_endpoint(&mut st, &sb.netns, &e)?;
                self.apply_default_route(&st, &sb)
            });
        if let Err(err) = res {
            let _ = self.drop_endpoint(&mut st, &sb_id, &e.id);
            return Err(err);
        }
        // Its first network may be new (a sandbox that had none but `none` cannot
        // connect, but one whose networks all went can).
        self.apply_resolv_conf(&st, &sb);
        Ok(e)
    }

    /// Remove endpoint `ep` of sandbox `sb_id`: datapath, interface, address, records.
    fn drop_endpoint(&self, st: &mut State, sb_id: &str, ep: &str) -> Result<()> {
        let Some(e) = st.endpoints.get(ep).cloned() else {
            return Ok(());
        };
        let mut sb = st.sandboxes[sb_id].clone();
        // Published ports lead to this endpoint's address when they were published
        // toward it (or, not live, when it is the default endpoint a restart would
        // publish them toward). The address goes back to IPAM here and may go to the
        // next sandbox on the network: the ports go with the endpoint, in the same
        // commit, so that no host port leads to someone else's address.
        //
        // Docker keeps a container's port bindings and programs them again on the
        // endpoint that becomes the gateway (or when it is connected again). tapnet
        // does not: refusing the disconnect would forbid a Docker operation, and moving
        // the ports would mean closing and binding each host port again (another
        // process may take it in between) toward an address the user did not publish
        // to, or listing ports no one listens on. The sandbox's `Ports` then show the
        // truth (none); publishing again means a new sandbox, as for `docker run -p`.
        let ports_here = !sb.ports.is_empty()
            && match st.published.get(sb_id) {
                Some((net, ip)) => *net == e.network_id && Some(*ip) == e.ipv4,
                None => default_endpoint(&sb, &st.endpoints, &st.networks)
                    .is_some_and(|(d, _)| d.id == e.id),
            };
        if ports_here {
            sb.ports.clear();
        }
        sb.endpoints.retain(|x| x != ep);
        let mut ipam = st.ipam.clone();
        if let (false, Some(a), Some(cfg)) = (
            e.ipam_held,
            e.ipv4,
            st.networks.get(&e.network_id).and_then(|n| n.ipam.first()),
        ) {
            let _ = ipam.release_address(&cfg.pool_id, a);
        }
        // The interface goes before the commit, not after: a crash in between then
        // leaves the endpoint's record, and reconcile plugs it back in (the disconnect
        // never returned). The other order left a persistent TAP, address and all, in
        // the sandbox with no record, which nothing removed and which a later connect
        // reused (as `eth1` again) with two addresses.
        // So does the datapath's port: one the datapath cannot let go of keeps the
        // endpoint, its address and its MAC (no one else may be given them).
        self.unrealize_endpoint(st, &sb.netns, &e)?;
        let bytes = State::ipam_bytes(&ipam)?;
        let committed = self.store.commit(
            &[Change::DelEndpoint(ep), Change::PutSandbox(&sb)],
            Some(&bytes),
        );
        if let Err(err) = committed {
            // Not removed after all: put the interface back as it was.
            if !sb.netns.is_empty() {
                let _ = self.realize_endpoint(st, &sb.netns, &e);
                let before = st.sandboxes[sb_id].clone();
                let _ = self.apply_default_route(st, &before);
            }
            return Err(err.into());
        }
        st.ipam = ipam;
        let overlay = Self::overlay_endpoints(st, std::slice::from_ref(&e.id));
        st.endpoints.remove(ep);
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        self.swarm_endpoints_gone(st, &overlay);
        // Still under the state lock: no other sandbox got the address in between.
        if ports_here {
            self.unpublish(st, sb_id);
        }
        if !sb.netns.is_empty() {
            let _ = self.apply_default_route(st, &sb);
            // Its first network may have been this one.
            self.apply_resolv_conf(st, &sb);
        }
        Ok(())
    }

    /// Disconnect a sandbox from a network (its interface disappears, live).
    pub fn disconnect(&self, net: &str, sandbox_ref: &str) -> Result<()> {
        let mut st = self.lock();
        let net_id = st.network_id(net)?;
        let sb_id = st.sandbox_id(sandbox_ref)?;
        let sb = st.sandboxes[&sb_id].clone();
        let ep = sb
            .endpoints
            .iter()
            .find(|id| {
                st.endpoints
                    .get(*id)
                    .is_some_and(|e| e.network_id == net_id)
            })
            .cloned();
        let Some(ep) = ep else {
            return Err(DaemonError::NotConnected {
                sandbox: sb.name,
                network: st.networks[&net_id].name.clone(),
            });
        };
        self.drop_endpoint(&mut st, &sb_id, &ep)
    }
}
