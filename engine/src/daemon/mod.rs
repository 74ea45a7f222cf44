//! The daemon: CNM objects, IPAM, drivers, state, API.
//!
//! Desired state (networks, endpoints, sandboxes, IPAM allocations) lives in a redb
//! database and is committed before an API call returns; live state (namespaces, TAPs,
//! engine ports) is then made to match it. On start the daemon reconciles the two, so a
//! crash between the commit and the plumbing is repaired, not lost.

pub mod api;
pub mod backend;
pub mod core;
pub mod ipam;
pub mod model;
pub mod publish;
pub mod rootless;
pub mod sandbox;
pub mod store;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;

pub use self::core::{Daemon, DaemonConfig, Fail};

/// Name of the API socket inside the state directory.
pub const SOCKET_NAME: &str = "tapnet.sock";

/// Run the daemon in `state_dir` until SIGINT or SIGTERM: restore state, start the
/// datapath, serve the API on `<state_dir>/tapnet.sock`. Sandboxes outlive it: their
/// namespaces and persistent TAPs stay, and the next start reattaches them.
pub fn run_daemon(state_dir: PathBuf) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = DaemonConfig {
        state_dir,
        engine: crate::runtime::EngineConfig::default(),
    };
    let daemon = Arc::new(Daemon::open(&cfg)?);
    let socket = cfg.state_dir.join(SOCKET_NAME);
    let backend = Arc::new(backend::DaemonBackend(daemon.clone()));
    eprintln!(
        "tapnet daemon: state in {}, API on {}",
        cfg.state_dir.display(),
        socket.display()
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    api::serve(&socket, backend, shutdown)?;
    let _ = std::fs::remove_file(&socket);
    daemon.engine().shutdown();
    Ok(())
}
