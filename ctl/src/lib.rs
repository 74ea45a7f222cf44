//! tapnet's control plane: the daemon (the CNM core over its plumbing, IPAM, the state
//! store, the API server, rootless sandboxes, published ports).
//!
//! The `tapnet` binary (`src/main.rs` and `src/cli/`) is its command line; `tapnet
//! daemon` runs [`daemon::run_daemon`].

pub mod cluster;
pub mod daemon;
pub mod swarm;
