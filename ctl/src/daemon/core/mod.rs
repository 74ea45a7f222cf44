//! The daemon's core: CNM objects (networks, endpoints, sandboxes) and the bridge, host,
//! null and overlay drivers, over the store and the [`Plumbing`].
//!
//! Every change takes the state lock, works out its changes on copies, commits them
//! (records and IPAM state in one transaction), and only then touches live state through
//! the plumbing (namespaces, TAPs, engine ports). If the plumbing fails, the records are
//! rolled back in a second transaction; if the daemon dies in between, [`Daemon::open`]
//! finishes the plumbing from the records (reconcile), so a committed change is never
//! lost and an uncommitted one leaves nothing behind. Two removals make sure reconcile
//! can see what a crash left: a removed sandbox's namespace is noted in the same
//! transaction (and deleted on restart if still there), and a disconnect unplugs its
//! interface before the commit (a crash in between keeps the record, and reconcile plugs
//! it back).
//!
//! Reads (lists, inspects, stats) never take the state lock: they are answered from a
//! [`View`], an immutable copy of the records that a change publishes when it ends (when
//! its [`StateGuard`] is dropped). A read sees the state before a change or after it,
//! never part of one, and a change that waits on the plumbing (a slow engine or kernel
//! call) holds up only other changes.
//!
//! Where to read: [`network`] (create, remove, prune), [`endpoint`] (connect,
//! disconnect), [`sandbox`] (create, remove), [`rootless`] (sandboxes whose process makes
//! its own interfaces), [`ports`] (published ports), [`reconcile`] (start and restart),
//! [`dns`] (the names the embedded DNS servers answer, sandboxes' `resolv.conf`),
//! [`swarm`] (overlay networks, and the hooks to the swarm service), [`docker`] (what
//! Docker's engine asks through the network and IPAM plugins), [`cni`] (what CNI
//! runtimes ask through the `tapnet` CNI plugin).

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tapnet_switch::MacAddr;

use super::ipam::Ipam;
use super::model::{EndpointRecord, NetworkRecord, SandboxRecord};
use super::plumbing::{IfaceConfig, Plumbing};
use super::statedir::StateDirError;
use super::store::{Store, StoreError};

mod cni;
mod dns;
mod docker;
mod endpoint;
mod error;
mod hooks;
mod network;
mod options;
mod ports;
mod reconcile;
mod rootless;
mod sandbox;
mod stats;
mod swarm;
#[cfg(test)]
mod tests;

pub use cni::CniAttachment;
pub use docker::{DockerNetwork, DockerPool, Joined, OPT_TAPNET_NAME};
pub use error::DaemonError;
pub use hooks::{
    LocalEndpoint, OPT_VXLANID, OVERLAY, OVERLAY_MTU, RemoteEndpoint, SwarmError, SwarmHooks,
};
pub use network::{IpamSpec, NetworkSpec, PoolUsage};
pub use options::{BRIDGE_OPTIONS, OPT_HOST_LOOPBACK, OPT_LOOPBACK_SPLICE};
pub use ports::{MAX_HOST_PORT_RANGE, MAX_PUBLISHED_PORTS, check_port_bounds};
pub use rootless::{ROOTLESS_REAP_INTERVAL, RootlessReaper, start_rootless_reaper};
pub use sandbox::{AttachSpec, netns_name};
pub use stats::{NamedStats, NetworkName, PortOwner};
pub use swarm::overlay_record;

use options::network_mtu;

/// The IPAM driver name of a network whose pool Docker's engine asked tapnet's IPAM
/// plugin for (`docker network create --ipam-driver tapnet`): the plugin, not the
/// network, holds the pool and its endpoints' addresses.
pub const PLUGIN_IPAM: &str = "tapnet";

/// The result of a daemon operation.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where the database and the API socket live.
    pub state_dir: PathBuf,
}

impl DaemonConfig {
    /// Defaults: `/run/tapnet` as root, `$XDG_RUNTIME_DIR/tapnet` otherwise.
    pub fn default_state_dir() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/tapnet")
        } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            PathBuf::from(d).join("tapnet")
        } else {
            std::env::temp_dir().join(format!("tapnet-{}", nix::unistd::geteuid()))
        }
    }
}

/// Everything the daemon holds.
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    sandboxes: BTreeMap<String, SandboxRecord>,
    ipam: Ipam,
    /// Networks whose datapath is up.
    live_nets: HashSet<String>,
    /// Endpoints whose interface is in the datapath.
    attached: HashSet<String>,
    /// Where each sandbox's live published ports lead: network id and address.
    published: BTreeMap<String, (String, Ipv4Addr)>,
    /// Namespaces of removed sandboxes not yet deleted, as loaded (for reconcile).
    gone_netns: Vec<String>,
    /// Rootless sandboxes removed because their process had exited.
    rootless_reaped: u64,
    /// The VXLAN tunnel endpoint's address, once [`Daemon::set_vtep`] started it.
    vtep: Option<SocketAddrV4>,
    /// Remote endpoints of swarm networks, by network id and the swarm's key (never
    /// stored).
    remote: BTreeMap<String, BTreeMap<String, RemoteEndpoint>>,
    /// Overlay endpoints the swarm was told are up ([`SwarmHooks::endpoint_up`]).
    swarm_up: HashSet<String>,
    /// Overlay networks the swarm was told this node is on ([`SwarmHooks::attach`]).
    swarm_attached: HashSet<String>,
}

/// What reads are answered from: the records as the last finished change left them,
/// and what of the live state reads show. Never changed once published.
struct View {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    sandboxes: BTreeMap<String, SandboxRecord>,
    /// Endpoints whose interface is in the datapath.
    attached: HashSet<String>,
    /// Use of each IPAM pool, by pool id.
    pools: BTreeMap<String, PoolUsage>,
    /// Rootless sandboxes removed because their process had exited (counted with the
    /// removal, so a read sees both or neither).
    rootless_reaped: u64,
    /// The VTEPs of each swarm network's remote endpoints (`network inspect`'s
    /// `Peers`).
    peers: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Sandboxes whose published ports are live (CNI's CHECK).
    published: HashSet<String>,
}

impl View {
    /// A copy of what `st` holds now.
    fn of(st: &State) -> View {
        View {
            networks: st.networks.clone(),
            endpoints: st.endpoints.clone(),
            sandboxes: st.sandboxes.clone(),
            attached: st.attached.clone(),
            pools: st
                .ipam
                .pools()
                .map(|p| {
                    let usage = PoolUsage {
                        in_use: st.ipam.in_use(&p.id) as u64,
                        available: st.ipam.available(&p.id),
                    };
                    (p.id.clone(), usage)
                })
                .collect(),
            rootless_reaped: st.rootless_reaped,
            peers: st
                .remote
                .iter()
                .map(|(net, eps)| {
                    let mut v: Vec<Ipv4Addr> = eps.values().map(|e| e.vtep).collect();
                    v.sort();
                    v.dedup();
                    (net.clone(), v)
                })
                .collect(),
            published: st.published.keys().cloned().collect(),
        }
    }

    /// Addresses in use and dynamically available in pool `pool_id` (none for an
    /// unknown pool).
    fn pool_usage(&self, pool_id: &str) -> PoolUsage {
        self.pools.get(pool_id).copied().unwrap_or_default()
    }
}

/// The state lock as a change holds it. Dropping it releases the lock; if the state
/// was changed (borrowed mutably), a fresh [`View`] of it is published first, so reads
/// see the change whole, and the DNS servers get names built from it
/// (`State::dns_names`), so queries see it too. A change that panics publishes nothing:
/// reads keep the view from before it.
struct StateGuard<'a> {
    state: MutexGuard<'a, State>,
    view: &'a Mutex<Arc<View>>,
    /// Where the DNS servers' names go once a change ends.
    plumbing: &'a dyn Plumbing,
    changed: bool,
}

impl Deref for StateGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.changed = true;
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if !self.changed || std::thread::panicking() {
            return;
        }
        // Made and swapped in under the state lock: views (and names) are published in
        // the order the changes were made. Readers wait only for the swap of one `Arc`.
        let fresh = Arc::new(View::of(&self.state));
        let old = std::mem::replace(&mut *lock_any(self.view), fresh);
        drop(old);
        self.plumbing.set_names(Arc::new(self.state.dns_names()));
    }
}

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon: see the module docs.
pub struct Daemon {
    state: Mutex<State>,
    /// What reads are answered from (see [`View`]).
    view: Mutex<Arc<View>>,
    store: Store,
    plumbing: Arc<dyn Plumbing>,
    state_dir: PathBuf,
    /// The swarm service's hooks, if the node is in a swarm (see [`swarm`]).
    swarm: Mutex<Option<Arc<dyn SwarmHooks>>>,
}

/// The records, as the state holds them and as a [`View`] shows them, and the lookups
/// over them: a change and a read resolve names alike.
trait Records {
    fn network_records(&self) -> &BTreeMap<String, NetworkRecord>;
    fn endpoint_records(&self) -> &BTreeMap<String, EndpointRecord>;
    fn sandbox_records(&self) -> &BTreeMap<String, SandboxRecord>;

    /// The id of network `id_or_name`: an id, a name, or an unambiguous id prefix.
    fn network_id(&self, id_or_name: &str) -> Result<String> {
        lookup_network_id(self.network_records(), id_or_name)
    }

    /// The id of sandbox `id_or_name`: an id, a name (with or without a leading `/`),
    /// or an unambiguous id prefix.
    fn sandbox_id(&self, id_or_name: &str) -> Result<String> {
        let sandboxes = self.sandbox_records();
        if sandboxes.contains_key(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        let name = id_or_name.trim_start_matches('/');
        if let Some(s) = sandboxes.values().find(|s| s.name == name) {
            return Ok(s.id.clone());
        }
        let hits: Vec<&String> = sandboxes
            .keys()
            .filter(|id| !name.is_empty() && id.starts_with(name))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(DaemonError::SandboxNotFound(id_or_name.to_string())),
            _ => Err(DaemonError::AmbiguousSandbox(id_or_name.to_string())),
        }
    }

    /// The endpoints on network `net`.
    fn endpoints_of_network(&self, net: &str) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoint_records()
            .values()
            .filter(move |e| e.network_id == net)
    }

    /// The endpoints of `sb` with their networks.
    fn sandbox_eps(&self, s: &SandboxRecord) -> Vec<(EndpointRecord, NetworkRecord)> {
        s.endpoints
            .iter()
            .filter_map(|id| {
                let e = self.endpoint_records().get(id)?;
                Some((
                    e.clone(),
                    self.network_records().get(&e.network_id)?.clone(),
                ))
            })
            .collect()
    }
}

/// The id of network `id_or_name` among `networks`: an id, a name, or an unambiguous id
/// prefix.
fn lookup_network_id(
    networks: &BTreeMap<String, NetworkRecord>,
    id_or_name: &str,
) -> Result<String> {
    if networks.contains_key(id_or_name) {
        return Ok(id_or_name.to_string());
    }
    if let Some(n) = networks.values().find(|n| n.name == id_or_name) {
        return Ok(n.id.clone());
    }
    let hits: Vec<&String> = networks
        .keys()
        .filter(|id| !id_or_name.is_empty() && id.starts_with(id_or_name))
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DaemonError::NetworkNotFound(id_or_name.to_string())),
        _ => Err(DaemonError::AmbiguousNetwork {
            name: id_or_name.to_string(),
            matches: hits.len(),
        }),
    }
}

impl Records for State {
    fn network_records(&self) -> &BTreeMap<String, NetworkRecord> {
        &self.networks
    }
    fn endpoint_records(&self) -> &BTreeMap<String, EndpointRecord> {
        &self.endpoints
    }
    fn sandbox_records(&self) -> &BTreeMap<String, SandboxRecord> {
        &self.sandboxes
    }
}

impl Records for View {
    fn network_records(&self) -> &BTreeMap<String, NetworkRecord> {
        &self.networks
    }
    fn endpoint_records(&self) -> &BTreeMap<String, EndpointRecord> {
        &self.endpoints
    }
    fn sandbox_records(&self) -> &BTreeMap<String, SandboxRecord> {
        &self.sandboxes
    }
}

impl State {
    fn ipam_bytes(ipam: &Ipam) -> Result<Vec<u8>> {
        serde_json::to_vec(ipam).map_err(DaemonError::EncodeIpam)
    }

    /// The interface of endpoint `e`, as its network configures it.
    fn iface(&self, e: &EndpointRecord) -> Result<IfaceConfig> {
        let mtu = match self.networks.get(&e.network_id) {
            Some(n) => network_mtu(n)?,
            None => return Err(super::plumbing::PlumbingError::NoDatapath.into()),
        };
        Ok(IfaceConfig {
            ifname: e.ifname.clone(),
            mac: mac_of(e),
            addr: e.ipv4.map(|a| (a, e.prefix_len)),
            mtu,
        })
    }
}

/// The winning default route of a sandbox: highest priority, ties to the network name
/// that sorts first; only bridge networks that are not internal and have a gateway take
/// part (overlay networks have no external access: see [`swarm`]).
fn default_route(
    sb: &SandboxRecord,
    endpoints: &BTreeMap<String, EndpointRecord>,
    networks: &BTreeMap<String, NetworkRecord>,
) -> Option<(Ipv4Addr, String)> {
    default_endpoint(sb, endpoints, networks).map(|(e, gw)| (gw, e.ifname.clone()))
}

/// The endpoint holding a sandbox's default route (see [`default_route`]), with its
/// gateway. Published ports lead to its address.
fn default_endpoint<'a>(
    sb: &SandboxRecord,
    endpoints: &'a BTreeMap<String, EndpointRecord>,
    networks: &BTreeMap<String, NetworkRecord>,
) -> Option<(&'a EndpointRecord, Ipv4Addr)> {
    sb.endpoints
        .iter()
        .filter_map(|id| endpoints.get(id))
        .filter_map(|e| {
            let n = networks.get(&e.network_id)?;
            if n.internal || n.driver != "bridge" {
                return None;
            }
            let gw = n.ipam.first()?.gateway?;
            Some((e.gw_priority, &n.name, gw, e))
        })
        .min_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, _, gw, e)| (e, gw))
}

fn mac_of(e: &EndpointRecord) -> [u8; 6] {
    e.mac
        .parse::<MacAddr>()
        .map(|m| m.0)
        .unwrap_or([0x02, 0x42, 0, 0, 0, 0])
}

fn prefix_len(subnet: &str) -> Result<u8> {
    subnet
        .split_once('/')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| DaemonError::StoredSubnet(subnet.to_string()))
}

fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| DaemonError::InvalidIpv4 {
        what,
        value: s.to_string(),
    })
}

impl Daemon {
    /// Open the state in `cfg.state_dir` over `plumbing`, create the predefined networks
    /// on first start, and reconcile live state with the records.
    pub fn open(cfg: &DaemonConfig, plumbing: Arc<dyn Plumbing>) -> Result<Daemon> {
        super::statedir::prepare(&cfg.state_dir).map_err(|e| match e {
            StateDirError::Create { path, source } => DaemonError::StateDir { path, source },
            unsafe_dir => StoreError::StateDir(unsafe_dir).into(),
        })?;
        let store = Store::open(&cfg.state_dir.join("tapnet.db"))?;
        let snap = store.load()?;
        let ipam = match &snap.ipam {
            Some(b) => serde_json::from_slice(b).map_err(DaemonError::DecodeIpam)?,
            None => Ipam::new(),
        };
        let state = State {
            networks: snap.networks,
            endpoints: snap.endpoints,
            sandboxes: snap.sandboxes,
            ipam,
            live_nets: HashSet::new(),
            attached: HashSet::new(),
            published: BTreeMap::new(),
            gone_netns: snap.gone_netns,
            rootless_reaped: 0,
            vtep: None,
            remote: BTreeMap::new(),
            swarm_up: HashSet::new(),
            swarm_attached: HashSet::new(),
        };
        let d = Daemon {
            view: Mutex::new(Arc::new(View::of(&state))),
            state: Mutex::new(state),
            store,
            plumbing,
            state_dir: cfg.state_dir.clone(),
            swarm: Mutex::new(None),
        };
        d.reconcile()?;
        d.ensure_predefined()?;
        Ok(d)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The plumbing.
    pub fn plumbing(&self) -> &Arc<dyn Plumbing> {
        &self.plumbing
    }

    /// Whether endpoint `id`'s interface is in the datapath (a rootless sandbox's are
    /// once its process has sent them).
    pub fn endpoint_attached(&self, id: &str) -> bool {
        self.view().attached.contains(id)
    }

    /// The state lock, for a change (see [`StateGuard`]). Reads use [`Daemon::view`].
    fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            state: lock_any(&self.state),
            view: &self.view,
            plumbing: &*self.plumbing,
            changed: false,
        }
    }

    /// The records as the last finished change left them; never waits on a change.
    fn view(&self) -> Arc<View> {
        lock_any(&self.view).clone()
    }
}
