//! What a node keeps of its swarm across restarts: `swarm.json` in the daemon's state
//! directory (mode 0600: it holds the cluster secret and, on managers, the join tokens).
//!
//! Written whole to a temporary file, synced and renamed over the old one, so a crash
//! leaves the old file or the new one, never half of one. A node with no file is in no
//! swarm; a file that cannot be read or parsed is an error at start (the daemon refuses
//! to guess its identity rather than make a second one).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::Role;

/// The file's name in the state directory.
pub const FILE: &str = "swarm.json";
/// Where a manager's Raft log and snapshot live, under the state directory.
pub const RAFT_DIR: &str = "swarm-raft";

/// Docker's default ports.
pub const MANAGEMENT_PORT: u16 = 2377;
/// Gossip (UDP here; Docker also listens on TCP for memberlist's push-pull).
pub const GOSSIP_PORT: u16 = 7946;
/// The VXLAN data path.
pub const DATA_PATH_PORT: u16 = 4789;

/// One manager as a node remembers it (where to send writes and joins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownManager {
    /// Its node key.
    pub key: u64,
    /// Its management address.
    pub addr: SocketAddr,
}

/// The persisted swarm membership of this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmConfig {
    /// The swarm's id (shown as `ID` by `GET /swarm`).
    pub cluster_id: String,
    /// When the swarm was made (RFC 3339).
    pub created: String,
    /// This node's key: its Raft id, gossip key and (in hex) its node ID.
    pub key: u64,
    /// Bumped at every start: the gossip identity's generation (a restarted node's
    /// entries replace the ones it had before).
    pub generation: u32,
    /// Its role as last known.
    pub role: Role,
    /// The credential members use between themselves (management port).
    pub secret: String,
    /// The join tokens (managers only; empty on workers).
    pub worker_token: String,
    /// The manager join token (managers only).
    pub manager_token: String,
    /// Where the management port listens.
    pub listen: SocketAddr,
    /// The address other nodes reach this one at (management port).
    pub advertise: SocketAddrV4,
    /// The UDP port of gossip (on the advertise address).
    pub gossip_port: u16,
    /// The swarm's VXLAN port.
    pub data_path_port: u16,
    /// Managers as last known.
    pub managers: Vec<KnownManager>,
    /// Gossip addresses of nodes as last known (seeds for a restart).
    pub seeds: Vec<SocketAddrV4>,
}

impl SwarmConfig {
    /// The node ID shown to users.
    pub fn node_id(&self) -> String {
        node_id(self.key)
    }

    /// The gossip address.
    pub fn gossip_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(*self.advertise.ip(), self.gossip_port)
    }

    /// The VTEP address (the data path).
    pub fn vtep(&self) -> SocketAddrV4 {
        SocketAddrV4::new(*self.advertise.ip(), self.data_path_port)
    }

    /// The data path's IP.
    pub fn data_ip(&self) -> Ipv4Addr {
        *self.advertise.ip()
    }
}

/// The node ID shown for key `key`: 16 hex digits (Docker's are 25 base-36 characters;
/// any unique string does, and prefixes work as in Docker).
pub fn node_id(key: u64) -> String {
    format!("{key:016x}")
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not our format.
    #[error("{path}: not a swarm state file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// The swarm state of the node whose state directory is `dir`, if it is in one.
pub fn load(dir: &Path) -> Result<Option<SwarmConfig>, ConfigError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| ConfigError::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io { path, source }),
    }
}

/// Write `cfg` atomically (see the module docs).
pub fn save(dir: &Path, cfg: &SwarmConfig) -> Result<(), ConfigError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |source| ConfigError::Io {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(cfg).map_err(|e| io(std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Forget the swarm (after a leave): the file and a manager's Raft directory.
pub fn remove(dir: &Path) -> Result<(), ConfigError> {
    let path = dir.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ConfigError::Io { path, source }),
    }
    let raft = dir.join(RAFT_DIR);
    match std::fs::remove_dir_all(&raft) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ConfigError::Io { path: raft, source }),
    }
}
