//! The core on the in-memory plumbing: every operation, its error texts and statuses,
//! what is stored and what the plumbing was asked for, rollback when the plumbing fails,
//! and restarts. No root, no kernel: each test takes milliseconds.

mod cni;
mod dns;
mod docker;
mod hostnets;
mod networks;
mod ports;
mod reads;
mod restart;
mod rootless;
mod sandboxes;
mod statedir;
mod swarm;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{AttachSpec, Daemon, DaemonConfig, DaemonError, NetworkSpec};
use crate::daemon::model::{EndpointRecord, NetworkRecord, SandboxRecord};
use crate::daemon::plumbing::MemoryPlumbing;
use crate::daemon::server::ApiError;

/// A daemon on the in-memory plumbing, its state in a directory of its own (removed on
/// drop).
struct Rig {
    dir: PathBuf,
    plumbing: Arc<MemoryPlumbing>,
    daemon: Option<Daemon>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(MemoryPlumbing::new())
    }

    fn with(plumbing: MemoryPlumbing) -> Rig {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tapnet-core-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let plumbing = Arc::new(plumbing);
        let daemon = open(&dir, &plumbing);
        Rig {
            dir,
            plumbing,
            daemon: Some(daemon),
        }
    }

    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is open")
    }

    fn p(&self) -> &MemoryPlumbing {
        &self.plumbing
    }

    /// Stop the daemon and start it again on the same state, with the plumbing a
    /// restart leaves (namespaces and processes stay, the datapath is new).
    fn restart(&mut self) {
        drop(self.daemon.take());
        self.plumbing = Arc::new(self.plumbing.restarted().unwrap());
        self.daemon = Some(open(&self.dir, &self.plumbing));
    }

    fn network(&self, name: &str) -> NetworkRecord {
        self.d().network(name).unwrap().0
    }

    fn create_net(&self, name: &str, subnet: &str) -> NetworkRecord {
        self.d()
            .create_network(
                NetworkSpec {
                    name: name.into(),
                    ipam: vec![super::IpamSpec {
                        subnet: subnet.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                false,
            )
            .unwrap()
    }

    /// A sandbox on `nets` (the default bridge when empty).
    fn sandbox(&self, name: &str, nets: &[&str]) -> SandboxRecord {
        self.d()
            .create_sandbox(Some(name.into()), None, attach(nets), &[])
            .unwrap()
    }

    /// The endpoints of sandbox `name`, in attach order.
    fn endpoints(&self, name: &str) -> Vec<(EndpointRecord, NetworkRecord)> {
        self.d().sandbox(name).unwrap().1
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.daemon.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn open(dir: &std::path::Path, plumbing: &Arc<MemoryPlumbing>) -> Daemon {
    let cfg = DaemonConfig {
        state_dir: dir.to_path_buf(),
    };
    Daemon::open(&cfg, plumbing.clone()).unwrap()
}

fn attach(nets: &[&str]) -> Vec<AttachSpec> {
    nets.iter()
        .map(|n| AttachSpec {
            network: n.to_string(),
            ..Default::default()
        })
        .collect()
}

/// The status and text the API answers an error with.
fn api(e: DaemonError) -> (u16, String) {
    let a = ApiError::from(e);
    (a.status, a.message)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
