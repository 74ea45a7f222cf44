//! openraft's type configuration for the swarm's managers.

use std::io::Cursor;

use super::state::{Answer, Command, StateError};

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
