//! What nodes ask managers on the management port (the cluster RPC's `App` requests),
//! and the value a node publishes for each of its endpoints in a network's gossip
//! table. JSON both: small, rare messages, readable in a capture.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use super::config::KnownManager;
use crate::cluster::{Answer, ClusterState, Command, Role};

/// Largest app message accepted (a cluster state with many networks fits).
pub const MAX_APP: usize = 1 << 20;

/// A request to a manager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AppReq {
    /// Join the swarm (sent with a join token as the credential).
    Join {
        /// The joiner's key.
        key: u64,
        /// Its host name.
        hostname: String,
        /// Its management address.
        addr: SocketAddrV4,
        /// Its gossip port (on the same address).
        gossip_port: u16,
    },
    /// Add this manager to the Raft voters (a joined or promoted manager, once its
    /// Raft runs). Sent with the secret.
    AddManager {
        /// Its key.
        key: u64,
        /// Its management address.
        addr: SocketAddr,
    },
    /// Take this manager out of the Raft voters (a demotion). Sent with the secret.
    RemoveManager {
        /// Its key.
        key: u64,
    },
    /// The join tokens (a promoted manager accepts joins too). Sent with the secret.
    Tokens,
    /// Replicate a command (a worker's address allocation). Sent with the secret.
    Propose(Command),
    /// The cluster state as the manager has applied it. Sent with the secret.
    State,
}

/// A manager's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AppResp {
    /// Welcome.
    Joined(JoinAnswer),
    /// Done.
    Done,
    /// What the command answered.
    Answer(Answer),
    /// The state.
    State(ClusterState),
    /// The join tokens.
    Tokens {
        /// Worker token.
        worker: String,
        /// Manager token.
        manager: String,
    },
    /// Refused, with the HTTP status the API should answer and Docker's text.
    Error {
        /// Status.
        status: u16,
        /// Text.
        message: String,
    },
}

/// What a joining node is told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The swarm's id.
    pub cluster_id: String,
    /// When it was made.
    pub created: String,
    /// The role the token gave.
    pub role: Role,
    /// The members' credential.
    pub secret: String,
    /// Join tokens (for a manager; empty for a worker).
    pub worker_token: String,
    /// Manager join token (for a manager).
    pub manager_token: String,
    /// The swarm's VXLAN port.
    pub data_path_port: u16,
    /// The managers.
    pub managers: Vec<KnownManager>,
    /// Gossip addresses to join through.
    pub seeds: Vec<SocketAddrV4>,
}

/// An endpoint as its node publishes it in its network's table (NetworkDB's
/// `endpoint_table` carries the same: name, aliases, addresses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointValue {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The VTEP it is behind.
    pub vtep: Ipv4Addr,
    /// The sandbox's name.
    pub name: String,
    /// Its aliases on the network.
    pub aliases: Vec<String>,
}

impl EndpointValue {
    /// The table value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From a table value; `None` for one that is not ours (counted by the caller).
    pub fn decode(b: &[u8]) -> Option<EndpointValue> {
        serde_json::from_slice(b).ok()
    }
}

/// Encode a message.
pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

/// Decode a message, refusing oversized ones.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    if b.len() > MAX_APP {
        return Err(format!("message of {} bytes is too large", b.len()));
    }
    serde_json::from_slice(b).map_err(|e| format!("malformed message: {e}"))
}
