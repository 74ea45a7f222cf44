//! The daemon's side of rootless sandboxes (see [`crate::daemon::rootless`]): create one
//! with endpoints only, tell its process which interfaces to make, adopt the TAPs it
//! sends, and sweep those whose process is gone.

use std::os::fd::OwnedFd;

use tapnet_switch::MacAddr;

use super::{AttachSpec, Daemon, Fail, Res, State, bridge_opts, default_route, internal, mac_of};
use crate::daemon::model::{EndpointRecord, SandboxRecord};
use crate::daemon::rootless::{owner_alive, owner_of};
use crate::daemon::store::Change;
use tapnet_api::{SandboxInterface, SandboxInterfaces};
use tapnet_engine::port::TapPort;
use tapnet_engine::sys::tap::Tap;

impl Daemon {
    /// Create a rootless sandbox owned by process `pid` (the caller of the API).
    pub fn create_rootless_sandbox(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[tapnet_nat::portspec::PortMapping],
        pid: u32,
    ) -> Res<SandboxRecord> {
        let owner = owner_of(pid)
            .ok_or_else(|| Fail::bad_request(format!("process {pid} is not running")))?;
        self.create_sandbox_as(name, hostname, nets, ports, Some(owner))
    }

    /// The interfaces the process of rootless sandbox `id_or_name` must create, and its
    /// default route.
    pub fn rootless_interfaces(&self, id_or_name: &str) -> Res<SandboxInterfaces> {
        let st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        let sb = &st.sandboxes[&id];
        if sb.rootless.is_none() {
            return Err(Fail::bad_request(format!(
                "sandbox {} is not rootless: the daemon made its interfaces",
                sb.name
            )));
        }
        let mut out = SandboxInterfaces::default();
        for e in bridge_endpoints(&st, sb) {
            let n = &st.networks[&e.network_id];
            out.interfaces.push(SandboxInterface {
                name: e.ifname.clone(),
                mac_address: e.mac.clone(),
                ip_address: e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                ip_prefix_len: e.prefix_len,
                mtu: bridge_opts(&n.options)?.mtu,
            });
        }
        if let Some((gw, ifname)) = default_route(sb, &st.endpoints, &st.networks) {
            out.gateway = gw.to_string();
            out.gateway_interface = ifname;
        }
        Ok(out)
    }

    /// Attach the TAPs that process `pid` created for rootless sandbox `id_or_name`: one
    /// fd per interface the sandbox has, named in `names`. The sandbox is then owned by
    /// `pid`. Nothing changes if any fd is wrong.
    pub fn adopt_taps(
        &self,
        id_or_name: &str,
        names: Vec<String>,
        fds: Vec<OwnedFd>,
        pid: u32,
    ) -> Res<SandboxRecord> {
        let mut st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        let mut sb = st.sandboxes[&id].clone();
        if sb.rootless.is_none() {
            return Err(Fail::bad_request(format!(
                "sandbox {} is not rootless: the daemon made its interfaces",
                sb.name
            )));
        }
        let eps: Vec<EndpointRecord> = bridge_endpoints(&st, &sb).cloned().collect();
        if eps.iter().any(|e| st.ports.contains_key(&e.id)) {
            return Err(Fail::conflict(format!(
                "sandbox {} already has its interfaces",
                sb.name
            )));
        }
        if names.len() != fds.len() {
            return Err(Fail::bad_request(format!(
                "{} interface names but {} file descriptors came with the request: send one \
                 TAP fd (SCM_RIGHTS) per name",
                names.len(),
                fds.len()
            )));
        }
        let mut taps: Vec<Option<Tap>> = Vec::with_capacity(eps.len());
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        for e in &eps {
            let i = names.iter().position(|n| *n == e.ifname).ok_or_else(|| {
                Fail::bad_request(format!(
                    "no TAP for interface {} of sandbox {}",
                    e.ifname, sb.name
                ))
            })?;
            let fd = fds[i]
                .take()
                .ok_or_else(|| Fail::bad_request(format!("interface {} given twice", e.ifname)))?;
            let tap = Tap::adopt(fd)
                .map_err(|err| Fail::bad_request(format!("the fd sent for {}: {err}", e.ifname)))?;
            if tap.name() != e.ifname {
                return Err(Fail::bad_request(format!(
                    "the fd sent for {} is the TAP {}",
                    e.ifname,
                    tap.name()
                )));
            }
            taps.push(Some(tap));
        }
        if let Some(i) = fds.iter().position(Option::is_some) {
            return Err(Fail::bad_request(format!(
                "sandbox {} has no interface {}",
                sb.name, names[i]
            )));
        }
        let owner = owner_of(pid)
            .ok_or_else(|| Fail::bad_request(format!("process {pid} is not running")))?;
        for (e, tap) in eps.iter().zip(taps.iter_mut()) {
            let Some(tap) = tap.take() else { continue };
            if let Err(err) = self.attach_tap(&mut st, e, tap) {
                self.detach_taps(&mut st, &eps);
                return Err(err);
            }
        }
        sb.rootless = Some(owner);
        if let Err(err) = self.store.commit(&[Change::PutSandbox(&sb)], None) {
            self.detach_taps(&mut st, &eps);
            return Err(internal("state")(err));
        }
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        Ok(sb)
    }

    /// Attach one adopted TAP as endpoint `e`'s engine port, as `realize_endpoint`
    /// attaches a root sandbox's.
    fn attach_tap(&self, st: &mut State, e: &EndpointRecord, tap: Tap) -> Res<()> {
        let n = &st.networks[&e.network_id];
        let mtu = bridge_opts(&n.options)?.mtu;
        let Some(live) = st.nets.get(&e.network_id) else {
            return Err(Fail::internal("network has no datapath"));
        };
        let domain = live.domain;
        let port = self
            .engine
            .add_port(Box::new(TapPort::new(tap, mtu)), domain)
            .map_err(internal("datapath"))?;
        if let Err(err) = self.engine.add_static_mac(domain, MacAddr(mac_of(e)), port) {
            let _ = self.engine.remove_port(port);
            return Err(internal("datapath")(err));
        }
        st.ports.insert(e.id.clone(), port);
        Ok(())
    }

    fn detach_taps(&self, st: &mut State, eps: &[EndpointRecord]) {
        for e in eps {
            if let Some(p) = st.ports.remove(&e.id) {
                let _ = self.engine.remove_port(p);
            }
        }
    }

    /// Remove every rootless sandbox whose process has exited.
    pub(super) fn reap_rootless(&self, st: &mut State) {
        let dead: Vec<(String, String)> = st
            .sandboxes
            .values()
            .filter(|s| s.rootless.as_ref().is_some_and(|o| !owner_alive(o)))
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        for (id, name) in dead {
            match self.drop_sandbox(st, &id) {
                Ok(()) => {
                    tracing::info!(sandbox = %name, "removed rootless sandbox: its process is gone")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %name, error = %e, "could not remove rootless sandbox")
                }
            }
        }
    }
}

/// Endpoints of `sb` on bridge networks (those that have an interface).
fn bridge_endpoints<'a>(
    st: &'a State,
    sb: &'a SandboxRecord,
) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
    sb.endpoints.iter().filter_map(|id| {
        let e = st.endpoints.get(id)?;
        (st.networks.get(&e.network_id)?.driver == "bridge").then_some(e)
    })
}
