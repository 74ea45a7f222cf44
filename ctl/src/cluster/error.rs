//! The errors of the cluster's API.

use std::time::Duration;

use super::state::{NodeId, StateError};

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The state machine refused the command (Docker's text).
    #[error(transparent)]
    Refused(#[from] StateError),
    /// No leader is known: an election is under way, or too few managers are reachable.
    #[error(
        "the swarm has no leader: an election is under way or fewer than a majority of the managers are reachable"
    )]
    NoLeader,
    /// The operation must run on the leader, which is another manager.
    #[error("this manager ({me}) is not the leader; the leader is manager {leader}")]
    NotLeader {
        /// This manager.
        me: NodeId,
        /// The leader.
        leader: NodeId,
    },
    /// The manager an operation was sent to is unreachable.
    #[error("manager {0} is unreachable")]
    Unreachable(NodeId),
    /// The write was not committed in time: a majority of the managers is not reachable.
    #[error(
        "the write was not committed within {waited:?}: a majority of the managers is not reachable (it may still be applied if they come back)"
    )]
    NoQuorum {
        /// How long it waited.
        waited: Duration,
    },
    /// The manager has shut down or its Raft failed.
    #[error("the manager's raft stopped: {0}")]
    Stopped(String),
    /// The manager's redb file could not be opened or used.
    #[error("raft storage: {0}")]
    Storage(String),
    /// A management port refused this node's credential (wrong secret or token).
    #[error("{0}")]
    Denied(String),
    /// A call over the management port failed (unreachable, timed out, broken).
    #[error("{0}")]
    Rpc(String),
    /// Another Raft error (membership changes).
    #[error("raft: {0}")]
    Raft(String),
}
