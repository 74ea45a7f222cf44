//! `swarm init`, `swarm join`, `swarm leave` and the node operations, as the API asks
//! for them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use super::config::{self, KnownManager, SwarmConfig};
use super::gossip::lock;
use super::rpc::{self, AppReq, AppResp};
use super::{
    ADD_MANAGER_TIMEOUT, ALREADY, BAD_TOKEN, CALL_TIMEOUT, Inner, Mode, api, choose_advertise,
    cluster_api, hostname, token,
};
use crate::cluster::{ClusterState, Command, Role};
use crate::daemon::model::now_rfc3339;
use crate::daemon::server::ApiError;

/// `host[:port]` or `:port`, with `default_port`; `host` an IPv4 address.
pub(crate) fn parse_addr(
    s: &str,
    default_ip: Ipv4Addr,
    default_port: u16,
) -> Result<SocketAddrV4, ApiError> {
    let bad = || {
        api(
            400,
            format!("invalid address {s:?}: use IP, IP:PORT or :PORT (IPv4)"),
        )
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(SocketAddrV4::new(default_ip, default_port));
    }
    if let Some(p) = s.strip_prefix(':') {
        return Ok(SocketAddrV4::new(default_ip, p.parse().map_err(|_| bad())?));
    }
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(a);
    }
    let ip: Ipv4Addr = s.parse().map_err(|_| bad())?;
    Ok(SocketAddrV4::new(ip, default_port))
}

/// What `swarm init` and `swarm join` are given.
#[derive(Clone, Debug, Default)]
pub(crate) struct Enter {
    /// `--listen-addr`.
    pub(crate) listen: String,
    /// `--advertise-addr`.
    pub(crate) advertise: String,
    /// `--data-path-port` (0: 4789).
    pub(crate) data_path_port: u16,
}

impl Inner {
    fn refuse_if_active(&self) -> Result<(), ApiError> {
        if lock(&self.active).is_some() {
            return Err(api(503, ALREADY));
        }
        Ok(())
    }

    fn addresses(
        &self,
        e: &Enter,
        toward: Option<SocketAddr>,
    ) -> Result<(SocketAddr, SocketAddrV4), ApiError> {
        let listen = parse_addr(&e.listen, Ipv4Addr::UNSPECIFIED, config::MANAGEMENT_PORT)?;
        let ip = match e.advertise.trim() {
            "" => choose_advertise(&SocketAddr::V4(listen), toward)?,
            a => parse_addr(a, Ipv4Addr::UNSPECIFIED, listen.port())?
                .ip()
                .to_owned(),
        };
        let port = match e.advertise.trim().parse::<SocketAddrV4>() {
            Ok(a) => a.port(),
            Err(_) => listen.port(),
        };
        if ip.is_unspecified() {
            return Err(api(400, "advertise address must be a non-zero IP address"));
        }
        Ok((SocketAddr::V4(listen), SocketAddrV4::new(ip, port)))
    }

    /// `swarm init`: a new swarm with this node as its manager. Answers the node ID.
    pub(crate) fn init(self: &Arc<Self>, e: Enter) -> Result<String, ApiError> {
        let _change = lock(&self.change);
        self.refuse_if_active()?;
        let (listen, advertise) = self.addresses(&e, None)?;
        let data_path_port = match e.data_path_port {
            0 => config::DATA_PATH_PORT,
            p if !(1024..=49151).contains(&p) => {
                return Err(api(
                    400,
                    format!("data path port {p} is out of range: it must be within 1024 and 49151"),
                ));
            }
            p => p,
        };
        let ca = token::random_base36(50);
        let cfg = SwarmConfig {
            cluster_id: token::random_base36(25),
            created: now_rfc3339(),
            key: rand::random(),
            generation: 0,
            role: Role::Manager,
            secret: token::random_base36(64),
            worker_token: token::new_token(&ca),
            manager_token: token::new_token(&ca),
            listen,
            advertise,
            gossip_port: self.gossip_port,
            data_path_port,
            managers: vec![KnownManager {
                key: 0,
                addr: SocketAddr::V4(advertise),
            }],
            seeds: Vec::new(),
        };
        let mut cfg = cfg;
        cfg.managers[0].key = cfg.key;
        // Stale Raft state of an earlier swarm is not this one's.
        let _ = std::fs::remove_dir_all(self.dir.join(config::RAFT_DIR));
        config::save(&self.dir, &cfg).map_err(|e| api(500, e.to_string()))?;
        let id = cfg.node_id();
        if let Err(e) = self.activate(cfg, Mode::Init) {
            let _ = self.deactivate_after_failure();
            return Err(e);
        }
        Ok(id)
    }

    /// `swarm join --token T REMOTE`.
    pub(crate) fn join(
        self: &Arc<Self>,
        e: Enter,
        remote: &str,
        tok: &str,
    ) -> Result<(), ApiError> {
        let _change = lock(&self.change);
        self.refuse_if_active()?;
        let tok = tok.trim();
        if !token::well_formed(tok) {
            return Err(api(400, "invalid join token"));
        }
        let remote: SocketAddr = parse_addr(remote, Ipv4Addr::UNSPECIFIED, config::MANAGEMENT_PORT)
            .map(SocketAddr::V4)?;
        if remote.ip().is_unspecified() {
            return Err(api(400, "remote address must name a manager's IP address"));
        }
        let (listen, advertise) = self.addresses(&e, Some(remote))?;
        let key: u64 = rand::random();
        let req = AppReq::Join {
            key,
            hostname: hostname(),
            addr: advertise,
            gossip_port: self.gossip_port,
        };
        let answer = self
            .rt
            .block_on(crate::cluster::call_app(
                remote,
                tok,
                rpc::encode(&req),
                CALL_TIMEOUT,
            ))
            .map_err(|e| match e {
                crate::cluster::ClusterError::Denied(_) => api(400, BAD_TOKEN),
                other => api(
                    503,
                    format!("could not reach the manager at {remote}: {other}"),
                ),
            })?;
        let j = match rpc::decode::<AppResp>(&answer).map_err(|e| api(502, e))? {
            AppResp::Joined(j) => j,
            AppResp::Error { status, message } => return Err(api(status, message)),
            other => return Err(api(502, format!("unexpected answer {other:?}"))),
        };
        let cfg = SwarmConfig {
            cluster_id: j.cluster_id,
            created: j.created,
            key,
            generation: 0,
            role: j.role,
            secret: j.secret,
            worker_token: j.worker_token,
            manager_token: j.manager_token,
            listen,
            advertise,
            gossip_port: self.gossip_port,
            data_path_port: j.data_path_port,
            managers: j.managers,
            seeds: j.seeds,
        };
        let _ = std::fs::remove_dir_all(self.dir.join(config::RAFT_DIR));
        config::save(&self.dir, &cfg).map_err(|e| api(500, e.to_string()))?;
        let role = cfg.role;
        let me = SocketAddr::V4(cfg.advertise);
        let snapshot = cfg.clone();
        if let Err(e) = self.activate(cfg, Mode::Join) {
            let _ = self.deactivate_after_failure();
            return Err(e);
        }
        if role == Role::Manager {
            self.become_voter(&snapshot, me)?;
            self.confirm_voter();
        }
        Ok(())
    }

    /// Note that this manager is a voter now.
    fn confirm_voter(&self) {
        if let Some(a) = lock(&self.active).as_mut() {
            a.voter = true;
        }
    }

    /// Whether this manager has been a voter (see `Active::voter`).
    pub(crate) fn is_voter_confirmed(&self) -> bool {
        lock(&self.active).as_ref().is_some_and(|a| a.voter)
    }

    /// Follow a role change the managers made: a promoted worker starts its Raft, serves
    /// the management port and asks to be a voter; a demoted manager (out of the
    /// voters) stops them. Runs on a blocking thread (it waits on the runtime).
    pub(crate) fn sync_role(self: &Arc<Self>, promoted: bool) {
        let _change = lock(&self.change);
        let Ok((mut cfg, m, _)) = self.current() else {
            return;
        };
        if promoted && m.is_none() {
            if let Ok(AppResp::Tokens { worker, manager }) =
                self.rt.block_on(super::ask_managers(&cfg, &AppReq::Tokens))
            {
                cfg.worker_token = worker;
                cfg.manager_token = manager;
            }
            cfg.role = Role::Manager;
            let started = self
                .start_manager(&cfg, Mode::Join)
                .map(Arc::new)
                .and_then(|m| Ok((m.clone(), self.serve(&cfg, m)?)));
            let (m, server) = match started {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e.message, "promoted, but the manager did not start");
                    return;
                }
            };
            if let Some(a) = lock(&self.active).as_mut() {
                a.manager = Some(m);
                a.server = Some(server);
                a.cfg = cfg.clone();
            }
            let _ = config::save(&self.dir, &cfg);
            match self.become_voter(&cfg, SocketAddr::V4(cfg.advertise)) {
                Ok(()) => self.confirm_voter(),
                Err(e) => tracing::warn!(error = %e.message, "promoted, but not a voter yet"),
            }
            tracing::info!("promoted to a manager");
        } else if !promoted && m.is_some() {
            drop(m);
            let (m, server) = match lock(&self.active).as_mut() {
                Some(a) => {
                    a.voter = false;
                    a.cfg.role = Role::Worker;
                    a.cfg.worker_token.clear();
                    a.cfg.manager_token.clear();
                    cfg = a.cfg.clone();
                    (a.manager.take(), a.server.take())
                }
                None => return,
            };
            if let Some(s) = server {
                s.abort();
            }
            if let Some(m) = m.and_then(|m| Arc::try_unwrap(m).ok()) {
                let _ = self.rt.block_on(m.shutdown());
            }
            let _ = std::fs::remove_dir_all(self.dir.join(config::RAFT_DIR));
            let _ = config::save(&self.dir, &cfg);
            tracing::info!("demoted to a worker");
        }
    }

    /// Ask the managers to make this manager a voter (its Raft runs and listens).
    fn become_voter(&self, cfg: &SwarmConfig, me: SocketAddr) -> Result<(), ApiError> {
        let deadline = std::time::Instant::now() + ADD_MANAGER_TIMEOUT;
        let req = AppReq::AddManager {
            key: cfg.key,
            addr: me,
        };
        let mut others = cfg.clone();
        others.managers.retain(|m| m.key != cfg.key);
        loop {
            let r = self.rt.block_on(super::ask_managers(&others, &req));
            match r {
                Ok(AppResp::Done) => return Ok(()),
                Ok(AppResp::Error { message, .. }) | Err(ApiError { message, .. })
                    if std::time::Instant::now() >= deadline =>
                {
                    return Err(api(
                        503,
                        format!("joined, but not made a voter yet: {message}"),
                    ));
                }
                _ if std::time::Instant::now() >= deadline => {
                    return Err(api(503, "joined, but not made a voter yet"));
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Undo a failed init or join: stop what started, forget the swarm.
    fn deactivate_after_failure(&self) -> Result<(), ApiError> {
        self.stop_active(false);
        config::remove(&self.dir).map_err(|e| api(500, e.to_string()))
    }

    /// Stop the swarm's tasks; with `goodbye`, leave the gossip cluster first.
    pub(crate) fn stop_active(&self, goodbye: bool) {
        *lock(&self.applier_source) = None;
        let _ = self.wake.try_send(());
        let active = lock(&self.active).take();
        let Some(a) = active else { return };
        self.daemon.set_swarm(None);
        if goodbye {
            self.rt.block_on(a.gossip.leave());
        } else {
            a.gossip.stop();
        }
        a.refresher.abort();
        if let Some(s) = a.server {
            s.abort();
        }
        if let Some(m) = a.manager {
            match Arc::try_unwrap(m) {
                Ok(m) => {
                    let _ = self.rt.block_on(m.shutdown());
                }
                Err(_) => tracing::warn!("the manager is still in use; not shut down"),
            }
        }
        self.daemon.remote_endpoints_clear();
    }

    /// `swarm leave [--force]`.
    pub(crate) fn leave(&self, force: bool) -> Result<(), ApiError> {
        let _change = lock(&self.change);
        let (_, m, _) = self.current()?;
        if let Some(m) = &m
            && !force
        {
            let st = m.state();
            let managers = st
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .count();
            return Err(api(
                503,
                if managers <= 1 {
                    "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".to_string()
                } else {
                    format!(
                        "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.",
                        managers - 1
                    )
                },
            ));
        }
        let busy = self.daemon.local_swarm_endpoints();
        if !busy.is_empty() {
            let mut names: Vec<String> = busy.into_iter().map(|(_, e)| e.name).collect();
            names.sort();
            names.dedup();
            return Err(api(
                409,
                format!(
                    "sandboxes {} are attached to swarm networks: remove them before leaving the swarm",
                    names.join(", ")
                ),
            ));
        }
        self.stop_active(true);
        config::remove(&self.dir).map_err(|e| api(500, e.to_string()))
    }

    /// The node `id` names: its key, a unique prefix of its ID, its hostname, or `self`.
    pub(crate) fn resolve_node(&self, st: &ClusterState, id: &str) -> Result<u64, ApiError> {
        let (cfg, _, _) = self.current()?;
        if id == "self" {
            return Ok(cfg.key);
        }
        let hits: Vec<u64> = st
            .nodes
            .iter()
            .filter(|(k, n)| config::node_id(**k).starts_with(id) || n.hostname == id)
            .map(|(k, _)| *k)
            .collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(api(404, format!("node {id} not found"))),
            _ => Err(api(
                404,
                format!("node {id} is ambiguous ({} matches found)", hits.len()),
            )),
        }
    }

    /// `node rm [--force]`.
    pub(crate) fn node_remove(&self, id: &str, force: bool) -> Result<(), ApiError> {
        let (_, m, _) = self.current()?;
        let m = m.ok_or_else(|| api(503, super::NOT_MANAGER))?;
        let st = m.state();
        let key = self.resolve_node(&st, id)?;
        let info = &st.nodes[&key];
        let nid = config::node_id(key);
        if info.role == Role::Manager {
            return Err(api(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {nid} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
                ),
            ));
        }
        if !force && self.node_live(key) {
            return Err(api(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {nid} is not down and can't be removed"
                ),
            ));
        }
        self.rt
            .block_on(m.propose(Command::RemoveNode { node: key }))
            .map(|_| ())
            .map_err(cluster_api)
    }

    /// Whether gossip holds node `key` alive.
    pub(crate) fn node_live(&self, key: u64) -> bool {
        lock(&self.active)
            .as_ref()
            .is_some_and(|a| lock(a.gossip.shared()).members.contains_key(&key))
    }

    /// `node promote` / `node demote`: the role in the state and the Raft voters.
    pub(crate) fn node_set_role(&self, id: &str, role: Role) -> Result<(), ApiError> {
        let (_, m, _) = self.current()?;
        let m = m.ok_or_else(|| api(503, super::NOT_MANAGER))?;
        let st = m.state();
        let key = self.resolve_node(&st, id)?;
        let mut info = st.nodes[&key].clone();
        if info.role == role {
            return Ok(());
        }
        if role == Role::Worker {
            let managers = st
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .count();
            if managers <= 1 {
                return Err(api(
                    400,
                    "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
                ));
            }
        }
        info.role = role;
        let (cfg, _, _) = self.current()?;
        // The role first, the voters after: a demoted node that sees itself out of the
        // voters already reads `worker` as its role, and does not take itself for
        // promoted again.
        self.rt
            .block_on(m.propose(Command::SetNode { node: key, info }))
            .map_err(cluster_api)?;
        if role == Role::Worker {
            // The voters change on the leader: here, or passed on to it.
            if m.is_leader() {
                self.rt
                    .block_on(m.remove_manager(key))
                    .map_err(cluster_api)?;
            } else {
                match self
                    .rt
                    .block_on(super::ask_managers(&cfg, &AppReq::RemoveManager { key }))?
                {
                    AppResp::Done => {}
                    AppResp::Error { status, message } => return Err(api(status, message)),
                    other => return Err(api(502, format!("unexpected answer {other:?}"))),
                }
            }
        }
        Ok(())
    }
}

/// Node `key` as the API shows it.
fn node_view(inner: &Inner, st: &ClusterState, key: u64, leader: Option<u64>) -> tapnet_api::Node {
    let info = &st.nodes[&key];
    let live = inner.node_live(key);
    let (cfg_created, me) = match inner.current() {
        Ok((c, _, _)) => (c.created.clone(), c.key),
        Err(_) => (now_rfc3339(), 0),
    };
    let role = match info.role {
        Role::Manager => "manager",
        Role::Worker => "worker",
    };
    let mut n = tapnet_api::Node {
        id: config::node_id(key),
        created_at: cfg_created.clone(),
        updated_at: cfg_created,
        ..Default::default()
    };
    n.spec.role = role.into();
    n.spec.availability = "active".into();
    n.description.hostname = info.hostname.clone();
    n.description.platform.os = "linux".into();
    n.description.platform.architecture = std::env::consts::ARCH.into();
    n.description.engine.engine_version = env!("CARGO_PKG_VERSION").into();
    n.status.state = if live || key == me { "ready" } else { "down" }.into();
    n.status.addr = info.data.clone();
    if info.role == Role::Manager {
        n.manager_status = Some(tapnet_api::ManagerStatus {
            leader: leader == Some(key),
            reachability: if live || key == me {
                "reachable"
            } else {
                "unreachable"
            }
            .into(),
            addr: info.addr.clone(),
        });
    }
    n
}

impl crate::daemon::server::SwarmControl for super::Swarm {
    fn init(&self, req: tapnet_api::SwarmInitRequest) -> Result<String, ApiError> {
        let port = u16::try_from(req.data_path_port).map_err(|_| {
            api(
                400,
                format!("data path port {} is out of range", req.data_path_port),
            )
        })?;
        self.inner.init(Enter {
            listen: req.listen_addr,
            advertise: req.advertise_addr,
            data_path_port: port,
        })
    }

    fn join(&self, req: tapnet_api::SwarmJoinRequest) -> Result<(), ApiError> {
        let remote = req
            .remote_addrs
            .first()
            .ok_or_else(|| api(400, "a manager's address is needed to join a swarm"))?
            .clone();
        self.inner.join(
            Enter {
                listen: req.listen_addr,
                advertise: req.advertise_addr,
                data_path_port: 0,
            },
            &remote,
            &req.join_token,
        )
    }

    fn leave(&self, force: bool) -> Result<(), ApiError> {
        self.inner.leave(force)
    }

    fn inspect(&self) -> Result<tapnet_api::Swarm, ApiError> {
        let (cfg, m, _) = self.inner.current()?;
        if m.is_none() {
            return Err(api(503, super::NOT_MANAGER));
        }
        let mut s = tapnet_api::Swarm::default();
        s.cluster.id = cfg.cluster_id.clone();
        s.cluster.created_at = cfg.created.clone();
        s.cluster.updated_at = cfg.created.clone();
        s.cluster.spec.name = "default".into();
        s.cluster.data_path_port = u32::from(cfg.data_path_port);
        s.cluster.default_addr_pool = vec!["10.0.0.0/8".into()];
        s.cluster.subnet_size = 24;
        s.join_tokens.worker = cfg.worker_token.clone();
        s.join_tokens.manager = cfg.manager_token.clone();
        Ok(s)
    }

    fn nodes(&self) -> Result<Vec<tapnet_api::Node>, ApiError> {
        let (_, m, _) = self.inner.current()?;
        let m = m.ok_or_else(|| api(503, super::NOT_MANAGER))?;
        let st = m.state();
        let leader = m.leader();
        Ok(st
            .nodes
            .keys()
            .map(|k| node_view(&self.inner, &st, *k, leader))
            .collect())
    }

    fn node(&self, id: &str) -> Result<tapnet_api::Node, ApiError> {
        let (_, m, _) = self.inner.current()?;
        let m = m.ok_or_else(|| api(503, super::NOT_MANAGER))?;
        let st = m.state();
        let key = self.inner.resolve_node(&st, id)?;
        Ok(node_view(&self.inner, &st, key, m.leader()))
    }

    fn node_remove(&self, id: &str, force: bool) -> Result<(), ApiError> {
        self.inner.node_remove(id, force)
    }

    fn node_update(&self, id: &str, spec: tapnet_api::NodeSpec) -> Result<(), ApiError> {
        let role = match spec.role.as_str() {
            "manager" => Role::Manager,
            "worker" => Role::Worker,
            other => {
                return Err(api(
                    400,
                    format!("invalid role {other:?}: manager or worker"),
                ));
            }
        };
        if !spec.availability.is_empty() && spec.availability != "active" {
            return Err(api(
                400,
                format!(
                    "availability {:?} is not supported: tapnet schedules no tasks",
                    spec.availability
                ),
            ));
        }
        self.inner.node_set_role(id, role)
    }

    fn info(&self) -> tapnet_api::SwarmInfo {
        let a = lock(&self.inner.active);
        let Some(a) = a.as_ref() else {
            return tapnet_api::SwarmInfo::default();
        };
        let st = match &a.manager {
            Some(m) => m.state(),
            None => a.cache.read().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        tapnet_api::SwarmInfo {
            node_id: a.cfg.node_id(),
            node_addr: a.cfg.data_ip().to_string(),
            local_node_state: "active".into(),
            control_available: a.manager.is_some(),
            error: String::new(),
            remote_managers: a
                .cfg
                .managers
                .iter()
                .map(|m| tapnet_api::Peer {
                    node_id: config::node_id(m.key),
                    addr: m.addr.to_string(),
                })
                .collect(),
            nodes: st.nodes.len() as u64,
            managers: st
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .count() as u64,
            cluster: None,
        }
    }
}
