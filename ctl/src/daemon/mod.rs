//! The daemon: CNM objects, IPAM, drivers, state, API.
//!
//! Desired state (networks, endpoints, sandboxes, IPAM allocations) lives in a redb
//! database and is committed before an API call returns; live state (namespaces, TAPs,
//! engine ports) is then made to match it. On start the daemon reconciles the two, so a
//! crash between the commit and the plumbing is repaired, not lost.
//!
//! ```text
//!  server (HTTP API) ──▶ core (decisions, records) ──▶ plumbing ──▶ engine, netns, TAP, /proc
//!                              │                        (OsPlumbing, or MemoryPlumbing in tests)
//!                              └──▶ store (redb), ipam
//! ```

mod chain;
pub mod core;
pub mod ipam;
pub mod model;
pub mod plumbing;
pub mod server;
pub mod statedir;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

pub use self::chain::chain;
pub use self::core::{Daemon, DaemonConfig, DaemonError};
use plumbing::OsPlumbing;

/// Name of the API socket inside the state directory.
pub const SOCKET_NAME: &str = "tapnet.sock";

/// Run the daemon in `state_dir` until SIGINT or SIGTERM: restore state, start the
/// datapath, serve the API on `<state_dir>/tapnet.sock`. Sandboxes outlive it: their
/// namespaces and persistent TAPs stay, and the next start reattaches them.
pub fn run_daemon(state_dir: PathBuf) -> Result<(), RunError> {
    match raise_nofile_limit() {
        Ok(n) => tracing::info!(limit = n, "open file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    let cfg = DaemonConfig { state_dir };
    let plumbing = Arc::new(OsPlumbing::start(
        tapnet_engine::runtime::EngineConfig::default(),
        tapnet_engine::hostnet::HostNetConfig::default(),
    )?);
    let daemon = Arc::new(Daemon::open(&cfg, plumbing.clone())?);
    // Rootless sandboxes whose process exits go within this interval, not at the next
    // restart.
    let reaper = core::start_rootless_reaper(&daemon, core::ROOTLESS_REAP_INTERVAL)
        .map_err(RunError::Reaper)?;
    let socket = cfg.state_dir.join(SOCKET_NAME);
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
    server::serve(&socket, daemon, shutdown).map_err(RunError::Serve)?;
    drop(reaper);
    let _ = std::fs::remove_file(&socket);
    plumbing.engine().shutdown();
    Ok(())
}

/// Why `tapnet daemon` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The datapath did not start.
    #[error(transparent)]
    Start(#[from] plumbing::StartError),
    /// The state could not be opened or restored.
    #[error(transparent)]
    Open(#[from] DaemonError),
    /// The API could not be served (the socket is another daemon's, or cannot be made).
    #[error(transparent)]
    Serve(std::io::Error),
    /// The thread that removes rootless sandboxes whose process exited did not start.
    #[error("cannot start the rootless sandbox reaper")]
    Reaper(#[source] std::io::Error),
}

/// Raise this process's soft limit of open files to its hard limit; returns the limit
/// now in force.
///
/// Host networking holds many sockets: per network up to 1024 TCP, 2048 UDP and 256
/// ICMP flows, and a spliced connection takes 6 fds, against a usual soft limit of 1024
/// (the hard one is often 524288). Raising the soft limit is always allowed; fds above
/// 1024 only trouble `select(2)`, which nothing here uses.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    // SAFETY: all-zero is a valid rlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit, read only by setrlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = want;
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        // Start from a lower soft limit, as a login session usually gives.
        // SAFETY: all-zero is a valid rlimit, then filled by getrlimit.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let hard = lim.rlim_max;
        if hard > 1024 {
            let low = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: hard,
            };
            // SAFETY: `low` is a valid rlimit, read only by setrlimit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        }
        let got = super::raise_nofile_limit().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max, "soft limit not raised");
        assert_eq!((got, lim.rlim_max), (hard, hard));
    }
}
