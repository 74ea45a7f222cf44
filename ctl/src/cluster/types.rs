//! openraft's type configuration for the swarm's managers.

use std::io::Cursor;

use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError};

use super::error::ClusterError;
use super::state::{Answer, Command, NodeId, StateError};

/// What applying one log entry answers: the command's result (membership and blank
/// entries answer `Ok(Answer::Done)`).
pub type Outcome = Result<Answer, StateError>;

openraft::declare_raft_types!(
    /// The managers' Raft types: [`Command`]s in, [`Outcome`]s out, `u64` node ids,
    /// snapshots as bytes, the tokio runtime.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A manager's Raft handle.
pub type RaftHandle = openraft::Raft<TypeConfig>;

/// openraft's storage error with our node id.
pub(crate) type StorageError = openraft::StorageError<u64>;

/// Turns redb and codec failures into openraft's storage errors.
pub(crate) trait IoResult<T> {
    /// A failure reading the log.
    fn logs_read(self) -> Result<T, StorageError>;
    /// A failure writing the log.
    fn logs_write(self) -> Result<T, StorageError>;
    /// A failure reading a snapshot.
    fn snap_read(self) -> Result<T, StorageError>;
    /// A failure writing a snapshot.
    fn snap_write(self) -> Result<T, StorageError>;
}

fn io_err<E: std::fmt::Display>(
    e: E,
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

impl<T, E: std::fmt::Display> IoResult<T> for Result<T, E> {
    fn logs_read(self) -> Result<T, StorageError> {
        self.map_err(|e| io_err(e, openraft::ErrorSubject::Logs, openraft::ErrorVerb::Read))
    }
    fn logs_write(self) -> Result<T, StorageError> {
        self.map_err(|e| io_err(e, openraft::ErrorSubject::Logs, openraft::ErrorVerb::Write))
    }
    fn snap_read(self) -> Result<T, StorageError> {
        self.map_err(|e| {
            io_err(
                e,
                openraft::ErrorSubject::Snapshot(None),
                openraft::ErrorVerb::Read,
            )
        })
    }
    fn snap_write(self) -> Result<T, StorageError> {
        self.map_err(|e| {
            io_err(
                e,
                openraft::ErrorSubject::Snapshot(None),
                openraft::ErrorVerb::Write,
            )
        })
    }
}

/// A forwarded write's failure: on the way, or the target's answer.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Not delivered.
    Net(ClusterError),
    /// The target's Raft answered with an error.
    Raft(RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>),
}

impl From<ClusterError> for ForwardError {
    fn from(e: ClusterError) -> Self {
        Self::Net(e)
    }
}

/// What a Raft call over a network answers.
pub(crate) type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// The error for a peer's Raft answering `e`.
pub(crate) fn remote_err<E: std::error::Error>(
    target: NodeId,
    e: RaftError<NodeId, E>,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        // A manager shutting down is as good as unreachable.
        RaftError::Fatal(f) => RPCError::Network(NetworkError::new(&f)),
        e => RPCError::RemoteError(RemoteError::new(target, e)),
    }
}
