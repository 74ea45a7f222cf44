//! The swarm's replicated cluster state: swarm-scope networks (VNI, subnet, endpoint
//! addresses), nodes and the data path port, replicated on 1, 3 or 5 managers with Raft
//! (openraft 0.9).
//!
//! - [`state`]: the state machine, plain logic ([`Command`] → [`Answer`] or a Docker
//!   error text), applied identically on every manager;
//! - `log` and `sm_store`: the Raft log, vote, committed index and the last snapshot in
//!   one redb file per manager (`raft.redb` in the manager's directory); a restarted
//!   manager loads its snapshot and re-applies its log;
//! - [`net`]: the network between managers: in process ([`Router`]) or over TCP
//!   ([`TcpNet`], the `tcp` module), each manager's address in its membership entry
//!   (`BasicNode { addr }`);
//! - [`rpc`] (and its wire format, `wire`): the management port (2377/tcp) server and
//!   clients: Raft between managers, forwarded writes, the swarm service's app messages,
//!   credentials checked by the caller;
//! - [`Manager`]: one manager's handle.
//!
//! Writes ([`Manager::propose`]) made on a follower are **forwarded to the leader**; while
//! no leader is known (an election) the write is retried until
//! [`ClusterConfig::write_timeout`], then refused with a clear error ([`ClusterError`]):
//! a minority of managers never hangs a caller.

// openraft's storage and RPC traits return its own error types, which are large; the
// helpers around them return the same types.
#![allow(clippy::result_large_err)]

mod error;
mod log;
pub mod net;
pub mod rpc;
mod sm_store;
pub mod state;
mod tcp;
mod types;
mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tcp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, Config, Raft, RaftMetrics, SnapshotPolicy};

pub use self::error::ClusterError;
use self::log::LogStore;
pub use self::net::{Net, Router};
pub use self::rpc::{
    Accept, Access, AppHandler, BoxFuture, RaftSlot, RpcCounts, RpcStats, call_app, serve,
};
use self::sm_store::{Applied, StateMachineStore};
pub use self::state::{
    Answer, ClusterState, Command, DEFAULT_DATA_PATH_PORT, NetworkSpec, NodeId, NodeInfo, Role,
    StateError, SwarmNetwork,
};
pub use self::tcp::{CONNECT_TIMEOUT, TcpNet};
use self::types::ForwardError;
pub use self::types::{Outcome, RaftHandle, TypeConfig};
pub use self::wire::{MAX_FRAME, MAX_HELLO, MAX_MEMBER_FRAME, decode_untrusted};

/// The file in a manager's directory that holds its log and snapshot.
pub const DB_FILE: &str = "raft.redb";

/// How long [`Manager::shutdown`] waits for Raft's storage tasks to close the database.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A manager's tunables.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Build a snapshot (and purge the log it covers) every this many applied entries.
    pub snapshot_every: u64,
    /// How many entries to keep in the log below a snapshot (lagging followers replay
    /// them instead of receiving the snapshot).
    pub keep_after_snapshot: u64,
    /// The leader's heartbeat.
    pub heartbeat: Duration,
    /// A follower starts an election after a silence drawn from this range.
    pub election_timeout: (Duration, Duration),
    /// How long [`Manager::propose`] waits for a leader and a commit before it fails.
    pub write_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            heartbeat: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1_000), Duration::from_millis(2_000)),
            write_timeout: Duration::from_secs(10),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn raft_err<E: std::fmt::Display>(e: E) -> ClusterError {
    ClusterError::Raft(e.to_string())
}

/// Open the database, waiting (bounded) for a previous manager on the same directory in
/// this process to let go of it.
async fn open_db(path: &Path) -> Result<redb::Database, ClusterError> {
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    loop {
        match redb::Database::create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r.map_err(|e| ClusterError::Storage(format!("{}: {e}", path.display()))),
        }
    }
}

/// One manager: its Raft, its storage, its place on the network.
pub struct Manager {
    id: NodeId,
    raft: RaftHandle,
    net: Net,
    applied: Arc<RwLock<Applied>>,
    config: ClusterConfig,
    /// The database, to see it closed after shutdown (openraft's storage tasks hold it
    /// and end shortly after its core).
    db: Weak<redb::Database>,
}

/// What a single write attempt gave.
enum Attempt {
    Done(Result<Answer, ClusterError>),
    /// Not accepted anywhere; safe to try again.
    Retry(ClusterError),
}

impl Manager {
    /// Start manager `id` with its state in `dir` (created if missing), reachable on
    /// `net`: a [`Router`] (it registers there) or a [`TcpNet`] (its slot, if it carries
    /// one, receives this manager's Raft; otherwise the caller puts [`Manager::raft`] in
    /// the management port's [`RaftSlot`]). A manager that ran before in `dir` resumes
    /// from its snapshot and log.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        net: impl Into<Net>,
        config: ClusterConfig,
    ) -> Result<Manager, ClusterError> {
        let net = net.into();
        std::fs::create_dir_all(dir)
            .map_err(|e| ClusterError::Storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = open_db(&path).await?;
        let db = Arc::new(db);
        let weak = Arc::downgrade(&db);
        let store_err = |e: openraft::StorageError<u64>| ClusterError::Storage(e.to_string());
        let log = LogStore::new(db.clone()).map_err(store_err)?;
        let sm = StateMachineStore::open(db).map_err(store_err)?;
        let applied = sm.applied();
        let raft_config = Config {
            cluster_name: "tapnet-swarm".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election_timeout.0),
            election_timeout_max: millis(config.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .map_err(raft_err)?;
        let raft = Raft::new(id, Arc::new(raft_config), net.clone(), log, sm)
            .await
            .map_err(raft_err)?;
        match &net {
            Net::Local(router) => router.register(id, raft.clone()),
            Net::Tcp(tcp) => {
                if let Some(slot) = tcp.slot() {
                    slot.set(Some(raft.clone()));
                }
            }
        }
        Ok(Manager {
            id,
            raft,
            net,
            applied,
            config,
            db: weak,
        })
    }

    /// This manager's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This manager's Raft handle (for the management port's [`RaftSlot`]).
    pub fn raft(&self) -> RaftHandle {
        self.raft.clone()
    }

    /// Create the cluster with these managers (id, management address `ip:port`; any
    /// text on a [`Router`]) as its voters (on one of them, once).
    pub async fn initialize(&self, members: &[(NodeId, String)]) -> Result<(), ClusterError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(m, addr)| (*m, BasicNode::new(addr)))
            .collect();
        self.raft.initialize(nodes).await.map_err(raft_err)
    }

    /// Add manager `id` (started and reachable at `addr`): first as a learner, which
    /// receives the log (or a snapshot), then as a voter. Runs on the leader only.
    pub async fn add_manager(&self, id: NodeId, addr: &str) -> Result<(), ClusterError> {
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| self.write_err(e))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_err(e))?;
        Ok(())
    }

    /// Take manager `id` out of the cluster (demotion, node removal): a voter or a
    /// learner leaves the membership altogether. Runs on the leader only; removing the
    /// leader itself makes it step down once the change is committed.
    pub async fn remove_manager(&self, id: NodeId) -> Result<(), ClusterError> {
        let membership = self.metrics().membership_config;
        let membership = membership.membership();
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.learner_ids().any(|l| l == id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Ok(());
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.write_err(e))?;
        Ok(())
    }

    fn write_err(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ClusterError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
                Some(leader) => ClusterError::NotLeader {
                    me: self.id,
                    leader,
                },
                None => ClusterError::NoLeader,
            },
            RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
            e => raft_err(e),
        }
    }

    /// Replicate `cmd` and answer what applying it gave. On a follower the write is
    /// forwarded to the leader; while no leader is known it is retried; after
    /// [`ClusterConfig::write_timeout`] it fails ([`ClusterError::NoQuorum`], or the reason
    /// no leader could take it).
    pub async fn propose(&self, cmd: Command) -> Result<Answer, ClusterError> {
        let waited = self.config.write_timeout;
        let deadline = tokio::time::Instant::now() + waited;
        let mut last = ClusterError::NoQuorum { waited };
        loop {
            match tokio::time::timeout_at(deadline, self.attempt(cmd.clone())).await {
                Err(_) => return Err(last),
                Ok(Attempt::Done(r)) => return r,
                Ok(Attempt::Retry(e)) => last = e,
            }
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(50)))
                .await
                .is_err()
            {
                return Err(last);
            }
        }
    }

    async fn attempt(&self, cmd: Command) -> Attempt {
        let done = |r: ClientWriteResponse<TypeConfig>| Attempt::Done(r.data.map_err(Into::into));
        let leader = match self.raft.client_write(cmd.clone()).await {
            Ok(r) => return done(r),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_id,
            Err(e) => return Attempt::Done(Err(self.write_err(e))),
        };
        let Some(leader) = leader.filter(|&l| l != self.id) else {
            return Attempt::Retry(ClusterError::NoLeader);
        };
        let forwarded = match &self.net {
            Net::Local(router) => router.forward(leader, cmd).await,
            Net::Tcp(tcp) => match self.addr_of(leader) {
                Some(addr) => tcp.forward(&addr, cmd, self.config.write_timeout).await,
                None => Err(ForwardError::Net(ClusterError::Unreachable(leader))),
            },
        };
        match forwarded {
            Ok(r) => done(r),
            Err(ForwardError::Net(e)) => Attempt::Retry(e),
            Err(ForwardError::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Attempt::Retry(match f.leader_id {
                    Some(l) => ClusterError::NotLeader {
                        me: leader,
                        leader: l,
                    },
                    None => ClusterError::NoLeader,
                })
            }
            Err(ForwardError::Raft(RaftError::Fatal(_))) => {
                Attempt::Retry(ClusterError::Unreachable(leader))
            }
            Err(ForwardError::Raft(e)) => Attempt::Done(Err(raft_err(e))),
        }
    }

    /// The state as applied on this manager (it may lag the leader by what is in flight).
    pub fn state(&self) -> ClusterState {
        self.applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state
            .clone()
    }

    /// The index of the last log entry applied here.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .map(|l| l.index)
    }

    /// The leader as this manager knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this manager is the leader, as it knows.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// The leader's management address, from the membership, as this manager knows it.
    pub fn leader_addr(&self) -> Option<String> {
        self.leader().and_then(|l| self.addr_of(l))
    }

    /// Manager `id`'s address in the membership.
    fn addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The voters (id, management address) in the membership as this manager knows it.
    pub fn voters(&self) -> Vec<(NodeId, String)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        membership
            .voter_ids()
            .map(|id| {
                let addr = membership.get_node(&id).map(|n| n.addr.clone());
                (id, addr.unwrap_or_default())
            })
            .collect()
    }

    /// openraft's metrics of this manager (state, term, log, snapshot, membership).
    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Leave the network (the router, or the slot of a [`TcpNet`]: unreachable from now)
    /// and stop Raft. The redb file is closed when this returns; a new [`Manager::start`]
    /// on the same directory resumes.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        match &self.net {
            Net::Local(router) => router.unregister(self.id),
            Net::Tcp(tcp) => {
                if let Some(slot) = tcp.slot() {
                    slot.set(None);
                }
            }
        }
        self.raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        drop(self.raft);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while self.db.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Storage(format!(
                    "the database is still in use {CLOSE_TIMEOUT:?} after shutdown"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// A fresh network id (64 hex characters) for [`NetworkSpec::id`].
pub fn new_network_id() -> String {
    crate::daemon::model::new_id()
}
