//! The state machine openraft drives: the [`ClusterState`] in memory, its last snapshot
//! in the manager's redb file.
//!
//! Applied entries are not written to disk one by one: a restarted manager loads its last
//! snapshot and openraft re-applies the log from there up to the committed index (both in
//! the same file). Snapshots are the state as JSON, built every
//! [`ClusterConfig::snapshot_every`](super::ClusterConfig) entries; the log they cover is
//! then purged.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::state::{Answer, ClusterState};
use super::types::{IoResult, Outcome, StorageError, TypeConfig};

const SNAP: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const SNAP_META: &str = "meta";
const SNAP_DATA: &str = "data";

/// The state as applied, shared with the manager's readers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Applied {
    /// The last log id applied.
    pub(crate) last: Option<LogId<u64>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<u64, openraft::BasicNode>,
    /// The state.
    pub(crate) state: ClusterState,
}

/// What a snapshot holds besides openraft's meta.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: ClusterState,
}

/// The state machine store.
pub(crate) struct StateMachineStore {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    built: u64,
}

impl StateMachineStore {
    /// The state machine over `db`, starting from the snapshot stored there, if any.
    pub(crate) fn open(db: Arc<Database>) -> Result<Self, StorageError> {
        let txn = db.begin_write().snap_write()?;
        txn.open_table(SNAP).snap_write()?;
        txn.commit().snap_write()?;
        let mut applied = Applied::default();
        if let Some((meta, data)) = read_snapshot(&db)? {
            let body: SnapshotBody = serde_json::from_slice(&data).snap_read()?;
            applied = Applied {
                last: meta.last_log_id,
                membership: meta.last_membership,
                state: body.state,
            };
        }
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            built: 0,
        })
    }

    /// The shared view of the applied state.
    pub(crate) fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }
}

type Meta = SnapshotMeta<u64, openraft::BasicNode>;

fn read_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
    let txn = db.begin_read().snap_read()?;
    let table = match txn.open_table(SNAP) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e).snap_read(),
    };
    let (Some(meta), Some(data)) = (
        table.get(SNAP_META).snap_read()?,
        table.get(SNAP_DATA).snap_read()?,
    ) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(meta.value()).snap_read()?;
    Ok(Some((meta, data.value().to_vec())))
}

fn write_snapshot(db: &Database, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
    let meta = serde_json::to_vec(meta).snap_write()?;
    let txn = db.begin_write().snap_write()?;
    {
        let mut table = txn.open_table(SNAP).snap_write()?;
        table.insert(SNAP_META, meta.as_slice()).snap_write()?;
        table.insert(SNAP_DATA, data).snap_write()?;
    }
    txn.commit().snap_write()
}

/// Builds a snapshot of the state as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    db: Arc<Database>,
    applied: Applied,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = serde_json::to_vec(&SnapshotBody {
            state: self.applied.state.clone(),
        })
        .snap_write()?;
        let snapshot_id = match self.applied.last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = Meta {
            last_log_id: self.applied.last,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        write_snapshot(&self.db, &meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn lock_err<T>(_: PoisonError<T>) -> StorageError {
    Err::<(), _>("the state lock is poisoned")
        .snap_write()
        .unwrap_err()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        StorageError,
    > {
        let a = self.applied.read().map_err(lock_err)?;
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.applied.write().map_err(lock_err)?;
        let mut out = Vec::new();
        for e in entries {
            a.last = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Ok(Answer::Done)),
                EntryPayload::Normal(cmd) => {
                    let res = a.state.apply(&cmd);
                    out.push(res);
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Ok(Answer::Done));
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.built += 1;
        let applied = self
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        SnapshotBuilder {
            db: self.db.clone(),
            applied,
            seq: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data).snap_read()?;
        write_snapshot(&self.db, meta, &data)?;
        let mut a = self.applied.write().map_err(lock_err)?;
        *a = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: body.state,
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(read_snapshot(&self.db)?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
