//! The daemon's state store: redb, one table per record kind plus the IPAM state, every
//! API call's changes committed in one write transaction (all or nothing), durably,
//! before the call returns.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::{EndpointRecord, NetworkRecord, SandboxRecord};
use super::statedir::{DB_MODE, StateDirError};

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Namespaces of removed sandboxes that may still exist: written with the removal, cleared
/// once the namespace is gone. They tell a restarted daemon which leftover `tapnet-*`
/// namespaces are its own; the others belong to other daemons (other state dirs).
const GONE_NETNS: TableDefinition<&str, &[u8]> = TableDefinition::new("gone_netns");
const IPAM_KEY: &str = "ipam";
const SCHEMA_KEY: &str = "schema";
const SCHEMA: &[u8] = b"1";

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or written.
    #[error("state database {what}: {detail}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The database's error text.
        detail: String,
    },
    /// A stored record does not decode (a newer or damaged file).
    #[error("state database holds an unreadable {table} record {key:?}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Key.
        key: String,
        /// Decoder's message.
        detail: String,
    },
    /// The state directory cannot be used (another user could write it).
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The database file belongs to another user, or is not a plain file.
    #[error(
        "refusing state database {}: {found}; remove it, or choose another state directory",
        path.display()
    )]
    UnsafeFile {
        /// The file.
        path: PathBuf,
        /// What was found.
        found: String,
    },
}

fn dberr<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Db {
        what,
        detail: e.to_string(),
    }
}

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Networks by id.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, EndpointRecord>,
    /// Sandboxes by id.
    pub sandboxes: BTreeMap<String, SandboxRecord>,
    /// The IPAM state, serialized.
    pub ipam: Option<Vec<u8>>,
    /// Namespaces of removed sandboxes that may not have been deleted yet.
    pub gone_netns: Vec<String>,
}

/// One change within a transaction.
#[derive(Debug)]
pub enum Change<'a> {
    /// Insert or replace a network.
    PutNetwork(&'a NetworkRecord),
    /// Delete a network.
    DelNetwork(&'a str),
    /// Insert or replace an endpoint.
    PutEndpoint(&'a EndpointRecord),
    /// Delete an endpoint.
    DelEndpoint(&'a str),
    /// Insert or replace a sandbox.
    PutSandbox(&'a SandboxRecord),
    /// Delete a sandbox.
    DelSandbox(&'a str),
    /// Remember that this namespace (of a sandbox being removed) is ours to delete.
    NetnsGone(&'a str),
}

/// The open database.
pub struct Store {
    db: Database,
}

fn load_table<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
    name: &'static str,
) -> Result<BTreeMap<String, T>, StoreError> {
    let mut out = BTreeMap::new();
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(dberr("open table")(e)),
    };
    for row in table.iter().map_err(dberr("read"))? {
        let (k, v) = row.map_err(dberr("read"))?;
        let key = k.value().to_string();
        let rec = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
            table: name,
            key: key.clone(),
            detail: e.to_string(),
        })?;
        out.insert(key, rec);
    }
    Ok(out)
}

fn put<T: Serialize>(
    txn: &redb::WriteTransaction,
    def: TableDefinition<&str, &[u8]>,
    key: &str,
    rec: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(rec).map_err(dberr("encode"))?;
    txn.open_table(def)
        .map_err(dberr("open table"))?
        .insert(key, bytes.as_slice())
        .map_err(dberr("write"))?;
    Ok(())
}

fn del(
    txn: &redb::WriteTransaction,
    def: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<(), StoreError> {
    txn.open_table(def)
        .map_err(dberr("open table"))?
        .remove(key)
        .map_err(dberr("write"))?;
    Ok(())
}

/// Make the database file `path` private: created with mode [`DB_MODE`] if missing; one
/// found with a wider mode is narrowed to it. Refused if it is not this user's plain file.
fn private_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(dberr("create")(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(dberr("inspect"))?;
    let unsafe_file = |found: String| StoreError::UnsafeFile {
        path: path.to_path_buf(),
        found,
    };
    if !meta.file_type().is_file() {
        return Err(unsafe_file("it is not a plain file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_file(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o777 != DB_MODE {
        tracing::info!(path = %path.display(), mode = format!("{:04o}", meta.mode() & 0o7777), "making the state database private (0600)");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DB_MODE))
            .map_err(dberr("set permissions"))?;
    }
    Ok(())
}

impl Store {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        private_file(path)?;
        let db = Database::create(path).map_err(dberr("open"))?;
        let store = Store { db };
        let txn = store.db.begin_write().map_err(dberr("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(dberr("open table"))?;
            meta.insert(SCHEMA_KEY, SCHEMA).map_err(dberr("write"))?;
            // Create every table so readers never see a missing one.
            txn.open_table(NETWORKS).map_err(dberr("open table"))?;
            txn.open_table(ENDPOINTS).map_err(dberr("open table"))?;
            txn.open_table(SANDBOXES).map_err(dberr("open table"))?;
            txn.open_table(GONE_NETNS).map_err(dberr("open table"))?;
        }
        txn.commit().map_err(dberr("commit"))?;
        Ok(store)
    }

    /// Read everything.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(dberr("begin"))?;
        let ipam = match txn.open_table(META) {
            Ok(t) => t
                .get(IPAM_KEY)
                .map_err(dberr("read"))?
                .map(|v| v.value().to_vec()),
            Err(_) => None,
        };
        Ok(Snapshot {
            networks: load_table(&txn, NETWORKS, "network")?,
            endpoints: load_table(&txn, ENDPOINTS, "endpoint")?,
            sandboxes: load_table(&txn, SANDBOXES, "sandbox")?,
            ipam,
            gone_netns: load_table::<()>(&txn, GONE_NETNS, "gone_netns")?
                .into_keys()
                .collect(),
        })
    }

    /// Apply `changes` and the new IPAM state (if given) in one durable transaction.
    pub fn commit(&self, changes: &[Change<'_>], ipam: Option<&[u8]>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(dberr("begin"))?;
        for c in changes {
            match c {
                Change::PutNetwork(r) => put(&txn, NETWORKS, &r.id, r)?,
                Change::DelNetwork(id) => del(&txn, NETWORKS, id)?,
                Change::PutEndpoint(r) => put(&txn, ENDPOINTS, &r.id, r)?,
                Change::DelEndpoint(id) => del(&txn, ENDPOINTS, id)?,
                Change::PutSandbox(r) => put(&txn, SANDBOXES, &r.id, r)?,
                Change::DelSandbox(id) => del(&txn, SANDBOXES, id)?,
                Change::NetnsGone(name) => put(&txn, GONE_NETNS, name, &())?,
            }
        }
        if let Some(bytes) = ipam {
            txn.open_table(META)
                .map_err(dberr("open table"))?
                .insert(IPAM_KEY, bytes)
                .map_err(dberr("write"))?;
        }
        txn.commit().map_err(dberr("commit"))
    }

    /// Forget namespaces recorded with [`Change::NetnsGone`] that are deleted now. Not
    /// durable by itself (it rides on the next durable commit): an entry that comes
    /// back after a crash names a namespace that no longer exists, which is harmless.
    pub fn forget_netns(&self, names: &[&str]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(dberr("begin"))?;
        txn.set_durability(redb::Durability::None)
            .map_err(dberr("set durability"))?;
        for name in names {
            del(&txn, GONE_NETNS, name)?;
        }
        txn.commit().map_err(dberr("commit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_load_roundtrip_and_delete() {
        let dir = std::env::temp_dir().join(format!("tapnet-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let net = NetworkRecord {
            id: "n1".into(),
            name: "pets".into(),
            ..Default::default()
        };
        let sb = SandboxRecord {
            id: "s1".into(),
            name: "web".into(),
            ..Default::default()
        };
        {
            let s = Store::open(&path).unwrap();
            s.commit(
                &[Change::PutNetwork(&net), Change::PutSandbox(&sb)],
                Some(b"{}"),
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.networks["n1"], net);
        assert_eq!(snap.sandboxes["s1"], sb);
        assert_eq!(snap.ipam.as_deref(), Some(&b"{}"[..]));
        s.commit(
            &[Change::DelSandbox("s1"), Change::NetnsGone("tapnet-s1")],
            None,
        )
        .unwrap();
        let snap = s.load().unwrap();
        assert!(snap.sandboxes.is_empty());
        assert_eq!(snap.gone_netns, ["tapnet-s1"]);
        s.forget_netns(&["tapnet-s1"]).unwrap();
        assert!(s.load().unwrap().gone_netns.is_empty());
        assert_eq!(snap.networks.len(), 1);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
