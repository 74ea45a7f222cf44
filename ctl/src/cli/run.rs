//! `tapnet run`: create a sandbox, run a command inside its network namespace, remove the
//! sandbox, and exit with the command's status (128+N if signal N killed it), as
//! `docker run` does. `--network host` runs the command where tapnet runs, without the
//! daemon. The command also gets a mount namespace of its own where the sandbox's
//! `/etc/netns/NAME/resolv.conf` (its network's embedded DNS) is bind-mounted on
//! `/etc/resolv.conf`, as `ip netns exec` does.
//!
//! Signals: the command stays in tapnet's process group, so a terminal's Ctrl-C or Ctrl-\
//! reaches it directly; tapnet then only waits (as `system(3)` does) and cleans up.
//! SIGTERM and SIGHUP, and SIGINT/SIGQUIT that did not come from the terminal, are
//! relayed to the command. A signal that arrives while the sandbox is being created
//! removes it again and exits 128+N without running anything.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use tapnet_api::{SandboxCreateRequest, SandboxInspect};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::args::RunArgs;
use crate::cli::client::{Client, path_segment};
use crate::cli::sandbox;

/// Docker's status when the run could not start (the daemon or the CLI failed).
const EXIT_RUN_FAILED: u8 = 125;
/// The command could not be invoked.
const EXIT_CANNOT_INVOKE: u8 = 126;
/// The command was not found.
const EXIT_NOT_FOUND: u8 = 127;

pub(crate) fn run(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    match try_run(client, a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("tapnet: {e:#}");
            Ok(EXIT_RUN_FAILED)
        }
    }
}

fn try_run(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    if a.spec.network.iter().any(|n| n == "host") {
        if a.spec.network.len() > 1 {
            anyhow::bail!(
                "conflicting options: the host network cannot be combined with other networks"
            );
        }
        if !a.spec.publish.is_empty() {
            eprintln!("WARNING: Published ports are discarded when using host network mode");
        }
        return client.block_on(run_here(&a.cmd, None));
    }
    let mut req = sandbox::create_request(&a.spec)?;
    req.rootless = a.rootless || !nix::unistd::geteuid().is_root();
    client.block_on(run_in_sandbox(client, req, &a.cmd))
}

/// The four signals `run` handles instead of dying from them.
struct Signals {
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.quit.recv() => Signal::SIGQUIT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => Signal::SIGHUP,
        }
    }
}

/// True when the terminal sends its signals to our (and so the command's) process group.
pub(crate) fn terminal_reaches_child() -> bool {
    let stdin = std::io::stdin();
    // SAFETY: tcgetpgrp only reads the terminal's foreground group of a valid fd.
    let fg = unsafe { libc::tcgetpgrp(stdin.as_raw_fd()) };
    fg > 0 && fg == nix::unistd::getpgrp().as_raw()
}

fn relay(child: Option<u32>, sig: Signal) {
    let Some(pid) = child.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if matches!(sig, Signal::SIGINT | Signal::SIGQUIT) && terminal_reaches_child() {
        return;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Docker's status for a finished command: its exit code, or 128+N after signal N.
fn exit_code(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => (128 + s).min(255) as u8,
        _ => EXIT_RUN_FAILED,
    }
}

/// Spawn `cmd` (in the namespace of `netns` if given), wait for it while relaying
/// signals, and return its status.
async fn run_here(cmd: &[String], netns: Option<&SandboxInspect>) -> anyhow::Result<u8> {
    let mut sigs = Signals::new()?;
    spawn_and_wait(cmd, netns, None, &mut sigs).await
}

/// With `rootless` (the daemon's socket), the command runs in namespaces of its own,
/// which `tapnet rootless-init` makes before it execs the command (see
/// [`crate::rootless`]); otherwise in `sb`'s named namespace, or here without one.
async fn spawn_and_wait(
    cmd: &[String],
    sb: Option<&SandboxInspect>,
    rootless: Option<&std::path::Path>,
    sigs: &mut Signals,
) -> anyhow::Result<u8> {
    let Some((prog, args)) = cmd.split_first() else {
        anyhow::bail!("no command given");
    };
    let mut command = match (rootless, sb) {
        (Some(socket), Some(sb)) => {
            let exe = std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("finding the tapnet binary to start: {e}"))?;
            let mut c = tokio::process::Command::new(exe);
            c.arg("rootless-init")
                .arg("--socket")
                .arg(socket)
                .arg("--sandbox")
                .arg(&sb.id)
                .arg("--")
                .args(cmd);
            c
        }
        _ => {
            let mut c = tokio::process::Command::new(prog);
            c.args(args);
            c
        }
    };
    // Kept open until the child has exec'd; O_CLOEXEC closes the child's copy then.
    let netns = match sb.filter(|_| rootless.is_none()) {
        Some(sb) => Some(std::fs::File::open(&sb.netns_path).map_err(|e| {
            anyhow::anyhow!(
                "opening the network namespace {} of sandbox {}: {e}",
                sb.netns_path,
                sb.name
            )
        })?),
        None => None,
    };
    if let Some(ns) = &netns {
        let fd = ns.as_raw_fd();
        // Prepared before the fork: the child allocates nothing.
        let resolv = sb.and_then(|sb| ResolvMount::of(&sb.netns_path));
        // SAFETY: the closure runs in the forked child before exec and calls only
        // setns(2), unshare(2), mount(2) and write(2), which are async-signal-safe, on
        // pointers prepared before the fork (`resolv` is moved in and lives until exec);
        // it allocates nothing. `fd` stays open until exec because `netns` outlives the
        // spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(r) = &resolv {
                    r.apply()?;
                }
                Ok(())
            });
        }
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (
                    EXIT_NOT_FOUND,
                    format!("exec: {prog:?}: executable file not found in $PATH"),
                ),
                std::io::ErrorKind::PermissionDenied
                    if sb.is_some() && !nix::unistd::geteuid().is_root() =>
                {
                    (
                        EXIT_CANNOT_INVOKE,
                        format!("{prog:?}: {e} (joining a sandbox needs root)"),
                    )
                }
                _ => (EXIT_CANNOT_INVOKE, format!("{prog:?}: {e}")),
            };
            eprintln!("tapnet: cannot run {what}");
            return Ok(code);
        }
    };
    drop(netns);
    let pid = child.id();
    loop {
        tokio::select! {
            st = child.wait() => return Ok(exit_code(st?)),
            sig = sigs.next() => relay(pid, sig),
        }
    }
}

/// Where `ip netns exec` finds a named namespace's own files.
const NETNS_RUN_DIR: &str = "/run/netns";
/// The same, for `/etc` files.
const NETNS_ETC_DIR: &str = "/etc/netns";

/// The bind mount of a named namespace's `resolv.conf` on `/etc/resolv.conf`, prepared
/// for a child between fork and exec.
struct ResolvMount {
    source: CString,
    target: CString,
    root: CString,
}

/// What the child writes to stderr when the mount fails (no allocation there).
const RESOLV_WARNING: &[u8] =
    b"tapnet: warning: cannot mount the sandbox's resolv.conf on /etc/resolv.conf\n";

impl ResolvMount {
    /// For the namespace at `netns_path` (`/run/netns/NAME`), if the daemon wrote it a
    /// `resolv.conf` (a sandbox without a network has none).
    fn of(netns_path: &str) -> Option<ResolvMount> {
        let name = std::path::Path::new(netns_path)
            .strip_prefix(NETNS_RUN_DIR)
            .ok()?
            .to_str()?;
        let source = std::path::Path::new(NETNS_ETC_DIR)
            .join(name)
            .join("resolv.conf");
        if name.contains('/') || !source.is_file() {
            return None;
        }
        Some(ResolvMount {
            source: CString::new(source.into_os_string().into_encoded_bytes()).ok()?,
            target: CString::new("/etc/resolv.conf").ok()?,
            root: CString::new("/").ok()?,
        })
    }

    /// In the child: a mount namespace of its own, `/` a recursive slave (nothing
    /// mounted here reaches the host), the file bind-mounted on `/etc/resolv.conf`
    /// (followed if a symlink). A failed bind mount is a warning, as in `ip netns exec`.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: unshare(2) with a flag only.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: mount(2) on NUL-terminated strings that live as long as `self`;
        // null type and data are allowed for a propagation change.
        let slave = unsafe {
            libc::mount(
                std::ptr::null(),
                self.root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        };
        if slave != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above, for a bind mount.
        let bound = unsafe {
            libc::mount(
                self.source.as_ptr(),
                self.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if bound != 0 {
            // SAFETY: write(2) of a static buffer to stderr.
            unsafe {
                libc::write(
                    libc::STDERR_FILENO,
                    RESOLV_WARNING.as_ptr().cast(),
                    RESOLV_WARNING.len(),
                )
            };
        }
        Ok(())
    }
}

async fn run_in_sandbox(
    client: &Client,
    req: SandboxCreateRequest,
    cmd: &[String],
) -> anyhow::Result<u8> {
    let req_rootless = req.rootless;
    let mut sigs = Signals::new()?;
    // Creation is not cancelled midway (the daemon would finish it anyway): a signal now
    // is remembered, and the sandbox removed once it exists.
    let mut pending: Option<Signal> = None;
    let created = {
        let create = client.post::<_, SandboxInspect>("/sandboxes", &req);
        let mut create = std::pin::pin!(create);
        loop {
            tokio::select! {
                r = &mut create => break r,
                s = sigs.next() => { pending.get_or_insert(s); }
            }
        }
    };
    let sb = created?;
    let code = match pending {
        Some(sig) => 128 + sig as u8,
        None => match spawn_and_wait(
            cmd,
            Some(&sb),
            req_rootless.then(|| client.socket()),
            &mut sigs,
        )
        .await
        {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tapnet: {e:#}");
                EXIT_RUN_FAILED
            }
        },
    };
    let path = format!("/sandboxes/{}", path_segment(&sb.id));
    if let Err(e) = client.delete(&path).await {
        eprintln!(
            "tapnet: could not remove sandbox {} ({e}); remove it with `tapnet sandbox rm {}`",
            sb.name, sb.name
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_like_docker() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137); // SIGKILL
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143); // SIGTERM
    }

    #[test]
    fn host_mode_runs_here_with_the_commands_status() {
        let c = Client::new(std::path::Path::new("/nonexistent.sock")).unwrap();
        let code = c
            .block_on(run_here(&["sh".into(), "-c".into(), "exit 7".into()], None))
            .unwrap();
        assert_eq!(code, 7);
        let code = c
            .block_on(run_here(&["/nonexistent/cmd".into()], None))
            .unwrap();
        assert_eq!(code, EXIT_NOT_FOUND);
        let code = c
            .block_on(run_here(
                &["sh".into(), "-c".into(), "kill -TERM $$".into()],
                None,
            ))
            .unwrap();
        assert_eq!(code, 143);
    }
}
