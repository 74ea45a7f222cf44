//! The real plumbing: the engine's datapath and host networking, sandboxes in named
//! network namespaces with persistent TAPs, host sockets for published ports, `/proc`,
//! and the engine's VXLAN tunnel endpoint for overlay networks.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tapnet_engine::hostnet::{HostNet, HostNetConfig, HostNetError, NetAttach};
use tapnet_engine::overlay::{Entry, Overlay, OverlayConfig, OverlayError, Vni};
use tapnet_engine::port::TapPort;
use tapnet_engine::runtime::{Engine, EngineConfig, EngineError};
use tapnet_engine::sys::netns::{NETNS_RUN_DIR, NetNs};
use tapnet_engine::sys::tap::Tap;
use tapnet_nat::dns::{Names, ResolvConf};
use tapnet_nat::portspec::Proto;
use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortBinding, PortId};

use super::netns::{self as sandbox_ns, SandboxError};
use super::ports::{self, PublishTable};
use super::process;
use super::{
    DatapathStats, EndpointPlan, HostPorts, HostSocket, NetworkPlan, Plumbing, PlumbingError,
    PortUser, PublishTarget, SocketKind,
};
use crate::daemon::model::RootlessOwner;

/// A network's live datapath objects.
struct LiveNet {
    domain: DomainId,
    /// The gateway port; `None` for networks without an address pool.
    gateway: Option<PortId>,
    /// An internal network: its relay answers DNS and carries nothing else.
    internal: bool,
    /// An overlay network's VNI (its overlay port is on the VTEP).
    vni: Option<Vni>,
    /// An overlay network's remote endpoints: MAC → VTEP.
    remote: HashMap<[u8; 6], Ipv4Addr>,
}

#[derive(Default)]
struct Live {
    nets: HashMap<String, LiveNet>,
    /// Engine port of each attached endpoint, with its network.
    ports: HashMap<String, (PortId, String)>,
    /// The VXLAN tunnel endpoint, once started.
    vtep: Option<Overlay>,
}

/// The plumbing of a real daemon: see the module docs.
pub struct OsPlumbing {
    engine: Arc<Engine>,
    hostnet: Arc<HostNet>,
    live: Mutex<Live>,
    published: PublishTable,
    /// The host's `resolv.conf` (`HostNetConfig::resolv_conf`).
    resolv_conf: PathBuf,
}

fn datapath(e: EngineError) -> PlumbingError {
    PlumbingError::Datapath(e)
}

/// A sandbox's namespace by its name under `/run/netns`, or by its path (one that
/// starts with `/`: a container runtime's, handed over through CNI).
fn open_netns(netns: &str) -> Result<NetNs, tapnet_engine::sys::netns::NetnsError> {
    if netns.starts_with('/') {
        NetNs::open_path(std::path::Path::new(netns))
    } else {
        NetNs::open(netns)
    }
}

fn ns_err(e: impl Into<SandboxError>) -> PlumbingError {
    PlumbingError::Sandbox(e.into())
}

fn overlay_err(e: OverlayError) -> PlumbingError {
    PlumbingError::Overlay(e)
}

impl OsPlumbing {
    /// Start the datapath (the engine's workers and the host networking thread).
    pub fn start(engine: EngineConfig, hostnet: HostNetConfig) -> Result<OsPlumbing, StartError> {
        let resolv_conf = hostnet.resolv_conf.clone();
        let engine = Engine::start(engine).map_err(StartError::Datapath)?;
        let hostnet = HostNet::start(engine.pool().clone(), hostnet)
            .map_err(|e| StartError::HostNet(HostNetError::Io(e)))?;
        Ok(OsPlumbing {
            engine: Arc::new(engine),
            hostnet: Arc::new(hostnet),
            live: Mutex::new(Live::default()),
            published: PublishTable::default(),
            resolv_conf,
        })
    }

    /// The datapath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Host networking (egress, published ports).
    pub fn hostnet(&self) -> &Arc<HostNet> {
        &self.hostnet
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attach `port` (an endpoint's TAP) to its network's domain with the endpoint's MAC
    /// as a static entry, bound to the endpoint's MAC and address (anti-spoofing).
    /// Nothing stays in the datapath on an error.
    fn attach(
        &self,
        ep: &EndpointPlan<'_>,
        port: Box<dyn tapnet_engine::Port>,
    ) -> Result<(), PlumbingError> {
        let mut live = self.lock();
        if live.ports.contains_key(ep.id) {
            return Err(PlumbingError::EndpointExists(ep.id.to_string()));
        }
        let domain = live
            .nets
            .get(ep.network)
            .ok_or(PlumbingError::NoDatapath)?
            .domain;
        let id = self.engine.add_port(port, domain).map_err(datapath)?;
        if let Err(e) = self
            .engine
            .add_static_mac(domain, MacAddr(ep.iface.mac), id)
        {
            let _ = self.engine.remove_port(id);
            return Err(datapath(e));
        }
        // The port may send from the endpoint's own MAC and address only.
        if let Err(e) = self
            .engine
            .set_port_binding(id, Some(binding_of(&ep.iface)))
        {
            let _ = self.engine.remove_port(id);
            return Err(datapath(e));
        }
        live.ports
            .insert(ep.id.to_string(), (id, ep.network.to_string()));
        // The relay addresses the endpoint by this MAC only (never learned from frames).
        if let Some((ip, _)) = ep.iface.addr {
            self.hostnet
                .add_endpoint(ep.network, ep.id, ip, MacAddr(ep.iface.mac));
        }
        Ok(())
    }
}

/// What an endpoint's port may send from: its MAC, and its IPv4 address when it has one
/// (an endpoint without an address is held to its MAC only).
pub(super) fn binding_of(iface: &super::IfaceConfig) -> PortBinding {
    match iface.addr {
        Some((a, _)) => PortBinding::new(MacAddr(iface.mac), [IpAddr::V4(a)]),
        None => PortBinding::mac_only(MacAddr(iface.mac)),
    }
}

/// Why the datapath did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine's workers.
    #[error("datapath")]
    Datapath(#[source] EngineError),
    /// The host networking thread.
    #[error("host networking")]
    HostNet(#[source] HostNetError),
}

/// Host sockets as the kernel gives them; what [`OsPlumbing`] binds published ports
/// with, and usable on its own (the allocation rules' tests use it without a datapath).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsHostPorts;

impl HostPorts for OsHostPorts {
    fn port_range(&self) -> (u16, u16) {
        ports::ephemeral_range()
    }

    fn ipv6_listenable(&self) -> bool {
        ports::ipv6_listenable()
    }

    fn bind(&self, proto: Proto, addr: SocketAddr) -> io::Result<HostSocket> {
        Ok(HostSocket {
            addr,
            proto,
            inner: SocketKind::Os(ports::bind_one(proto, addr)?),
        })
    }
}

impl HostPorts for OsPlumbing {
    fn port_range(&self) -> (u16, u16) {
        OsHostPorts.port_range()
    }

    fn ipv6_listenable(&self) -> bool {
        OsHostPorts.ipv6_listenable()
    }

    fn bind(&self, proto: Proto, addr: SocketAddr) -> io::Result<HostSocket> {
        OsHostPorts.bind(proto, addr)
    }
}

impl Plumbing for OsPlumbing {
    fn can_make_namespaces(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn add_network(&self, plan: &NetworkPlan) -> Result<(), PlumbingError> {
        let mut live = self.lock();
        if live.nets.contains_key(&plan.id) {
            return Ok(());
        }
        let vni = match plan.overlay {
            Some(v) => {
                let vni = Vni::new(v).ok_or(PlumbingError::BadVni(v))?;
                if live.vtep.is_none() {
                    return Err(PlumbingError::NoVtep);
                }
                Some(vni)
            }
            None => None,
        };
        let domain = self
            .engine
            .add_domain(DomainConfig {
                icc: plan.icc,
                ..Default::default()
            })
            .map_err(datapath)?;
        // Every network's gateway answers DNS through host networking. Internal networks
        // have no external access: their relay answers DNS (local names only) and
        // carries nothing else, and their subnet is isolated from the other networks'
        // flows as before. The others reach the host through it. Whatever fails,
        // nothing of this network stays in the datapath.
        let undo = |e: PlumbingError| {
            self.hostnet.detach(&plan.id);
            let _ = self.engine.remove_domain(domain);
            e
        };
        let gateway = match plan.gateway {
            None => None,
            Some(gw) => {
                let attach = NetAttach {
                    gateway: gw,
                    mtu: plan.mtu,
                    host_loopback: plan.host_loopback && !gw.internal,
                };
                let (port, _handle) = self
                    .hostnet
                    .gateway_port(&plan.id, attach)
                    .map_err(|e| undo(PlumbingError::HostNet(e)))?;
                let id = self
                    .engine
                    .add_gateway_port(Box::new(port), domain)
                    .map_err(|e| undo(datapath(e)))?;
                if let Err(e) = self.engine.add_static_mac(domain, gw.mac, id) {
                    let _ = self.engine.remove_port(id);
                    return Err(undo(datapath(e)));
                }
                Some((id, gw.internal))
            }
        };
        // An overlay network's port on the VTEP joins the domain: it stands for the
        // network's endpoints on other nodes.
        if let (Some(vni), Some(vtep)) = (vni, live.vtep.as_ref()) {
            if let Err(e) = vtep.add_network(&self.engine, vni, domain) {
                if let Some((id, _)) = gateway {
                    let _ = self.engine.remove_port(id);
                }
                return Err(undo(overlay_err(e)));
            }
        }
        live.nets.insert(
            plan.id.clone(),
            LiveNet {
                domain,
                gateway: gateway.map(|(id, _)| id),
                internal: gateway.is_some_and(|(_, internal)| internal),
                vni,
                remote: HashMap::new(),
            },
        );
        Ok(())
    }

    fn remove_network(&self, id: &str) {
        let mut live = self.lock();
        let Some(net) = live.nets.remove(id) else {
            return;
        };
        if let (Some(vni), Some(vtep)) = (net.vni, live.vtep.as_ref()) {
            if let Err(e) = vtep.remove_network(&self.engine, vni) {
                tracing::warn!(network = %id, error = %e, "could not remove the overlay port");
            }
        }
        drop(live);
        if let Some(p) = net.gateway {
            if let Err(e) = self.engine.remove_port(p) {
                tracing::warn!(network = %id, error = %e, "could not remove the gateway port");
            }
        }
        self.hostnet.detach(id);
        if let Err(e) = self.engine.remove_domain(net.domain) {
            tracing::warn!(network = %id, error = %e, "could not remove the bridge domain");
        }
    }

    fn start_vtep(&self, local: SocketAddrV4) -> Result<(), PlumbingError> {
        let mut live = self.lock();
        match &live.vtep {
            Some(v) if v.local_addr() == local => Ok(()),
            // Bound to port 0 (tests): the port the kernel chose is the VTEP's.
            Some(v) if local.port() == 0 && v.local_addr().ip() == local.ip() => Ok(()),
            Some(v) => Err(PlumbingError::VtepRunning(v.local_addr())),
            None => {
                let vtep =
                    Overlay::start(&self.engine, OverlayConfig::new(local)).map_err(overlay_err)?;
                live.vtep = Some(vtep);
                Ok(())
            }
        }
    }

    fn overlay_entry(
        &self,
        net_id: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        vtep: Option<Ipv4Addr>,
    ) -> Result<(), PlumbingError> {
        let mut live = self.lock();
        let Live { nets, vtep: ov, .. } = &mut *live;
        let ov = ov.as_ref().ok_or(PlumbingError::NoVtep)?;
        let net = nets.get_mut(net_id).ok_or(PlumbingError::NoDatapath)?;
        let vni = net.vni.ok_or(PlumbingError::NoDatapath)?;
        // The entry's old place goes first (and its VTEP with its last entry).
        if let Some(old) = net.remote.get(&mac).copied() {
            if Some(old) != vtep {
                ov.remove_entry(&self.engine, vni, MacAddr(mac))
                    .map_err(overlay_err)?;
                net.remote.remove(&mac);
                if !net.remote.values().any(|v| *v == old) {
                    ov.remove_peer(&self.engine, vni, old)
                        .map_err(overlay_err)?;
                }
            }
        }
        let Some(v) = vtep else {
            return Ok(());
        };
        let first = !net.remote.values().any(|x| *x == v);
        if first {
            ov.add_peer(vni, v).map_err(overlay_err)?;
        }
        let entry = Entry {
            mac: MacAddr(mac),
            ip: Some(ip),
            vtep: v,
        };
        if let Err(e) = ov.add_entry(&self.engine, vni, entry) {
            if first {
                let _ = ov.remove_peer(&self.engine, vni, v);
            }
            return Err(overlay_err(e));
        }
        net.remote.insert(mac, v);
        Ok(())
    }

    fn ensure_namespace(&self, name: &str) -> Result<(), PlumbingError> {
        sandbox_ns::ensure_netns(name).map(drop).map_err(ns_err)
    }

    fn remove_namespace(&self, name: &str) -> Result<(), PlumbingError> {
        sandbox_ns::remove_netns(name).map_err(ns_err)?;
        sandbox_ns::remove_resolv_conf(name).map_err(ns_err)
    }

    fn set_resolv_conf(&self, name: &str, text: Option<&str>) -> Result<(), PlumbingError> {
        match text {
            Some(t) => sandbox_ns::write_resolv_conf(name, t),
            None => sandbox_ns::remove_resolv_conf(name),
        }
        .map_err(ns_err)
    }

    fn host_resolv_conf(&self) -> ResolvConf {
        match std::fs::read_to_string(&self.resolv_conf) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) => {
                tracing::warn!(path = %self.resolv_conf.display(), error = %e, "cannot read the host's resolv.conf");
                ResolvConf::default()
            }
        }
    }

    fn set_names(&self, names: Arc<Names>) {
        self.hostnet.set_names(names);
    }

    fn namespace_path(&self, name: &str) -> String {
        format!("{NETNS_RUN_DIR}/{name}")
    }

    fn plug(&self, netns: &str, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError> {
        let ns = open_netns(netns).map_err(ns_err)?;
        let tap = sandbox_ns::plug(&ns, &ep.iface).map_err(ns_err)?;
        self.attach(ep, Box::new(TapPort::new(tap, ep.iface.mtu)))
    }

    fn plug_host(&self, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError> {
        let tap = sandbox_ns::plug_host(&ep.iface).map_err(ns_err)?;
        self.attach(ep, Box::new(TapPort::new(tap, ep.iface.mtu)))
    }

    fn find_tap(&self, netns: &str, mac: [u8; 6]) -> Result<Option<String>, PlumbingError> {
        use tapnet_engine::sys::netns::NetnsError;
        let ns = match open_netns(netns) {
            Ok(ns) => ns,
            Err(NetnsError::NotFound { .. } | NetnsError::NotNetns { .. }) => {
                return Err(PlumbingError::NoNamespace(netns.to_string()));
            }
            Err(e) => return Err(ns_err(e)),
        };
        sandbox_ns::find_tap(&ns, mac).map_err(ns_err)
    }

    fn unplug_host(&self, ifname: &str) -> Result<(), PlumbingError> {
        sandbox_ns::unplug_host(ifname).map_err(ns_err)
    }

    fn unplug(&self, netns: &str, ifname: &str) -> Result<(), PlumbingError> {
        let ns = open_netns(netns).map_err(ns_err)?;
        sandbox_ns::unplug(&ns, ifname).map_err(ns_err)
    }

    fn iface_addresses(
        &self,
        netns: &str,
        ifname: &str,
    ) -> Result<Option<Vec<(Ipv4Addr, u8)>>, PlumbingError> {
        use tapnet_engine::sys::netns::NetnsError;
        let ns = match open_netns(netns) {
            Ok(ns) => ns,
            // A runtime's namespace whose bind mount is gone leaves an empty file.
            Err(NetnsError::NotFound { .. } | NetnsError::NotNetns { .. }) => {
                return Err(PlumbingError::NoNamespace(netns.to_string()));
            }
            Err(e) => return Err(ns_err(e)),
        };
        sandbox_ns::iface_addresses(&ns, ifname).map_err(ns_err)
    }

    fn set_default_route(
        &self,
        netns: &str,
        route: Option<(Ipv4Addr, &str)>,
    ) -> Result<(), PlumbingError> {
        let ns = open_netns(netns).map_err(ns_err)?;
        sandbox_ns::set_default_route(&ns, route).map_err(ns_err)
    }

    fn tap_name(&self, fd: BorrowedFd<'_>) -> Result<String, PlumbingError> {
        let own = fd.try_clone_to_owned().map_err(|source| {
            PlumbingError::NotATap(tapnet_engine::sys::tap::TapError::NotTun { source })
        })?;
        Tap::adopt(own)
            .map(|t| t.name().to_string())
            .map_err(PlumbingError::NotATap)
    }

    fn adopt(&self, ep: &EndpointPlan<'_>, tap: OwnedFd) -> Result<(), PlumbingError> {
        let tap = Tap::adopt(tap).map_err(PlumbingError::NotATap)?;
        self.attach(ep, Box::new(TapPort::new(tap, ep.iface.mtu)))
    }

    fn detach(&self, id: &str) -> Result<(), PlumbingError> {
        let mut live = self.lock();
        let Some(p) = live.ports.get(id).map(|(p, _)| *p) else {
            self.hostnet.remove_endpoint(id);
            return Ok(());
        };
        match self.engine.remove_port(p) {
            Ok(()) => {}
            // A stage that refused had no such port: it is out of the engine all the
            // same, but the engine and this table disagreed.
            Err(EngineError::Rejected(e)) => {
                tracing::warn!(endpoint = %id, error = %e, "detach: the engine had no such port");
            }
            // The port may still be in a stage: it stays ours to remove, and its address
            // stays the endpoint's in the relay's table.
            Err(e) => return Err(datapath(e)),
        }
        live.ports.remove(id);
        self.hostnet.remove_endpoint(id);
        Ok(())
    }

    fn process(&self, pid: u32) -> Option<RootlessOwner> {
        process::owner_of(pid)
    }

    fn process_alive(&self, owner: &RootlessOwner) -> bool {
        process::owner_alive(owner)
    }

    fn publish(
        &self,
        sandbox: &str,
        to: &PublishTarget<'_>,
        ports: Vec<(u16, HostSocket)>,
    ) -> Result<(), PlumbingError> {
        let ns = match to.splice_netns {
            Some(name) => Some(open_netns(name).map_err(ns_err)?),
            None => None,
        };
        let mut ids = Vec::with_capacity(ports.len());
        for (ctr_port, socket) in ports {
            let SocketKind::Os(listener) = socket.inner else {
                // A socket of another plumbing: nothing could carry it.
                return Err(PlumbingError::HostNet(HostNetError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the socket was not bound by this daemon's plumbing",
                ))));
            };
            let ctr = SocketAddrV4::new(to.address, ctr_port);
            let published = match &ns {
                Some(ns) => {
                    self.hostnet
                        .publish_spliced(to.network, listener, ctr, ns.fd().as_fd())
                }
                None => self.hostnet.publish(to.network, listener, ctr),
            };
            match published {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        self.hostnet.unpublish(id);
                    }
                    return Err(PlumbingError::HostNet(e));
                }
            }
        }
        self.published.add(sandbox, ids);
        Ok(())
    }

    fn unpublish(&self, sandbox: &str) {
        for id in self.published.take(sandbox) {
            self.hostnet.unpublish(id);
        }
    }

    fn stats(&self) -> DatapathStats {
        let engine = self.engine.stats();
        let live = self.lock();
        let mut ports = HashMap::new();
        for (ep, (p, _)) in &live.ports {
            ports.insert(*p, PortUser::Endpoint(ep.clone()));
        }
        let mut domains = HashMap::new();
        let mut relays = Vec::new();
        let mut dns = Vec::new();
        for (id, net) in &live.nets {
            domains.insert(net.domain, id.clone());
            if let Some(p) = net.gateway {
                ports.insert(p, PortUser::Gateway(id.clone()));
            }
            // An internal network's relay gives no external access: no such counters.
            if let Some(r) = self.hostnet.relay_stats(id).filter(|_| !net.internal) {
                relays.push((id.clone(), r));
            }
            if let Some(d) = self.hostnet.dns_stats(id) {
                dns.push((id.clone(), d));
            }
        }
        DatapathStats {
            engine,
            ports,
            domains,
            relays,
            host: self.hostnet.stats(),
            dns,
        }
    }

    fn shutdown(&self) {
        self.engine.shutdown();
    }

    fn host_networks(&self) -> Vec<crate::daemon::ipam::HostNetwork> {
        super::hostnets::read(&self.resolv_conf)
    }
}
