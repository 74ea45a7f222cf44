//! The daemon's core: CNM objects and the bridge, host and null drivers.
//!
//! Every operation takes the state lock, works out its changes on copies, commits them
//! (records and IPAM state in one transaction), and only then touches live state
//! (namespaces, TAPs, engine ports). If the plumbing fails, the records are rolled back
//! in a second transaction; if the daemon dies in between, [`Daemon::open`] finishes the
//! plumbing from the records (reconcile), so a committed change is never lost and an
//! uncommitted one leaves nothing behind. Two removals make sure reconcile can see what
//! a crash left: a removed sandbox's namespace is noted in the same transaction (and
//! deleted on restart if still there), and a disconnect unplugs its interface before
//! the commit (a crash in between keeps the record, and reconcile plugs it back).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

mod rootless_sandbox;

use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortId};

use super::ipam::{Ipam, IpamError, PoolRequest};
use super::model::{
    EndpointRecord, IpamConfigRecord, NetworkRecord, RootlessOwner, SandboxRecord, new_id,
    now_rfc3339,
};
use super::publish::{self, PublishTable};
use super::sandbox::{self, IfaceConfig};
use super::store::{Change, Store};
use tapnet_engine::hostnet::{HostNet, HostNetConfig, NetAttach};
use tapnet_engine::port::{GatewayHandle, GatewayPort, TapPort};
use tapnet_engine::runtime::{Engine, EngineConfig};
use tapnet_nat::GatewayConfig;
use tapnet_nat::portspec::PortMapping;

/// Options of the bridge driver that tapnet understands (`-o`), Docker's names.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "com.docker.network.bridge.name",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.enable_icc",
    OPT_HOST_BINDING,
    "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.bridge.gateway_mode_ipv6",
    "com.docker.network.bridge.inhibit_ipv4",
    "com.docker.network.bridge.trusted_host_interfaces",
    "com.docker.network.bridge.default_bridge",
    "com.docker.network.driver.mtu",
    "com.docker.network.container_iface_prefix",
    OPT_HOST_LOOPBACK,
    OPT_LOOPBACK_SPLICE,
];

/// tapnet's own bridge option: TCP and UDP to the gateway address reach the host's
/// 127.0.0.1 (`true` or `false`, default `false`).
pub const OPT_HOST_LOOPBACK: &str = "tapnet.host_loopback";

/// tapnet's own bridge option: connections from the host's loopback to a published TCP
/// port are spliced into the sandbox's namespace (`true` or `false`, default `false`).
/// Faster, but the sandbox then sees its own 127.0.0.1 as the peer (as pasta shows it),
/// where by default it sees the gateway address and the client's port, as Docker's
/// proxy shows them: services that trust loopback clients trust every local user then.
pub const OPT_LOOPBACK_SPLICE: &str = "tapnet.loopback_splice";

const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
const DEFAULT_MTU: u32 = 1500;

/// A failed operation: the HTTP status Docker gives and its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Fail {
    /// HTTP status.
    pub status: u16,
    /// Message for the user.
    pub message: String,
}

impl Fail {
    fn new(status: u16, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Fail {
        Fail::new(400, m)
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> Fail {
        Fail::new(403, m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Fail {
        Fail::new(404, m)
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Fail {
        Fail::new(409, m)
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Fail {
        Fail::new(500, m)
    }
}

type Res<T> = Result<T, Fail>;

fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Fail {
    move |e| Fail::internal(format!("{what}: {e}"))
}

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where the database and the API socket live.
    pub state_dir: PathBuf,
    /// The datapath's configuration.
    pub engine: EngineConfig,
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

/// A network's live datapath objects.
struct LiveNet {
    domain: DomainId,
    gateway: Option<(PortId, GatewayHandle)>,
}

/// Everything the daemon holds.
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    sandboxes: BTreeMap<String, SandboxRecord>,
    ipam: Ipam,
    nets: HashMap<String, LiveNet>,
    ports: HashMap<String, PortId>,
    /// Namespaces of removed sandboxes not yet deleted, as loaded (for reconcile).
    gone_netns: Vec<String>,
}

/// The daemon.
pub struct Daemon {
    state: Mutex<State>,
    store: Store,
    engine: Arc<Engine>,
    hostnet: Arc<HostNet>,
    published: PublishTable,
    state_dir: PathBuf,
}

/// Parsed options of a bridge network that the datapath needs.
#[derive(Clone, Copy, Debug)]
struct BridgeOpts {
    icc: bool,
    mtu: u32,
    host_loopback: bool,
    loopback_splice: bool,
    /// `host_binding_ipv4`: the host address of ports published without one (`None`:
    /// 0.0.0.0 and ::).
    host_binding: Option<std::net::IpAddr>,
}

/// Docker's option for the host address of ports published without one.
const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";

fn parse_bool(key: &str, v: &str) -> Res<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(Fail::bad_request(format!(
            "invalid value {v:?} for option {key}: expected true or false"
        ))),
    }
}

fn bridge_opts(opts: &BTreeMap<String, String>) -> Res<BridgeOpts> {
    for k in opts.keys() {
        if !BRIDGE_OPTIONS.contains(&k.as_str()) {
            return Err(Fail::bad_request(format!(
                "unknown option {k:?} for driver bridge; known options: {}",
                BRIDGE_OPTIONS.join(", ")
            )));
        }
    }
    let icc = match opts.get(OPT_ICC) {
        Some(v) => parse_bool(OPT_ICC, v)?,
        None => true,
    };
    let mtu = match opts.get(OPT_MTU) {
        None => DEFAULT_MTU,
        Some(v) => match v.parse::<u32>() {
            Ok(0) => DEFAULT_MTU,
            Ok(m) if (68..=65535).contains(&m) => m,
            _ => {
                return Err(Fail::bad_request(format!(
                    "invalid MTU {v:?} in option {OPT_MTU}: must be between 68 and 65535"
                )));
            }
        },
    };
    let host_loopback = match opts.get(OPT_HOST_LOOPBACK).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(Fail::bad_request(format!(
                "invalid value {v:?} for option {OPT_HOST_LOOPBACK}: expected true or false"
            )));
        }
    };
    let loopback_splice = match opts.get(OPT_LOOPBACK_SPLICE) {
        Some(v) => parse_bool(OPT_LOOPBACK_SPLICE, v)?,
        None => false,
    };
    // Docker's parse: any IP address (IPv6 too, despite the name); 0.0.0.0 is the
    // default, every address of both families.
    let host_binding = match opts.get(OPT_HOST_BINDING) {
        None => None,
        Some(v) => match v.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) if a.is_unspecified() => None,
            Ok(a) => Some(a),
            Err(_) => {
                return Err(Fail::bad_request(format!(
                    "failed to parse {OPT_HOST_BINDING} value: {v} (nil ip)"
                )));
            }
        },
    };
    Ok(BridgeOpts {
        icc,
        mtu,
        host_loopback,
        loopback_splice,
        host_binding,
    })
}

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

fn parse_ip(what: &str, s: &str) -> Res<Ipv4Addr> {
    s.parse()
        .map_err(|_| Fail::bad_request(format!("invalid {what} {s:?}: not an IPv4 address")))
}

impl State {
    fn network_id(&self, id_or_name: &str) -> Res<String> {
        if self.networks.contains_key(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        if let Some(n) = self.networks.values().find(|n| n.name == id_or_name) {
            return Ok(n.id.clone());
        }
        let hits: Vec<&String> = self
            .networks
            .keys()
            .filter(|id| !id_or_name.is_empty() && id.starts_with(id_or_name))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Fail::not_found(format!("network {id_or_name} not found"))),
            _ => Err(Fail::bad_request(format!(
                "network {id_or_name} is ambiguous ({} matches found based on ID prefix)",
                hits.len()
            ))),
        }
    }

    fn sandbox_id(&self, id_or_name: &str) -> Res<String> {
        if self.sandboxes.contains_key(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        let name = id_or_name.trim_start_matches('/');
        if let Some(s) = self.sandboxes.values().find(|s| s.name == name) {
            return Ok(s.id.clone());
        }
        let hits: Vec<&String> = self
            .sandboxes
            .keys()
            .filter(|id| !name.is_empty() && id.starts_with(name))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Fail::not_found(format!("No such container: {id_or_name}"))),
            _ => Err(Fail::bad_request(format!(
                "multiple IDs found with provided prefix: {id_or_name}"
            ))),
        }
    }

    fn endpoints_of_network(&self, net: &str) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.values().filter(move |e| e.network_id == net)
    }

    fn ipam_bytes(ipam: &Ipam) -> Res<Vec<u8>> {
        serde_json::to_vec(ipam).map_err(internal("encode IPAM state"))
    }
}

/// The winning default route of a sandbox: highest priority, ties to the network name
/// that sorts first; internal networks and networks without a gateway take no part.
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
            if n.internal {
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

impl Daemon {
    /// Open the state in `cfg.state_dir`, start the datapath, create the predefined
    /// networks on first start, and reconcile live state with the records.
    pub fn open(cfg: &DaemonConfig) -> Result<Daemon, Fail> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            Fail::internal(format!("cannot create {}: {e}", cfg.state_dir.display()))
        })?;
        let store = Store::open(&cfg.state_dir.join("tapnet.db")).map_err(internal("state"))?;
        let snap = store.load().map_err(internal("state"))?;
        let ipam = match &snap.ipam {
            Some(b) => serde_json::from_slice(b).map_err(internal("decode IPAM state"))?,
            None => Ipam::new(),
        };
        let engine = Engine::start(cfg.engine.clone()).map_err(internal("datapath"))?;
        let hostnet = HostNet::start(engine.pool().clone(), HostNetConfig::default())
            .map_err(internal("host networking"))?;
        let d = Daemon {
            state: Mutex::new(State {
                networks: snap.networks,
                endpoints: snap.endpoints,
                sandboxes: snap.sandboxes,
                ipam,
                nets: HashMap::new(),
                ports: HashMap::new(),
                gone_netns: snap.gone_netns,
            }),
            store,
            engine: Arc::new(engine),
            hostnet: Arc::new(hostnet),
            published: PublishTable::default(),
            state_dir: cfg.state_dir.clone(),
        };
        d.reconcile()?;
        d.ensure_predefined()?;
        Ok(d)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The datapath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Host networking (egress NAT, published ports).
    pub fn hostnet(&self) -> &Arc<HostNet> {
        &self.hostnet
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_predefined(&self) -> Res<()> {
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
                for (k, v) in [
                    ("com.docker.network.bridge.default_bridge", "true"),
                    ("com.docker.network.bridge.enable_icc", "true"),
                    ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                    (OPT_HOST_BINDING, "0.0.0.0"),
                    ("com.docker.network.bridge.name", "tapnet0"),
                    ("com.docker.network.driver.mtu", "1500"),
                ] {
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

    /// Bring up the datapath of every stored network and sandbox; remove sandbox
    /// namespaces no record knows (left by a crash before a commit).
    fn reconcile(&self) -> Res<()> {
        let mut st = self.lock();
        let nets: Vec<NetworkRecord> = st.networks.values().cloned().collect();
        for n in &nets {
            self.realize_network(&mut st, n)?;
        }
        let sbs: Vec<SandboxRecord> = st.sandboxes.values().cloned().collect();
        // Only namespaces this daemon recorded as gone are removed: every `tapnet-*`
        // namespace without a record of ours may belong to another daemon (another state
        // dir); sweeping them all here tore down other daemons' live sandboxes.
        let gone = std::mem::take(&mut st.gone_netns);
        let mut removed: Vec<&str> = Vec::new();
        for ns in &gone {
            if sbs.iter().any(|s| &s.netns == ns) || sandbox::remove_netns(ns).is_ok() {
                removed.push(ns);
            }
        }
        if !removed.is_empty() {
            let _ = self.store.forget_netns(&removed);
        }
        self.reap_rootless(&mut st);
        for sb in sbs.iter().filter(|s| s.rootless.is_none()) {
            if let Err(e) = self.realize_sandbox(&mut st, sb) {
                tracing::warn!(sandbox = %sb.name, error = %e, "could not restore sandbox");
            } else {
                self.restore_ports(&st, sb);
            }
        }
        // A rootless sandbox whose process lives on gets its interfaces back when the
        // process sends its TAPs again; its ports are bound now, as they were.
        for sb in sbs
            .iter()
            .filter(|s| s.rootless.is_some() && st.sandboxes.contains_key(&s.id))
        {
            self.restore_ports(&st, sb);
        }
        Ok(())
    }

    fn realize_network(&self, st: &mut State, n: &NetworkRecord) -> Res<()> {
        if n.driver != "bridge" || st.nets.contains_key(&n.id) {
            return Ok(());
        }
        let opts = bridge_opts(&n.options)?;
        let domain = self
            .engine
            .add_domain(DomainConfig {
                icc: opts.icc,
                ..Default::default()
            })
            .map_err(internal("datapath"))?;
        let mut gateway = None;
        if let Some(cfg) = n.ipam.first() {
            if let (Some(gw), Ok(prefix)) = (cfg.gateway, prefix_len(&cfg.subnet)) {
                let gcfg = GatewayConfig {
                    mac: MacAddr::from_ipv4(gw),
                    ip: gw,
                    prefix_len: prefix,
                    internal: n.internal,
                };
                // Internal networks have no external access: the gateway answers for
                // its own address only. The others reach the host through host
                // networking.
                let made = if n.internal {
                    self.hostnet.isolate(&n.id, gw, prefix);
                    Ok(GatewayPort::new(gcfg, self.engine.pool().clone(), opts.mtu))
                } else {
                    let attach = NetAttach {
                        gateway: gcfg,
                        mtu: opts.mtu,
                        host_loopback: opts.host_loopback,
                    };
                    self.hostnet.gateway_port(&n.id, attach)
                };
                let (port, handle) = match made {
                    Ok(p) => p,
                    Err(e) => {
                        self.hostnet.detach(&n.id);
                        let _ = self.engine.remove_domain(domain);
                        return Err(internal("host networking")(e));
                    }
                };
                // Whatever fails, nothing of this network stays in the datapath.
                let id = match self.engine.add_gateway_port(Box::new(port), domain) {
                    Ok(id) => id,
                    Err(e) => {
                        self.hostnet.detach(&n.id);
                        let _ = self.engine.remove_domain(domain);
                        return Err(internal("datapath")(e));
                    }
                };
                if let Err(e) = self
                    .engine
                    .add_static_mac(domain, MacAddr::from_ipv4(gw), id)
                {
                    let _ = self.engine.remove_port(id);
                    self.hostnet.detach(&n.id);
                    let _ = self.engine.remove_domain(domain);
                    return Err(internal("datapath")(e));
                }
                gateway = Some((id, handle));
            }
        }
        st.nets.insert(n.id.clone(), LiveNet { domain, gateway });
        Ok(())
    }

    fn unrealize_network(&self, st: &mut State, id: &str) {
        if let Some(live) = st.nets.remove(id) {
            if let Some((p, _)) = live.gateway {
                let _ = self.engine.remove_port(p);
            }
            self.hostnet.detach(id);
            let _ = self.engine.remove_domain(live.domain);
        }
    }

    /// Plumb one endpoint: TAP in the sandbox, engine port, static MAC.
    fn realize_endpoint(
        &self,
        st: &mut State,
        ns: &tapnet_engine::sys::netns::NetNs,
        e: &EndpointRecord,
    ) -> Res<()> {
        let Some(n) = st.networks.get(&e.network_id) else {
            return Ok(());
        };
        if n.driver != "bridge" || st.ports.contains_key(&e.id) {
            return Ok(());
        }
        let opts = bridge_opts(&n.options)?;
        let mac = mac_of(e);
        let cfg = IfaceConfig {
            ifname: e.ifname.clone(),
            mac,
            addr: e.ipv4.map(|a| (a, e.prefix_len)),
            mtu: opts.mtu,
        };
        let tap = sandbox::plug(ns, &cfg).map_err(internal("sandbox"))?;
        let Some(live) = st.nets.get(&e.network_id) else {
            return Err(Fail::internal("network has no datapath"));
        };
        let domain = live.domain;
        let port = self
            .engine
            .add_port(Box::new(TapPort::new(tap, opts.mtu)), domain)
            .map_err(internal("datapath"))?;
        if let Err(err) = self.engine.add_static_mac(domain, MacAddr(mac), port) {
            // The caller's rollback finds only recorded ports: take this one out here.
            let _ = self.engine.remove_port(port);
            return Err(internal("datapath")(err));
        }
        st.ports.insert(e.id.clone(), port);
        Ok(())
    }

    fn realize_sandbox(&self, st: &mut State, sb: &SandboxRecord) -> Res<()> {
        let ns = sandbox::ensure_netns(&sb.netns).map_err(internal("sandbox"))?;
        for id in &sb.endpoints {
            if let Some(e) = st.endpoints.get(id).cloned() {
                self.realize_endpoint(st, &ns, &e)?;
            }
        }
        let route = default_route(sb, &st.endpoints, &st.networks);
        sandbox::set_default_route(&ns, route.as_ref().map(|(g, i)| (*g, i.as_str())))
            .map_err(internal("sandbox"))?;
        Ok(())
    }

    fn unrealize_endpoint(&self, st: &mut State, netns: &str, e: &EndpointRecord) {
        if let Some(p) = st.ports.remove(&e.id) {
            let _ = self.engine.remove_port(p);
        }
        if let Ok(ns) = tapnet_engine::sys::netns::NetNs::open(netns) {
            let _ = sandbox::unplug(&ns, &e.ifname);
        }
    }

    /// Returns whether the namespace is gone.
    fn unrealize_sandbox(&self, st: &mut State, sb: &SandboxRecord) -> bool {
        for id in &sb.endpoints {
            if let Some(p) = st.ports.remove(id) {
                let _ = self.engine.remove_port(p);
            }
        }
        // A rootless sandbox's namespace belongs to its process; closing the TAPs (above)
        // removed its interfaces.
        sb.rootless.is_some() || sandbox::remove_netns(&sb.netns).is_ok()
    }

    // ----- networks -----

    /// Create a network; returns its record.
    pub fn create_network(&self, spec: NetworkSpec, predefined: bool) -> Res<NetworkRecord> {
        let mut st = self.lock();
        if spec.name.is_empty() {
            return Err(Fail::bad_request("network name must not be empty"));
        }
        if st.networks.values().any(|n| n.name == spec.name) {
            return Err(Fail::conflict(format!(
                "network with name {} already exists",
                spec.name
            )));
        }
        let driver = match spec.driver.as_str() {
            "" | "bridge" => "bridge",
            "null" | "none" if predefined => "null",
            "host" if predefined => "host",
            "host" | "null" | "none" => {
                return Err(Fail::forbidden(format!(
                    "only one instance of \"{}\" network is allowed",
                    if spec.driver == "none" {
                        "null"
                    } else {
                        spec.driver.as_str()
                    }
                )));
            }
            "overlay" | "macvlan" | "ipvlan" => {
                return Err(Fail::bad_request(format!(
                    "driver {:?} is not available in this version of tapnet (bridge, host and null are)",
                    spec.driver
                )));
            }
            other => return Err(Fail::not_found(format!("plugin \"{other}\" not found"))),
        };
        if !spec.ipam_driver.is_empty() && spec.ipam_driver != "default" {
            return Err(Fail::not_found(format!(
                "plugin \"{}\" not found",
                spec.ipam_driver
            )));
        }
        if spec.enable_ipv6 {
            return Err(Fail::bad_request(
                "IPv6 networks are not available in this version of tapnet",
            ));
        }
        if spec.ingress {
            return Err(Fail::forbidden(
                "ingress networks need swarm mode, which tapnet does not have yet",
            ));
        }
        let mut ipam = st.ipam.clone();
        let mut configs = Vec::new();
        if driver == "bridge" {
            bridge_opts(&spec.options)?;
            if spec.ipam.len() > 1 {
                return Err(Fail::bad_request(
                    "only one IPv4 subnet per network is supported",
                ));
            }
            let want = spec.ipam.first().cloned().unwrap_or_default();
            let req = PoolRequest::parse(&want.subnet, &want.ip_range, &want.gateway, &want.aux)
                .map_err(|e| Fail::new(e.http_status(), e.to_string()))?;
            let pool = ipam
                .request_pool(&req, &[])
                .map_err(|e| Fail::new(e.http_status(), e.to_string()))?;
            configs.push(IpamConfigRecord {
                subnet: pool.subnet.to_string(),
                ip_range: pool.ip_range.map(|r| r.to_string()),
                gateway: Some(pool.gateway),
                aux: pool.aux.clone(),
                pool_id: pool.id.clone(),
            });
        }
        let rec = NetworkRecord {
            id: new_id(),
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
            ipam_driver: "default".into(),
            ipam_options: spec.ipam_options,
            ipam: configs,
            predefined,
        };
        self.store
            .commit(
                &[Change::PutNetwork(&rec)],
                Some(&State::ipam_bytes(&ipam)?),
            )
            .map_err(internal("state"))?;
        st.ipam = ipam;
        st.networks.insert(rec.id.clone(), rec.clone());
        if let Err(e) = self.realize_network(&mut st, &rec) {
            self.drop_network_record(&mut st, &rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    fn drop_network_record(&self, st: &mut State, id: &str) {
        let Some(rec) = st.networks.get(id).cloned() else {
            return;
        };
        let mut ipam = st.ipam.clone();
        for c in &rec.ipam {
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

    /// All networks.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        self.lock().networks.values().cloned().collect()
    }

    /// One network with the endpoints on it (and their sandboxes).
    pub fn network(
        &self,
        id_or_name: &str,
    ) -> Res<(NetworkRecord, Vec<(EndpointRecord, SandboxRecord)>)> {
        let st = self.lock();
        let id = st.network_id(id_or_name)?;
        let n = st.networks[&id].clone();
        let eps = st
            .endpoints_of_network(&id)
            .filter_map(|e| Some((e.clone(), st.sandboxes.get(&e.sandbox_id)?.clone())))
            .collect();
        Ok((n, eps))
    }

    /// Addresses in use and dynamically available in a network's pool.
    pub fn pool_usage(&self, pool_id: &str) -> (u64, u64) {
        let st = self.lock();
        (st.ipam.in_use(pool_id) as u64, st.ipam.available(pool_id))
    }

    /// Remove a network that has no endpoints.
    pub fn remove_network(&self, id_or_name: &str) -> Res<()> {
        let mut st = self.lock();
        let id = st.network_id(id_or_name)?;
        let n = st.networks[&id].clone();
        if n.predefined {
            return Err(Fail::forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if let Some(e) = st.endpoints_of_network(&id).next() {
            let sb = st
                .sandboxes
                .get(&e.sandbox_id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            return Err(Fail::forbidden(format!(
                "error while removing network: network {} has active endpoints (name:\"{sb}\" id:\"{}\")",
                n.name,
                &e.sandbox_id[..12.min(e.sandbox_id.len())]
            )));
        }
        let mut ipam = st.ipam.clone();
        for c in &n.ipam {
            ipam.release_pool(&c.pool_id)
                .map_err(|e| Fail::internal(e.to_string()))?;
        }
        self.store
            .commit(&[Change::DelNetwork(&id)], Some(&State::ipam_bytes(&ipam)?))
            .map_err(internal("state"))?;
        st.ipam = ipam;
        st.networks.remove(&id);
        self.unrealize_network(&mut st, &id);
        Ok(())
    }

    /// Remove every unused user network that `keep` does not protect; returns names.
    pub fn prune_networks(&self, select: impl Fn(&NetworkRecord) -> bool) -> Res<Vec<String>> {
        let unused: Vec<NetworkRecord> = {
            let st = self.lock();
            st.networks
                .values()
                .filter(|n| !n.predefined && st.endpoints_of_network(&n.id).next().is_none())
                .cloned()
                .collect()
        };
        // `select` runs with the state lock released: the API's filter builds the
        // network's inspect view, which takes the lock again (pool usage), and the
        // lock is not reentrant (calling it under the lock hung the daemon).
        let mut removed = Vec::new();
        for n in unused.into_iter().filter(|n| select(n)) {
            if self.remove_network(&n.id).is_ok() {
                removed.push(n.name);
            }
        }
        Ok(removed)
    }

    // ----- endpoints -----

    /// Work out a new endpoint of sandbox `sb` on network `net_id` (allocating its
    /// address in `ipam`), without committing.
    fn plan_endpoint(
        st: &State,
        ipam: &mut Ipam,
        sb: &SandboxRecord,
        net_id: &str,
        a: &AttachSpec,
        taken_ifnames: &[String],
    ) -> Res<EndpointRecord> {
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
        if let Some(cfg) = n.ipam.first() {
            let want = match static_ip {
                Some(s) => {
                    if n.predefined {
                        return Err(Fail::bad_request(
                            "user specified IP address is supported on user defined networks only",
                        ));
                    }
                    Some(parse_ip("IPv4 address", s)?)
                }
                None => None,
            };
            let addr = ipam
                .request_address(&cfg.pool_id, want)
                .map_err(|err| match err {
                    IpamError::OutOfRange { addr, .. } => Fail::bad_request(format!(
                        "no configured subnet contains IP address {addr}"
                    )),
                    // libnetwork rewords a full pool for the user (and answers 500).
                    IpamError::NoAvailableAddresses if want.is_none() => Fail::internal(format!(
                        "no available IPv4 addresses on this network's address pools: {} ({})",
                        n.name, n.id
                    )),
                    other => Fail::new(other.http_status(), other.to_string()),
                })?;
            e.ipv4 = Some(addr);
            e.prefix_len = prefix_len(&cfg.subnet)?;
            e.static_ip = want.is_some();
            e.mac = MacAddr::from_ipv4(addr).to_string();
        } else if static_ip.is_some() {
            return Err(Fail::bad_request(format!(
                "network {} has no IPAM: it takes no --ip",
                n.name
            )));
        }
        Ok(e)
    }

    /// Connect a sandbox to a network (a new interface appears in it, live).
    pub fn connect(&self, net: &str, sandbox_ref: &str, a: AttachSpec) -> Res<EndpointRecord> {
        let mut st = self.lock();
        let net_id = st.network_id(net)?;
        let sb_id = st.sandbox_id(sandbox_ref)?;
        let n = st.networks[&net_id].clone();
        let mut sb = st.sandboxes[&sb_id].clone();
        if sb.rootless.is_some() {
            return Err(Fail::forbidden(format!(
                "sandbox {} is rootless: its interfaces are made by its process when it \
                 starts; give every network to `tapnet run --network`",
                sb.name
            )));
        }
        let mine: Vec<EndpointRecord> = sb
            .endpoints
            .iter()
            .filter_map(|id| st.endpoints.get(id).cloned())
            .collect();
        if mine.iter().any(|e| e.network_id == net_id) {
            return Err(Fail::forbidden(format!(
                "endpoint with name {} already exists in network {}",
                sb.name, n.name
            )));
        }
        if n.driver != "bridge" {
            return Err(Fail::forbidden(format!(
                "container cannot be connected to network {} (driver {}): only at creation",
                n.name, n.driver
            )));
        }
        if mine.iter().any(|e| {
            st.networks
                .get(&e.network_id)
                .is_some_and(|n| n.driver == "null")
        }) {
            return Err(Fail::forbidden(format!(
                "container {} is on the none network and cannot be connected to another network",
                sb.name
            )));
        }
        let mut ipam = st.ipam.clone();
        let taken: Vec<String> = mine.iter().map(|e| e.ifname.clone()).collect();
        let e = Self::plan_endpoint(&st, &mut ipam, &sb, &net_id, &a, &taken)?;
        sb.endpoints.push(e.id.clone());
        self.store
            .commit(
                &[Change::PutEndpoint(&e), Change::PutSandbox(&sb)],
                Some(&State::ipam_bytes(&ipam)?),
            )
            .map_err(internal("state"))?;
        st.ipam = ipam;
        st.endpoints.insert(e.id.clone(), e.clone());
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        let res = sandbox::ensure_netns(&sb.netns)
            .map_err(internal("sandbox"))
            .and_then(|ns| {
                self.realize_endpoint(&mut st, &ns, &e)?;
                let route = default_route(&sb, &st.endpoints, &st.networks);
                sandbox::set_default_route(&ns, route.as_ref().map(|(g, i)| (*g, i.as_str())))
                    .map_err(internal("sandbox"))
            });
        if let Err(err) = res {
            let _ = self.drop_endpoint(&mut st, &sb_id, &e.id);
            return Err(err);
        }
        Ok(e)
    }

    /// Remove endpoint `ep` of sandbox `sb_id`: datapath, interface, address, records.
    fn drop_endpoint(&self, st: &mut State, sb_id: &str, ep: &str) -> Res<()> {
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
            && match self.published.target(sb_id) {
                Some((net, ip)) => net == e.network_id && Some(ip) == e.ipv4,
                None => default_endpoint(&sb, &st.endpoints, &st.networks)
                    .is_some_and(|(d, _)| d.id == e.id),
            };
        if ports_here {
            sb.ports.clear();
        }
        sb.endpoints.retain(|x| x != ep);
        let mut ipam = st.ipam.clone();
        if let (Some(a), Some(cfg)) = (
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
        self.unrealize_endpoint(st, &sb.netns, &e);
        let bytes = State::ipam_bytes(&ipam)?;
        let committed = self.store.commit(
            &[Change::DelEndpoint(ep), Change::PutSandbox(&sb)],
            Some(&bytes),
        );
        if let Err(err) = committed {
            // Not removed after all: put the interface back as it was.
            if let Ok(ns) = tapnet_engine::sys::netns::NetNs::open(&sb.netns) {
                let _ = self.realize_endpoint(st, &ns, &e);
                let route = default_route(&st.sandboxes[sb_id], &st.endpoints, &st.networks);
                let _ =
                    sandbox::set_default_route(&ns, route.as_ref().map(|(g, i)| (*g, i.as_str())));
            }
            return Err(internal("state")(err));
        }
        st.ipam = ipam;
        st.endpoints.remove(ep);
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        // Still under the state lock: no other sandbox got the address in between.
        if ports_here {
            self.published.unpublish(&self.hostnet, sb_id);
        }
        if let Ok(ns) = tapnet_engine::sys::netns::NetNs::open(&sb.netns) {
            let route = default_route(&sb, &st.endpoints, &st.networks);
            let _ = sandbox::set_default_route(&ns, route.as_ref().map(|(g, i)| (*g, i.as_str())));
        }
        Ok(())
    }

    /// Disconnect a sandbox from a network (its interface disappears, live).
    pub fn disconnect(&self, net: &str, sandbox_ref: &str) -> Res<()> {
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
            return Err(Fail::forbidden(format!(
                "container {} is not connected to network {}",
                sb.name, st.networks[&net_id].name
            )));
        };
        self.drop_endpoint(&mut st, &sb_id, &ep)
    }

    // ----- sandboxes -----

    /// Create a sandbox with an endpoint on each network asked for (the default
    /// `bridge` when none is).
    pub fn create_sandbox(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[PortMapping],
    ) -> Res<SandboxRecord> {
        self.create_sandbox_as(name, hostname, nets, ports, None)
    }

    /// [`Daemon::create_sandbox`]; with an `owner` the sandbox is rootless: endpoints
    /// only, no namespace and no TAPs (see [`super::rootless`]).
    fn create_sandbox_as(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[PortMapping],
        owner: Option<RootlessOwner>,
    ) -> Res<SandboxRecord> {
        if owner.is_none() && !nix::unistd::geteuid().is_root() {
            return Err(Fail::forbidden(
                "this daemon runs without root: it cannot create network namespaces. \
                 Sandboxes come from `tapnet run`, which creates them rootless",
            ));
        }
        let mut st = self.lock();
        if owner.is_some() {
            self.reap_rootless(&mut st);
        }
        let id = new_id();
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("sandbox-{}", &id[..12]));
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(Fail::bad_request(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if let Some(other) = st.sandboxes.values().find(|s| s.name == name) {
            return Err(Fail::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
        let nets = if nets.is_empty() {
            vec![AttachSpec {
                network: "bridge".into(),
                ..Default::default()
            }]
        } else {
            nets
        };
        let mut sb = SandboxRecord {
            id: id.clone(),
            name: name.clone(),
            created: now_rfc3339(),
            netns: match owner {
                Some(_) => String::new(),
                None => sandbox::netns_name(&id),
            },
            hostname: hostname.unwrap_or_else(|| id[..12].to_string()),
            endpoints: Vec::new(),
            ports: Vec::new(),
            rootless: owner,
        };
        let mut ipam = st.ipam.clone();
        let mut eps: Vec<EndpointRecord> = Vec::new();
        let mut seen = Vec::new();
        for a in &nets {
            let net_id = st.network_id(&a.network)?;
            let n = &st.networks[&net_id];
            if seen.contains(&net_id) {
                return Err(Fail::bad_request(format!("network {} given twice", n.name)));
            }
            seen.push(net_id.clone());
            match n.driver.as_str() {
                "host" => {
                    return Err(Fail::bad_request(
                        "a sandbox cannot join the host network: run the command in the host's namespace instead (tapnet run --network host)",
                    ));
                }
                "null" if nets.len() > 1 => {
                    return Err(Fail::bad_request(
                        "conflicting options: the none network cannot be combined with other networks",
                    ));
                }
                _ => {}
            }
            let taken: Vec<String> = eps.iter().map(|e| e.ifname.clone()).collect();
            let e = Self::plan_endpoint(&st, &mut ipam, &sb, &net_id, a, &taken)?;
            sb.endpoints.push(e.id.clone());
            eps.push(e);
        }
        // Host ports are bound before the commit: a taken one fails the call with
        // nothing stored.
        let bound = self.bind_ports(&st, &sb, &eps, ports)?;
        sb.ports = bound.iter().map(|b| b.record.clone()).collect();
        let mut changes: Vec<Change<'_>> = eps.iter().map(Change::PutEndpoint).collect();
        changes.push(Change::PutSandbox(&sb));
        self.store
            .commit(&changes, Some(&State::ipam_bytes(&ipam)?))
            .map_err(internal("state"))?;
        st.ipam = ipam;
        for e in &eps {
            st.endpoints.insert(e.id.clone(), e.clone());
        }
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        // A rootless sandbox's interfaces come later from its process; its ports are
        // published now (the relay reaches its address once they exist).
        let realized = if sb.rootless.is_some() {
            Ok(())
        } else {
            self.realize_sandbox(&mut st, &sb)
        };
        if let Err(err) = realized.and_then(|()| self.publish_ports(&st, &sb, bound)) {
            let _ = self.drop_sandbox(&mut st, &sb.id);
            return Err(err);
        }
        Ok(sb)
    }

    fn drop_sandbox(&self, st: &mut State, id: &str) -> Res<()> {
        let sb = st.sandboxes[id].clone();
        let mut ipam = st.ipam.clone();
        let mut changes = Vec::new();
        for ep in &sb.endpoints {
            if let Some(e) = st.endpoints.get(ep) {
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
        if sb.rootless.is_none() {
            changes.push(Change::NetnsGone(&sb.netns));
        }
        self.store
            .commit(&changes, Some(&State::ipam_bytes(&ipam)?))
            .map_err(internal("state"))?;
        st.ipam = ipam;
        self.published.unpublish(&self.hostnet, id);
        if self.unrealize_sandbox(st, &sb) {
            let _ = self.store.forget_netns(&[&sb.netns]);
        }
        for ep in &sb.endpoints {
            st.endpoints.remove(ep);
        }
        st.sandboxes.remove(id);
        Ok(())
    }

    /// Remove a sandbox and free everything it held.
    pub fn remove_sandbox(&self, id_or_name: &str) -> Res<()> {
        let mut st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        self.drop_sandbox(&mut st, &id)
    }

    /// All sandboxes with their endpoints.
    pub fn sandboxes(&self) -> Vec<(SandboxRecord, Vec<(EndpointRecord, NetworkRecord)>)> {
        let st = self.lock();
        st.sandboxes
            .values()
            .map(|s| (s.clone(), sandbox_eps(&st, s)))
            .collect()
    }

    /// One sandbox with its endpoints.
    pub fn sandbox(
        &self,
        id_or_name: &str,
    ) -> Res<(SandboxRecord, Vec<(EndpointRecord, NetworkRecord)>)> {
        let st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        let s = st.sandboxes[&id].clone();
        let eps = sandbox_eps(&st, &s);
        Ok((s, eps))
    }

    /// Gateway counters of a network, if it has a gateway.
    pub fn gateway_stats(&self, net_id: &str) -> Option<tapnet_nat::GatewayCountersSnapshot> {
        let st = self.lock();
        st.nets
            .get(net_id)?
            .gateway
            .as_ref()
            .map(|(_, h)| h.snapshot())
    }

    /// Engine port of an endpoint.
    pub fn endpoint_port(&self, ep: &str) -> Option<PortId> {
        self.lock().ports.get(ep).copied()
    }

    /// Which network and sandbox each engine port serves (gateways: sandbox "").
    pub fn port_owners(&self) -> HashMap<PortId, (String, String)> {
        let st = self.lock();
        let mut out = HashMap::new();
        for (ep, port) in &st.ports {
            if let Some(e) = st.endpoints.get(ep) {
                let net = st
                    .networks
                    .get(&e.network_id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                let sb = st
                    .sandboxes
                    .get(&e.sandbox_id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                out.insert(*port, (net, sb));
            }
        }
        for (id, live) in &st.nets {
            if let Some((p, _)) = &live.gateway {
                let net = st
                    .networks
                    .get(id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                out.insert(*p, (net, String::new()));
            }
        }
        out
    }

    /// Network id and name of each bridge domain.
    pub fn domain_names(&self) -> HashMap<DomainId, (String, String)> {
        let st = self.lock();
        st.nets
            .iter()
            .filter_map(|(id, live)| {
                Some((live.domain, (id.clone(), st.networks.get(id)?.name.clone())))
            })
            .collect()
    }
}

// ----- published ports -----

impl Daemon {
    /// Bind the host side of `ports` for sandbox `sb` with planned endpoints `eps`.
    fn bind_ports(
        &self,
        st: &State,
        sb: &SandboxRecord,
        eps: &[EndpointRecord],
        ports: &[PortMapping],
    ) -> Res<Vec<publish::BoundPort>> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let planned: BTreeMap<String, EndpointRecord> =
            eps.iter().map(|e| (e.id.clone(), e.clone())).collect();
        let Some((e, _)) = default_endpoint(sb, &planned, &st.networks) else {
            return Err(Fail::bad_request(format!(
                "cannot publish ports of {}: it has no network with external access (publishing needs a bridge network that is not internal)",
                sb.name
            )));
        };
        // The network's host_binding_ipv4 stands for a host address not given.
        let default_ip = st
            .networks
            .get(&e.network_id)
            .and_then(|n| bridge_opts(&n.options).ok())
            .and_then(|o| o.host_binding);
        let ports: Vec<PortMapping> = ports
            .iter()
            .map(|m| PortMapping {
                host_ip: m.host_ip.or(default_ip),
                ..*m
            })
            .collect();
        publish::bind_all(&ports, &format!("{} ({})", sb.name, e.id))
    }

    /// Hand the bound ports of `sb` (committed and plumbed) to host networking.
    fn publish_ports(
        &self,
        st: &State,
        sb: &SandboxRecord,
        bound: Vec<publish::BoundPort>,
    ) -> Res<()> {
        if bound.is_empty() {
            return Ok(());
        }
        let (e, _) = default_endpoint(sb, &st.endpoints, &st.networks)
            .ok_or_else(|| Fail::internal("published ports lost their endpoint"))?;
        let ip = e
            .ipv4
            .ok_or_else(|| Fail::internal("published ports lead to an endpoint with no address"))?;
        // With the network's loopback_splice, loopback clients are spliced into a root
        // sandbox's named namespace. A rootless one's namespace belongs to its process
        // (and the daemon may not enter it): its ports go through the relay only.
        let splice = st
            .networks
            .get(&e.network_id)
            .and_then(|n| bridge_opts(&n.options).ok())
            .is_some_and(|o| o.loopback_splice);
        let ns = if splice && sb.rootless.is_none() && !sb.netns.is_empty() {
            Some(tapnet_engine::sys::netns::NetNs::open(&sb.netns).map_err(internal("sandbox"))?)
        } else {
            None
        };
        let fd = ns.as_ref().map(|n| n.fd());
        self.published
            .publish(&self.hostnet, &sb.id, &e.network_id, ip, fd, bound)
            .map_err(internal("host networking"))
    }

    /// After a restart: bind the recorded ports of `sb` again, exactly, and publish them.
    fn restore_ports(&self, st: &State, sb: &SandboxRecord) {
        if sb.ports.is_empty() {
            return;
        }
        let (bound, failed) = publish::rebind(&sb.ports);
        for (p, err) in failed {
            tracing::warn!(
                sandbox = %sb.name,
                port = %format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.proto),
                error = %err,
                "could not bind a published port again"
            );
        }
        if let Err(e) = self.publish_ports(st, sb, bound) {
            tracing::warn!(sandbox = %sb.name, error = %e, "could not restore published ports");
        }
    }
}

fn sandbox_eps(st: &State, s: &SandboxRecord) -> Vec<(EndpointRecord, NetworkRecord)> {
    s.endpoints
        .iter()
        .filter_map(|id| {
            let e = st.endpoints.get(id)?;
            Some((e.clone(), st.networks.get(&e.network_id)?.clone()))
        })
        .collect()
}

fn prefix_len(subnet: &str) -> Res<u8> {
    subnet
        .split_once('/')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| Fail::internal(format!("stored subnet {subnet:?} has no prefix length")))
}
