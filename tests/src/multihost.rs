//! A cluster of `tapnet daemon`s on one machine, each standing for a host, for the swarm's
//! end-to-end tests.
//!
//! [`Cluster::new`] (root) builds the underlay: a "wire" network namespace holding a
//! kernel bridge, and one namespace per host (`tn-h<k>-<uniq>`) joined to the bridge by a
//! veth pair (`eth0` in the host, `h<k>` on the bridge), addressed `192.168.<x>.<k>/24`,
//! with `x` drawn per cluster so that concurrent runs do not look alike. Each host runs its
//! own daemon in its namespace, with its own hostname (a UTS namespace: `tn-h<k>-<uniq>`),
//! state directory and resolv.conf. The CLI talks to it with `--state-dir`.
//!
//! [`Cluster::loopback`] is the variant without namespaces: every daemon in the caller's
//! network namespace, host `k` at `127.0.0.<k>` (the whole of 127/8 is the loopback's), as
//! the caller's user. It cannot cut a host's link ([`Host::link`] panics there), and the
//! daemons share the machine's ports: a swarm on it needs each node to bind its advertise
//! address only.
//!
//! [`Cluster::rootless_loopback`] (root) is that layout without privilege: the daemons,
//! the CLI and `tapnet run` run as the unprivileged user [`rootless::USER`] (rootless
//! sandboxes), all in one fresh network namespace with `lo` up (`tn-lo-<uniq>`, so that
//! their 127.0.0.k traffic stays there), each daemon with a hostname of its own. Each is
//! spawned as root into the namespaces, then drops to the user before it runs.
//! [`Host::run_detached`] starts a `tapnet run` in the background; the cluster stops
//! them (SIGTERM, then SIGKILL by PID) before the daemons.
//!
//! The daemon is the `tapnet` binary of this build: `TAPNET_BIN` if set, else the one
//! next to the test executable, built first by `cargo build -p tapnet-ctl --bin tapnet`
//! (once per test process), so that the test never runs a stale daemon.
//!
//! Everything is bounded in time (a command: [`CMD_LIMIT`]; a daemon's start: 20 s;
//! [`eventually`]: its deadline). [`Drop`] removes what the cluster made, also when a
//! test panics: the daemons by PID (SIGTERM, SIGKILL after 5 s), the sandboxes' namespaces
//! (read from each daemon's state database once it is down), the hosts' and the wire's
//! namespaces (their interfaces go with them) and the state directories
//! (`TAPNET_E2E_KEEP` set: the directories stay, for the logs).

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tapnet_engine::sys::netns::NetNs;

use self::rootless::{Detached, RunAs};

pub mod rootless;

/// How long one command may take before the test calls it hung.
pub const CMD_LIMIT: Duration = Duration::from_secs(60);

/// How long a daemon may take to answer on its socket after it started.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long building the `tapnet` binary may take.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Whether the test can build namespaces (root). Not root, it prints why the test is
/// skipped and returns false, except under CI (`CI` set), which runs as root: there it
/// fails.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root (network namespaces, TAP devices), and CI runs as root"
        );
        eprintln!("{test}: skipped, it needs root (network namespaces, TAP devices)");
    }
    root
}

/// Run `cmd` to completion with its output captured; a command still running after
/// `limit` is killed (by its PID) and the test fails, rather than hanging.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    run_within(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` to completion with its output captured; still running after `limit`, it
/// is killed (by its PID) and the answer is an error.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {cmd:?}: {e}")),
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            // Its grandchildren may hold the pipes: the readers are left to end alone.
            return Err(format!("{cmd:?} did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// Runs `check` until it returns `Ok`, for up to `limit` (a pause of 200 ms between
/// tries); past it, the test fails with `what` and the last error.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not so within {limit:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The `tapnet` binary the daemons and the CLI run.
pub fn tapnet_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TAPNET_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(p) => p.to_string(),
            None => "dev".to_string(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let out = output_within(
            Command::new(cargo)
                .args(["build", "--quiet", "-p", "tapnet-ctl", "--bin", "tapnet"])
                .args(["--profile", &profile])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR")),
            BUILD_LIMIT,
        );
        assert!(
            out.status.success(),
            "building tapnet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("tapnet")
    })
    .clone()
}

/// How the hosts are laid out.
enum Underlay {
    /// Namespaces on a bridge in the wire namespace.
    Bridge {
        /// The wire namespace (bridge `br0`, a port `h<k>` per host).
        wire: NetNs,
    },
    /// Every daemon in the caller's namespace, on 127.0.0.k.
    Loopback,
    /// Every daemon in one namespace of the cluster's, on 127.0.0.k, as the test user.
    Rootless {
        /// The namespace (`lo` up).
        ns: NetNs,
    },
}

/// Hosts on one underlay, each with its daemon.
pub struct Cluster {
    hosts: Vec<Host>,
    underlay: Underlay,
}

impl Cluster {
    /// `n` hosts (1 to 250) in namespaces on a bridge, each running a daemon (root only).
    pub fn new(n: usize) -> Cluster {
        assert!((1..=250).contains(&n), "1 to 250 hosts");
        let uniq = uniq();
        // 192.168.<x>.0/24: x in 16..=239, from the pid and the cluster count.
        let x = 16 + ((std::process::id() as usize + uniq.1 as usize * 37) % 224) as u8;
        let wire = NetNs::create(&format!("tn-w-{}", uniq.0))
            .unwrap_or_else(|e| panic!("create the wire namespace: {e}"));
        let wire_name = wire.name().to_string();
        let mut cluster = Cluster {
            hosts: Vec::new(),
            underlay: Underlay::Bridge { wire },
        };
        ip(&["-n", &wire_name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &wire_name, "link", "set", "br0", "up"]);
        for k in 1..=n {
            let name = format!("tn-h{k}-{}", uniq.0);
            let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
            let port = format!("h{k}");
            let addr = Ipv4Addr::new(192, 168, x, k as u8);
            // The host is pushed before it is wired, so that Drop removes it whatever fails.
            cluster
                .hosts
                .push(Host::new(k, name.clone(), addr, Some(ns)));
            ip(&[
                "-n", &wire_name, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &name,
            ]);
            ip(&[
                "-n", &wire_name, "link", "set", &port, "master", "br0", "up",
            ]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
        }
        for h in &mut cluster.hosts {
            h.wire = Some(wire_name.clone());
            h.start();
        }
        cluster
    }

    /// `n` hosts (1 to 250) without namespaces: daemons in the caller's network namespace,
    /// host `k` at 127.0.0.k, run as the caller's user.
    pub fn loopback(n: usize) -> Cluster {
        assert!((1..=250).contains(&n), "1 to 250 hosts");
        let uniq = uniq();
        let mut cluster = Cluster {
            hosts: Vec::new(),
            underlay: Underlay::Loopback,
        };
        for k in 1..=n {
            let name = format!("tn-h{k}-{}", uniq.0);
            let addr = Ipv4Addr::new(127, 0, 0, k as u8);
            cluster.hosts.push(Host::new(k, name, addr, None));
        }
        for h in &mut cluster.hosts {
            h.start();
        }
        cluster
    }

    /// `n` hosts (1 to 250) on 127.0.0.k in one fresh namespace, each running a daemon
    /// as the unprivileged user [`rootless::USER`] (root only: it makes the namespace and
    /// switches users; fails, saying why, without the user or a 0666 `/dev/net/tun`).
    pub fn rootless_loopback(n: usize) -> Cluster {
        assert!((1..=250).contains(&n), "1 to 250 hosts");
        let uniq = uniq();
        let ns_name = format!("tn-lo-{}", uniq.0);
        let ns = NetNs::create(&ns_name).unwrap_or_else(|e| panic!("create {ns_name}: {e}"));
        let mut cluster = Cluster {
            hosts: Vec::new(),
            underlay: Underlay::Rootless { ns },
        };
        ip(&["-n", &ns_name, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!("tapnet-mh-user-{}", uniq.0));
        let user = std::sync::Arc::new(RunAs::new(dir, &tapnet_bin()));
        for k in 1..=n {
            let name = format!("tn-h{k}-{}", uniq.0);
            let addr = Ipv4Addr::new(127, 0, 0, k as u8);
            let ns = NetNs::open(&ns_name).unwrap_or_else(|e| panic!("open {ns_name}: {e}"));
            let mut h = Host::new(k, name, addr, Some(ns));
            h.shared_ns = true;
            nix::unistd::chown(
                &h.dir,
                Some(nix::unistd::Uid::from_raw(user.uid)),
                Some(nix::unistd::Gid::from_raw(user.gid)),
            )
            .unwrap_or_else(|e| panic!("chown {:?}: {e}", h.dir));
            h.user = Some(user.clone());
            cluster.hosts.push(h);
        }
        for h in &mut cluster.hosts {
            h.start();
        }
        cluster
    }

    /// Host `k` (1-based).
    pub fn host(&self, k: usize) -> &Host {
        self.hosts
            .get(k.wrapping_sub(1))
            .unwrap_or_else(|| panic!("no host {k} (1 to {})", self.hosts.len()))
    }

    /// Every host, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The name of the wire namespace (none on a loopback cluster).
    pub fn wire_netns(&self) -> Option<&str> {
        match &self.underlay {
            Underlay::Bridge { wire } => Some(wire.name()),
            Underlay::Loopback | Underlay::Rootless { .. } => None,
        }
    }

    /// Whether the hosts are namespaces on a bridge (rather than loopback addresses).
    pub fn has_links(&self) -> bool {
        matches!(self.underlay, Underlay::Bridge { .. })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Hosts first (their daemons, sandboxes and namespaces), then the wire or the
        // shared namespace.
        self.hosts.clear();
        match std::mem::replace(&mut self.underlay, Underlay::Loopback) {
            Underlay::Bridge { wire: ns } | Underlay::Rootless { ns } => {
                let _ = ns.delete();
            }
            Underlay::Loopback => {}
        }
    }
}

/// A name part unique to this cluster on the machine (pid and a count), and the count.
fn uniq() -> (String, u32) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    (format!("{}-{n}", std::process::id()), n)
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let o = output_within(Command::new("ip").args(args), CMD_LIMIT);
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A sandbox as `tapnet sandbox inspect` shows it.
#[derive(Clone, Debug)]
pub struct SandboxView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its network namespace's name (under /run/netns); empty for a rootless sandbox
    /// (whose namespace is its process's).
    pub netns: String,
    /// Network name → its IPv4 address there.
    pub ips: Vec<(String, Ipv4Addr)>,
}

impl SandboxView {
    /// Its address on network `net`.
    pub fn ip(&self, net: &str) -> Ipv4Addr {
        self.ips
            .iter()
            .find(|(n, _)| n == net)
            .unwrap_or_else(|| panic!("{} is not on {net}: {self:?}", self.name))
            .1
    }
}

/// One host: a namespace (or a loopback address) and its daemon.
pub struct Host {
    /// 1-based.
    pub index: usize,
    /// The name of its namespace and its hostname: `tn-h<k>-<uniq>`.
    pub name: String,
    /// Its underlay address.
    pub addr: Ipv4Addr,
    /// The daemon's state directory (the logs are `daemon-<start>.log` there).
    pub dir: PathBuf,
    ns: Option<NetNs>,
    /// Whether `ns` is the cluster's (which deletes it), not the host's own.
    shared_ns: bool,
    /// The unprivileged user the daemon and the CLI run as (none: the caller).
    user: Option<std::sync::Arc<RunAs>>,
    /// Background `tapnet run`s ([`Host::run_detached`]).
    detached: Mutex<Detached>,
    /// The wire namespace, for [`Host::link`].
    wire: Option<String>,
    daemon: Mutex<Option<Child>>,
    starts: AtomicU32,
    /// Namespaces of the host's sandboxes seen so far (removed by Drop).
    seen_netns: Mutex<Vec<String>>,
}

impl Host {
    fn new(index: usize, name: String, addr: Ipv4Addr, ns: Option<NetNs>) -> Host {
        let dir = std::env::temp_dir().join(format!("tapnet-mh-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        // The daemon's host resolvers: none that answer (names it does not own fail fast).
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .unwrap_or_else(|e| panic!("write resolv.conf: {e}"));
        Host {
            index,
            name,
            addr,
            dir,
            ns,
            shared_ns: false,
            user: None,
            detached: Mutex::new(Detached::default()),
            wire: None,
            daemon: Mutex::new(None),
            starts: AtomicU32::new(0),
            seen_netns: Mutex::new(Vec::new()),
        }
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("tapnet.sock")
    }

    /// The host's network namespace (none on a loopback cluster; on a rootless one, the
    /// namespace every host shares).
    pub fn netns(&self) -> Option<&NetNs> {
        self.ns.as_ref()
    }

    /// The `tapnet` binary the host runs (on a rootless cluster, the user's copy).
    pub fn bin(&self) -> PathBuf {
        match &self.user {
            Some(u) => u.bin.clone(),
            None => tapnet_bin(),
        }
    }

    /// Whether the daemon and the CLI run as the unprivileged user (rootless sandboxes).
    pub fn is_rootless(&self) -> bool {
        self.user.is_some()
    }

    /// A command run in the host's network namespace (and, for the daemon, with the
    /// host's own hostname); `as_user`: as the host's user, if it has one, with that
    /// user's environment.
    fn command(&self, program: &Path, hostname: bool, as_user: bool) -> Command {
        let mut c = Command::new(program);
        c.stdin(Stdio::null());
        let user = self.user.as_ref().filter(|_| as_user);
        if let Some(u) = user {
            u.env(&mut c);
        }
        let ids = user.map(|u| (u.uid, u.gid));
        let fd = self.ns.as_ref().map(|ns| ns.fd().as_raw_fd());
        let host = hostname.then(|| CString::new(self.name.clone()).expect("a name"));
        if fd.is_none() && host.is_none() && ids.is_none() {
            return c;
        }
        // With no namespace (a loopback host) the hostname is the machine's.
        let host = host.filter(|_| fd.is_some());
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // setns, unshare, sethostname, setgroups, setgid and setuid, async-signal-safe
        // system calls, on a namespace fd that `self.ns` keeps open across the spawn and
        // on a string allocated before the fork. The namespaces are entered while the
        // child is still root, then it drops to the user.
        unsafe {
            c.pre_exec(move || {
                if let Some(fd) = fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(h) = &host {
                    if libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some((uid, gid)) = ids {
                    rootless::become_user(uid, gid)?;
                }
                Ok(())
            });
        }
        c
    }

    /// Starts the daemon (again) on its state directory and waits for its API.
    pub fn start(&self) {
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            slot.is_none(),
            "{}: the daemon is already running",
            self.name
        );
        let n = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let log_path = self.dir.join(format!("daemon-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{log_path:?}: {e}"));
        let log2 = log.try_clone().expect("a second log handle");
        let child = self
            .command(&self.bin(), true, true)
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("daemon")
            .arg("--resolv-conf")
            .arg(self.dir.join("resolv.conf"))
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawn tapnet daemon: {e}", self.name));
        let child = slot.insert(child);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if ping_api(&self.socket()) {
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                *slot = None;
                panic!("{}: the daemon exited ({st}): {}", self.name, self.log());
            }
            if Instant::now() > deadline {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                *slot = None;
                panic!(
                    "{}: the daemon's API did not come up within {START_LIMIT:?}: {}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        let slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(Child::id)
    }

    /// Whether the daemon runs.
    pub fn running(&self) -> bool {
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *slot = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL the daemon, no questions asked (its sandboxes' namespaces stay).
    pub fn kill9(&self) {
        self.remember_sandboxes();
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = slot.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM the daemon and wait, SIGKILL after `grace`; whether it exited by itself.
    pub fn stop(&self, grace: Duration) -> bool {
        self.remember_sandboxes();
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = slot.take() else {
            return true;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        false
    }

    /// Starts the daemon again on the same state directory, in the same namespace: after
    /// [`Host::kill9`], or a graceful stop first (SIGTERM, which it must obey in 10 s).
    pub fn restart(&self) {
        if self.running() {
            assert!(
                self.stop(Duration::from_secs(10)),
                "{}: the daemon did not stop on SIGTERM: {}",
                self.name,
                self.log()
            );
        }
        self.start();
    }

    /// Cuts (`false`) or restores (`true`) the host's link to the bridge: its port on the
    /// wire's side goes down or up.
    pub fn link(&self, up: bool) {
        let wire = self
            .wire
            .as_deref()
            .unwrap_or_else(|| panic!("{}: a loopback host has no link to cut", self.name));
        let port = format!("h{}", self.index);
        ip(&[
            "-n",
            wire,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }

    /// The daemon's output so far (every start).
    pub fn log(&self) -> String {
        (1..=self.starts.load(Ordering::Relaxed))
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("daemon-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    /// `tapnet ARGS` against this host's daemon: (exit code, stdout, stderr); -1 when
    /// killed by a signal.
    pub fn tapnet(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = self.command(&self.bin(), false, true);
        c.arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR");
        let o = output_within(&mut c, CMD_LIMIT);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `tapnet ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.tapnet(args);
        assert_eq!(
            code,
            0,
            "{}: tapnet {} failed ({code}): {out}{err}",
            self.name,
            args.join(" ")
        );
        out
    }

    /// A command run in the host's namespace (on a loopback cluster, the caller's), as
    /// the caller.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let (program, args) = cmd.split_first().expect("a command");
        let mut c = self.command(Path::new(program), false, false);
        c.args(args);
        output_within(&mut c, CMD_LIMIT)
    }

    /// Whether `to` answers one ping from the host's namespace (1 s).
    pub fn pings(&self, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        self.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", &to])
            .status
            .success()
    }

    /// `sandbox` (name or id) as this host's daemon shows it.
    pub fn sandbox(&self, sandbox: &str) -> SandboxView {
        let out = self.ok(&["sandbox", "inspect", sandbox]);
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("sandbox inspect: {e}: {out}"));
        let v = &v[0];
        let netns = named_netns(v["NetnsPath"].as_str().unwrap_or_default()).to_string();
        if !netns.is_empty() {
            self.note_netns(&netns);
        }
        let mut ips = Vec::new();
        if let Some(m) = v["Networks"].as_object() {
            for (net, e) in m {
                if let Some(a) = e["IPAddress"].as_str().and_then(|a| a.parse().ok()) {
                    ips.push((net.clone(), a));
                }
            }
        }
        SandboxView {
            id: v["Id"].as_str().unwrap_or_default().to_string(),
            name: v["Name"].as_str().unwrap_or_default().to_string(),
            netns,
            ips,
        }
    }

    /// Runs `cmd` inside the network namespace of `sandbox` (name or id) of this host's
    /// daemon, with `ip netns exec` (which also mounts the sandbox's resolv.conf).
    pub fn exec_in_sandbox(&self, sandbox: &str, cmd: &[&str]) -> Output {
        let netns = self.sandbox(sandbox).netns;
        assert!(!netns.is_empty(), "{sandbox} has no namespace of its own");
        output_within(
            Command::new("ip").args(["netns", "exec", &netns]).args(cmd),
            CMD_LIMIT,
        )
    }

    /// Starts `tapnet run --name NAME ARGS` on a rootless host in the background (as the
    /// host's user; its
    /// output goes to `run-NAME.log` in the state directory) and waits, up to 30 s,
    /// until sandbox `name` is up: owned by its command's process, whose TAPs arrived.
    /// The cluster stops it at the end (SIGTERM, then SIGKILL).
    pub fn run_detached(&self, name: &str, args: &[&str]) -> SandboxView {
        let log_path = self.dir.join(format!("run-{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{log_path:?}: {e}"));
        let log2 = log.try_clone().expect("a second log handle");
        let run = self
            .command(&self.bin(), false, true)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["run", "--name", name])
            .args(args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawn tapnet run: {e}", self.name));
        let run_pid = run.id();
        let mut detached = self.detached.lock().unwrap_or_else(|e| e.into_inner());
        detached.push_run(run);
        let runs = detached.run_pids();
        drop(detached);
        eventually(
            &format!("{name} up on {}", self.name),
            Duration::from_secs(30),
            || {
                let (code, out, err) = self.tapnet(&["sandbox", "inspect", name]);
                if code != 0 {
                    return Err(err);
                }
                let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
                let v = &v[0];
                // Until `name` exists, inspect finds a sandbox whose id starts with it.
                if v["Name"].as_str() != Some(name) {
                    return Err(format!("not yet: {out}"));
                }
                let owner: u32 = v["NetnsPath"]
                    .as_str()
                    .and_then(|p| p.strip_prefix("/proc/"))
                    .and_then(|p| p.strip_suffix("/ns/net"))
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("not a rootless sandbox: {out}"))?;
                // Owned by `tapnet run` until the command's process took the TAPs.
                if runs.contains(&owner) {
                    return Err(format!("{name} is still tapnet run's ({run_pid})"));
                }
                self.detached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .note_owner(owner as i32);
                Ok(())
            },
        );
        self.sandbox(name)
    }

    fn note_netns(&self, name: &str) {
        let mut seen = self.seen_netns.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.iter().any(|n| n == name) {
            seen.push(name.to_string());
        }
    }

    /// Notes the namespaces of the sandboxes the daemon knows now (best effort, quick).
    fn remember_sandboxes(&self) {
        if !self.running() {
            return;
        }
        let Ok(body) = http_get(&self.socket(), "/sandboxes", Duration::from_secs(5)) else {
            return;
        };
        if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&body) {
            for s in list {
                let p = named_netns(s["NetnsPath"].as_str().unwrap_or_default());
                if !p.is_empty() {
                    self.note_netns(p);
                }
            }
        }
    }
}

/// The name of a namespace under `/run/netns` from a sandbox's `NetnsPath`; empty for
/// any other path (a rootless sandbox's `/proc/PID/ns/net`).
fn named_netns(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((dir, name)) if dir.ends_with("/netns") => name,
        _ => "",
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The background `tapnet run`s remove their sandboxes while the daemon runs.
        self.detached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_all();
        self.stop(Duration::from_secs(5));
        // The daemon is down: its database says which namespaces are its own.
        let mut names = self
            .seen_netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let db = self.dir.join("tapnet.db");
        if db.exists() {
            if let Ok(snap) =
                tapnet_ctl::daemon::store::Store::open(&db).and_then(|store| store.load())
            {
                names.extend(snap.sandboxes.values().map(|s| s.netns.clone()));
                names.extend(snap.gone_netns);
            }
        }
        names.retain(|n| !n.is_empty() && !n.contains('/'));
        names.sort();
        names.dedup();
        for n in names {
            // The sandbox's resolv.conf directory goes with its namespace.
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&n));
            match NetNs::open(&n) {
                Ok(ns) => {
                    let _ = ns.delete();
                }
                // Not a namespace (a half-made one's mount point): remove the file.
                Err(_) => {
                    let path = Path::new("/run/netns").join(&n);
                    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        if let Some(ns) = self.ns.take().filter(|_| !self.shared_ns) {
            let _ = ns.delete();
        }
        if std::env::var_os("TAPNET_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether the daemon on `socket` answers `GET /_ping` with 200.
fn ping_api(socket: &Path) -> bool {
    http_status(socket, "/_ping", Duration::from_secs(2)).is_ok_and(|(s, _)| s == 200)
}

/// The body of a `GET path` answered 200.
fn http_get(socket: &Path, path: &str, timeout: Duration) -> std::io::Result<String> {
    match http_status(socket, path, timeout)? {
        (200, body) => Ok(body),
        (s, _) => Err(std::io::Error::other(format!("GET {path}: {s}"))),
    }
}

/// One `GET path` on a fresh connection (`Connection: close`): status and body (a chunked
/// body is not decoded; the callers ask for small answers sent whole).
fn http_status(socket: &Path, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: tapnet\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not HTTP");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}
