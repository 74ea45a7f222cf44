//! How managers reach each other: a [`Net`], either the in-process [`Router`] (managers
//! addressed by node id, used by tests and by any process that runs several managers) or
//! [`TcpNet`] (the management port, managers addressed by their membership's
//! `BasicNode { addr }`).
//!
//! Everything a manager sends another is one of four calls (append entries, vote,
//! snapshot, forwarded client write), each with serde-serializable request and response
//! types; the router hands them to the target's Raft handle, `TcpNet` carries them over a
//! connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::error::ClusterError;
use super::state::{Command, NodeId};
use super::tcp::{TcpConnection, TcpNet};
use super::types::{ForwardError, RaftHandle, RpcResult, TypeConfig, remote_err};

/// The network a manager runs on.
#[derive(Clone)]
pub enum Net {
    /// In process.
    Local(Router),
    /// Over the management port.
    Tcp(TcpNet),
}

impl From<Router> for Net {
    fn from(r: Router) -> Self {
        Net::Local(r)
    }
}

impl From<TcpNet> for Net {
    fn from(t: TcpNet) -> Self {
        Net::Tcp(t)
    }
}

impl RaftNetworkFactory<TypeConfig> for Net {
    type Network = NetConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetConnection {
        match self {
            Net::Local(r) => NetConnection::Local(r.new_client(target, node).await),
            Net::Tcp(t) => NetConnection::Tcp(t.new_client(target, node).await),
        }
    }
}

/// A connection on a [`Net`].
pub enum NetConnection {
    /// Through the router.
    Local(Connection),
    /// Over TCP.
    Tcp(TcpConnection),
}

impl RaftNetwork<TypeConfig> for NetConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self {
            NetConnection::Local(c) => c.append_entries(rpc, option).await,
            NetConnection::Tcp(c) => c.append_entries(rpc, option).await,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self {
            NetConnection::Local(c) => c.install_snapshot(rpc, option).await,
            NetConnection::Tcp(c) => c.install_snapshot(rpc, option).await,
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self {
            NetConnection::Local(c) => c.vote(rpc, option).await,
            NetConnection::Tcp(c) => c.vote(rpc, option).await,
        }
    }
}

/// The in-process network: the Raft handle of every reachable manager.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<HashMap<NodeId, RaftHandle>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("manager {0} is unreachable")]
struct Down(NodeId);

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `id` reachable at `raft`.
    pub(crate) fn register(&self, id: NodeId, raft: RaftHandle) {
        self.lock().insert(id, raft);
    }

    /// Make `id` unreachable.
    pub(crate) fn unregister(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    /// Whether `id` is reachable.
    pub fn is_reachable(&self, id: NodeId) -> bool {
        self.lock().contains_key(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, RaftHandle>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: NodeId) -> Option<RaftHandle> {
        self.lock().get(&id).cloned()
    }

    /// Send a client write to manager `target` (the leader, as this manager believes).
    pub(crate) async fn forward(
        &self,
        target: NodeId,
        cmd: Command,
    ) -> Result<ClientWriteResponse<TypeConfig>, ForwardError> {
        let raft = self.get(target).ok_or(ClusterError::Unreachable(target))?;
        raft.client_write(cmd).await.map_err(ForwardError::Raft)
    }
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

/// One manager's view of another through the router.
pub struct Connection {
    router: Router,
    target: NodeId,
}

impl Connection {
    fn raft<E: std::error::Error>(
        &self,
    ) -> Result<RaftHandle, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        self.router
            .get(self.target)
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Down(self.target))))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        remote_err(self.target, e)
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self.raft()?;
        raft.append_entries(rpc).await.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let raft = self.raft()?;
        raft.install_snapshot(rpc).await.map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.raft()?;
        raft.vote(rpc).await.map_err(|e| self.remote(e))
    }
}
