//! Raft between managers over the management port: [`TcpNet`], openraft's network
//! factory, reaches manager `id` at the address its membership entry carries
//! (`BasicNode { addr }`), presenting the cluster secret.
//!
//! Each peer gets one connection, kept between calls (openraft sends a peer one request
//! at a time); a call that fails on a kept connection (the peer restarted) is tried once
//! more on a new one, which Raft's requests allow (they are idempotent). A peer that
//! cannot be connected to, or that is no manager now, is reported unreachable, so openraft
//! backs off. Forwarded client writes use a connection of their own.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::error::ClusterError;
use super::rpc::{CallError, Client, RaftSlot, kind};
use super::state::{Command, NodeId};
use super::types::TypeConfig;
use super::types::{ForwardError, RpcResult, remote_err};
use super::wire::{Failure, Request, Response};

/// The longest a connection attempt to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Raft's network over TCP: the cluster secret, and optionally the slot of this node's
/// management port server, which [`super::Manager::start`] fills with the manager's Raft
/// and [`super::Manager::shutdown`] empties.
#[derive(Clone)]
pub struct TcpNet {
    secret: Arc<str>,
    slot: Option<RaftSlot>,
}

impl TcpNet {
    /// Managers reach each other with `secret` (the credential the management ports
    /// accept as [`super::Access::Member`]).
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: Arc::from(secret.into()),
            slot: None,
        }
    }

    /// Let the manager started on this network fill `slot` (and empty it on shutdown).
    pub fn with_slot(mut self, slot: RaftSlot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The slot given to [`TcpNet::with_slot`].
    pub(crate) fn slot(&self) -> Option<&RaftSlot> {
        self.slot.as_ref()
    }

    /// Send a client write to the manager at `addr` (the leader, as we believe).
    pub(crate) async fn forward(
        &self,
        addr: &str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<ClientWriteResponse<TypeConfig>, ForwardError> {
        let net = |e: CallError| ForwardError::Net(e.into());
        let mut c = Client::connect(addr, &self.secret, timeout.min(CONNECT_TIMEOUT))
            .await
            .map_err(net)?;
        match c.call(&Request::ClientWrite(cmd), timeout).await {
            Ok(Response::ClientWrite(r)) => r.map_err(ForwardError::Raft),
            Ok(r) => Err(ForwardError::Net(ClusterError::Rpc(format!(
                "{addr} answered {} to a client write",
                kind(&r)
            )))),
            Err(e) => Err(net(e)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for TcpNet {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpConnection {
        TcpConnection {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

/// One manager's connection to another over TCP.
pub struct TcpConnection {
    net: TcpNet,
    target: NodeId,
    addr: String,
    client: Option<Client>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl TcpConnection {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, CallError> {
        if let Some(mut c) = self.client.take() {
            match c.call(req, ttl).await {
                Ok(r) => {
                    self.client = Some(c);
                    return Ok(r);
                }
                Err(e @ CallError::Failed { .. }) => {
                    self.client = Some(c);
                    return Err(e);
                }
                // The kept connection broke (the peer restarted?): one more try below.
                Err(_) => {}
            }
        }
        let mut c = Client::connect(&self.addr, &self.net.secret, ttl.min(CONNECT_TIMEOUT)).await?;
        let r = c.call(req, ttl).await;
        if matches!(r, Ok(_) | Err(CallError::Failed { .. })) {
            self.client = Some(c);
        }
        r
    }

    fn transport<E: std::error::Error>(
        &self,
        e: CallError,
    ) -> RPCError<NodeId, BasicNode, openraft::error::RaftError<NodeId, E>> {
        match e {
            CallError::Connect { .. }
            | CallError::Failed {
                failure: Failure::NoRaft,
                ..
            } => RPCError::Unreachable(Unreachable::new(&e)),
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(
        &self,
        r: &Response,
    ) -> RPCError<NodeId, BasicNode, openraft::error::RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&Msg(format!(
            "manager {} at {} answered {}",
            self.target,
            self.addr,
            kind(r)
        ))))
    }
}

impl RaftNetwork<TypeConfig> for TcpConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let req = Request::AppendEntries(rpc);
        match self.call(&req, option.hard_ttl()).await {
            Ok(Response::AppendEntries(r)) => r.map_err(|e| remote_err(self.target, e)),
            Ok(r) => Err(self.unexpected(&r)),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let req = Request::InstallSnapshot(rpc);
        match self.call(&req, option.hard_ttl()).await {
            Ok(Response::InstallSnapshot(r)) => r.map_err(|e| remote_err(self.target, e)),
            Ok(r) => Err(self.unexpected(&r)),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let req = Request::Vote(rpc);
        match self.call(&req, option.hard_ttl()).await {
            Ok(Response::Vote(r)) => r.map_err(|e| remote_err(self.target, e)),
            Ok(r) => Err(self.unexpected(&r)),
            Err(e) => Err(self.transport(e)),
        }
    }
}
