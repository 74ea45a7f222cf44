//! Docker's engine as `docker-tcp` runs it: `dockerd` processes started by this process
//! inside a network namespace of their own, on throwaway roots, and an image holding
//! iperf3 staged from the host's own binaries (nothing is pulled).
//!
//! Everything runs inside [`in_private_netns_dir`](crate::daemon_rig::in_private_netns_dir)'s
//! mount namespace: [`PrivateTmpfs`] hides `/etc/docker` (plugin specs, the engine's
//! `key.json`) and `/run/containerd` (the shims' sockets) behind tmpfs mounts that only
//! this thread's mount namespace sees, so the host's files are neither read nor written.
//!
//! [`Dockerd`] on drop (also after a failure) removes every container and the network
//! through the engine, stops `dockerd` by its PID (SIGTERM, SIGKILL after
//! [`STOP_GRACE`]), kills by PID whatever process is left that names its root on its
//! command line (containerd, shims) and their descendants, unmounts every mount under
//! its root (read from `/proc/thread-self/mountinfo`) and removes the root.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tapnet_engine::sys::netns::NetNs;

use crate::proc::{find_program, stop_child};
use crate::swarm_overlay_tcp::{ping_api, run_bounded};
use crate::sys;

/// How long `dockerd` may take to answer on its socket.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long one `docker` CLI call may take (unless told otherwise).
pub(crate) const DOCKER_LIMIT: Duration = Duration::from_secs(120);
/// How long `dockerd` has to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long killed leftovers may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The Docker CLI: `/usr/bin/docker` when there is one (the client packaged beside
/// `/usr/sbin/dockerd`, whatever newer client comes first in `PATH`), else `PATH`'s.
pub(crate) fn docker_client() -> Option<PathBuf> {
    let p = Path::new("/usr/bin/docker");
    if p.is_file() {
        Some(p.to_path_buf())
    } else {
        find_program("docker")
    }
}

/// A directory of this run, removed (after unmounting whatever is mounted under it) on
/// drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("tapnet-perf-{tag}-{}", std::process::id()));
        if p.exists() {
            unmount_under(&p);
            fs::remove_dir_all(&p)
                .with_context(|| format!("removing the stale {}", p.display()))?;
        }
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o711))?;
        Ok(TempDir(p))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        unmount_under(&self.0);
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// A tmpfs over a directory, in this thread's (private) mount namespace only; the
/// directory is made first if it is missing, and then removed again on drop.
pub(crate) struct PrivateTmpfs {
    path: PathBuf,
    made: Option<PathBuf>,
}

impl PrivateTmpfs {
    pub(crate) fn mount(path: &str, mode: &str) -> Result<PrivateTmpfs> {
        let path = PathBuf::from(path);
        // The topmost directory this makes, to remove on drop.
        let made = path
            .ancestors()
            .take_while(|a| !a.exists())
            .last()
            .map(Path::to_path_buf);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let guard = PrivateTmpfs { path, made };
        mount(
            Some("tmpfs"),
            &guard.path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode={mode},size=16m").as_str()),
        )
        .with_context(|| format!("mounting a private tmpfs on {}", guard.path.display()))?;
        Ok(guard)
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("warning: could not unmount {}: {e}", self.path.display());
        }
        if let Some(top) = &self.made {
            // Only directories this made, and only if empty.
            let mut p = self.path.as_path();
            loop {
                let _ = fs::remove_dir(p);
                if p == top {
                    break;
                }
                match p.parent() {
                    Some(q) => p = q,
                    None => break,
                }
            }
        }
    }
}

/// Stage a root file system holding `iperf3` (and the libraries `ldd` lists, with the
/// dynamic loader) and busybox (`sh`, `nc`, `usleep`) under `dir`, and tar it for
/// `docker import`: the tarball's path.
pub(crate) fn stage_image(dir: &Path, iperf: &Path) -> Result<PathBuf> {
    let busybox = find_program("busybox").context("no busybox to put in the image")?;
    let root = dir.join("rootfs");
    let mut files = vec![iperf.to_path_buf()];
    files.extend(ldd_paths(iperf)?);
    files.extend(ldd_paths(&busybox)?);
    for f in &files {
        copy_into(&root, f, f)?;
    }
    copy_into(&root, &busybox, Path::new("/bin/busybox"))?;
    for applet in ["sh", "nc", "usleep", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .with_context(|| format!("linking /bin/{applet}"))?;
    }
    for d in ["tmp", "etc", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let tar = dir.join("image.tar");
    let mut cmd = Command::new(find_program("tar").context("no tar to pack the image")?);
    cmd.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
    let (ok, _, err) = run_bounded(cmd, Duration::from_secs(60), "tar")?;
    if !ok {
        bail!("packing the image with tar failed: {}", err.trim());
    }
    fs::remove_dir_all(&root)?;
    Ok(tar)
}

/// The absolute paths `ldd` lists for `bin` (none for a static binary).
fn ldd_paths(bin: &Path) -> Result<Vec<PathBuf>> {
    let ldd = find_program("ldd").context("no ldd to list iperf3's libraries")?;
    let mut cmd = Command::new(ldd);
    cmd.arg(bin);
    let (ok, out, _) = run_bounded(cmd, Duration::from_secs(30), "ldd")?;
    if !ok {
        // "not a dynamic executable"
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&out))
}

fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let p = match l.split_once("=>") {
                Some((_, r)) => r.trim(),
                None => l,
            };
            let p = p.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// Copy host file `src` (following links) to `dst` inside `root`.
fn copy_into(root: &Path, src: &Path, dst: &Path) -> Result<()> {
    let to = root.join(dst.strip_prefix("/").unwrap_or(dst));
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(src, &to).with_context(|| format!("copying {} into the image", src.display()))?;
    Ok(())
}

/// One `dockerd` process in a network namespace, on roots of its own.
pub(crate) struct Dockerd {
    label: &'static str,
    client: PathBuf,
    root: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Start `dockerd` in `ns` on a fresh `root`: with Docker's default bridge and
    /// iptables rules when `bridge`, else with neither (`--bridge=none --iptables=false
    /// …`). Waits for its API.
    pub(crate) fn start(
        bin: &Path,
        client: &Path,
        ns: &NetNs,
        root: PathBuf,
        label: &'static str,
        bridge: bool,
    ) -> Result<Dockerd> {
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut d = Dockerd {
            label,
            client: client.to_path_buf(),
            root,
            child: None,
        };
        let config = d.root.join("daemon.json");
        fs::write(&config, "{}\n")?;
        let mut args: Vec<String> = vec![
            format!("--config-file={}", config.display()),
            format!("--data-root={}", d.root.join("data").display()),
            format!("--exec-root={}", d.root.join("exec").display()),
            format!("--pidfile={}", d.root.join("docker.pid").display()),
            format!("--host=unix://{}", d.socket().display()),
        ];
        if !bridge {
            args.extend(
                [
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                ]
                .map(String::from),
            );
        }
        let log = fs::File::create(d.log_path())?;
        let fd = ns.fd().as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: between fork and exec the closure makes only raw system calls (setns,
        // setpgid, prctl), which are async-signal-safe and allocate nothing; `fd` is the
        // namespace file `ns` keeps open across the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0
                    // Its own process group: Ctrl-C reaches this process only, which
                    // then removes the containers and stops dockerd.
                    || libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        d.child = Some(child);
        let socket = d.socket();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if ping_api(&socket) {
                return Ok(d);
            }
            let exited = match d.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(st) = exited {
                d.child = None;
                bail!("{label}: dockerd exited ({st}): {}", d.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{label}: dockerd is not up after {START_LIMIT:?}: {}",
                    d.log_tail()
                );
            }
            sys::sleep(Duration::from_millis(50))?;
        }
    }

    fn socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("dockerd.log")
    }

    /// The last lines of dockerd's output.
    pub(crate) fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `docker ARGS` against this engine, not yet started.
    pub(crate) fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", self.root.join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        cmd
    }

    /// `docker ARGS` within `limit`: its stdout, or an error with its stderr.
    pub(crate) fn docker_within(&self, args: &[&str], limit: Duration) -> Result<String> {
        let what = format!("docker {}", args.join(" "));
        let (ok, out, err) = run_bounded(self.command(args), limit, &what)?;
        if !ok {
            bail!("{}: {what} failed: {}", self.label, err.trim());
        }
        Ok(out)
    }

    /// `docker ARGS` within [`DOCKER_LIMIT`].
    pub(crate) fn docker(&self, args: &[&str]) -> Result<String> {
        self.docker_within(args, DOCKER_LIMIT)
    }

    /// The host PID of a container's first process.
    pub(crate) fn container_pid(&self, name: &str) -> Result<u32> {
        let out = self.docker(&["inspect", "-f", "{{.State.Pid}}", name])?;
        let pid: u32 = out
            .trim()
            .parse()
            .with_context(|| format!("{name} has no PID: {out:?}"))?;
        if pid == 0 {
            bail!("{name} is not running");
        }
        Ok(pid)
    }

    /// A container's address on `network`.
    pub(crate) fn container_ip(&self, name: &str, network: &str) -> Result<Ipv4Addr> {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let out = self.docker(&["inspect", "-f", &f, name])?;
        out.trim()
            .parse()
            .with_context(|| format!("{name} has no address on {network}: {out:?}"))
    }

    /// dockerd's PID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Containers and networks removed through the engine, dockerd stopped, leftovers
    /// killed, mounts undone, the root removed.
    fn teardown(&mut self) {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            let limit = Duration::from_secs(60);
            match self.docker_within(&["ps", "-aq"], limit) {
                Ok(out) => {
                    let ids: Vec<&str> = out.split_whitespace().collect();
                    if !ids.is_empty() {
                        let mut args = vec!["rm", "-f"];
                        args.extend(ids);
                        if let Err(e) = self.docker_within(&args, limit) {
                            eprintln!("warning: {e:#}");
                        }
                    }
                }
                Err(e) => eprintln!("warning: {e:#}"),
            }
            if let Ok(out) =
                self.docker_within(&["network", "ls", "-q", "--filter", "type=custom"], limit)
            {
                for id in out.split_whitespace() {
                    if let Err(e) = self.docker_within(&["network", "rm", id], limit) {
                        eprintln!("warning: {e:#}");
                    }
                }
            }
        }
        let pid = self.pid();
        if let Some(mut child) = self.child.take() {
            if !stop_child(&mut child, STOP_GRACE) {
                eprintln!(
                    "warning: {}: dockerd did not exit on SIGTERM within {STOP_GRACE:?}; killed",
                    self.label
                );
            }
        }
        kill_leftovers(&self.root, pid);
        unmount_under(&self.root);
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("warning: could not remove {}: {e}", self.root.display());
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Processes whose command line names `root` (containerd, its shims), the descendants
/// of those and of `pid`: PIDs read from /proc.
fn leftovers(root: &Path, pid: Option<u32>) -> BTreeSet<i32> {
    let needle = root.as_os_str().as_bytes();
    let me = std::process::id() as i32;
    let mut parent: Vec<(i32, i32)> = Vec::new();
    let mut set = BTreeSet::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if p == me || !alive(p) {
                continue;
            }
            if let Some(pp) = ppid_of(p) {
                parent.push((p, pp));
            }
            let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                set.insert(p);
            }
        }
    }
    if let Some(p) = pid {
        set.insert(p as i32);
    }
    // Descendants, a generation per pass (bounded by the number of processes).
    for _ in 0..parent.len().max(1) {
        let before = set.len();
        for &(p, pp) in &parent {
            if set.contains(&pp) && p != me {
                set.insert(p);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.retain(|&p| p != me && alive(p));
    set
}

/// The parent PID in /proc/PID/stat.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// SIGKILL, by PID, every process [`leftovers`] finds; wait (bounded) for them to go.
fn kill_leftovers(root: &Path, pid: Option<u32>) {
    let pids = leftovers(root, pid);
    if pids.is_empty() {
        return;
    }
    eprintln!(
        "warning: {} process(es) of dockerd were left ({:?}); killed",
        pids.len(),
        pids.iter().take(8).collect::<Vec<_>>()
    );
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    let deadline = Instant::now() + KILL_WAIT;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmount (detach) every mount under `root` in this thread's mount namespace, deepest
/// (latest) first.
pub(crate) fn unmount_under(root: &Path) {
    for _ in 0..5 {
        let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
        let points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)))
            .filter(|p| p.starts_with(root))
            .collect();
        if points.is_empty() {
            return;
        }
        for p in points.iter().rev() {
            let _ = umount2(p, MntFlags::MNT_DETACH);
        }
    }
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let out = "\tlinux-vdso.so.1 (0x00007ffa6d657000)\n\
                   \tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007ffa6d610000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007ffa6d659000)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libiperf.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }
}
