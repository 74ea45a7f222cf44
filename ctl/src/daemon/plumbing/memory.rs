//! The plumbing without a kernel: [`MemoryPlumbing`] records what the core asks for,
//! answers from what it recorded, and fails an operation when a test tells it to.
//!
//! It keeps the rules the kernel would enforce where the core depends on them: an
//! interface is plugged into a namespace that exists, on a network whose datapath
//! exists, once; a host port is bound once per address family (a wildcard address
//! conflicts with every address of its family); a TAP fd is one it handed out. It runs
//! nothing: no frame moves, no socket is opened. A sandbox's namespace path is the
//! process's own network namespace, so a command joined to a sandbox runs in the
//! namespace of whoever holds the plumbing.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tapnet_engine::hostnet::HostNetError;
use tapnet_engine::sys::tap::TapError;
use tapnet_nat::dns::{Names, ResolvConf};
use tapnet_nat::portspec::Proto;

use tapnet_engine::port::{PortInfo, PortKind};
use tapnet_engine::runtime::PortReport;
use tapnet_switch::{DomainId, PortBinding, PortId};

use super::{
    DatapathStats, EndpointPlan, HostPorts, HostSocket, IfaceConfig, NetworkPlan, Plumbing,
    PlumbingError, PortUser, PublishTarget, ReleaseOnDrop, SocketKind,
};
use crate::daemon::ipam::HostNetwork;
use crate::daemon::model::RootlessOwner;

/// An operation of the plumbing, for [`MemoryPlumbing::fail`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Plumbing::add_network`].
    AddNetwork,
    /// [`Plumbing::ensure_namespace`].
    EnsureNamespace,
    /// [`Plumbing::remove_namespace`].
    RemoveNamespace,
    /// [`Plumbing::plug`].
    Plug,
    /// [`Plumbing::unplug`].
    Unplug,
    /// [`Plumbing::plug_host`].
    PlugHost,
    /// [`Plumbing::set_default_route`].
    SetDefaultRoute,
    /// [`Plumbing::adopt`].
    Adopt,
    /// [`HostPorts::bind`].
    Bind,
    /// [`Plumbing::publish`].
    Publish,
    /// [`Plumbing::detach`] (the endpoint stays attached).
    Detach,
    /// [`Plumbing::start_vtep`].
    StartVtep,
    /// [`Plumbing::overlay_entry`].
    OverlayEntry,
}

/// A sandbox namespace as [`MemoryPlumbing`] holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    /// Its interfaces, by name.
    pub interfaces: BTreeMap<String, IfaceConfig>,
    /// Its default route: gateway and interface.
    pub default_route: Option<(Ipv4Addr, String)>,
}

/// One published port as [`MemoryPlumbing`] carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedView {
    /// The host address and port.
    pub host: SocketAddr,
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// The network it leads into.
    pub network: String,
    /// The sandbox's address and port it leads to.
    pub target: (Ipv4Addr, u16),
    /// Loopback clients are spliced into this namespace.
    pub splice_netns: Option<String>,
}

struct Published {
    view: PublishedView,
    _socket: HostSocket,
}

#[derive(Debug, Default)]
struct Mem {
    networks: BTreeMap<String, NetworkPlan>,
    namespaces: BTreeMap<String, NamespaceView>,
    /// Attached endpoints: endpoint id → network id and interface.
    attached: BTreeMap<String, (String, IfaceConfig)>,
    /// The source binding of each attached endpoint's port.
    bindings: BTreeMap<String, PortBinding>,
    bound: Vec<(Proto, SocketAddr)>,
    /// TAPs handed out: inode of the fd → interface name; the other ends stay here.
    taps: HashMap<u64, String>,
    tap_ends: Vec<OwnedFd>,
    processes: HashMap<u32, u64>,
    /// Users of processes that do not run as root (see [`MemoryPlumbing::start_process_as`]).
    process_uids: HashMap<u32, u32>,
    next_start_time: u64,
    faults: HashMap<Op, usize>,
    /// What [`Plumbing::host_networks`] answers: the host's routes and addresses.
    host_networks: Vec<HostNetwork>,
    /// Operations to hold on their next call (see [`MemoryPlumbing::hold`]).
    holds: HashMap<Op, Hold>,
    /// What [`Plumbing::host_resolv_conf`] answers.
    host_resolv_conf: ResolvConf,
    /// The `resolv.conf` of each namespace that has one.
    resolv_confs: BTreeMap<String, String>,
    /// The names last handed over, and how many times names were.
    names: Option<Arc<Names>>,
    names_set: u64,
    /// The VTEP's underlay address, once started.
    vtep: Option<SocketAddrV4>,
    /// Remote endpoints of each overlay network: MAC → address and VTEP.
    overlay_entries: BTreeMap<String, BTreeMap<[u8; 6], (Ipv4Addr, Ipv4Addr)>>,
}

/// Longest a held operation waits to be released: a test that forgets to release it
/// does not hang.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct HoldState {
    /// The held operation has been called and is waiting.
    entered: bool,
    /// The test let it go on.
    released: bool,
}

/// An operation held on its next call, as a slow kernel or engine call would be: the
/// call waits (holding whatever locks its caller holds) until [`Hold::release`], or
/// 30 s at most.
#[derive(Clone, Debug, Default)]
pub struct Hold(Arc<(Mutex<HoldState>, Condvar)>);

impl Hold {
    fn state(&self) -> MutexGuard<'_, HoldState> {
        lock_any(&self.0.0)
    }

    /// Wait until the held operation has been called; false if it was not by `deadline`.
    pub fn wait_entered(&self, deadline: Instant) -> bool {
        let mut st = self.state();
        while !st.entered {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .0
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Let the held operation go on.
    pub fn release(&self) {
        self.state().released = true;
        self.0.1.notify_all();
    }

    /// Called by the held operation: say so, and wait to be released.
    fn enter(&self) {
        let deadline = Instant::now() + HOLD_LIMIT;
        let mut st = self.state();
        st.entered = true;
        self.0.1.notify_all();
        while !st.released && Instant::now() < deadline {
            st = self
                .0
                .1
                .wait_timeout(st, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(m: &Mutex<Mem>) -> MutexGuard<'_, Mem> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel-free plumbing: see the module docs.
pub struct MemoryPlumbing {
    mem: Arc<Mutex<Mem>>,
    published: Mutex<BTreeMap<String, Vec<Published>>>,
    root: bool,
    port_range: (u16, u16),
    ipv6: bool,
}

impl Default for MemoryPlumbing {
    fn default() -> Self {
        MemoryPlumbing::new()
    }
}

impl MemoryPlumbing {
    /// A plumbing as a root daemon has it: namespaces can be made, the port range is
    /// Linux's default (32768–60999), IPv6 can be listened on.
    pub fn new() -> MemoryPlumbing {
        MemoryPlumbing {
            mem: Arc::new(Mutex::new(Mem {
                next_start_time: 1000,
                ..Mem::default()
            })),
            published: Mutex::new(BTreeMap::new()),
            root: true,
            port_range: (32768, 60999),
            ipv6: true,
        }
    }

    /// As an unprivileged daemon has it: no namespaces can be made.
    pub fn rootless(mut self) -> MemoryPlumbing {
        self.root = false;
        self
    }

    /// With this ephemeral port range.
    pub fn with_port_range(mut self, first: u16, last: u16) -> MemoryPlumbing {
        self.port_range = (first, last);
        self
    }

    /// On a host without IPv6: `[::1]` cannot be bound, nor any IPv6 address.
    pub fn without_ipv6(mut self) -> MemoryPlumbing {
        self.ipv6 = false;
        self
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        lock(&self.mem)
    }

    /// What a restarted daemon finds: the namespaces with their interfaces and routes,
    /// and the processes, are still there; the datapath, the bound sockets and the
    /// published ports went with the old daemon.
    pub fn restarted(&self) -> io::Result<MemoryPlumbing> {
        let m = self.mem();
        let tap_ends = m
            .tap_ends
            .iter()
            .map(|fd| fd.try_clone())
            .collect::<io::Result<_>>()?;
        Ok(MemoryPlumbing {
            mem: Arc::new(Mutex::new(Mem {
                namespaces: m.namespaces.clone(),
                taps: m.taps.clone(),
                tap_ends,
                processes: m.processes.clone(),
                process_uids: m.process_uids.clone(),
                next_start_time: m.next_start_time,
                host_networks: m.host_networks.clone(),
                host_resolv_conf: m.host_resolv_conf.clone(),
                // Files on the host: a restart leaves them.
                resolv_confs: m.resolv_confs.clone(),
                ..Mem::default()
            })),
            published: Mutex::new(BTreeMap::new()),
            root: self.root,
            port_range: self.port_range,
            ipv6: self.ipv6,
        })
    }

    /// A network namespace a container runtime made, at `path` (CNI's `CNI_NETNS`):
    /// the daemon plugs into it but never creates or deletes it.
    pub fn add_runtime_namespace(&self, path: &str) {
        self.mem().namespaces.entry(path.to_string()).or_default();
    }

    /// The runtime deletes namespace `path` (and with it every interface inside).
    pub fn remove_runtime_namespace(&self, path: &str) {
        self.mem().namespaces.remove(path);
    }

    /// A container runtime moves interface `ifname` from namespace `from` ("" is the
    /// daemon's) into namespace `to` and renames it `new_name` (Docker with the TAP of
    /// `plug_host`). Returns whether it was there.
    pub fn move_interface(&self, from: &str, ifname: &str, to: &str, new_name: &str) -> bool {
        let mut m = self.mem();
        let Some(mut iface) = m
            .namespaces
            .get_mut(from)
            .and_then(|ns| ns.interfaces.remove(ifname))
        else {
            return false;
        };
        iface.ifname = new_name.to_string();
        m.namespaces
            .entry(to.to_string())
            .or_default()
            .interfaces
            .insert(new_name.to_string(), iface);
        true
    }

    /// Someone deletes interface `ifname` from namespace `netns` behind the daemon's back.
    pub fn remove_interface(&self, netns: &str, ifname: &str) {
        if let Some(ns) = self.mem().namespaces.get_mut(netns) {
            ns.interfaces.remove(ifname);
        }
    }

    /// Make the next call of `op` fail with [`PlumbingError::Injected`] (an
    /// `io::Error` for [`Op::Bind`]).
    pub fn fail(&self, op: Op) {
        *self.mem().faults.entry(op).or_default() += 1;
    }

    /// Hold the next call of `op` until the returned [`Hold`] is released (a slow
    /// operation, for tests of what else goes on meanwhile).
    pub fn hold(&self, op: Op) -> Hold {
        let h = Hold::default();
        self.mem().holds.insert(op, h.clone());
        h
    }

    fn fault(&self, op: Op) -> Result<(), PlumbingError> {
        let held = self.mem().holds.remove(&op);
        if let Some(h) = held {
            h.enter();
        }
        let mut m = self.mem();
        match m.faults.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(PlumbingError::Injected(op))
            }
            _ => Ok(()),
        }
    }

    /// A process that runs (as a rootless sandbox's owner would), with a start time of
    /// its own.
    pub fn start_process(&self, pid: u32) -> RootlessOwner {
        let mut m = self.mem();
        m.next_start_time += 1;
        let start_time = m.next_start_time;
        m.processes.insert(pid, start_time);
        RootlessOwner { pid, start_time }
    }

    /// A process that runs as user `uid` ([`MemoryPlumbing::start_process`]'s run as
    /// root).
    pub fn start_process_as(&self, pid: u32, uid: u32) -> RootlessOwner {
        let owner = self.start_process(pid);
        self.mem().process_uids.insert(pid, uid);
        owner
    }

    /// Process `pid` has exited.
    pub fn end_process(&self, pid: u32) {
        self.mem().processes.remove(&pid);
    }

    /// A TAP fd for interface `name`, as a rootless sandbox's process would send it.
    pub fn tap(&self, name: &str) -> io::Result<OwnedFd> {
        let (read, write) = nix::unistd::pipe()?;
        let ino = inode(read.as_fd())?;
        let mut m = self.mem();
        m.taps.insert(ino, name.to_string());
        m.tap_ends.push(write);
        Ok(read)
    }

    /// Hold host port `addr` as another program would: binding it fails until the
    /// returned socket is dropped.
    pub fn occupy(&self, proto: Proto, addr: SocketAddr) -> io::Result<HostSocket> {
        self.bind(proto, addr)
    }

    /// The networks whose datapath is up.
    pub fn networks(&self) -> Vec<NetworkPlan> {
        self.mem().networks.values().cloned().collect()
    }

    /// The sandbox namespaces that exist.
    pub fn namespaces(&self) -> Vec<String> {
        self.mem().namespaces.keys().cloned().collect()
    }

    /// Namespace `name`, if it exists.
    pub fn namespace(&self, name: &str) -> Option<NamespaceView> {
        self.mem().namespaces.get(name).cloned()
    }

    /// The endpoints in the datapath (endpoint id → network id).
    pub fn attached(&self) -> BTreeMap<String, String> {
        self.mem()
            .attached
            .iter()
            .map(|(ep, (net, _))| (ep.clone(), net.clone()))
            .collect()
    }

    /// The source binding endpoint `id`'s port has in the datapath (what it may send
    /// from), if it is attached.
    pub fn binding(&self, id: &str) -> Option<PortBinding> {
        self.mem().bindings.get(id).cloned()
    }

    /// The host ports bound now (published or not yet).
    pub fn bound(&self) -> Vec<(Proto, SocketAddr)> {
        let mut b = self.mem().bound.clone();
        b.sort();
        b
    }

    /// The ports carried for sandbox `sandbox`.
    pub fn published(&self, sandbox: &str) -> Vec<PublishedView> {
        self.lock_published()
            .get(sandbox)
            .map(|ps| ps.iter().map(|p| p.view.clone()).collect())
            .unwrap_or_default()
    }

    fn lock_published(&self) -> MutexGuard<'_, BTreeMap<String, Vec<Published>>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attach(&self, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError> {
        let mut m = self.mem();
        if m.attached.contains_key(ep.id) {
            return Err(PlumbingError::EndpointExists(ep.id.to_string()));
        }
        if !m.networks.contains_key(ep.network) {
            return Err(PlumbingError::NoDatapath);
        }
        m.attached.insert(
            ep.id.to_string(),
            (ep.network.to_string(), ep.iface.clone()),
        );
        m.bindings
            .insert(ep.id.to_string(), super::os::binding_of(&ep.iface));
        Ok(())
    }
}

fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_ino)
}

fn no_namespace(name: &str) -> PlumbingError {
    PlumbingError::NoNamespace(name.to_string())
}

/// Two bindings of one port clash: same protocol, port and family, and the same address
/// or a wildcard on either side.
fn clash(a: &(Proto, SocketAddr), b: &(Proto, SocketAddr)) -> bool {
    a.0 == b.0
        && a.1.port() == b.1.port()
        && a.1.is_ipv4() == b.1.is_ipv4()
        && (a.1.ip() == b.1.ip() || a.1.ip().is_unspecified() || b.1.ip().is_unspecified())
}

impl HostPorts for MemoryPlumbing {
    fn port_range(&self) -> (u16, u16) {
        self.port_range
    }

    fn ipv6_listenable(&self) -> bool {
        self.ipv6
    }

    fn bind(&self, proto: Proto, addr: SocketAddr) -> io::Result<HostSocket> {
        if self.fault(Op::Bind).is_err() {
            return Err(io::Error::other("bind failed (as the test asked)"));
        }
        if addr.is_ipv6() && !self.ipv6 {
            return Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
        }
        let key = (proto, addr);
        let mut m = self.mem();
        if m.bound.iter().any(|b| clash(b, &key)) {
            return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
        }
        m.bound.push(key);
        Ok(HostSocket {
            addr,
            proto,
            inner: SocketKind::Simulated({
                let mem = Arc::clone(&self.mem);
                ReleaseOnDrop::new(move || lock(&mem).bound.retain(|k| *k != key))
            }),
        })
    }
}

impl Plumbing for MemoryPlumbing {
    fn can_make_namespaces(&self) -> bool {
        self.root
    }

    fn add_network(&self, plan: &NetworkPlan) -> Result<(), PlumbingError> {
        self.fault(Op::AddNetwork)?;
        let mut m = self.mem();
        if plan.overlay.is_some() && m.vtep.is_none() {
            return Err(PlumbingError::NoVtep);
        }
        m.networks
            .entry(plan.id.clone())
            .or_insert_with(|| plan.clone());
        Ok(())
    }

    fn remove_network(&self, id: &str) {
        let mut m = self.mem();
        m.networks.remove(id);
        m.overlay_entries.remove(id);
        drop(m);
        // Its relay goes, and with it the ports published into it.
        for ports in self.lock_published().values_mut() {
            ports.retain(|p| p.view.network != id);
        }
    }

    fn start_vtep(&self, local: SocketAddrV4) -> Result<(), PlumbingError> {
        self.fault(Op::StartVtep)?;
        let mut m = self.mem();
        match m.vtep {
            Some(a) if a != local => Err(PlumbingError::VtepRunning(a)),
            _ => {
                m.vtep = Some(local);
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
        self.fault(Op::OverlayEntry)?;
        let mut m = self.mem();
        if m.vtep.is_none() {
            return Err(PlumbingError::NoVtep);
        }
        if m.networks.get(net_id).is_none_or(|n| n.overlay.is_none()) {
            return Err(PlumbingError::NoDatapath);
        }
        let entries = m.overlay_entries.entry(net_id.to_string()).or_default();
        match vtep {
            Some(v) => {
                entries.insert(mac, (ip, v));
            }
            None => {
                entries.remove(&mac);
            }
        }
        Ok(())
    }

    fn ensure_namespace(&self, name: &str) -> Result<(), PlumbingError> {
        self.fault(Op::EnsureNamespace)?;
        self.mem().namespaces.entry(name.to_string()).or_default();
        Ok(())
    }

    fn remove_namespace(&self, name: &str) -> Result<(), PlumbingError> {
        self.fault(Op::RemoveNamespace)?;
        let mut m = self.mem();
        m.namespaces.remove(name);
        m.resolv_confs.remove(name);
        Ok(())
    }

    fn set_resolv_conf(&self, name: &str, text: Option<&str>) -> Result<(), PlumbingError> {
        let mut m = self.mem();
        match text {
            Some(t) => {
                m.resolv_confs.insert(name.to_string(), t.to_string());
            }
            None => {
                m.resolv_confs.remove(name);
            }
        }
        Ok(())
    }

    fn host_resolv_conf(&self) -> ResolvConf {
        self.mem().host_resolv_conf.clone()
    }

    fn set_names(&self, names: Arc<Names>) {
        let mut m = self.mem();
        m.names = Some(names);
        m.names_set += 1;
    }

    fn namespace_path(&self, _name: &str) -> String {
        format!("/proc/{}/ns/net", std::process::id())
    }

    fn plug(&self, netns: &str, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError> {
        self.fault(Op::Plug)?;
        if !self.mem().namespaces.contains_key(netns) {
            return Err(no_namespace(netns));
        }
        self.attach(ep)?;
        if let Some(ns) = self.mem().namespaces.get_mut(netns) {
            ns.interfaces
                .insert(ep.iface.ifname.clone(), ep.iface.clone());
        }
        Ok(())
    }

    fn plug_host(&self, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError> {
        self.fault(Op::PlugHost)?;
        self.attach(ep)?;
        // The daemon's own namespace is the one named "".
        self.mem()
            .namespaces
            .entry(String::new())
            .or_default()
            .interfaces
            .insert(ep.iface.ifname.clone(), ep.iface.clone());
        Ok(())
    }

    fn find_tap(&self, netns: &str, mac: [u8; 6]) -> Result<Option<String>, PlumbingError> {
        let m = self.mem();
        let ns = m.namespaces.get(netns).ok_or_else(|| no_namespace(netns))?;
        Ok(ns
            .interfaces
            .iter()
            .find(|(_, i)| i.mac == mac)
            .map(|(name, _)| name.clone()))
    }

    fn unplug_host(&self, ifname: &str) -> Result<(), PlumbingError> {
        self.fault(Op::Unplug)?;
        if let Some(host) = self.mem().namespaces.get_mut("") {
            host.interfaces.remove(ifname);
        }
        Ok(())
    }

    fn unplug(&self, netns: &str, ifname: &str) -> Result<(), PlumbingError> {
        self.fault(Op::Unplug)?;
        let mut m = self.mem();
        let ns = m
            .namespaces
            .get_mut(netns)
            .ok_or_else(|| no_namespace(netns))?;
        ns.interfaces.remove(ifname);
        if ns.default_route.as_ref().is_some_and(|(_, i)| i == ifname) {
            ns.default_route = None;
        }
        Ok(())
    }

    fn iface_addresses(
        &self,
        netns: &str,
        ifname: &str,
    ) -> Result<Option<Vec<(Ipv4Addr, u8)>>, PlumbingError> {
        let m = self.mem();
        let ns = m.namespaces.get(netns).ok_or_else(|| no_namespace(netns))?;
        Ok(ns
            .interfaces
            .get(ifname)
            .map(|i| i.addr.into_iter().collect()))
    }

    fn set_default_route(
        &self,
        netns: &str,
        route: Option<(Ipv4Addr, &str)>,
    ) -> Result<(), PlumbingError> {
        self.fault(Op::SetDefaultRoute)?;
        let mut m = self.mem();
        let ns = m
            .namespaces
            .get_mut(netns)
            .ok_or_else(|| no_namespace(netns))?;
        if let Some((_, ifname)) = route {
            if !ns.interfaces.contains_key(ifname) {
                return Err(PlumbingError::NoInterface {
                    netns: netns.to_string(),
                    ifname: ifname.to_string(),
                });
            }
        }
        ns.default_route = route.map(|(gw, i)| (gw, i.to_string()));
        Ok(())
    }

    fn tap_name(&self, fd: BorrowedFd<'_>) -> Result<String, PlumbingError> {
        let not_tun = |source| PlumbingError::NotATap(TapError::NotTun { source });
        let ino = inode(fd).map_err(not_tun)?;
        self.mem()
            .taps
            .get(&ino)
            .cloned()
            .ok_or_else(|| not_tun(io::Error::from_raw_os_error(libc::EBADFD)))
    }

    fn adopt(&self, ep: &EndpointPlan<'_>, tap: OwnedFd) -> Result<(), PlumbingError> {
        self.fault(Op::Adopt)?;
        self.tap_name(tap.as_fd())?;
        self.attach(ep)
    }

    fn detach(&self, id: &str) -> Result<(), PlumbingError> {
        if self.mem().attached.contains_key(id) {
            self.fault(Op::Detach)?;
        }
        let mut m = self.mem();
        // Every TAP persists past its fd (`plug_host`'s too): detaching deletes none.
        m.attached.remove(id);
        m.bindings.remove(id);
        Ok(())
    }

    fn process(&self, pid: u32) -> Option<RootlessOwner> {
        let start_time = *self.mem().processes.get(&pid)?;
        Some(RootlessOwner { pid, start_time })
    }

    fn process_alive(&self, owner: &RootlessOwner) -> bool {
        self.process(owner.pid).as_ref() == Some(owner)
    }

    fn process_uid(&self, owner: &RootlessOwner) -> Option<u32> {
        if !self.process_alive(owner) {
            return None;
        }
        Some(
            self.mem()
                .process_uids
                .get(&owner.pid)
                .copied()
                .unwrap_or(0),
        )
    }

    fn publish(
        &self,
        sandbox: &str,
        to: &PublishTarget<'_>,
        ports: Vec<(u16, HostSocket)>,
    ) -> Result<(), PlumbingError> {
        self.fault(Op::Publish)?;
        let has_relay = self
            .mem()
            .networks
            .get(to.network)
            .and_then(|n| n.gateway)
            .is_some_and(|g| !g.internal);
        if !has_relay {
            return Err(PlumbingError::HostNet(HostNetError::UnknownNetwork(
                to.network.to_string(),
            )));
        }
        let mut published = self.lock_published();
        let list = published.entry(sandbox.to_string()).or_default();
        for (ctr_port, socket) in ports {
            list.push(Published {
                view: PublishedView {
                    host: socket.addr,
                    proto: socket.proto,
                    network: to.network.to_string(),
                    target: (to.address, ctr_port),
                    splice_netns: to.splice_netns.map(str::to_string),
                },
                _socket: socket,
            });
        }
        Ok(())
    }

    fn unpublish(&self, sandbox: &str) {
        self.lock_published().remove(sandbox);
    }

    /// A port per attached endpoint, a bridge domain per network and a DNS server per
    /// gateway, every counter zero (nothing moves here), numbered in the order of their
    /// ids.
    fn stats(&self) -> DatapathStats {
        let m = self.mem();
        let mut out = DatapathStats::default();
        for (i, (ep, (_, iface))) in m.attached.iter().enumerate() {
            let id = PortId(i as u32);
            out.engine.ports.push(PortReport {
                id,
                info: PortInfo {
                    name: iface.ifname.clone(),
                    kind: PortKind::Memory,
                    offloads: false,
                    mtu: iface.mtu,
                },
                stats: Default::default(),
            });
            out.ports.insert(id, PortUser::Endpoint(ep.clone()));
        }
        for (i, (net, plan)) in m.networks.iter().enumerate() {
            let id = DomainId(i as u32);
            out.engine.domains.push((id, Default::default()));
            out.domains.insert(id, net.clone());
            // Every gateway answers DNS.
            if plan.gateway.is_some() {
                out.dns.push((net.clone(), Default::default()));
            }
        }
        out
    }

    fn shutdown(&self) {}

    fn host_networks(&self) -> Vec<HostNetwork> {
        self.mem().host_networks.clone()
    }
}

impl MemoryPlumbing {
    /// From now on the host has these networks (none at first).
    pub fn set_host_networks(&self, nets: Vec<HostNetwork>) {
        self.mem().host_networks = nets;
    }

    /// From now on the host's `resolv.conf` says this (nothing at first).
    pub fn set_host_resolv_conf(&self, conf: ResolvConf) {
        self.mem().host_resolv_conf = conf;
    }

    /// The `resolv.conf` namespace `name` has, if any.
    pub fn resolv_conf(&self, name: &str) -> Option<String> {
        self.mem().resolv_confs.get(name).cloned()
    }

    /// The names last handed to the DNS servers ([`Plumbing::set_names`]), if any.
    pub fn names(&self) -> Option<Arc<Names>> {
        self.mem().names.clone()
    }

    /// How many times names were handed over.
    pub fn names_set(&self) -> u64 {
        self.mem().names_set
    }

    /// The VTEP's underlay address, if [`Plumbing::start_vtep`] started it.
    pub fn vtep(&self) -> Option<SocketAddrV4> {
        self.mem().vtep
    }

    /// The remote endpoints of overlay network `net_id`: MAC, address, VTEP.
    pub fn overlay_entries(&self, net_id: &str) -> Vec<([u8; 6], Ipv4Addr, Ipv4Addr)> {
        self.mem()
            .overlay_entries
            .get(net_id)
            .map(|es| es.iter().map(|(mac, (ip, v))| (*mac, *ip, *v)).collect())
            .unwrap_or_default()
    }

    /// The peer VTEPs of overlay network `net_id`: those its entries are behind,
    /// sorted, each once.
    pub fn overlay_peers(&self, net_id: &str) -> Vec<Ipv4Addr> {
        let mut peers: Vec<Ipv4Addr> = self
            .overlay_entries(net_id)
            .into_iter()
            .map(|(_, _, v)| v)
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }
}
