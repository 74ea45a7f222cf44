//! The swarm service: this daemon's part of a swarm (Docker's swarm mode, network side).
//!
//! ```text
//!   API (swarm, node, network -d overlay) ─▶ Swarm ─┬─ Manager (Raft over the management port, managers only)
//!   core (sandbox on an overlay) ─ SwarmHooks ─────┤   networks, addresses, nodes
//!                                                   ├─ management port server (managers): joins, workers' writes
//!                                                   ├─ Gossip (UDP): membership + per-network endpoint tables
//!                                                   │     └─▶ applier thread ─▶ core: remote endpoints
//!                                                   │                          (VXLAN table, proxy ARP, DNS)
//!                                                   └─ refresher: the cluster state a worker shows, known managers
//! ```
//!
//! - **State** that must survive a restart is `swarm.json` ([`config`]) and, on managers,
//!   the Raft log and snapshot (`swarm-raft/`). A restarted node comes back with the same
//!   key and a higher gossip generation, rejoins through the nodes it knew, and publishes
//!   its sandboxes' endpoints again (the core keeps them in its own store).
//! - **Writes** (networks, addresses, nodes) go through a manager's Raft; a worker sends
//!   its own (an endpoint's address) to a manager on the management port
//!   ([`rpc::AppReq::Propose`]), which forwards to the leader.
//! - **Reads**: a manager answers from its applied state; a worker from the copy the
//!   refresher fetched last (within [`REFRESH`]).
//! - **Calls** from the API and the core are blocking (they run on blocking threads);
//!   the service's own tasks run on its runtime ([`Swarm::rt`]), never blocked on.

pub mod config;
mod control;
pub mod gossip;
mod hooks;
pub mod rpc;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tapnet_cluster::member::NodeId as GossipId;

use self::config::{KnownManager, SwarmConfig};
use self::gossip::{Cmd, Gossip, lock};
use self::rpc::{AppReq, AppResp, EndpointValue, JoinAnswer};
use crate::cluster::{
    Answer, ClusterConfig, ClusterError, ClusterState, Command, Manager, NodeInfo, Role, StateError,
};
use crate::daemon::Daemon;
use crate::daemon::core::{LocalEndpoint, RemoteEndpoint};
use crate::daemon::server::ApiError;

/// How often the refresher reads the cluster state.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long a worker's read of the cluster state may take before it answers from its
/// last copy.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one call to a manager may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a joining manager keeps asking to be added to the voters.
const ADD_MANAGER_TIMEOUT: Duration = Duration::from_secs(60);

/// Docker's texts.
pub(crate) const NOT_IN_SWARM: &str = "This node is not part of a swarm";
pub(crate) const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
pub(crate) const ALREADY: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
pub(crate) const BAD_TOKEN: &str =
    "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster";

/// The daemon's swarm service (see the module docs).
pub struct Swarm {
    pub(crate) inner: Arc<Inner>,
}

/// What the service's parts share.
pub(crate) struct Inner {
    pub(crate) daemon: Arc<Daemon>,
    pub(crate) dir: PathBuf,
    pub(crate) rt: tokio::runtime::Runtime,
    /// The swarm this node is in, if any; changed only by init, join, leave, start.
    pub(crate) active: Mutex<Option<Active>>,
    /// Serialises init, join, leave and role changes.
    pub(crate) change: Mutex<()>,
    /// The gossip task's shared state, for the applier.
    applier_source: Mutex<Option<Arc<Mutex<gossip::Shared>>>>,
    /// Wakes the applier.
    wake: std::sync::mpsc::SyncSender<()>,
    /// The gossip port used by default (`tapnet daemon --gossip-port`).
    pub(crate) gossip_port: u16,
    /// Where the management port finds the local Raft (filled while a manager runs).
    pub(crate) slot: crate::cluster::RaftSlot,
    /// The management port's counters.
    pub(crate) rpc_stats: Arc<crate::cluster::RpcStats>,
}

/// A swarm this node is in.
pub(crate) struct Active {
    pub(crate) cfg: SwarmConfig,
    pub(crate) gossip: Gossip,
    pub(crate) manager: Option<Arc<Manager>>,
    pub(crate) server: Option<tokio::task::JoinHandle<()>>,
    pub(crate) refresher: tokio::task::JoinHandle<()>,
    /// The cluster state as last read (a worker's copy; a manager reads its own).
    pub(crate) cache: Arc<RwLock<ClusterState>>,
    /// This manager has been a voter (after init, a restart, or once a join or a
    /// promotion made it one): leaving the voters then means a demotion.
    pub(crate) voter: bool,
}

/// A blocking-context error for the API.
pub(crate) fn api(status: u16, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, msg.into())
}

/// The API's answer for a cluster error.
pub(crate) fn cluster_api(e: ClusterError) -> ApiError {
    match e {
        ClusterError::Refused(s) => state_api(&s),
        other => api(503, other.to_string()),
    }
}

/// The API's answer for a refused command.
pub(crate) fn state_api(s: &StateError) -> ApiError {
    let status = match s {
        StateError::NameExists(_) | StateError::IdExists(_) | StateError::AddressInUse => 409,
        StateError::NetworkNotFound(_) | StateError::NodeNotFound(_) => 404,
        StateError::ActiveEndpoints { .. } => 403,
        _ => 400,
    };
    api(status, s.to_string())
}

impl Swarm {
    /// The service of `daemon` (state in `dir`), resuming the swarm it was in. Gossip
    /// listens on `gossip_port` unless the swarm's config says otherwise.
    pub fn start(daemon: Arc<Daemon>, dir: PathBuf, gossip_port: u16) -> anyhow::Result<Swarm> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tapnet-swarm")
            .enable_all()
            .build()?;
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::new(Inner {
            daemon,
            dir,
            rt,
            active: Mutex::new(None),
            change: Mutex::new(()),
            applier_source: Mutex::new(None),
            wake: wake_tx,
            gossip_port,
            slot: crate::cluster::RaftSlot::new(),
            rpc_stats: Arc::new(crate::cluster::RpcStats::new()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("tapnet-swarm-apply".into())
            .spawn(move || applier(weak, wake_rx))?;
        if let Some(mut cfg) = config::load(&inner.dir)? {
            cfg.generation = cfg.generation.wrapping_add(1);
            config::save(&inner.dir, &cfg)?;
            let role = cfg.role;
            inner
                .activate(cfg, Mode::Restart)
                .map_err(|e| anyhow::anyhow!("resuming the swarm: {}", e.message))?;
            tracing::info!(?role, "resumed the swarm");
        }
        Ok(Swarm { inner })
    }

    /// Stop the service's tasks (the daemon exits): no goodbye, so peers see this node
    /// fail and keep its state suspended until it is back.
    pub fn shutdown(&self) {
        let active = lock(&self.inner.active).take();
        if let Some(a) = active {
            a.gossip.stop();
            a.refresher.abort();
            if let Some(s) = a.server {
                s.abort();
            }
            if let Some(m) = a.manager
                && let Ok(m) = Arc::try_unwrap(m)
            {
                let _ = self.inner.rt.block_on(m.shutdown());
            }
        }
    }
}

/// The swarm's config, the local manager (if this node is one) and the cluster state's
/// cached copy.
pub(crate) type Current = (SwarmConfig, Option<Arc<Manager>>, Arc<RwLock<ClusterState>>);

/// How a swarm is being entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `swarm init`: a new cluster with this node as its only manager.
    Init,
    /// `swarm join`: the managers know this node already.
    Join,
    /// The daemon restarted in a swarm.
    Restart,
}

impl Inner {
    /// Start everything of swarm `cfg` on this node (see the module docs).
    pub(crate) fn activate(self: &Arc<Self>, cfg: SwarmConfig, mode: Mode) -> Result<(), ApiError> {
        let manager = if cfg.role == Role::Manager {
            Some(Arc::new(self.start_manager(&cfg, mode)?))
        } else {
            None
        };
        let server = match &manager {
            Some(m) => Some(self.serve(&cfg, m.clone())?),
            None => None,
        };
        let gossip_sock = self
            .rt
            .block_on(tokio::net::UdpSocket::bind(cfg.gossip_addr()))
            .map_err(|e| api(500, format!("gossip port {}: {e}", cfg.gossip_addr())))?;
        self.daemon
            .set_vtep(cfg.vtep())
            .map_err(|e| api(500, format!("data path port {}: {e}", cfg.vtep())))?;
        let id = GossipId {
            addr: cfg.gossip_addr(),
            key: cfg.key,
            generation: cfg.generation,
        };
        let mut seeds: Vec<SocketAddrV4> = cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != cfg.gossip_addr())
            .collect();
        seeds.dedup();
        let wake = self.wake.clone();
        let gossip = {
            let _guard = self.rt.enter();
            Gossip::start(id, gossip_sock, &cfg.secret, seeds, move || {
                let _ = wake.try_send(());
            })
        };
        *lock(&self.applier_source) = Some(gossip.shared().clone());
        let cache = Arc::new(RwLock::new(ClusterState::default()));
        if let Some(m) = &manager {
            *cache.write().unwrap_or_else(|e| e.into_inner()) = m.state();
        }
        let refresher = self.rt.spawn(refresh(Arc::downgrade(self), cache.clone()));
        // What this node's sandboxes had on swarm networks (after a restart): published
        // again, with this generation.
        let vtep = cfg.data_ip();
        for (net, ep) in self.daemon.local_swarm_endpoints() {
            gossip.send(Cmd::JoinNetwork(net.clone()));
            gossip.send(endpoint_cmd(&net, &ep, vtep));
        }
        *lock(&self.active) = Some(Active {
            cfg,
            gossip,
            manager,
            server,
            refresher,
            cache,
            voter: mode != Mode::Join,
        });
        self.install_hooks();
        Ok(())
    }

    fn start_manager(&self, cfg: &SwarmConfig, mode: Mode) -> Result<Manager, ApiError> {
        let dir = self.dir.join(config::RAFT_DIR);
        let net = crate::cluster::TcpNet::new(cfg.secret.clone()).with_slot(self.slot.clone());
        let m = self
            .rt
            .block_on(Manager::start(cfg.key, &dir, net, ClusterConfig::default()))
            .map_err(|e| api(500, format!("starting the manager: {e}")))?;
        if mode == Mode::Init {
            let me = cfg.advertise.to_string();
            self.rt
                .block_on(async {
                    m.initialize(&[(cfg.key, me)]).await?;
                    m.propose(Command::SetNode {
                        node: cfg.key,
                        info: self.node_info(cfg, Role::Manager),
                    })
                    .await?;
                    m.propose(Command::Init {
                        data_path_port: cfg.data_path_port,
                    })
                    .await
                })
                .map_err(cluster_api)?;
        }
        Ok(m)
    }

    pub(crate) fn node_info(&self, cfg: &SwarmConfig, role: Role) -> NodeInfo {
        NodeInfo {
            role,
            hostname: hostname(),
            addr: cfg.advertise.to_string(),
            gossip: cfg.gossip_addr().to_string(),
            data: cfg.data_ip().to_string(),
        }
    }

    /// Serve the management port for manager `m`.
    fn serve(
        self: &Arc<Self>,
        cfg: &SwarmConfig,
        m: Arc<Manager>,
    ) -> Result<tokio::task::JoinHandle<()>, ApiError> {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(cfg.listen))
            .map_err(|e| api(500, format!("management port {}: {e}", cfg.listen)))?;
        let (secret, wt, mt) = (
            cfg.secret.clone(),
            cfg.worker_token.clone(),
            cfg.manager_token.clone(),
        );
        let accept: crate::cluster::Accept =
            Arc::new(move |cred: &str| -> Option<crate::cluster::Access> {
                use crate::cluster::Access;
                if token::same(cred, &secret) {
                    Some(Access::Member)
                } else if !wt.is_empty() && token::same(cred, &wt) {
                    Some(Access::Join(Role::Worker))
                } else if !mt.is_empty() && token::same(cred, &mt) {
                    Some(Access::Join(Role::Manager))
                } else {
                    None
                }
            });
        let weak = Arc::downgrade(self);
        let app: crate::cluster::AppHandler = Arc::new(move |access, body: Vec<u8>| {
            let weak = weak.clone();
            let fut: crate::cluster::BoxFuture<Vec<u8>> = Box::pin(async move {
                let resp = match weak.upgrade() {
                    Some(inner) => inner.handle_app(access, &body).await,
                    None => AppResp::Error {
                        status: 503,
                        message: "the node is shutting down".into(),
                    },
                };
                rpc::encode(&resp)
            });
            fut
        });
        let _ = m;
        Ok(self.rt.spawn(crate::cluster::serve(
            listener,
            accept,
            self.slot.clone(),
            app,
            self.rpc_stats.clone(),
        )))
    }

    /// A manager's answer to another node's request.
    async fn handle_app(self: &Arc<Self>, access: crate::cluster::Access, body: &[u8]) -> AppResp {
        use crate::cluster::Access;
        let err = |status, message: String| AppResp::Error { status, message };
        let req: AppReq = match rpc::decode(body) {
            Ok(r) => r,
            Err(e) => return err(400, e),
        };
        let (m, cfg) = {
            let a = lock(&self.active);
            match a.as_ref() {
                Some(a) => match &a.manager {
                    Some(m) => (m.clone(), a.cfg.clone()),
                    None => return err(503, NOT_MANAGER.into()),
                },
                None => return err(503, NOT_IN_SWARM.into()),
            }
        };
        match (access, req) {
            (
                Access::Join(role),
                AppReq::Join {
                    key,
                    hostname,
                    addr,
                    gossip_port,
                },
            ) => {
                let info = NodeInfo {
                    role,
                    hostname,
                    addr: addr.to_string(),
                    gossip: SocketAddrV4::new(*addr.ip(), gossip_port).to_string(),
                    data: addr.ip().to_string(),
                };
                if let Err(e) = m.propose(Command::SetNode { node: key, info }).await {
                    return err(503, e.to_string());
                }
                let st = m.state();
                let manager = role == Role::Manager;
                AppResp::Joined(JoinAnswer {
                    cluster_id: cfg.cluster_id.clone(),
                    created: cfg.created.clone(),
                    role,
                    secret: cfg.secret.clone(),
                    worker_token: if manager {
                        cfg.worker_token.clone()
                    } else {
                        String::new()
                    },
                    manager_token: if manager {
                        cfg.manager_token.clone()
                    } else {
                        String::new()
                    },
                    data_path_port: cfg.data_path_port,
                    managers: managers_of(&st),
                    seeds: seeds_of(&st),
                })
            }
            (Access::Member, req @ (AppReq::AddManager { .. } | AppReq::RemoveManager { .. })) => {
                if !m.is_leader() {
                    // Only the leader changes the voters: pass it on.
                    let Some(leader) = m.leader_addr().and_then(|a| a.parse::<SocketAddr>().ok())
                    else {
                        return err(503, ClusterError::NoLeader.to_string());
                    };
                    let body = rpc::encode(&req);
                    return match crate::cluster::call_app(leader, &cfg.secret, body, CALL_TIMEOUT)
                        .await
                    {
                        Ok(b) => rpc::decode(&b).unwrap_or_else(|e| err(502, e)),
                        Err(e) => err(503, e.to_string()),
                    };
                }
                let r = match req {
                    AppReq::AddManager { key, addr } => m.add_manager(key, &addr.to_string()).await,
                    AppReq::RemoveManager { key } => m.remove_manager(key).await,
                    _ => Ok(()),
                };
                match r {
                    Ok(()) => AppResp::Done,
                    Err(e) => err(503, e.to_string()),
                }
            }
            (Access::Member, AppReq::Tokens) => AppResp::Tokens {
                worker: cfg.worker_token.clone(),
                manager: cfg.manager_token.clone(),
            },
            (Access::Member, AppReq::Propose(cmd)) => match m.propose(cmd).await {
                Ok(a) => AppResp::Answer(a),
                Err(e) => {
                    let e = cluster_api(e);
                    err(e.status, e.message.clone())
                }
            },
            (Access::Member, AppReq::State) => AppResp::State(m.state()),
            _ => err(403, "not allowed with this credential".into()),
        }
    }

    /// The current swarm's config and manager, or the API's error.
    pub(crate) fn current(&self) -> Result<Current, ApiError> {
        let a = lock(&self.active);
        let a = a.as_ref().ok_or_else(|| api(503, NOT_IN_SWARM))?;
        Ok((a.cfg.clone(), a.manager.clone(), a.cache.clone()))
    }

    /// The cluster state: a manager's own; on a worker, a fresh copy from a manager
    /// (within [`READ_TIMEOUT`]), else the last one fetched. Fresh, so that a network
    /// just created on a manager is known on a worker at once.
    pub(crate) fn state(&self) -> Result<ClusterState, ApiError> {
        let (cfg, m, cache) = self.current()?;
        if let Some(m) = m {
            return Ok(m.state());
        }
        if let Ok(AppResp::State(st)) =
            self.rt
                .block_on(ask_managers_within(&cfg, &AppReq::State, READ_TIMEOUT))
        {
            *cache.write().unwrap_or_else(|e| e.into_inner()) = st.clone();
            return Ok(st);
        }
        Ok(cache.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Replicate `cmd`: on a manager directly, on a worker through a manager.
    pub(crate) fn propose(&self, cmd: Command) -> Result<Answer, ApiError> {
        let (cfg, m, _) = self.current()?;
        if let Some(m) = m {
            return self.rt.block_on(m.propose(cmd)).map_err(cluster_api);
        }
        match self
            .rt
            .block_on(ask_managers(&cfg, &AppReq::Propose(cmd)))?
        {
            AppResp::Answer(a) => Ok(a),
            AppResp::Error { status, message } => Err(api(status, message)),
            other => Err(api(502, format!("unexpected answer {other:?}"))),
        }
    }

    /// Publish an endpoint of this node.
    pub(crate) fn gossip(&self, cmd: Cmd) {
        if let Some(a) = lock(&self.active).as_ref() {
            a.gossip.send(cmd);
        }
    }
}

/// The command that publishes `ep` on `net`.
pub(crate) fn endpoint_cmd(net: &str, ep: &LocalEndpoint, vtep: Ipv4Addr) -> Cmd {
    Cmd::Set {
        net: net.to_string(),
        key: ep.id.clone(),
        value: EndpointValue {
            ip: ep.ip,
            mac: ep.mac,
            vtep,
            name: ep.name.clone(),
            aliases: ep.aliases.clone(),
        }
        .encode(),
    }
}

/// Ask the managers `cfg` knows, one after another, until one answers.
pub(crate) async fn ask_managers(cfg: &SwarmConfig, req: &AppReq) -> Result<AppResp, ApiError> {
    ask_managers_within(cfg, req, CALL_TIMEOUT).await
}

/// As [`ask_managers`], each call within `timeout`.
pub(crate) async fn ask_managers_within(
    cfg: &SwarmConfig,
    req: &AppReq,
    timeout: Duration,
) -> Result<AppResp, ApiError> {
    let body = rpc::encode(req);
    let mut last = api(503, "no manager is known");
    for m in &cfg.managers {
        match crate::cluster::call_app(m.addr, &cfg.secret, body.clone(), timeout).await {
            Ok(b) => return rpc::decode(&b).map_err(|e| api(502, e)),
            Err(e) => last = api(503, format!("manager {}: {e}", m.addr)),
        }
    }
    Err(last)
}

/// The managers in `st`.
pub(crate) fn managers_of(st: &ClusterState) -> Vec<KnownManager> {
    st.nodes
        .iter()
        .filter(|(_, n)| n.role == Role::Manager)
        .filter_map(|(k, n)| {
            Some(KnownManager {
                key: *k,
                addr: n.addr.parse().ok()?,
            })
        })
        .collect()
}

/// Every node's gossip address in `st`.
pub(crate) fn seeds_of(st: &ClusterState) -> Vec<SocketAddrV4> {
    st.nodes
        .values()
        .filter_map(|n| n.gossip.parse().ok())
        .collect()
}

/// This host's name.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Keep a copy of the cluster state and the known managers and seeds (a worker reads
/// them from a manager).
async fn refresh(inner: std::sync::Weak<Inner>, cache: Arc<RwLock<ClusterState>>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(inner) = inner.upgrade() else { return };
        let Ok((cfg, m, _)) = inner.current() else {
            return;
        };
        let st = match &m {
            Some(m) => m.state(),
            None => match ask_managers(&cfg, &AppReq::State).await {
                Ok(AppResp::State(st)) => st,
                _ => continue,
            },
        };
        let role = st.nodes.get(&cfg.key).map(|n| n.role);
        // A demotion writes the role before it changes the voters, so a manager reads
        // `worker` in its own state while it still is a voter.
        let demoted = m.is_some() && inner.is_voter_confirmed() && role == Some(Role::Worker);
        let promoted = m.is_none() && role == Some(Role::Manager);
        if promoted || demoted {
            let i = inner.clone();
            let _ = tokio::task::spawn_blocking(move || i.sync_role(promoted)).await;
            continue;
        }
        let managers = managers_of(&st);
        let mut seeds = seeds_of(&st);
        seeds.sort();
        *cache.write().unwrap_or_else(|e| e.into_inner()) = st;
        if managers.is_empty() {
            continue;
        }
        let mut a = lock(&inner.active);
        let Some(a) = a.as_mut() else { return };
        if a.cfg.managers != managers || a.cfg.seeds != seeds {
            a.cfg.managers = managers;
            a.cfg.seeds = seeds;
            if let Err(e) = config::save(&inner.dir, &a.cfg) {
                tracing::warn!(error = %e, "could not save the swarm state");
            }
        }
    }
}

/// Program the core with the entries gossip shows (see [`gossip`]'s docs): runs on its
/// own thread, woken after each change, for the life of the service.
fn applier(inner: std::sync::Weak<Inner>, wake: std::sync::mpsc::Receiver<()>) {
    let mut applied: HashMap<String, BTreeMap<String, RemoteEndpoint>> = HashMap::new();
    while wake.recv().is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        let Some(source) = lock(&inner.applier_source).clone() else {
            // Left the swarm: the core dropped its remote endpoints.
            applied.clear();
            continue;
        };
        let changed: Vec<(String, Vec<tapnet_cluster::table::EntryView>)> = {
            let mut sh = lock(&source);
            let dirty = std::mem::take(&mut sh.dirty);
            dirty
                .into_iter()
                .map(|n| {
                    let e = sh.entries.get(&n).cloned().unwrap_or_default();
                    (n, e)
                })
                .collect()
        };
        for (net, entries) in changed {
            let want: BTreeMap<String, RemoteEndpoint> = entries
                .iter()
                .filter_map(|e| {
                    let v = EndpointValue::decode(&e.value)?;
                    Some((
                        e.key.clone(),
                        RemoteEndpoint {
                            ip: v.ip,
                            mac: v.mac,
                            vtep: v.vtep,
                            name: v.name,
                            aliases: v.aliases,
                        },
                    ))
                })
                .collect();
            let have = applied.entry(net.clone()).or_default();
            let gone: Vec<String> = have
                .keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                inner.daemon.remote_endpoint_remove(&net, &k);
                have.remove(&k);
            }
            for (k, v) in want {
                if have.get(&k) != Some(&v) {
                    inner.daemon.remote_endpoint_set(&net, &k, v.clone());
                    have.insert(k, v);
                }
            }
        }
    }
}

/// The address to advertise when none was given: the listen address if it names one,
/// else the source address of the route toward `toward` (nothing is sent), else the
/// route toward a documentation address (RFC 5737).
pub(crate) fn choose_advertise(
    listen: &SocketAddr,
    toward: Option<SocketAddr>,
) -> Result<Ipv4Addr, ApiError> {
    if let IpAddr::V4(ip) = listen.ip()
        && !ip.is_unspecified()
    {
        return Ok(ip);
    }
    let target = toward.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 2377)));
    let pick = || -> std::io::Result<Ipv4Addr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(target)?;
        match s.local_addr()?.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Ok(ip),
            _ => Err(std::io::Error::other("no IPv4 source address")),
        }
    };
    pick().map_err(|_| {
        api(
            400,
            "could not find the system's IP address - specify one with --advertise-addr",
        )
    })
}
