//! What the server asks of the swarm: the [`SwarmControl`] the daemon hands it, which
//! the swarm and node routes (`swarm_routes`) call.

use tapnet_api::{Node, NodeSpec, Swarm, SwarmInfo, SwarmInitRequest, SwarmJoinRequest};

use super::error::ApiError;

/// What the API asks of the swarm. Blocking calls (the server runs them on blocking
/// threads).
pub trait SwarmControl: Send + Sync {
    /// `POST /swarm/init`: make this node the first manager of a new swarm; its node ID.
    fn init(&self, req: SwarmInitRequest) -> Result<String, ApiError>;
    /// `POST /swarm/join`: join the swarm of `req.remote_addrs` with a join token.
    fn join(&self, req: SwarmJoinRequest) -> Result<(), ApiError>;
    /// `POST /swarm/leave`: leave the swarm (`force`: even as the last manager).
    fn leave(&self, force: bool) -> Result<(), ApiError>;
    /// `GET /swarm`: the cluster and its join tokens (managers only).
    fn inspect(&self) -> Result<Swarm, ApiError>;
    /// `GET /nodes`: every node (managers only).
    fn nodes(&self) -> Result<Vec<Node>, ApiError>;
    /// `GET /nodes/{id}`: one node by ID, unique ID prefix, hostname or `self`.
    fn node(&self, id: &str) -> Result<Node, ApiError>;
    /// `DELETE /nodes/{id}`: forget a node (`force`: even one still up).
    fn node_remove(&self, id: &str, force: bool) -> Result<(), ApiError>;
    /// `POST /nodes/{id}/update`: set a node's role, availability, name and labels.
    fn node_update(&self, id: &str, spec: NodeSpec) -> Result<(), ApiError>;
    /// `GET /info`'s `Swarm`: this node's part in a swarm. Cheap: `_ping` asks it too.
    fn info(&self) -> SwarmInfo;
}

/// Docker's answer on a node that is no swarm manager (503).
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm \
     init\" or \"docker swarm join\" to connect this node to swarm and try again.";
