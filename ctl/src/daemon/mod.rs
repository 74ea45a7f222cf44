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
use std::time::Duration;

use tapnet_engine::runtime::StageKind;

pub use self::chain::chain;
pub use self::core::{Daemon, DaemonConfig, DaemonError};
use plumbing::OsPlumbing;

/// Name of the API socket inside the state directory.
pub const SOCKET_NAME: &str = "tapnet.sock";

/// How often the daemon looks whether a datapath thread has failed.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// The exit status of a daemon whose datapath failed (`EX_SOFTWARE`): a supervisor
/// (systemd's `Restart=on-failure`, a container runtime's restart policy) starts it
/// again, and the new daemon restores every network and sandbox from its store.
pub const EXIT_DATAPATH_FAILED: u8 = 70;

/// The environment variable of the fault-injection **test hook**: `panic-worker:STAGE`
/// (`rx`, `switch` or `tx`) or `panic-hostnet` makes that datapath thread panic once
/// the daemon has restored its state, so a test can watch the daemon contain it. Not a
/// setting: nothing else reads it, and a daemon never needs it.
pub const FAULT_ENV: &str = "TAPNET_FAULT";

/// Run the daemon in `state_dir` until SIGINT or SIGTERM: restore state, start the
/// datapath (forwarding DNS to the resolvers of the host's `resolv_conf`), serve the API
/// on `<state_dir>/tapnet.sock`. Sandboxes outlive it: their
/// namespaces and persistent TAPs stay, and the next start reattaches them.
///
/// When a datapath thread fails (a worker or the host networking thread panicked), the
/// datapath of every network is gone while the API would go on answering: the daemon
/// notices within [`WATCH_INTERVAL`], stops serving, removes its socket and returns
/// [`RunError::DatapathFailed`] (exit status [`EXIT_DATAPATH_FAILED`]).
pub fn run_daemon(
    state_dir: PathBuf,
    resolv_conf: PathBuf,
    gossip_port: u16,
    docker_plugin: Option<PathBuf>,
) -> Result<(), RunError> {
    match raise_nofile_limit() {
        Ok(n) => tracing::info!(limit = n, "open file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    let cfg = DaemonConfig { state_dir };
    let plumbing = Arc::new(OsPlumbing::start(
        tapnet_engine::runtime::EngineConfig::default(),
        tapnet_engine::hostnet::HostNetConfig {
            resolv_conf,
            ..Default::default()
        },
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
    if let Ok(fault) = std::env::var(FAULT_ENV) {
        inject_fault(&plumbing, &fault);
    }
    let failure = std::sync::OnceLock::new();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            why = datapath_failure(&plumbing) => {
                let _ = failure.set(why);
            }
        }
    };
    // The swarm this node is in (if any) resumes before the API answers.
    let swarm = Arc::new(
        crate::swarm::Swarm::start(daemon.clone(), cfg.state_dir.clone(), gossip_port)
            .map_err(RunError::Swarm)?,
    );
    let services = server::Services {
        swarm: Some(swarm.clone()),
        docker_plugin,
    };
    let served = server::serve_daemon(&socket, daemon, services, shutdown);
    swarm.shutdown();
    served.map_err(RunError::Serve)?;
    drop(reaper);
    let _ = std::fs::remove_file(&socket);
    plumbing.engine().shutdown();
    match failure.into_inner() {
        Some(why) => Err(RunError::DatapathFailed(why)),
        None => Ok(()),
    }
}

/// Wait until a datapath thread has failed; why.
async fn datapath_failure(plumbing: &OsPlumbing) -> String {
    loop {
        if let Some(why) = plumbing
            .engine()
            .failed()
            .or_else(|| plumbing.hostnet().failed())
        {
            return why;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// The fault of [`FAULT_ENV`]'s value `spec`, if it names one.
fn parse_fault(spec: &str) -> Option<Option<StageKind>> {
    match spec.trim() {
        "panic-hostnet" => Some(None),
        "panic-worker:rx" => Some(Some(StageKind::Rx)),
        "panic-worker:switch" => Some(Some(StageKind::Switch)),
        "panic-worker:tx" => Some(Some(StageKind::Tx)),
        _ => None,
    }
}

/// The test hook of [`FAULT_ENV`]: make the datapath thread it names panic.
fn inject_fault(plumbing: &OsPlumbing, spec: &str) {
    eprintln!("tapnet daemon: {FAULT_ENV}={spec}: injecting a fault (a test hook)");
    match parse_fault(spec) {
        Some(Some(stage)) => {
            let _ = plumbing
                .engine()
                .inject_fault(stage, tapnet_engine::runtime::Fault::Panic);
        }
        Some(None) => plumbing.hostnet().inject_panic(),
        None => eprintln!(
            "tapnet daemon: {FAULT_ENV}={spec} names no fault (panic-worker:rx, \
             panic-worker:switch, panic-worker:tx, panic-hostnet): ignored"
        ),
    }
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
    /// The swarm this node was in could not be resumed (its state file is unreadable,
    /// or its ports cannot be bound).
    #[error("swarm: {0:#}")]
    Swarm(anyhow::Error),
    /// The thread that removes rootless sandboxes whose process exited did not start.
    #[error("cannot start the rootless sandbox reaper")]
    Reaper(#[source] std::io::Error),
    /// A datapath thread failed (the text says which, and why): every network's traffic
    /// stopped with it. The state is intact in the store; a new daemon restores it.
    #[error("{0}; exiting with status {EXIT_DATAPATH_FAILED} so a supervisor restarts it")]
    DatapathFailed(String),
}

impl RunError {
    /// The daemon's exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            RunError::DatapathFailed(_) => EXIT_DATAPATH_FAILED,
            _ => 1,
        }
    }
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
    use super::*;

    #[test]
    fn fault_specs() {
        assert_eq!(parse_fault("panic-hostnet"), Some(None));
        assert_eq!(
            parse_fault("panic-worker:switch"),
            Some(Some(StageKind::Switch))
        );
        assert_eq!(parse_fault("panic-worker:nat"), None);
        let e = RunError::DatapathFailed("datapath worker tapnet-w0 panicked: boom".into());
        assert_eq!(e.exit_status(), 70);
        assert_eq!(
            e.to_string(),
            "datapath worker tapnet-w0 panicked: boom; exiting with status 70 so a \
             supervisor restarts it"
        );
    }

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
