//! Rootless sandboxes: a daemon and `tapnet run` with no privilege at all.
//!
//! A root daemon makes a sandbox's named namespace and persistent TAPs itself. A daemon
//! without root cannot, so for a rootless sandbox the work is split:
//!
//! 1. `tapnet run` asks for the sandbox with `"Rootless": true` in `POST /sandboxes`.
//!    The daemon allocates the endpoints (addresses, MACs, interface names) and commits
//!    them as for any sandbox, but makes no namespace and no TAP. It records the caller's
//!    PID (`SO_PEERCRED`) as the sandbox's owner.
//! 2. `tapnet run` starts a child (`tapnet rootless-init`, a re-exec of the same binary,
//!    so that `unshare(CLONE_NEWUSER)` runs in a fresh single-threaded process) that
//!    enters a new user and network namespace, maps its own uid and gid, and fetches the
//!    interfaces to make: `GET /sandboxes/{id}/interfaces` (`tapnet_api::SandboxInterfaces`).
//! 3. Root in its namespaces, the child creates each TAP (`IFF_VNET_HDR`, not
//!    persistent), sets MAC, MTU, address and default route over netlink, and sends the
//!    TAP fds with `POST /sandboxes/{id}/interfaces` (`tapnet_api::SandboxAdoptRequest`) over the
//!    API socket itself: the fds travel as `SCM_RIGHTS` on the request's bytes. The
//!    server's listener (`server::fdpass`) receives with `recvmsg` and keeps the fds
//!    with the connection, where the handler takes them. The same socket, the same
//!    permission (its mode) and the same peer credentials as every other call: no second
//!    socket to secure and find.
//! 4. The daemon checks each fd with `TUNGETIFF` (a TAP, named as the endpoint's
//!    interface), attaches it to the network's bridge domain like a root sandbox's TAP,
//!    and records the sender (the child) as the owner. The child then starts the command
//!    as its own child and stays as the sandbox's keeper until the command ends.
//!
//! The keeper and the daemon hold the TAPs: the interfaces disappear once the command
//! has ended and the sandbox is removed. A rootless sandbox has no path under
//! `/run/netns`; its `NetnsPath` is `/proc/PID/ns/net` of its owner (the keeper).
//!
//! On restart the daemon's TAP fds are gone, but the keeper's are not: the interfaces
//! live on, with their addresses and routes. Rootless sandboxes whose owner has exited
//! are removed; one whose owner still runs keeps its records and its published ports
//! are bound again, and its keeper, seeing a new socket file, sends the TAPs again
//! (step 3), which the daemon attaches (step 4). While the daemon runs, a reaper thread
//! ([`start_rootless_reaper`]) removes a sandbox within [`ROOTLESS_REAP_INTERVAL`] of
//! its owner's exit, as `tapnet rm` would, and counts it (`rootless_reaped`); dead
//! owners are also swept whenever a new rootless sandbox is created.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tapnet_api::{SandboxInterface, SandboxInterfaces};
use tapnet_nat::portspec::PortMapping;

use super::options::network_mtu;
use super::sandbox::AttachSpec;
use super::{Daemon, DaemonError, Records, Result, State, default_route};
use crate::daemon::chain::chain;
use crate::daemon::model::{EndpointRecord, RootlessOwner, SandboxRecord};
use crate::daemon::plumbing::EndpointPlan;
use crate::daemon::store::Change;

/// The namespace path shown for a rootless sandbox: its owner's.
fn netns_path(owner: &RootlessOwner) -> String {
    format!("/proc/{}/ns/net", owner.pid)
}

impl Daemon {
    /// The path other tools join sandbox `sb`'s namespace by.
    pub fn netns_path(&self, sb: &SandboxRecord) -> String {
        match &sb.rootless {
            Some(owner) => netns_path(owner),
            // A container runtime's namespace (CNI) is known by its path.
            None if sb.netns.starts_with('/') => sb.netns.clone(),
            None => self.plumbing.namespace_path(&sb.netns),
        }
    }

    /// Create a rootless sandbox owned by process `pid` (the caller of the API).
    pub fn create_rootless_sandbox(
        &self,
        name: Option<String>,
        hostname: Option<String>,
        nets: Vec<AttachSpec>,
        ports: &[PortMapping],
        pid: u32,
    ) -> Result<SandboxRecord> {
        let owner = self
            .plumbing
            .process(pid)
            .ok_or(DaemonError::ProcessNotRunning(pid))?;
        self.create_sandbox_as(name, hostname, nets, ports, Some(owner))
    }

    /// The interfaces the process of rootless sandbox `id_or_name` must create, its
    /// default route and its `resolv.conf`.
    pub fn rootless_interfaces(&self, id_or_name: &str) -> Result<SandboxInterfaces> {
        let st = self.view();
        let id = st.sandbox_id(id_or_name)?;
        let sb = &st.sandboxes[&id];
        if sb.rootless.is_none() {
            return Err(DaemonError::NotRootless(sb.name.clone()));
        }
        let mut out = SandboxInterfaces::default();
        for e in bridge_endpoints(&*st, sb) {
            let n = &st.networks[&e.network_id];
            out.interfaces.push(SandboxInterface {
                name: e.ifname.clone(),
                mac_address: e.mac.clone(),
                ip_address: e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                ip_prefix_len: e.prefix_len,
                mtu: network_mtu(n)?,
            });
        }
        if let Some((gw, ifname)) = default_route(sb, &st.endpoints, &st.networks) {
            out.gateway = gw.to_string();
            out.gateway_interface = ifname;
        }
        out.resolv_conf = self
            .resolv_conf_text(sb, &st.endpoints, &st.networks)
            .unwrap_or_default();
        Ok(out)
    }

    /// Attach the TAPs that process `pid` created for rootless sandbox `id_or_name`: one
    /// fd per interface the sandbox has, named in `names`. The sandbox is then owned by
    /// `pid`. Nothing changes if any fd is wrong.
    pub fn adopt_taps(
        &self,
        id_or_name: &str,
        names: Vec<String>,
        fds: Vec<OwnedFd>,
        pid: u32,
    ) -> Result<SandboxRecord> {
        let mut st = self.lock();
        let id = st.sandbox_id(id_or_name)?;
        let mut sb = st.sandboxes[&id].clone();
        if sb.rootless.is_none() {
            return Err(DaemonError::NotRootless(sb.name));
        }
        let eps: Vec<EndpointRecord> = bridge_endpoints(&*st, &sb).cloned().collect();
        if eps.iter().any(|e| st.attached.contains(&e.id)) {
            return Err(DaemonError::HasInterfaces(sb.name));
        }
        if names.len() != fds.len() {
            return Err(DaemonError::FdCount {
                names: names.len(),
                fds: fds.len(),
            });
        }
        let mut taps: Vec<Option<OwnedFd>> = Vec::with_capacity(eps.len());
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        for e in &eps {
            let i =
                names
                    .iter()
                    .position(|n| *n == e.ifname)
                    .ok_or_else(|| DaemonError::NoTapFor {
                        ifname: e.ifname.clone(),
                        sandbox: sb.name.clone(),
                    })?;
            let fd = fds[i]
                .take()
                .ok_or_else(|| DaemonError::InterfaceGivenTwice(e.ifname.clone()))?;
            let actual =
                self.plumbing
                    .tap_name(fd.as_fd())
                    .map_err(|source| DaemonError::BadTap {
                        ifname: e.ifname.clone(),
                        source,
                    })?;
            if actual != e.ifname {
                return Err(DaemonError::WrongTap {
                    ifname: e.ifname.clone(),
                    actual,
                });
            }
            taps.push(Some(fd));
        }
        if let Some(i) = fds.iter().position(Option::is_some) {
            return Err(DaemonError::NoSuchInterface {
                sandbox: sb.name,
                ifname: names[i].clone(),
            });
        }
        let owner = self
            .plumbing
            .process(pid)
            .ok_or(DaemonError::ProcessNotRunning(pid))?;
        for (e, tap) in eps.iter().zip(taps.iter_mut()) {
            let Some(tap) = tap.take() else { continue };
            let plan = EndpointPlan {
                id: &e.id,
                network: &e.network_id,
                iface: st.iface(e)?,
            };
            if let Err(err) = self.plumbing.adopt(&plan, tap) {
                self.detach_all(&mut st, &eps);
                return Err(err.into());
            }
            st.attached.insert(e.id.clone());
        }
        sb.rootless = Some(owner);
        if let Err(err) = self.store.commit(&[Change::PutSandbox(&sb)], None) {
            self.detach_all(&mut st, &eps);
            return Err(err.into());
        }
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        Ok(sb)
    }

    /// Whether user `caller` may hand over rootless sandbox `id_or_name`'s interfaces:
    /// root may, and the user its recorded owner runs as (for a sandbox being re-adopted
    /// after a restart, its keeper's); no one else, not even the daemon's user.
    pub fn check_rootless_caller(&self, id_or_name: &str, caller: u32) -> Result<()> {
        let st = self.view();
        let id = st.sandbox_id(id_or_name)?;
        let sb = &st.sandboxes[&id];
        let Some(owner) = &sb.rootless else {
            return Err(DaemonError::NotRootless(sb.name.clone()));
        };
        match self.plumbing.process_uid(owner) {
            _ if caller == 0 => Ok(()),
            Some(uid) if uid == caller => Ok(()),
            Some(uid) => Err(DaemonError::NotOwner {
                sandbox: sb.name.clone(),
                owner: uid,
                caller,
            }),
            None => Err(DaemonError::ProcessNotRunning(owner.pid)),
        }
    }

    /// Undo the attachments of a refused adoption (best effort: an endpoint the
    /// datapath keeps stays attached, and so in use).
    fn detach_all(&self, st: &mut State, eps: &[EndpointRecord]) {
        for e in eps {
            if !st.attached.contains(&e.id) {
                continue;
            }
            match self.plumbing.detach(&e.id) {
                Ok(()) => {
                    st.attached.remove(&e.id);
                }
                Err(err) => {
                    tracing::warn!(endpoint = %e.id, error = %chain(&err), "could not detach");
                }
            }
        }
    }

    /// Remove every rootless sandbox whose process has exited, as `tapnet rm` would
    /// (records, addresses, published ports, interfaces); returns how many went. The
    /// reaper thread ([`start_rootless_reaper`]) runs this every
    /// [`ROOTLESS_REAP_INTERVAL`].
    pub fn reap_rootless_now(&self) -> usize {
        let mut st = self.lock();
        let dead = self.dead_rootless(&st);
        if dead.is_empty() {
            // Nothing changes (and no view is published).
            return 0;
        }
        self.reap(&mut st, dead)
    }

    /// [`Daemon::reap_rootless_now`] under the state lock already taken.
    pub(super) fn reap_rootless(&self, st: &mut State) -> usize {
        let dead = self.dead_rootless(st);
        self.reap(st, dead)
    }

    /// Rootless sandboxes whose process has exited: ids and names.
    fn dead_rootless(&self, st: &State) -> Vec<(String, String)> {
        st.sandboxes
            .values()
            .filter(|s| {
                s.rootless
                    .as_ref()
                    .is_some_and(|o| !self.plumbing.process_alive(o))
            })
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect()
    }

    /// Remove the `dead` rootless sandboxes; returns how many went.
    fn reap(&self, st: &mut State, dead: Vec<(String, String)>) -> usize {
        let mut reaped = 0;
        for (id, name) in dead {
            match self.drop_sandbox(st, &id) {
                Ok(()) => {
                    reaped += 1;
                    st.rootless_reaped += 1;
                    tracing::info!(sandbox = %name, "removed rootless sandbox: its process is gone")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %name, error = %chain(&e), "could not remove rootless sandbox")
                }
            }
        }
        reaped
    }
}

/// How often the reaper thread looks for rootless sandboxes whose process has exited:
/// a dead sandbox's addresses and host ports are free again within this time (plus one
/// pass). Each pass takes the state lock and reads `/proc/PID/stat` once per rootless
/// sandbox; nothing else.
pub const ROOTLESS_REAP_INTERVAL: Duration = Duration::from_millis(500);

/// The reaper thread ([`start_rootless_reaper`]); dropping it stops the thread and waits
/// for it.
pub struct RootlessReaper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RootlessReaper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start a thread (`tapnet-reaper`) that runs [`Daemon::reap_rootless_now`] every
/// `every` ([`ROOTLESS_REAP_INTERVAL`] for the daemon) until the returned handle is
/// dropped or the daemon is (it holds the daemon weakly). Rootless sandboxes whose
/// process exited are otherwise only removed when another one is created or the daemon
/// restarts.
pub fn start_rootless_reaper(
    daemon: &Arc<Daemon>,
    every: Duration,
) -> std::io::Result<RootlessReaper> {
    let (stop, stopped) = mpsc::channel::<()>();
    let daemon: Weak<Daemon> = Arc::downgrade(daemon);
    let thread = std::thread::Builder::new()
        .name("tapnet-reaper".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(d) = daemon.upgrade() else { break };
                let has_rootless = d.view().sandboxes.values().any(|s| s.rootless.is_some());
                if has_rootless {
                    d.reap_rootless_now();
                }
            }
        })?;
    Ok(RootlessReaper {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Endpoints of `sb` on bridge and overlay networks (those that have an interface).
fn bridge_endpoints<'a>(
    st: &'a impl Records,
    sb: &'a SandboxRecord,
) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
    sb.endpoints.iter().filter_map(|id| {
        let e = st.endpoint_records().get(id)?;
        let driver = &st.network_records().get(&e.network_id)?.driver;
        (driver == "bridge" || driver == super::OVERLAY).then_some(e)
    })
}
