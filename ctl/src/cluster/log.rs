//! A manager's Raft log, vote and committed index in its redb file.
//!
//! Tables: `raft_log` (index → the entry as JSON), `raft_meta` (`vote`, `committed`,
//! `last_purged`). Every append is one durable transaction; openraft is told the entries
//! are flushed only after it commits.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, OptionalSend, RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{IoResult, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store: a handle on the manager's database (cheap to clone; the clone is the
/// log reader openraft's replication tasks use).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log store over `db`; creates its tables.
    pub(crate) fn new(db: Arc<Database>) -> Result<Self, StorageError> {
        let txn = db.begin_write().logs_write()?;
        txn.open_table(LOG).logs_write()?;
        txn.open_table(META).logs_write()?;
        txn.commit().logs_write()?;
        Ok(Self { db })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().logs_read()?;
        let table = txn.open_table(META).logs_read()?;
        match table.get(key).logs_read()? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).logs_read()?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).logs_write()?;
        let txn = self.db.begin_write().logs_write()?;
        txn.open_table(META)
            .logs_write()?
            .insert(key, bytes.as_slice())
            .logs_write()?;
        txn.commit().logs_write()
    }

    /// Delete the entries with index in `range`.
    fn delete(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError> {
        let txn = self.db.begin_write().logs_write()?;
        {
            let mut table = txn.open_table(LOG).logs_write()?;
            table.retain_in(range, |_, _| false).logs_write()?;
        }
        txn.commit().logs_write()
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let txn = self.db.begin_read().logs_read()?;
        let table = txn.open_table(LOG).logs_read()?;
        let mut out = Vec::new();
        for row in table.range::<u64>(bounds(&range)).logs_read()? {
            let (_, v) = row.logs_read()?;
            out.push(serde_json::from_slice(v.value()).logs_read()?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<u64>> = self.get_meta(LAST_PURGED)?;
        let last = {
            let txn = self.db.begin_read().logs_read()?;
            let table = txn.open_table(LOG).logs_read()?;
            match table.last().logs_read()? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).logs_read()?;
                    Some(e.log_id)
                }
                None => None,
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.get_meta::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let txn = self.db.begin_write().logs_write()?;
        {
            let mut table = txn.open_table(LOG).logs_write()?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).logs_write()?;
                table
                    .insert(e.log_id.index, bytes.as_slice())
                    .logs_write()?;
            }
        }
        txn.commit().logs_write()?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.delete(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &log_id)?;
        self.delete(..=log_id.index)
    }
}
