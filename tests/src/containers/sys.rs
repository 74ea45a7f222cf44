//! What the container harnesses share: bounded commands, their directories, the
//! processes and mounts found under them, cgroups, and the host paths the runtimes
//! create outside of them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub(crate) use crate::multihost::run_within;

/// A command's trimmed stdout if it succeeded, else an error with its status and stderr.
pub(crate) fn ok_stdout(what: &str, out: Result<Output, String>) -> Result<String, String> {
    let out = out?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// The last line of a command's output (an import's image id after its progress).
pub(crate) fn last_line(out: Result<String, String>) -> Result<String, String> {
    out.map(|s| s.lines().last().unwrap_or_default().trim().to_string())
}

/// The first of `paths` that exists, else `fallback` (looked up on PATH).
pub(crate) fn binary(paths: &[&str], fallback: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// Creates a fresh directory `<tmp>/tn-<kind>-<name>-<pid>-<n>`. `name` must be short
/// (unix socket paths under it are limited to 107 bytes) and plain.
pub(crate) fn fresh_dir(kind: &str, name: &str) -> Result<PathBuf, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    if name.is_empty()
        || name.len() > 20
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "harness name {name:?}: 1 to 20 of [A-Za-z0-9_-] (it names paths and sockets)"
        ));
    }
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tn-{kind}-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("create {dir:?}: {e}"))?;
    Ok(dir)
}

/// Whether an overlay mount works in `dir` (a probe mounted and unmounted there): the
/// kernel has overlayfs and the file system under `dir` can be its upper layer.
pub(crate) fn overlay_works(dir: &Path) -> bool {
    let probe = dir.join("overlay-probe");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
    let made = [&lower, &upper, &work, &merged]
        .iter()
        .all(|d| std::fs::create_dir_all(d).is_ok());
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let works = made
        && nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .is_ok();
    if works {
        let _ = nix::mount::umount2(&merged, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&probe);
    works
}

/// A process as `/proc` shows it.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Its PID.
    pub pid: u32,
    /// Its parent's PID.
    pub ppid: u32,
    /// What it runs (`/proc/PID/exe`), when readable.
    pub exe: Option<PathBuf>,
    /// Its arguments, joined by spaces.
    pub cmdline: String,
}

impl Proc {
    /// The file name of its executable (`dockerd`, `containerd-shim-runc-v2`, `conmon`...).
    pub fn exe_name(&self) -> String {
        self.exe
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The live processes of the machine (zombies left out: they hold nothing and cannot
/// be killed), this one left out.
pub fn processes() -> Vec<Proc> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some((state, ppid)) = stat(pid) else {
            continue;
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        all.push(Proc {
            pid,
            ppid,
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            cmdline,
        });
    }
    all
}

/// State letter and parent PID of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// The live processes whose command line names `dir` or a path under it (dockerd's
/// containerd and shims,
/// podman's conmon and cleanup processes), with every descendant of theirs and of
/// `roots` (the containers' processes).
pub fn processes_of(dir: &Path, roots: &[u32]) -> Vec<Proc> {
    let all = processes();
    // The directory itself or a path under it: `<dir>-1` (another harness's) is not.
    let whole = format!(" {} ", dir.display());
    let inside = format!("{}/", dir.display());
    let mut pids: Vec<u32> = all
        .iter()
        .filter(|p| p.cmdline.contains(&inside) || format!(" {} ", p.cmdline).contains(&whole))
        .map(|p| p.pid)
        .chain(roots.iter().copied())
        .collect();
    // Descendants, breadth first; bounded by the number of processes.
    let mut i = 0;
    while i < pids.len() && i < all.len() + roots.len() {
        let parent = pids[i];
        for p in &all {
            if p.ppid == parent && !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
        i += 1;
    }
    all.into_iter().filter(|p| pids.contains(&p.pid)).collect()
}

/// SIGTERM to each of `pids`, then SIGKILL to those alive after `grace`; waits (up to
/// 10 s more) until they are gone. The PIDs left alive.
pub(crate) fn end_processes(pids: &[u32], grace: Duration) -> Vec<u32> {
    let signal_all = |sig| {
        for &p in pids {
            if alive(p) {
                let _ = kill(Pid::from_raw(p as i32), sig);
            }
        }
    };
    let wait_gone = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if !grace.is_zero() {
        signal_all(Signal::SIGTERM);
        wait_gone(grace);
    }
    signal_all(Signal::SIGKILL);
    wait_gone(Duration::from_secs(10));
    pids.iter().copied().filter(|&p| alive(p)).collect()
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(OsStr::from_bytes(&unescape_mount(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Unmounts everything at or under `dir`, deepest first (lazily when a plain unmount
/// fails); a few rounds, for mounts stacked on one point. The mount points left.
pub(crate) fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..8 {
        let points = mounts_under(dir);
        if points.is_empty() {
            break;
        }
        for p in points {
            if nix::mount::umount2(&p, MntFlags::empty()).is_err() {
                let _ = nix::mount::umount2(&p, MntFlags::MNT_DETACH);
            }
        }
    }
    mounts_under(dir)
}

/// The mount points of the cgroup hierarchies (v1 controllers and the v2 tree).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(OsStr::from_bytes(&unescape_mount(point))))
        })
        .collect()
}

/// The directories of cgroup `rel` (a path from the root, like `/docker`) in every
/// hierarchy, where it exists.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(rel.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes cgroup `rel` and the cgroups under it in every hierarchy, deepest first
/// (`rmdir`: a cgroup that still holds a process stays).
pub(crate) fn remove_cgroup(rel: &str) {
    for top in cgroup_dirs(rel) {
        rmdir_tree(&top, 0);
    }
}

/// `rmdir` of the directories under `dir` and of `dir`, depth first (at most 16 deep).
fn rmdir_tree(dir: &Path, depth: u32) {
    if depth > 16 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path(), depth + 1);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A path outside of the harnesses' directories that a runtime creates on first use
/// and leaves behind.
enum HostPath {
    /// A file, removed.
    File(&'static str),
    /// A directory, removed if empty.
    Dir(&'static str),
    /// A cgroup (a path from each hierarchy's root), removed with the empty cgroups under
    /// it.
    Cgroup(&'static str),
}

/// What dockerd, containerd, runc and podman create outside of the harness's directory
/// (all else is under it), in the order they are removed. `/var/lib/containers/cache`:
/// podman's blob-info cache as root, which no option moves; `/run/runc`: runc's default
/// state root under podman; `/run/containerd/s`: containerd's shim sockets;
/// `/run/docker/plugins`: dockerd's plugin socket directory; `/libpod_parent`: podman's
/// cgroup parent under `cgroupfs`.
const HOST_PATHS: &[HostPath] = &[
    HostPath::File("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    HostPath::Dir("/var/lib/containers/cache"),
    HostPath::Dir("/var/lib/containers"),
    HostPath::Dir("/run/runc"),
    HostPath::Dir("/run/containerd/s"),
    HostPath::Dir("/run/containerd"),
    HostPath::Dir("/run/docker/plugins"),
    HostPath::Dir("/run/docker"),
    HostPath::Cgroup("/libpod_parent"),
];

/// The harnesses alive in this process and which [`HOST_PATHS`] were absent when the
/// first of them started.
static HOST: Mutex<(usize, Vec<usize>)> = Mutex::new((0, Vec::new()));

/// Held by each harness: when the last one goes, the [`HOST_PATHS`] that did not exist
/// before the first one are removed (a directory only if empty). Another program that
/// made one of them meanwhile is not told apart: these are only the runtimes' own
/// scratch places.
pub(crate) struct HostGuard(());

impl HostGuard {
    pub(crate) fn acquire() -> HostGuard {
        let mut g = HOST.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            g.1 = HOST_PATHS
                .iter()
                .enumerate()
                .filter(|(_, p)| match p {
                    HostPath::File(p) | HostPath::Dir(p) => !Path::new(p).exists(),
                    HostPath::Cgroup(rel) => cgroup_dirs(rel).is_empty(),
                })
                .map(|(i, _)| i)
                .collect();
        }
        g.0 += 1;
        HostGuard(())
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let mut g = HOST.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 > 0 {
            return;
        }
        for &i in &g.1 {
            match HOST_PATHS[i] {
                HostPath::File(p) => {
                    let _ = std::fs::remove_file(p);
                }
                HostPath::Dir(p) => {
                    let _ = std::fs::remove_dir(p);
                }
                HostPath::Cgroup(rel) => remove_cgroup(rel),
            }
        }
        g.1.clear();
    }
}

/// Ends what a harness left under `dir` (processes whose command line names it, their
/// descendants and those of `roots`: SIGTERM, SIGKILL after `grace`), unmounts
/// everything under it and removes it (kept when `TAPNET_E2E_KEEP` is set, for the
/// logs). What could not be removed, as a list of complaints.
pub(crate) fn sweep(dir: &Path, roots: &[u32], grace: Duration) -> Vec<String> {
    let mut left = Vec::new();
    let pids: Vec<u32> = processes_of(dir, roots).iter().map(|p| p.pid).collect();
    if !pids.is_empty() {
        let alive = end_processes(&pids, grace);
        if !alive.is_empty() {
            left.push(format!("processes still alive: {alive:?}"));
        }
    }
    let mounts = unmount_under(dir);
    if !mounts.is_empty() {
        left.push(format!("still mounted: {mounts:?}"));
    }
    if std::env::var_os("TAPNET_E2E_KEEP").is_none() && mounts.is_empty() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            left.push(format!("remove {dir:?}: {e}"));
        }
    }
    left
}
