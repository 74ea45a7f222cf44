//! `tapnet rootless-init` (hidden): the child of a rootless `tapnet run`, between fork
//! and the user's command (see `tapnet_ctl::daemon::core::rootless` for the whole design).
//!
//! `tapnet run` starts it as a fresh process (a re-exec of the same binary) because
//! `unshare(CLONE_NEWUSER)` fails in a multithreaded process, and `tapnet run` has its
//! runtime running by then; this one does everything on its only thread and starts none.
//! It enters a new user and network namespace, maps its own uid and gid (after `deny` to
//! setgroups, as an unprivileged process must), brings `lo` up, asks the daemon which
//! interfaces to make, creates and configures the TAPs (it holds every capability in its
//! namespaces), sends their fds to the daemon over the API socket (`SCM_RIGHTS`), and
//! starts the command as its child, which keeps the user's identity and has no
//! capability left (and gets SIGKILL if this process dies). ICMP echo sockets are
//! allowed for the user's group, so `ping` works without privilege. It also makes a
//! mount namespace (owned by its user namespace) where the sandbox's `resolv.conf`,
//! which names its network's gateway as the nameserver, is bind-mounted on
//! `/etc/resolv.conf`, as `ip netns exec` does for a named namespace.
//!
//! It then stays, as the sandbox's keeper, until the command ends: the command's status
//! is its status, and the signals `tapnet run` relays are passed on. It keeps its own
//! copies of the TAP fds, so the interfaces outlive a daemon that crashes or restarts,
//! with their addresses and routes; once a second it looks at the daemon's socket file,
//! and when a new daemon made it again it sends the fds again. The new daemon found the
//! sandbox in its state with its owner (this process) alive and attaches them: the
//! sandbox is back on its networks, published ports included.
//!
//! The two requests are written by hand on a blocking Unix stream: hyper cannot attach
//! ancillary data to a request's bytes, and a tokio runtime is not wanted here.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::ForkResult;
use tapnet_api::ErrorResponse;
use tapnet_api::{SandboxAdoptRequest, SandboxInterfaces};
use tapnet_ctl::daemon::plumbing::IfaceConfig;
use tapnet_ctl::daemon::plumbing::netns::configure;
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::scm;
use tapnet_engine::sys::tap::{Tap, TapConfig};

use crate::cli::args::RootlessInitArgs;
use crate::cli::client::path_segment;

/// Docker's status when the run could not start.
const EXIT_RUN_FAILED: u8 = 125;
/// The command could not be invoked.
const EXIT_CANNOT_INVOKE: u8 = 126;
/// The command was not found.
const EXIT_NOT_FOUND: u8 = 127;

/// Set up the sandbox, run the command and keep the sandbox until it ends; returns the
/// command's status (Docker's: its code, or 128+N after signal N).
pub(crate) fn init(a: RootlessInitArgs) -> u8 {
    let kept = match setup(&a.socket, &a.sandbox) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tapnet: rootless sandbox: {e:#}");
            return EXIT_RUN_FAILED;
        }
    };
    match keep(&a.socket, kept, &a.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapnet: rootless sandbox: {e:#}");
            EXIT_RUN_FAILED
        }
    }
}

/// What the keeper needs to give a new daemon the sandbox's TAPs again.
struct Kept {
    /// `/sandboxes/{id}/interfaces`.
    path: String,
    /// The adopt request's body.
    body: Vec<u8>,
    taps: Vec<Tap>,
    /// The daemon's socket file when the TAPs were last sent.
    socket_id: Option<SocketId>,
}

impl Kept {
    /// Send the TAPs to the daemon listening on `socket`. A daemon that answers, even
    /// with an error (it removed the sandbox), is not asked again; one that cannot be
    /// reached yet is.
    fn send(&mut self, socket: &Path) -> anyhow::Result<()> {
        let id = socket_id(socket);
        UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot connect to the tapnet daemon at unix://{}",
                socket.display()
            )
        })?;
        self.socket_id = id;
        let fds: Vec<BorrowedFd<'_>> = self.taps.iter().map(|t| t.fd(0)).collect();
        call(socket, "POST", &self.path, &self.body, &fds).map(drop)
    }
}

/// Which file is at `p`: device, inode and change time (a file made after another was
/// removed may get its inode number).
fn socket_id(p: &Path) -> Option<SocketId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

type SocketId = (u64, u64, i64, i64);

fn setup(socket: &Path, sandbox: &str) -> anyhow::Result<Kept> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    nix::sched::unshare(flags).map_err(|e| {
        anyhow!(
            "cannot create a user, network and mount namespace ({e}): check that unprivileged \
             user namespaces are allowed (sysctl user.max_user_namespaces > 0; \
             kernel.unprivileged_userns_clone=1 where it exists; AppArmor's \
             kernel.apparmor_restrict_unprivileged_userns=0 or a profile for tapnet)"
        )
    })?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
    write_proc("/proc/self/gid_map", &format!("{gid} {gid} 1"))?;
    // As in root sandboxes: IPv4 only, so no IPv6 chatter floods the network. Absent
    // without IPv6 in the kernel: nothing to turn off then.
    for conf in ["all", "default"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
    }
    write_proc(
        "/proc/sys/net/ipv4/ping_group_range",
        &format!("{gid} {gid}"),
    )?;
    let mut nl = Netlink::open().context("netlink")?;
    let lo = nl.link_index("lo").context("finding lo")?;
    nl.set_up(lo).context("bringing lo up")?;

    let path = format!("/sandboxes/{}/interfaces", path_segment(sandbox));
    let plan: SandboxInterfaces =
        serde_json::from_slice(&call(socket, "GET", &path, b"", &[])?).context("the plan")?;
    if !plan.resolv_conf.is_empty() {
        // Names still resolve by the host's resolvers without it: a warning, not a
        // failure (the command's terminal is the only place to say it).
        if let Err(e) = mount_resolv_conf(&plan.resolv_conf) {
            eprintln!("tapnet: rootless sandbox: warning: no resolv.conf of its own: {e:#}");
        }
    }
    let mut taps = Vec::new();
    for i in &plan.interfaces {
        let tap = Tap::create(&TapConfig {
            name: i.name.clone(),
            ..Default::default()
        })
        .with_context(|| format!("creating TAP {}", i.name))?;
        let addr = match i.ip_address.as_str() {
            "" => None,
            a => Some((a.parse::<Ipv4Addr>()?, i.ip_prefix_len)),
        };
        let cfg = IfaceConfig {
            ifname: i.name.clone(),
            mac: parse_mac(&i.mac_address)?,
            addr,
            mtu: i.mtu,
        };
        configure(&mut nl, &cfg).with_context(|| format!("configuring {}", i.name))?;
        taps.push(tap);
    }
    if !plan.gateway.is_empty() {
        let gw: Ipv4Addr = plan.gateway.parse()?;
        let idx = nl.link_index(&plan.gateway_interface)?;
        nl.add_route(None, Some(IpAddr::V4(gw)), idx)
            .context("adding the default route")?;
    }
    let req = SandboxAdoptRequest {
        interfaces: taps.iter().map(|t| t.name().to_string()).collect(),
    };
    let mut kept = Kept {
        path,
        body: serde_json::to_vec(&req)?,
        taps,
        socket_id: None,
    };
    // Our copies stay open, unused: only the daemon reads and writes the TAPs.
    match kept.send(socket) {
        // The daemon died with the TAPs in hand. Whether or not it adopted them, the
        // sandbox's record survives it (owned by `tapnet run` or by us), and the keeper
        // sends the TAPs again to the next daemon that starts on this socket.
        Err(e) if e.is::<NoAnswer>() => {
            eprintln!("tapnet: rootless sandbox: warning: {e}; the TAPs go to the next daemon");
            Ok(kept)
        }
        r => r.map(|()| kept),
    }
}

/// Signals `tapnet run` relays, passed on to the command.
const RELAYED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGHUP,
];
/// Longest wait for the daemon's answer to one request.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the keeper looks for a new daemon.
const DAEMON_CHECK_MS: u16 = 1000;

/// Run `cmd` as a child and wait for it, passing signals on and giving a restarted
/// daemon the TAPs again.
fn keep(socket: &Path, mut kept: Kept, cmd: &[String]) -> anyhow::Result<u8> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in RELAYED {
        mask.add(s);
    }
    // A SIGCHLD ignored by whoever started us would reap the command behind our back.
    // SAFETY: restoring the default disposition installs no handler.
    unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }?;
    // Blocked before the fork, so none is lost; the child unblocks them before exec.
    let old = mask.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let parent = nix::unistd::getpid();
    // SAFETY: this process is single-threaded (see the module docs), so the child may
    // run any code; it only execs or exits.
    let child = match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            let _ = old.thread_set_mask();
            // SAFETY: prctl(2) with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // The keeper died before the line above took effect.
            if nix::unistd::getppid() != parent {
                std::process::exit(i32::from(EXIT_RUN_FAILED));
            }
            std::process::exit(i32::from(exec(cmd)));
        }
        ForkResult::Parent { child } => child,
    };
    loop {
        let ready = {
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(DAEMON_CHECK_MS))
        };
        match ready {
            Ok(0) => {
                let id = socket_id(socket);
                if id.is_some() && id != kept.socket_id {
                    // A new daemon; one still starting is tried again next time (the
                    // keeper prints nothing: its output is the command's terminal).
                    let _ = kept.send(socket);
                }
                continue;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Non-blocking: nothing to read (an interrupted poll) means look again.
        let Some(info) = sfd.read_signal()? else {
            continue;
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig == Signal::SIGCHLD {
            match nix::sys::wait::waitpid(child, Some(WaitPidFlag::WNOHANG))? {
                WaitStatus::Exited(_, code) => return Ok((code & 0xff) as u8),
                WaitStatus::Signaled(_, s, _) => return Ok((128 + s as i32).min(255) as u8),
                _ => continue,
            }
        }
        if matches!(sig, Signal::SIGINT | Signal::SIGQUIT)
            && crate::cli::run::terminal_reaches_child()
        {
            continue;
        }
        let _ = nix::sys::signal::kill(child, sig);
    }
}

/// Where `resolv.conf` is mounted (`mount(2)` follows it if it is a symlink, as
/// systemd-resolved's is).
const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Mount `text` on `/etc/resolv.conf` in this process's mount namespace: `/` made a
/// recursive slave first (nothing mounted here reaches the host), then a file of our own
/// bind-mounted and unlinked (a memfd or an unlinked file cannot be bind-mounted).
fn mount_resolv_conf(text: &str) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let (path, mut file) = private_file(&dir)?;
    let mounted = file
        .write_all(text.as_bytes())
        .context("writing it")
        .and_then(|()| {
            mount(
                Some(&path),
                ETC_RESOLV_CONF,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("mounting it on {ETC_RESOLV_CONF}"))
        });
    // The mount holds the file; its name goes either way.
    let _ = std::fs::remove_file(&path);
    mounted
}

/// A new file in `dir` that no one else had (mode 0644, as resolv.conf's).
fn private_file(dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(format!(
            "tapnet-resolv-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    Err(anyhow!("no free file name in {}: {last:?}", dir.display()))
}

fn write_proc(path: &str, v: &str) -> anyhow::Result<()> {
    std::fs::write(path, v).with_context(|| format!("writing {v:?} to {path}"))
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("invalid MAC address {s:?} from the daemon");
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| anyhow!("invalid MAC address {s:?}"))?;
    }
    Ok(mac)
}

/// One HTTP/1.1 request on a new connection to `socket`, with `fds` attached to its
/// first bytes; returns the body of a 2xx answer, or the daemon's error message.
fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> anyhow::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the tapnet daemon at unix://{}",
            socket.display()
        )
    })?;
    // A daemon that accepts and never answers must not hold the keeper (it relays
    // signals and reaps the command on the same thread).
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    s.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: tapnet\r\nUser-Agent: tapnet/{}\r\n\
         Connection: close\r\nContent-Length: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let sent = scm::send_with_fds(s.as_fd(), &req, fds).context("sending to the daemon")?;
    s.write_all(&req[sent..]).context("sending to the daemon")?;
    let mut resp = Vec::new();
    match s.read_to_end(&mut resp) {
        // The daemon went away before it answered (it may have done the work).
        Ok(_) if resp.is_empty() => return Err(NoAnswer.into()),
        Err(e) if resp.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(NoAnswer.into());
        }
        r => r.map(drop).context("reading the daemon's answer")?,
    }
    let (status, body) = parse_response(&resp)?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_slice::<ErrorResponse>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("Error response from daemon: {msg}");
    }
    Ok(body)
}

/// The daemon closed the connection without a byte of answer: it exited (or crashed)
/// while handling the request, which it may or may not have carried out.
#[derive(Debug)]
struct NoAnswer;

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the tapnet daemon closed the connection without answering")
    }
}

impl std::error::Error for NoAnswer {}

/// Status and body of an HTTP/1.1 response (plain or chunked).
fn parse_response(resp: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let bad = || anyhow!("unexpected answer from the tapnet daemon");
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut body = &resp[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let nl = body.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let len = usize::from_str_radix(String::from_utf8_lossy(&body[..nl]).trim(), 16)
            .map_err(|_| bad())?;
        body = &body[nl + 2..];
        if len == 0 {
            return Ok((status, out));
        }
        out.extend_from_slice(body.get(..len).ok_or_else(bad)?);
        body = body.get(len + 2..).ok_or_else(bad)?;
    }
}

/// Replace this process with the command; returns only if that fails.
fn exec(cmd: &[String]) -> u8 {
    let Some(prog) = cmd.first() else {
        eprintln!("tapnet: no command given");
        return EXIT_RUN_FAILED;
    };
    let args: Result<Vec<CString>, _> = cmd.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(args) = args else {
        eprintln!("tapnet: cannot run {prog:?}: an argument holds a NUL byte");
        return EXIT_CANNOT_INVOKE;
    };
    let err = match nix::unistd::execvp(&args[0], &args) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    if err == nix::errno::Errno::ENOENT {
        eprintln!("tapnet: cannot run exec: {prog:?}: executable file not found in $PATH");
        EXIT_NOT_FOUND
    } else {
        eprintln!("tapnet: cannot run {prog:?}: {err}");
        EXIT_CANNOT_INVOKE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (s, b) = parse_response(r).unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }

    /// A daemon that reads the request and exits before answering is told apart from
    /// one that answers with an error: the keeper waits for the next daemon on the first.
    #[test]
    fn a_daemon_gone_before_its_answer_is_no_answer() {
        let dir = std::env::temp_dir().join(format!("tapnet-noanswer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                &b""[..],
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\n{\"message\":\"gone\"}",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).unwrap();
                c.write_all(answer).unwrap();
            }
        });
        let e = call(&sock, "POST", "/x", b"{}", &[]).unwrap_err();
        assert!(e.is::<NoAnswer>(), "{e:#}");
        let e = call(&sock, "POST", "/x", b"{}", &[]).unwrap_err();
        assert!(!e.is::<NoAnswer>(), "{e:#}");
        assert!(format!("{e:#}").contains("gone"), "{e:#}");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02").unwrap(),
            [2, 0x42, 0xac, 0x11, 0, 2]
        );
        assert!(parse_mac("02:42").is_err());
        assert!(parse_mac("02:42:zz:11:00:02").is_err());
    }
}
