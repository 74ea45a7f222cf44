//! `tapnet rootless-init` (hidden): the child of a rootless `tapnet run`, between fork
//! and the user's command (see `tapnet_engine::daemon::rootless` for the whole design).
//!
//! `tapnet run` starts it as a fresh process (a re-exec of the same binary) because
//! `unshare(CLONE_NEWUSER)` fails in a multithreaded process, and `tapnet run` has its
//! runtime running by then; this one does everything on its only thread and starts none.
//! It enters a new user and network namespace, maps its own uid and gid (after `deny` to
//! setgroups, as an unprivileged process must), brings `lo` up, asks the daemon which
//! interfaces to make, creates and configures the TAPs (it holds every capability in its
//! namespaces until it execs), sends their fds to the daemon over the API socket
//! (`SCM_RIGHTS`), and execs the command, which keeps the user's identity and has no
//! capability left. ICMP echo sockets are allowed for the user's group, so `ping` works
//! without privilege.
//!
//! The two requests are written by hand on a blocking Unix stream: hyper cannot attach
//! ancillary data to a request's bytes, and a tokio runtime is not wanted here.

use std::ffi::CString;
use std::io::{IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nix::sched::CloneFlags;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tapnet_engine::daemon::rootless::{SandboxAdoptRequest, SandboxInterfaces};
use tapnet_engine::daemon::sandbox::{IfaceConfig, configure};
use tapnet_engine::daemon::types::ErrorResponse;
use tapnet_engine::netlink::Netlink;
use tapnet_engine::tap::{Tap, TapConfig};

use crate::cli::RootlessInitArgs;
use crate::client::path_segment;

/// Docker's status when the run could not start.
const EXIT_RUN_FAILED: u8 = 125;
/// The command could not be invoked.
const EXIT_CANNOT_INVOKE: u8 = 126;
/// The command was not found.
const EXIT_NOT_FOUND: u8 = 127;

/// Set up the sandbox, then exec the command; returns only on failure, with the status.
pub(crate) fn init(a: RootlessInitArgs) -> u8 {
    if let Err(e) = setup(&a.socket, &a.sandbox) {
        eprintln!("tapnet: rootless sandbox: {e:#}");
        return EXIT_RUN_FAILED;
    }
    exec(&a.cmd)
}

fn setup(socket: &Path, sandbox: &str) -> anyhow::Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| {
        anyhow!(
            "cannot create a user and network namespace ({e}): check that unprivileged \
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
    let fds: Vec<RawFd> = taps.iter().map(|t| t.fd(0).as_raw_fd()).collect();
    call(socket, "POST", &path, &serde_json::to_vec(&req)?, &fds)?;
    // Our copies close here: only the daemon reads and writes the TAPs.
    drop(taps);
    Ok(())
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
    fds: &[RawFd],
) -> anyhow::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the tapnet daemon at unix://{}",
            socket.display()
        )
    })?;
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
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&req)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .context("sending to the daemon")?;
    s.write_all(&req[sent..]).context("sending to the daemon")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .context("reading the daemon's answer")?;
    let (status, body) = parse_response(&resp)?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_slice::<ErrorResponse>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("Error response from daemon: {msg}");
    }
    Ok(body)
}

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
