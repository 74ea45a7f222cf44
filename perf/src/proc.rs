//! Child processes inside our namespaces (iperf3), owned by guards that end them by PID.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tapnet_engine::sys::netns::NetNs;

use crate::sys::interrupted;

/// A child process that is killed (by its PID) and reaped when the guard drops.
pub(crate) struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited ({st})", self.what);
        }
        Ok(())
    }

    /// The process's peak RSS (VmHWM of /proc/PID/status), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = l["VmHWM:".len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Wait up to `timeout` for the process to exit, collecting its stdout; kill it on
    /// timeout or Ctrl-C.
    pub(crate) fn wait_output(mut self, timeout: Duration) -> Result<(ExitStatus, String, String)> {
        let mut out = self.child.stdout.take();
        let mut err = self.child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let ereader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break Some(st);
            }
            if interrupted() || Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(status) = status else {
            let what = self.what.clone();
            drop(self); // kills and reaps; the pipes close, the readers finish
            let _ = reader.join();
            let _ = ereader.join();
            crate::sys::check_interrupt()?;
            bail!("{what} did not finish within {timeout:?}; killed it");
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = ereader.join().unwrap_or_default();
        Ok((status, stdout, stderr))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Start `program args…` inside `ns`. The child enters the namespace between fork and
/// exec, and dies with the thread that started it (PR_SET_PDEATHSIG), so even a killed
/// perf run leaves no iperf3 behind.
pub(crate) fn spawn_in(
    ns: &NetNs,
    program: &Path,
    args: &[String],
    capture: bool,
    cpus: &[usize],
) -> Result<Proc> {
    spawn(Some(ns), program, args, output(capture), cpus)
}

/// Start `program args…` in this process's network namespace (the host's), dying with
/// the thread that started it like [`spawn_in`]'s children.
pub(crate) fn spawn_host(
    program: &Path,
    args: &[String],
    capture: bool,
    cpus: &[usize],
) -> Result<Proc> {
    spawn(None, program, args, output(capture), cpus)
}

/// Start `program args…` in the host's network namespace like [`spawn_host`], its
/// stdout and stderr appended to `log`.
pub(crate) fn spawn_host_logged(program: &Path, args: &[String], log: &Path) -> Result<Proc> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let out = (Stdio::from(f.try_clone()?), Stdio::from(f));
    spawn(None, program, args, out, &[])
}

/// Piped or discarded stdout and stderr.
fn output(capture: bool) -> (Stdio, Stdio) {
    if capture {
        (Stdio::piped(), Stdio::piped())
    } else {
        (Stdio::null(), Stdio::null())
    }
}

fn spawn(
    ns: Option<&NetNs>,
    program: &Path,
    args: &[String],
    (stdout, stderr): (Stdio, Stdio),
    cpus: &[usize],
) -> Result<Proc> {
    let fd = ns.map(|ns| ns.fd().as_raw_fd());
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `c` is below CPU_SETSIZE, so the bit lies inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let pin = !cpus.is_empty();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: between fork and exec the closure makes only raw system calls (setns,
    // prctl, sched_setaffinity), which are async-signal-safe and allocate nothing; `fd` stays open
    // in the child until exec (the namespace file outlives this call).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pin && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!(
        "{} {} (in {})",
        program.display(),
        args.join(" "),
        ns.map(NetNs::name).unwrap_or("the host namespace")
    );
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    Ok(Proc { child, what })
}

/// Wait until process `pid` has a TCP socket listening on `port` (IPv4), reading its
/// namespace's /proc/PID/net/tcp.
pub(crate) fn wait_listening(p: &mut Proc, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let path = format!("/proc/{}/net/tcp", p.pid());
    let want = format!(":{port:04X}");
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            let listening = s.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
            });
            if listening {
                return Ok(());
            }
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            bail!("{} exited ({st}) before listening", p.what);
        }
        crate::sys::check_interrupt()?;
        if Instant::now() >= deadline {
            bail!(
                "{} is not listening on port {port} after {timeout:?}",
                p.what
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `name` in `$PATH` (or the usual sbin directories), if executable.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Find iperf3, installing it with apt-get when running as root on a Debian-like system.
/// Every step is reported on stderr; an error says why iperf3 cannot be had.
pub(crate) fn ensure_iperf3() -> Result<PathBuf> {
    ensure_program("iperf3", "iperf3")
}

/// Find `program`, installing Debian package `package` with apt-get when it is missing
/// and this process runs as root. Every step is reported on stderr; an error says why
/// the program cannot be had.
pub(crate) fn ensure_program(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = find_program(program) {
        eprintln!("using {} ({})", p.display(), program_version(&p));
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(apt) = find_program("apt-get") else {
        bail!(
            "{program} is not installed and apt-get is not available: install {package} and retry"
        );
    };
    if !root {
        bail!(
            "{program} is not installed, and installing it needs root: run `apt-get install -y {package}` as root"
        );
    }
    let install = || -> Result<bool> {
        eprintln!("{program} not found: running `apt-get install -y {package}`");
        let st = Command::new(&apt)
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running apt-get install")?;
        Ok(st.success())
    };
    if !install()? {
        eprintln!("apt-get install failed: running `apt-get update`, then installing again");
        let st = Command::new(&apt)
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running apt-get update")?;
        if !st.success() || !install()? {
            bail!(
                "could not install {package} with apt-get (see its errors above): install it and retry"
            );
        }
    }
    let p = find_program(program)
        .with_context(|| format!("apt-get installed {package} but {program} is not in PATH"))?;
    eprintln!("installed {program} at {}", p.display());
    Ok(p)
}

/// The installed version of Debian package `package` (`dpkg-query`), if known.
pub(crate) fn package_version(package: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// First line of `program --version`, or "unknown version".
pub(crate) fn program_version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// End `child` by its PID: SIGTERM, then SIGKILL if it has not exited within `grace`;
/// reaped either way. Whether it exited on SIGTERM.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) -> bool {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    false
}
