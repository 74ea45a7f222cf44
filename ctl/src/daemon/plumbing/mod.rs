//! The daemon's plumbing: everything the core asks of the system, behind one trait.
//!
//! The core ([`super::core`]) decides (records, addresses, names, which port leads
//! where) and commits its decisions to the store; [`Plumbing`] then makes them real:
//! network namespaces, TAPs and their netlink configuration, the engine's bridge domains
//! and ports, host networking's relays and published ports, the processes that own
//! rootless sandboxes. Nothing else in the core does I/O but the store.
//!
//! Two implementations:
//! - [`OsPlumbing`]: the real one, over `tapnet-engine` (datapath, host networking, TAP,
//!   netns, netlink) and `/proc`.
//! - [`MemoryPlumbing`]: a kernel-free twin that records what it is asked, answers from
//!   what it recorded, and fails on request, so that the core's own tests (and the API
//!   server's and the CLI's) run without root, in milliseconds, against the real core.
//!
//! Overlay networks (swarm scope) are bridge domains like the others, with one more
//! member: the network's overlay port on this daemon's VXLAN tunnel endpoint (VTEP,
//! [`Plumbing::start_vtep`]), which stands for the network's endpoints on other nodes
//! ([`Plumbing::overlay_entry`]).
//!
//! Keys are the core's own ids: a network's datapath by its network id, an endpoint's
//! interface by its endpoint id, published ports by their sandbox's id. The plumbing
//! keeps the datapath objects (bridge domains, engine ports, relays) behind those keys,
//! so that the core never sees an engine type but in [`DatapathStats`].

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use tapnet_engine::EngineStats;
use tapnet_engine::hostnet::{HostNetError, HostNetStats};
use tapnet_engine::overlay::OverlayError;
use tapnet_engine::runtime::EngineError;
use tapnet_engine::sys::tap::TapError;
use tapnet_nat::GatewayConfig;
use tapnet_nat::dns::{DnsStats, Names, ResolvConf};
use tapnet_nat::portspec::Proto;
use tapnet_nat::relay::RelayStats;
use tapnet_switch::{DomainId, PortId};

use super::ipam::HostNetwork;
use super::model::RootlessOwner;

mod hostnets;
mod memory;
pub mod netns;
mod os;
mod ports;
mod process;

pub use memory::{Hold, MemoryPlumbing, NamespaceView, Op, PublishedView};
pub use netns::IfaceConfig;
pub use os::{OsHostPorts, OsPlumbing, StartError};

/// A network's datapath as the core wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The network's id: the key of its datapath from now on.
    pub id: String,
    /// Containers on the network may talk to each other (`enable_icc`).
    pub icc: bool,
    /// The network's MTU.
    pub mtu: u32,
    /// The gateway the engine answers for, if the network has an address pool.
    /// `internal` networks answer for it only; the others reach the host through it.
    pub gateway: Option<GatewayConfig>,
    /// `tapnet.host_loopback`: the gateway address leads to the host's 127.0.0.1.
    pub host_loopback: bool,
    /// An overlay network's VXLAN network identifier: the network's overlay port on the
    /// VTEP ([`Plumbing::start_vtep`], which must be up) joins its bridge domain.
    pub overlay: Option<u32>,
}

/// One endpoint's interface in the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPlan<'a> {
    /// The endpoint's id: the key of its engine port from now on.
    pub id: &'a str,
    /// The network (whose datapath [`Plumbing::add_network`] made).
    pub network: &'a str,
    /// The interface.
    pub iface: IfaceConfig,
}

/// Where a sandbox's published ports lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishTarget<'a> {
    /// The network the ports lead into.
    pub network: &'a str,
    /// The sandbox's address on it.
    pub address: Ipv4Addr,
    /// The sandbox's named namespace, when loopback clients of its TCP ports are to be
    /// spliced into it (`tapnet.loopback_splice`); `None` sends every client through the
    /// network's relay.
    pub splice_netns: Option<&'a str>,
}

/// A host socket bound for a published port, not yet handed to the datapath. Dropping
/// it closes it (frees the port).
#[derive(Debug)]
pub struct HostSocket {
    /// What it is bound to.
    pub addr: SocketAddr,
    /// `tcp` or `udp`.
    pub proto: Proto,
    pub(super) inner: SocketKind,
}

/// What backs a [`HostSocket`]: a real socket, or (for [`MemoryPlumbing`]) a simulated
/// binding that frees its address when dropped.
#[derive(Debug)]
pub(super) enum SocketKind {
    Os(tapnet_engine::hostnet::HostListener),
    /// Held for its `Drop`, which frees the simulated port.
    Simulated(#[allow(dead_code)] ReleaseOnDrop),
}

/// Runs its closure once, when dropped.
pub(super) struct ReleaseOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl ReleaseOnDrop {
    pub(super) fn new(release: impl FnOnce() + Send + 'static) -> ReleaseOnDrop {
        ReleaseOnDrop(Some(Box::new(release)))
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for ReleaseOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseOnDrop")
    }
}

/// Who uses an engine port, for the counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortUser {
    /// The interface of an endpoint (by endpoint id).
    Endpoint(String),
    /// The gateway of a network (by network id).
    Gateway(String),
}

/// The datapath's counters, with the core's ids beside the engine's.
#[derive(Clone, Debug, Default)]
pub struct DatapathStats {
    /// The engine's counters (empty for [`MemoryPlumbing`]).
    pub engine: EngineStats,
    /// Who uses each engine port.
    pub ports: HashMap<PortId, PortUser>,
    /// The network (by id) of each bridge domain.
    pub domains: HashMap<DomainId, String>,
    /// The relay counters of each network with external access, by network id.
    pub relays: Vec<(String, RelayStats)>,
    /// Host networking as a whole.
    pub host: HostNetStats,
    /// The embedded DNS server's counters of each network with a gateway, by network
    /// id.
    pub dns: Vec<(String, DnsStats)>,
}

/// Why the plumbing could not do what the core asked.
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// The engine refused (a bound reached, the engine stopped).
    #[error("datapath")]
    Datapath(#[source] EngineError),
    /// Host networking refused.
    #[error("host networking")]
    HostNet(#[source] HostNetError),
    /// A sandbox's namespace or interface could not be made, configured or removed.
    #[error("sandbox")]
    Sandbox(#[source] netns::SandboxError),
    /// An fd sent as a rootless sandbox's TAP is not a TAP this daemon can use.
    #[error(transparent)]
    NotATap(TapError),
    /// The network has no datapath (it was never added, or was removed).
    #[error("network has no datapath")]
    NoDatapath,
    /// The sandbox namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NoNamespace(String),
    /// The namespace has no interface of this name.
    #[error("network namespace {netns} has no interface {ifname}")]
    NoInterface {
        /// The namespace.
        netns: String,
        /// The interface.
        ifname: String,
    },
    /// An endpoint with this id is in the datapath already.
    #[error("endpoint {0} is in the datapath already")]
    EndpointExists(String),
    /// An overlay network, or an entry of one, before [`Plumbing::start_vtep`].
    #[error("no VXLAN tunnel endpoint: this node is not in a swarm's data path")]
    NoVtep,
    /// [`Plumbing::start_vtep`] at another address than the VTEP's.
    #[error("the VXLAN tunnel endpoint runs at {0} already")]
    VtepRunning(SocketAddrV4),
    /// A VNI that does not fit in 24 bits.
    #[error("VXLAN network identifier {0} is out of range")]
    BadVni(u32),
    /// The VTEP refused (a socket, a table bound, a VNI served twice).
    #[error("overlay")]
    Overlay(#[source] OverlayError),
    /// [`MemoryPlumbing`] was told to fail this operation.
    #[error("{0:?} failed (as the test asked)")]
    Injected(Op),
}

/// Host sockets for published ports: the part of [`Plumbing`] that Docker's port
/// allocation rules (`core::ports`) run on.
pub trait HostPorts {
    /// The host's ephemeral port range, where published ports without a host port come
    /// from.
    fn port_range(&self) -> (u16, u16);

    /// Whether IPv6 can be listened on (`[::1]` can be bound), as libnetwork decides
    /// whether a port without a host address also binds `::`.
    fn ipv6_listenable(&self) -> bool;

    /// Bind one host socket for a published port: a TCP listener or a UDP socket (IPv6
    /// ones IPv6-only). `AddrInUse` when the port is taken.
    fn bind(&self, proto: Proto, addr: SocketAddr) -> io::Result<HostSocket>;
}

/// Everything the daemon's core does to the system, but its store. See the module docs.
///
/// Every method is safe to repeat with the same arguments (reconcile replays them after
/// a restart). Removal methods are best effort: what is already gone is no error.
pub trait Plumbing: HostPorts + Send + Sync {
    /// Whether this daemon can make named network namespaces (it runs as root). Without,
    /// sandboxes are rootless: their process makes its namespace and TAPs.
    fn can_make_namespaces(&self) -> bool;

    /// Bring up a network's datapath: a bridge domain, and its gateway (with host
    /// networking unless the gateway is internal).
    fn add_network(&self, plan: &NetworkPlan) -> Result<(), PlumbingError>;

    /// Take a network's datapath down (its flows end, its published ports close; an
    /// overlay network's remote entries and peers go with it).
    fn remove_network(&self, id: &str);

    /// Start this daemon's VXLAN tunnel endpoint, its underlay socket bound at `local`
    /// (in the daemon's network namespace). Again with the same address: nothing
    /// happens; with another: [`PlumbingError::VtepRunning`].
    fn start_vtep(&self, local: SocketAddrV4) -> Result<(), PlumbingError>;

    /// Place (`vtep` is `Some`: add or replace) or forget (`None`) the remote endpoint
    /// `mac` (address `ip`, answered by proxy ARP) of overlay network `net_id`, whose
    /// datapath [`Plumbing::add_network`] made. A VTEP becomes a peer of the network with
    /// its first entry there and stops being one with its last.
    fn overlay_entry(
        &self,
        net_id: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        vtep: Option<Ipv4Addr>,
    ) -> Result<(), PlumbingError>;

    /// Open sandbox namespace `name`, creating it (loopback up, IPv6 off) if missing.
    fn ensure_namespace(&self, name: &str) -> Result<(), PlumbingError>;

    /// Delete sandbox namespace `name` and its interfaces, and its `resolv.conf` (see
    /// [`Plumbing::set_resolv_conf`]).
    fn remove_namespace(&self, name: &str) -> Result<(), PlumbingError>;

    /// Give sandbox namespace `name` this `resolv.conf` text, or none (`None`): the
    /// file `/etc/netns/NAME/resolv.conf` that `ip netns exec` and `tapnet run` mount
    /// on `/etc/resolv.conf`. Written in place (a mount of it sees the new text); a
    /// text the file holds already is not written again.
    fn set_resolv_conf(&self, name: &str, text: Option<&str>) -> Result<(), PlumbingError>;

    /// The host's `resolv.conf` as it reads now (the daemon's `--resolv-conf`): its
    /// search domains and options go into every sandbox's. Empty when unreadable.
    fn host_resolv_conf(&self) -> ResolvConf;

    /// The names every network's embedded DNS server answers from now on (networks by
    /// id). Applied before it returns: the next query sees them.
    fn set_names(&self, names: Arc<Names>);

    /// The path other tools join namespace `name` by (`/run/netns/NAME`).
    fn namespace_path(&self, name: &str) -> String;

    /// Create (or find) endpoint `ep`'s TAP in namespace `netns`, configure it, and
    /// attach it to its network's datapath. A `netns` that starts with `/` is a path: a
    /// container runtime's namespace (CNI), which the daemon never creates or deletes.
    fn plug(&self, netns: &str, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError>;

    /// Create endpoint `ep`'s TAP in the daemon's own namespace, named `ep.iface.ifname`,
    /// with its MAC, MTU and queue length but down and without an address, and attach it
    /// to its network's datapath: an interface that a container runtime moves into its
    /// container and configures (Docker's remote driver, `Join`). It is persistent: it
    /// outlives [`Plumbing::detach`] and the daemon's process, wherever it is then, until
    /// [`Plumbing::unplug`] or [`Plumbing::unplug_host`] deletes it or its namespace goes.
    fn plug_host(&self, ep: &EndpointPlan<'_>) -> Result<(), PlumbingError>;

    /// The name of the TAP whose MAC is `mac` in namespace `netns` (a path), if there is
    /// one: where a container runtime took an interface of [`Plumbing::plug_host`] and
    /// what it renamed it to. [`PlumbingError::NoNamespace`] when the namespace is gone.
    fn find_tap(&self, netns: &str, mac: [u8; 6]) -> Result<Option<String>, PlumbingError>;

    /// Delete TAP `ifname` from the daemon's own namespace, if it is there (an interface
    /// of [`Plumbing::plug_host`] that was never moved, or was given back).
    fn unplug_host(&self, ifname: &str) -> Result<(), PlumbingError>;

    /// Delete interface `ifname` from namespace `netns` (after [`Plumbing::detach`]).
    fn unplug(&self, netns: &str, ifname: &str) -> Result<(), PlumbingError>;

    /// The IPv4 addresses of interface `ifname` in namespace `netns` (a name or, starting
    /// with `/`, a path), or `None` if the namespace has no such interface.
    /// [`PlumbingError::NoNamespace`] when the namespace is gone (a container runtime's
    /// container that ended without telling the daemon).
    fn iface_addresses(
        &self,
        netns: &str,
        ifname: &str,
    ) -> Result<Option<Vec<(Ipv4Addr, u8)>>, PlumbingError>;

    /// Make `gateway` via `ifname` the default route of namespace `netns`, or remove it.
    fn set_default_route(
        &self,
        netns: &str,
        route: Option<(Ipv4Addr, &str)>,
    ) -> Result<(), PlumbingError>;

    /// The interface name of the TAP behind `fd`, if it is one this daemon can attach.
    fn tap_name(&self, fd: BorrowedFd<'_>) -> Result<String, PlumbingError>;

    /// Attach a TAP a rootless sandbox's process made (checked with
    /// [`Plumbing::tap_name`]) as endpoint `ep`'s interface.
    fn adopt(&self, ep: &EndpointPlan<'_>, tap: OwnedFd) -> Result<(), PlumbingError>;

    /// Take endpoint `id`'s interface out of the datapath (its TAP closes, and with it
    /// the interface of a rootless sandbox). An endpoint not attached is no error. On an
    /// error the endpoint may still be attached (its port and static MAC live on), so
    /// the caller must not give its address (and with it its MAC) to anyone else.
    fn detach(&self, id: &str) -> Result<(), PlumbingError>;

    /// Process `pid` as it runs now (its start time tells a reused PID apart), or
    /// `None` if it does not run.
    fn process(&self, pid: u32) -> Option<RootlessOwner>;

    /// Whether `owner` still runs (the same process, not a reused PID).
    fn process_alive(&self, owner: &RootlessOwner) -> bool;

    /// The effective uid `owner` runs as, or `None` if it no longer runs.
    fn process_uid(&self, owner: &RootlessOwner) -> Option<u32> {
        process::uid_of(owner)
    }

    /// Carry published ports of sandbox `sandbox` (container port, bound host socket) to
    /// `to`. All or nothing.
    fn publish(
        &self,
        sandbox: &str,
        to: &PublishTarget<'_>,
        ports: Vec<(u16, HostSocket)>,
    ) -> Result<(), PlumbingError>;

    /// Close every published port of sandbox `sandbox`.
    fn unpublish(&self, sandbox: &str);

    /// The datapath's counters.
    fn stats(&self) -> DatapathStats;

    /// Stop the datapath (the daemon is exiting).
    fn shutdown(&self);

    /// The host's own networks, read now: its on-link IPv4 routes (main table), the
    /// addresses of its interfaces (loopback's too) and its resolv.conf nameservers.
    /// Automatic subnets skip them; a user's subnet may not overlap a route or hold an
    /// address (`ipam::check_host`). Best effort: what cannot be read is left out.
    fn host_networks(&self) -> Vec<HostNetwork>;
}
