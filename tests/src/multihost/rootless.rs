//! What a cluster of unprivileged daemons needs ([`super::Cluster::rootless_loopback`]):
//! the user they run as, a copy of the binary that user can run, and the background
//! `tapnet run`s (and the sandboxes' processes) to stop by PID.
//!
//! The user is `tapnet-test`, which `.ci/run` creates; `/dev/net/tun` must be mode 0666,
//! as distributions ship it (a rootless sandbox opens it without privilege).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

/// The unprivileged user the daemons, the CLI and `tapnet run` run as.
pub const USER: &str = "tapnet-test";

/// How long a background `tapnet run` has to remove its sandbox after SIGTERM.
const RUN_GRACE: Duration = Duration::from_secs(5);

/// The unprivileged user and what it runs: a directory of its own (mode 0755, owned by
/// root) holding the binary's copy and the user's runtime directory (`XDG_RUNTIME_DIR`,
/// mode 0700, the user's). Dropped, the directory goes.
#[derive(Debug)]
pub(crate) struct RunAs {
    /// The user's uid.
    pub(crate) uid: u32,
    /// The user's primary gid.
    pub(crate) gid: u32,
    /// The copy of the `tapnet` binary.
    pub(crate) bin: PathBuf,
    /// The user's `XDG_RUNTIME_DIR`.
    pub(crate) runtime: PathBuf,
    dir: PathBuf,
}

impl RunAs {
    /// The test user, with `bin` copied into `dir` (made anew). Fails the test, saying
    /// why, when the user or `/dev/net/tun`'s mode is missing.
    pub(crate) fn new(dir: PathBuf, bin: &Path) -> RunAs {
        assert!(
            std::fs::metadata("/dev/net/tun")
                .is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006),
            "/dev/net/tun is missing or not mode 0666 (.ci/run sets it)"
        );
        let user = User::from_name(USER)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user {USER} (.ci/run creates it)"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .unwrap_or_else(|e| panic!("chmod {p:?}: {e}"));
        };
        mode(&dir, 0o755);
        let runtime = dir.join("run");
        std::fs::create_dir(&runtime).unwrap_or_else(|e| panic!("create {runtime:?}: {e}"));
        mode(&runtime, 0o700);
        nix::unistd::chown(&runtime, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {runtime:?}: {e}"));
        let copy = dir.join("tapnet");
        std::fs::copy(bin, &copy).unwrap_or_else(|e| panic!("copy {bin:?}: {e}"));
        mode(&copy, 0o755);
        let run_as = RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            bin: copy,
            runtime,
            dir,
        };
        run_as.wait_until_runnable();
        run_as
    }

    /// Waits until the copy can be run: a child another thread forked while the copy
    /// was open for writing holds that descriptor until it execs (ETXTBSY meanwhile).
    /// Once one run started, no writer is left. Bounded: 1,000 tries, 10 ms apart.
    fn wait_until_runnable(&self) {
        for _ in 0..1000 {
            let spawned = Command::new(&self.bin)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(mut c) => {
                    let _ = c.wait();
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("run {:?}: {e}", self.bin),
            }
        }
        panic!("{:?} stayed busy (ETXTBSY)", self.bin);
    }

    /// The environment a command of the user gets (nothing of the caller's).
    pub(crate) fn env(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.runtime)
            .env("XDG_RUNTIME_DIR", &self.runtime);
    }
}

impl Drop for RunAs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// In a child between fork and exec: become `uid`:`gid`, no supplementary groups.
/// Only setgroups, setgid and setuid, async-signal-safe system calls.
pub(crate) fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: setgroups with a count of 0 reads no memory; setgid and setuid take
    // plain integers.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Field 22 (start time) of `/proc/PID/stat`, if the process exists.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Background `tapnet run`s of one host and the processes of their sandboxes.
#[derive(Debug, Default)]
pub(crate) struct Detached {
    runs: Vec<Child>,
    /// A sandbox's process and its start time when it was noted: a PID reused by
    /// another process after ours exited is never signalled.
    owners: Vec<(i32, u64)>,
}

impl Detached {
    /// Keeps `run`, to stop it at the end.
    pub(crate) fn push_run(&mut self, run: Child) {
        self.runs.push(run);
    }

    /// The PIDs of the `tapnet run`s.
    pub(crate) fn run_pids(&self) -> Vec<u32> {
        self.runs.iter().map(Child::id).collect()
    }

    /// Notes `pid`, a sandbox's process, to kill at the end if it is still there.
    pub(crate) fn note_owner(&mut self, pid: i32) {
        if let Some(t) = start_time(pid) {
            if !self.owners.iter().any(|&(p, _)| p == pid) {
                self.owners.push((pid, t));
            }
        }
    }

    /// SIGTERM to every `tapnet run` (each removes its sandbox and ends its command),
    /// SIGKILL to those still running after [`RUN_GRACE`]; then SIGKILL to the noted
    /// sandbox processes still there.
    pub(crate) fn stop_all(&mut self) {
        for c in &self.runs {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + RUN_GRACE;
        for mut c in self.runs.drain(..) {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for (p, t) in self.owners.drain(..) {
            if start_time(p) == Some(t) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
}
