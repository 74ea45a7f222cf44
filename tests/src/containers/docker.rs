//! A private dockerd ([`Dockerd`]), the network plugin specs it discovers
//! ([`SpecGuard`]) and the busybox image imported into it ([`busybox_image`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::image::{IMPORT_CHANGE, busybox_tar};
use super::sys::{
    HostGuard, alive, binary, cgroup_dirs, end_processes, fresh_dir, last_line, ok_stdout,
    overlay_works, remove_cgroup, run_within, sweep, unmount_under,
};
use crate::multihost::CMD_LIMIT;

/// How long dockerd may take to answer `docker version` after it started.
pub const DOCKERD_START_LIMIT: Duration = Duration::from_secs(60);

/// How long dockerd may take to exit on SIGTERM before it gets SIGKILL. Without
/// live-restore it stops its containers first: a container whose process ignores
/// SIGTERM holds it up for its stop timeout (10 s unless `--stop-timeout`).
pub const DOCKERD_STOP_GRACE: Duration = Duration::from_secs(20);

/// The socket of a system containerd, which dockerd uses instead of starting its own
/// when the socket exists and `--containerd` is not given.
pub const SYSTEM_CONTAINERD: &str = "/run/containerd/containerd.sock";

/// Where dockerd finds network plugins by name from a spec file (`<name>.spec`).
pub const PLUGIN_SPEC_DIR: &str = "/etc/docker/plugins";

/// The Docker client: the distribution's (`/usr/bin/docker`, the same version as the
/// daemon) rather than whatever comes first on PATH.
pub fn docker_bin() -> PathBuf {
    binary(&["/usr/bin/docker"], "docker")
}

/// The daemon binary.
pub fn dockerd_bin() -> PathBuf {
    binary(&["/usr/sbin/dockerd", "/usr/bin/dockerd"], "dockerd")
}

/// The containerd binary (for [`Dockerd::start_with_containerd`]).
fn containerd_bin() -> PathBuf {
    binary(
        &["/usr/bin/containerd", "/usr/sbin/containerd"],
        "containerd",
    )
}

/// How [`Dockerd::start_with`] starts dockerd.
#[derive(Clone, Debug, Default)]
pub struct DockerdOptions {
    /// Start a containerd of the harness's own and give it to dockerd with
    /// `--containerd` (as [`Dockerd::start_with_containerd`]), rather than let dockerd
    /// start its own. Always so when a system containerd's socket exists.
    pub own_containerd: bool,
    /// Further arguments for dockerd, after the harness's (every start): say
    /// `--live-restore`, `--experimental`, `--debug`.
    pub args: Vec<String>,
}

/// A dockerd of the test's own, in the caller's network namespace (root only), with
/// every root of its under a fresh directory `<tmp>/tn-docker-<name>-<pid>-<n>`:
/// `data/` (`--data-root`), `exec/` (`--exec-root`: the containers' network namespaces
/// are mounted at `exec/netns/<id>`, their sandbox keys), `docker.sock`, `docker.pid`,
/// `daemon.json` (as `--config-file`: only the trust key's path, so that dockerd
/// neither reads `/etc/docker/daemon.json` nor writes `/etc/docker/key.json`), `dockerd.log` (every start, appended), `client/`
/// (the client's `DOCKER_CONFIG`).
///
/// dockerd runs with `--iptables=false --ip6tables=false --ip-forward=false
/// --ip-masq=false --bridge=none` (no `docker0`, no firewall or sysctl changes: the
/// networks are `none`, `host` and the plugins'), the `overlay2` storage driver when an
/// overlay mount works in the directory (else, or if dockerd fails to start with it,
/// `vfs`), `--exec-opt native.cgroupdriver=cgroupfs` and a cgroup parent named after the
/// directory (`/tn-docker-...`, removed at the end). It starts its own containerd under
/// `exec/containerd`, unless a system containerd's socket ([`SYSTEM_CONTAINERD`])
/// exists: then the harness starts a containerd of its own as for
/// [`Dockerd::start_with_containerd`], so that the system's is never used.
///
/// [`Drop`] removes every container (`rm -f`), stops dockerd (SIGTERM, SIGKILL after
/// [`DOCKERD_STOP_GRACE`]) and the harness's containerd, ends any process whose command
/// line still names the directory (containerd, the shims) and their descendants by PID,
/// unmounts what is mounted under the directory, removes it and the cgroup parent. A
/// `Dockerd` belongs to a test: kept in a `static`, it would never be dropped.
pub struct Dockerd {
    name: String,
    dir: PathBuf,
    /// The running dockerd.
    child: Option<Child>,
    /// The containerd the harness started (none: dockerd's own).
    containerd: Option<Child>,
    driver: &'static str,
    cgroup_parent: String,
    /// The caller's further arguments ([`DockerdOptions::args`]).
    extra: Vec<String>,
    starts: u32,
    _host: HostGuard,
}

impl Dockerd {
    /// Starts dockerd (see [`Dockerd`]); returns once `docker version` answers (up to
    /// [`DOCKERD_START_LIMIT`]). `name`: 1 to 20 of `[A-Za-z0-9_-]`.
    pub fn start(name: &str) -> Result<Dockerd, String> {
        Dockerd::start_with(name, &DockerdOptions::default())
    }

    /// [`Dockerd::start`] on a containerd that the harness starts itself (its roots,
    /// socket and log under `containerd/` in the directory), given to dockerd with
    /// `--containerd`, as a system containerd would be: it outlives dockerd's restarts
    /// (the containers do only with `--live-restore`: without it, a stopping dockerd
    /// stops them).
    pub fn start_with_containerd(name: &str) -> Result<Dockerd, String> {
        let opts = DockerdOptions {
            own_containerd: true,
            ..DockerdOptions::default()
        };
        Dockerd::start_with(name, &opts)
    }

    /// [`Dockerd::start`] with options: the harness's own containerd, more arguments.
    pub fn start_with(name: &str, opts: &DockerdOptions) -> Result<Dockerd, String> {
        let own = opts.own_containerd || Path::new(SYSTEM_CONTAINERD).exists();
        Dockerd::launch(name, own, &opts.args)
    }

    fn launch(name: &str, own_containerd: bool, extra: &[String]) -> Result<Dockerd, String> {
        let host = HostGuard::acquire();
        let dir = fresh_dir("docker", name)?;
        let cgroup_parent = format!(
            "/{}",
            dir.file_name().expect("a directory name").to_string_lossy()
        );
        // From here on, Drop cleans up whatever fails.
        let mut d = Dockerd {
            name: name.to_string(),
            dir,
            child: None,
            containerd: None,
            driver: "vfs",
            cgroup_parent,
            extra: extra.to_vec(),
            starts: 0,
            _host: host,
        };
        for sub in ["data", "exec", "client"] {
            let p = d.dir.join(sub);
            std::fs::create_dir(&p).map_err(|e| format!("create {p:?}: {e}"))?;
        }
        let config = serde_json::json!({ "deprecated-key-path": d.dir.join("key.json") });
        std::fs::write(d.dir.join("daemon.json"), config.to_string())
            .map_err(|e| format!("write daemon.json: {e}"))?;
        if overlay_works(&d.dir) {
            d.driver = "overlay2";
        }
        if own_containerd {
            d.start_containerd()?;
        }
        match d.spawn_and_wait() {
            Ok(()) => Ok(d),
            Err((true, e)) if d.driver == "overlay2" => {
                // dockerd refused overlay2 (an overlayfs under the directory, say): a
                // fresh data root on vfs.
                let data = d.dir.join("data");
                unmount_under(&data);
                let _ = std::fs::remove_dir_all(&data);
                std::fs::create_dir(&data).map_err(|e| format!("create {data:?}: {e}"))?;
                d.driver = "vfs";
                d.spawn_and_wait()
                    .map_err(|(_, e2)| format!("{e}\nand with vfs: {e2}"))?;
                Ok(d)
            }
            Err((_, e)) => Err(e),
        }
    }

    /// Starts the harness's containerd and waits (up to 20 s) until its socket answers.
    fn start_containerd(&mut self) -> Result<(), String> {
        let cdir = self.dir.join("containerd");
        std::fs::create_dir_all(&cdir).map_err(|e| format!("create {cdir:?}: {e}"))?;
        let sock = cdir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {:?}\n",
            cdir.join("root"),
            cdir.join("state"),
            sock
        );
        let conf_path = cdir.join("config.toml");
        std::fs::write(&conf_path, config).map_err(|e| format!("write {conf_path:?}: {e}"))?;
        let log = self.open_log("containerd.log")?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(containerd_bin())
            .arg("--config")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn containerd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&sock).is_ok() {
                self.containerd = Some(child);
                return Ok(());
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "containerd exited ({st}): {}",
                    self.read("containerd.log")
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "containerd's socket did not answer within 20 s: {}",
                    self.read("containerd.log")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn open_log(&self, file: &str) -> Result<std::fs::File, String> {
        let path = self.dir.join(file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("open {path:?}: {e}"))?;
        let _ = writeln!(log, "--- tapnet harness: start {} ---", self.starts + 1);
        Ok(log)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// dockerd's arguments.
    fn args(&self) -> Vec<String> {
        let p = |sub: &str| self.dir.join(sub).to_string_lossy().into_owned();
        let mut a: Vec<String> = [
            "--data-root",
            &p("data"),
            "--exec-root",
            &p("exec"),
            "-H",
            &self.host(),
            "--pidfile",
            &p("docker.pid"),
            "--config-file",
            &p("daemon.json"),
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver",
            self.driver,
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.containerd.is_some() {
            a.push("--containerd".into());
            a.push(p("containerd/containerd.sock"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Spawns dockerd and waits until `docker version` answers; an error says whether
    /// dockerd exited by itself.
    fn spawn_and_wait(&mut self) -> Result<(), (bool, String)> {
        // dockerd reuses its containerd if the pidfile's process exists, and takes a
        // zombie for one (a killed dockerd's containerd dies with it, and an init that
        // does not reap soon leaves it so): then it waits for the socket in vain.
        let pidfile = self.exec_root().join("containerd/containerd.pid");
        if self.containerd.is_none() && pidfile.exists() && self.containerd_pid().is_none() {
            let _ = std::fs::remove_file(&pidfile);
        }
        let log = self.open_log("dockerd.log").map_err(|e| (false, e))?;
        let log2 = log.try_clone().map_err(|e| (false, e.to_string()))?;
        self.starts += 1;
        let mut cmd = Command::new(dockerd_bin());
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for v in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| (false, format!("spawn {cmd:?}: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + DOCKERD_START_LIMIT;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err((true, format!("dockerd exited ({st}): {}", self.log())));
            }
            let v = run_within(
                self.client()
                    .args(["version", "--format", "{{.Server.Version}}"]),
                Duration::from_secs(10),
            );
            if v.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err((
                    false,
                    format!(
                        "dockerd did not answer within {DOCKERD_START_LIMIT:?}: {}",
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `docker` client command for this daemon (`-H` given, the environment's
    /// `DOCKER_HOST`, `DOCKER_CONTEXT` and TLS settings removed, `DOCKER_CONFIG` the
    /// harness's): add the arguments, then spawn it as needed (a long `docker run`, `docker
    /// events`).
    pub fn client(&self) -> Command {
        let mut c = Command::new(docker_bin());
        c.arg("-H")
            .arg(self.host())
            .env("DOCKER_CONFIG", self.dir.join("client"));
        for v in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// `docker ARGS` against this daemon, to completion; panics (the test fails) if it
    /// takes over [`CMD_LIMIT`].
    pub fn docker(&self, args: &[&str]) -> Output {
        run_within(self.client().args(args), CMD_LIMIT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker ARGS`: its trimmed stdout if it succeeded, else an error with its stderr
    /// (or that it took over [`CMD_LIMIT`]).
    pub fn docker_ok(&self, args: &[&str]) -> Result<String, String> {
        ok_stdout(
            &format!("docker {}", args.join(" ")),
            run_within(self.client().args(args), CMD_LIMIT),
        )
    }

    /// Stops dockerd (as [`Dockerd::stop`]) and starts it again on the same roots, with
    /// the same arguments; returns once `docker version` answers. After [`Dockerd::kill9`]
    /// it only starts it.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn_and_wait().map_err(|(_, e)| e)
    }

    /// SIGTERM to dockerd, SIGKILL after [`DOCKERD_STOP_GRACE`]; whether it exited by
    /// itself in time (also true when it was not running). Its own containerd goes with
    /// it; the harness's ([`Dockerd::start_with_containerd`]) stays.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let own = self.own_containerd_pid();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + DOCKERD_STOP_GRACE;
        let mut by_itself = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                by_itself = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !by_itself {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_gone(own);
        by_itself
    }

    /// SIGKILL to dockerd (a crash): the shims and the containers stay as they were; the
    /// harness's containerd ([`Dockerd::start_with_containerd`]) too. dockerd's own
    /// containerd gets SIGKILL from the kernel as its parent dies (dockerd starts it with
    /// a parent-death signal), a moment later: this returns once it is gone, or a start
    /// right after could find it still alive, reuse it and wait in vain for its socket.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let own = self.own_containerd_pid();
        let _ = child.kill();
        let _ = child.wait();
        wait_gone(own);
    }

    /// The PID of the containerd dockerd started itself, if it runs (none with the
    /// harness's).
    fn own_containerd_pid(&self) -> Option<u32> {
        if self.containerd.is_some() {
            return None;
        }
        self.containerd_pid()
    }

    /// dockerd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PID of the containerd dockerd uses (the harness's, or dockerd's own from its
    /// pidfile under the exec root), if it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        if let Some(c) = &self.containerd {
            return Some(c.id());
        }
        let pidfile = self.exec_root().join("containerd/containerd.pid");
        std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&p| alive(p))
    }

    /// The harness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding everything of this daemon.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The API address, `unix://<dir>/docker.sock` (`-H`, `DOCKER_HOST`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// `--exec-root` (the sandboxes' namespaces are mounted in `netns/` there).
    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }

    /// `--data-root`.
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The storage driver in use: `overlay2` or `vfs`.
    pub fn storage_driver(&self) -> &str {
        self.driver
    }

    /// The containers' cgroup parent (`--cgroup-parent`), a path from the hierarchies'
    /// roots.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// dockerd's output so far, every start.
    pub fn log(&self) -> String {
        self.read("dockerd.log")
    }

    /// Writes `<PLUGIN_SPEC_DIR>/<name>.spec` holding `url` (`unix:///path/x.sock`, or
    /// `tcp://host:port`), so that dockerd finds network plugin `name` (Docker's plugin
    /// discovery reads `/run/docker/plugins/<name>.sock`, then `*.spec` and `*.json` in
    /// `/etc/docker/plugins` and `/usr/lib/docker/plugins`). Creates the directory if
    /// needed; the guard removes the file, and the directories it created if they are
    /// empty. Panics if a spec of that name exists (not the test's to replace) or cannot
    /// be written. Every dockerd of the machine sees it: give it a name of the test's.
    pub fn plugin_spec(name: &str, url: &str) -> SpecGuard {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "plugin name {name:?}: [A-Za-z0-9._-]"
        );
        let mut created = Vec::new();
        for d in ["/etc/docker", PLUGIN_SPEC_DIR] {
            let d = PathBuf::from(d);
            if !d.exists() {
                std::fs::create_dir(&d).unwrap_or_else(|e| panic!("create {d:?}: {e}"));
                created.push(d);
            }
        }
        let path = Path::new(PLUGIN_SPEC_DIR).join(format!("{name}.spec"));
        let mut guard = SpecGuard { path, created };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&guard.path)
            .unwrap_or_else(|e| {
                // Not ours to remove.
                let p = std::mem::take(&mut guard.path);
                panic!("create {p:?}: {e}")
            });
        writeln!(f, "{url}").unwrap_or_else(|e| panic!("write {:?}: {e}", guard.path));
        guard
    }

    /// The containers of the daemon, by id.
    fn containers(&self) -> Vec<String> {
        run_within(
            self.client().args(["ps", "-aq", "--no-trunc"]),
            Duration::from_secs(30),
        )
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.containers();
            if !ids.is_empty() {
                let _ = run_within(
                    self.client().args(["rm", "-f"]).args(&ids),
                    Duration::from_secs(60),
                );
            }
        }
        self.stop();
        if let Some(mut c) = self.containerd.take() {
            end_processes(&[c.id()], Duration::from_secs(10));
            let _ = c.wait();
        }
        let mut left = sweep(&self.dir, &[], Duration::from_secs(5));
        remove_cgroup(&self.cgroup_parent);
        if !cgroup_dirs(&self.cgroup_parent).is_empty() {
            left.push(format!("cgroup {} stays", self.cgroup_parent));
        }
        if !left.is_empty() {
            eprintln!("Dockerd {}: cleanup left {left:?}", self.name);
        }
    }
}

/// A network plugin's spec file in [`PLUGIN_SPEC_DIR`] ([`Dockerd::plugin_spec`]),
/// removed on drop.
pub struct SpecGuard {
    path: PathBuf,
    /// Directories the guard created, outermost first.
    created: Vec<PathBuf>,
}

impl SpecGuard {
    /// The spec file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpecGuard {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Imports the busybox root file system ([`super::busybox_tar`]) into `docker` as image
/// `tag`, with command `sh`; its id (`sha256:...`).
pub fn busybox_image(docker: &Dockerd, tag: &str) -> Result<String, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let tar = docker
        .dir()
        .join(format!("busybox-{}.tar", N.fetch_add(1, Ordering::Relaxed)));
    let imported = busybox_tar(&tar).and_then(|()| {
        let tar = tar.to_string_lossy();
        last_line(docker.docker_ok(&["import", "--change", IMPORT_CHANGE, &tar, tag]))
    });
    let _ = std::fs::remove_file(&tar);
    imported
}

/// Waits (up to 10 s) until `pid`, dockerd's own containerd after dockerd ended, is gone
/// (exited, or a zombie no one reaped yet).
fn wait_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
