//! The sandboxes of the host-networking scenarios (`egress-tcp`, `egress-latency`,
//! `publish-tcp`): one network namespace with a way out to the host, made three ways.
//!
//! - **tapnet**: a sandbox of a daemon in this process ([`DaemonRig`]), on a bridge
//!   network with `tapnet.host_loopback=true` (the gateway address reaches the host's
//!   127.0.0.1) and the MTU under test, its ports published with `PortBindings`.
//! - **slirp4netns** and **pasta**: the user-mode stacks rootless containers use today,
//!   attached to a namespace this process creates. slirp4netns maps 10.0.2.2 to the
//!   host's loopback (host loopback is left enabled) and publishes ports through its API
//!   socket (`add_hostfwd`); pasta maps its gateway address to the host (`--map-gw`,
//!   its default) and publishes ports with `-t HOSTPORT:PORT`. Both are installed with
//!   apt-get when missing (Debian packages `slirp4netns` and `passt`).
//!
//! Every process is a [`Proc`] (killed by PID on drop, and by the kernel if this process
//! dies), dropped before its namespace is deleted; the logs and the API socket live in
//! a directory under the temporary directory that is removed on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tapnet_api::SandboxInspect;
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};

use crate::daemon_rig::{DaemonRig, sandbox_netns};
use crate::proc::{Proc, ensure_program, package_version, spawn_host_logged};
use crate::sys;
use crate::topo::{create_ns, ns_name};

/// How long a user-mode stack may take to configure its namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP port of the sandbox published on the host's 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forward {
    /// The port inside the sandbox.
    pub(crate) port: u16,
}

/// What a client needs of a sandbox, whoever made it.
pub(crate) trait Sandbox {
    fn ns(&self) -> &NetNs;
    /// The address inside the sandbox that reaches the host's 127.0.0.1.
    fn host_addr(&self) -> Ipv4Addr;
    /// The host port (on 127.0.0.1) that a published sandbox port has.
    fn host_port(&self, port: u16) -> Result<u16>;
    /// The MTU of the sandbox's interface, as read back from it.
    fn mtu(&self) -> Option<u32>;
    /// The version of the software carrying the traffic.
    fn version(&self) -> String;
    /// Peak RSS of the process that carries the traffic (the stack's, or for tapnet this
    /// process's, which hosts the daemon), in MiB.
    fn peak_rss_mib(&self) -> Option<f64>;
}

/// Which user-mode stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StackKind {
    Slirp4netns,
    Pasta,
}

impl StackKind {
    pub(crate) const ALL: [StackKind; 2] = [StackKind::Slirp4netns, StackKind::Pasta];

    pub(crate) fn label(self) -> &'static str {
        match self {
            StackKind::Slirp4netns => "slirp4netns",
            StackKind::Pasta => "pasta",
        }
    }

    /// (program, Debian package).
    fn program(self) -> (&'static str, &'static str) {
        match self {
            StackKind::Slirp4netns => ("slirp4netns", "slirp4netns"),
            StackKind::Pasta => ("pasta", "passt"),
        }
    }

    /// The program, installed if missing; the error says why it cannot be had.
    pub(crate) fn ensure(self) -> Result<Installed> {
        let (prog, pkg) = self.program();
        let path = ensure_program(prog, pkg)?;
        Ok(Installed {
            kind: self,
            path,
            version: package_version(pkg).unwrap_or_else(|| "unknown version".into()),
        })
    }
}

/// A user-mode stack's program, found or installed.
#[derive(Clone, Debug)]
pub(crate) struct Installed {
    pub(crate) kind: StackKind,
    path: PathBuf,
    /// The Debian package's version.
    pub(crate) version: String,
}

/// A directory removed (with its content) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(ns_name(tag));
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("removing the stale {}", p.display()))?;
        }
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// slirp4netns or pasta serving a namespace of ours.
pub(crate) struct UserStack {
    // Drop order: the stack process dies first, then the namespace goes, then the files.
    proc: Proc,
    ns: NetNsGuard,
    _dir: TempDir,
    gateway: Ipv4Addr,
    mtu: Option<u32>,
    host_ports: BTreeMap<u16, u16>,
    version: String,
}

/// A free TCP port on the host's 127.0.0.1 (free when asked; the stack binds it soon
/// after).
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl UserStack {
    /// Create namespace `tnp-<pid>-<tag>`, attach the stack to it with `mtu`, wait until
    /// it has configured the namespace, and publish `forwards` on 127.0.0.1.
    pub(crate) fn start(
        inst: &Installed,
        tag: &str,
        mtu: u32,
        forwards: &[Forward],
    ) -> Result<UserStack> {
        let ns = create_ns(tag)?;
        let dir = TempDir::new(tag)?;
        let log = dir.0.join("log");
        let api = dir.0.join("api.sock");
        let mut host_ports = BTreeMap::new();
        for f in forwards {
            host_ports.insert(f.port, free_port()?);
        }
        let path = ns.path().display().to_string();
        let mut args: Vec<String> = Vec::new();
        match inst.kind {
            StackKind::Slirp4netns => {
                args.extend(
                    [
                        "--configure",
                        &format!("--mtu={mtu}"),
                        "--netns-type=path",
                        &format!("--api-socket={}", api.display()),
                        &path,
                        "tap0",
                    ]
                    .map(String::from),
                );
            }
            StackKind::Pasta => {
                // In the foreground (so the PID is pasta's), as root (`nobody` cannot
                // enter the namespace), IPv4 only like slirp4netns, no automatic port
                // forwarding in either direction: only the ports asked for.
                args.extend(
                    [
                        "--foreground",
                        "--quiet",
                        "--runas",
                        "0:0",
                        "--ipv4-only",
                        "--config-net",
                        "--mtu",
                        &mtu.to_string(),
                        "-u",
                        "none",
                        "-T",
                        "none",
                        "-U",
                        "none",
                    ]
                    .map(String::from),
                );
                if host_ports.is_empty() {
                    args.extend(["-t", "none"].map(String::from));
                }
                for (port, host) in &host_ports {
                    args.push("-t".into());
                    args.push(format!("127.0.0.1/{host}:{port}"));
                }
                args.extend(["--netns".to_string(), path]);
            }
        }
        let mut proc = spawn_host_logged(&inst.path, &args, &log)?;
        let log_text = || {
            std::fs::read_to_string(&log)
                .map(|s| {
                    // pasta also complains on stderr that it has no syslog.
                    s.lines()
                        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let (gateway, mtu_read) = loop {
            if let Err(e) = proc.check_running() {
                bail!("{e}: {}", log_text());
            }
            if let Some(r) = default_route(&ns)? {
                break r;
            }
            sys::check_interrupt()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} did not configure {} within {READY_TIMEOUT:?}: {}",
                    inst.kind.label(),
                    ns.name(),
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if inst.kind == StackKind::Slirp4netns {
            for (port, host) in &host_ports {
                slirp_add_hostfwd(&api, *host, *port)
                    .with_context(|| format!("slirp4netns add_hostfwd {host} -> {port}"))?;
            }
        } else {
            for host in host_ports.values() {
                wait_host_listening(&mut proc, *host, deadline)
                    .with_context(|| format!("pasta -t {host}: {}", log_text()))?;
            }
        }
        Ok(UserStack {
            proc,
            ns,
            _dir: dir,
            gateway,
            mtu: mtu_read,
            host_ports,
            version: inst.version.clone(),
        })
    }
}

impl Sandbox for UserStack {
    fn ns(&self) -> &NetNs {
        &self.ns
    }
    fn host_addr(&self) -> Ipv4Addr {
        self.gateway
    }
    fn host_port(&self, port: u16) -> Result<u16> {
        self.host_ports
            .get(&port)
            .copied()
            .with_context(|| format!("port {port} is not published"))
    }
    fn mtu(&self) -> Option<u32> {
        self.mtu
    }
    fn version(&self) -> String {
        self.version.clone()
    }
    fn peak_rss_mib(&self) -> Option<f64> {
        self.proc.peak_rss_mib()
    }
}

/// The IPv4 default gateway of `ns` and the MTU of its interface, once there is one.
fn default_route(ns: &NetNs) -> Result<Option<(Ipv4Addr, Option<u32>)>> {
    let mut nl = Netlink::open_in(ns)?;
    for r in nl.routes()? {
        if let (None, Some(IpAddr::V4(gw))) = (r.dest, r.gateway) {
            let mtu = r.oif.and_then(|i| nl.link(i).ok()).and_then(|l| l.mtu);
            return Ok(Some((gw, mtu)));
        }
    }
    Ok(None)
}

/// Wait until `p` listens on TCP `port` (in the host's namespace), until `deadline`.
fn wait_host_listening(p: &mut Proc, port: u16, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    crate::proc::wait_listening(p, port, left.max(Duration::from_millis(100)))
}

/// One request to slirp4netns's API socket; an `error` answer is an error.
fn slirp_api(sock: &Path, req: &Value) -> Result<Value> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {}", sock.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(serde_json::to_string(req)?.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let v: Value = serde_json::from_str(&out)
        .with_context(|| format!("slirp4netns answered {out:?}, not JSON"))?;
    if let Some(e) = v.get("error") {
        bail!("slirp4netns: {e}");
    }
    Ok(v)
}

/// Publish guest TCP `port` on the host's 127.0.0.1:`host`.
fn slirp_add_hostfwd(sock: &Path, host: u16, port: u16) -> Result<()> {
    slirp_api(
        sock,
        &json!({"execute": "add_hostfwd", "arguments": {
            "proto": "tcp", "host_addr": "127.0.0.1", "host_port": host, "guest_port": port}}),
    )
    .map(drop)
}

/// The network options of the tapnet side: the host's loopback behind the gateway, the
/// MTU under test, and whether loopback clients of published ports are spliced.
fn network_options(mtu: u32, splice: bool) -> Value {
    json!({"tapnet.host_loopback": "true", "com.docker.network.driver.mtu": mtu.to_string(),
        "tapnet.loopback_splice": splice.to_string()})
}

/// A sandbox of the daemon in `rig`. Holds the namespace open: drop it before the rig.
pub(crate) struct TapnetSandbox {
    ns: NetNs,
    gateway: Ipv4Addr,
    mtu: Option<u32>,
    host_ports: BTreeMap<u16, u16>,
}

impl TapnetSandbox {
    /// Create network `name` on `subnet` with `mtu` and host loopback, and a sandbox on
    /// it whose `forwards` are published on 127.0.0.1 (free ports the daemon picks).
    pub(crate) fn create(
        rig: &DaemonRig,
        name: &str,
        subnet: &str,
        mtu: u32,
        forwards: &[Forward],
        splice: bool,
    ) -> Result<TapnetSandbox> {
        let net: Value = rig.api().post(
            "/networks/create",
            &json!({"Name": name, "Driver": "bridge",
                "IPAM": {"Config": [{"Subnet": subnet}]}, "Options": network_options(mtu, splice)}),
        )?;
        let net = net["Id"]
            .as_str()
            .context("network create answer without Id")?
            .to_string();
        let mut body = json!({"Name": name, "Networks": [{"Network": net}]});
        if !forwards.is_empty() {
            let b: serde_json::Map<String, Value> = forwards
                .iter()
                .map(|f| {
                    (
                        format!("{}/tcp", f.port),
                        json!([{"HostIp": "127.0.0.1", "HostPort": ""}]),
                    )
                })
                .collect();
            body["PortBindings"] = Value::Object(b);
        }
        let v: Value = rig.api().post("/sandboxes", &body)?;
        let sb: SandboxInspect =
            serde_json::from_value(v.clone()).context("decoding the sandbox")?;
        let ep = sb
            .networks
            .values()
            .next()
            .context("sandbox without endpoint")?;
        let gateway: Ipv4Addr = ep
            .gateway
            .parse()
            .with_context(|| format!("the sandbox's gateway {:?}", ep.gateway))?;
        let mut host_ports = BTreeMap::new();
        for f in forwards {
            host_ports.insert(f.port, published_port(&v, f.port)?);
        }
        let ns = sandbox_netns(&sb)?;
        let mtu = default_route(&ns).ok().flatten().and_then(|(_, m)| m);
        Ok(TapnetSandbox {
            ns,
            gateway,
            mtu,
            host_ports,
        })
    }
}

/// The host port of `port/tcp` in a sandbox's `Ports` (Docker's NetworkSettings.Ports).
fn published_port(sandbox: &Value, port: u16) -> Result<u16> {
    let key = format!("{port}/tcp");
    let b = sandbox
        .get("Ports")
        .and_then(|p| p.get(&key))
        .and_then(|p| p.get(0))
        .with_context(|| {
            format!("the daemon's answer has no Ports[{key:?}][0] (it did not publish the port)")
        })?;
    let hp = b["HostPort"].as_str().unwrap_or_default();
    hp.parse()
        .with_context(|| format!("Ports[{key:?}][0].HostPort is {hp:?}, not a port"))
}

impl Sandbox for TapnetSandbox {
    fn ns(&self) -> &NetNs {
        &self.ns
    }
    fn host_addr(&self) -> Ipv4Addr {
        self.gateway
    }
    fn host_port(&self, port: u16) -> Result<u16> {
        self.host_ports
            .get(&port)
            .copied()
            .with_context(|| format!("port {port} is not published"))
    }
    fn mtu(&self) -> Option<u32> {
        self.mtu
    }
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
    fn peak_rss_mib(&self) -> Option<f64> {
        sys::peak_rss_mib()
    }
}

/// An error as the one-line text a skipped record gives.
pub(crate) fn err_text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// slirp4netns and pasta, each found or installed, or why it cannot be had (said on
/// stderr too: those baselines are then skipped with that reason).
pub(crate) fn installed_stacks() -> Vec<(StackKind, Result<Installed, String>)> {
    StackKind::ALL
        .into_iter()
        .map(|k| {
            let r = k.ensure().map_err(err_text);
            if let Err(e) = &r {
                eprintln!(
                    "{}: cannot be had, its baselines are skipped: {e}",
                    k.label()
                );
            }
            (k, r)
        })
        .collect()
}

/// A namespace served by each stack that is installed (`tnp-<pid>-<tag>-<stack>`), or
/// why it could not be made.
pub(crate) fn start_stacks(
    installed: &[(StackKind, Result<Installed, String>)],
    tag: &str,
    mtu: u32,
    forwards: &[Forward],
) -> Vec<(StackKind, Result<UserStack, String>)> {
    installed
        .iter()
        .map(|(k, inst)| {
            let r = inst.clone().and_then(|inst| {
                UserStack::start(&inst, &format!("{tag}-{}", k.label()), mtu, forwards)
                    .map_err(err_text)
            });
            if let Err(e) = &r {
                eprintln!("{}: no sandbox: {e}", k.label());
            }
            (*k, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_port_from_ports() {
        let v = json!({"Ports": {"5201/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40001"}]}});
        assert_eq!(published_port(&v, 5201).unwrap(), 40001);
        let e = published_port(&v, 7007).unwrap_err().to_string();
        assert!(e.contains("7007/tcp"), "{e}");
        let bad = json!({"Ports": {"5201/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}});
        assert!(
            published_port(&bad, 5201)
                .unwrap_err()
                .to_string()
                .contains("not a port")
        );
        assert!(published_port(&json!({}), 5201).is_err());
    }

    #[test]
    fn tapnet_network_options() {
        let o = network_options(65520, true);
        assert_eq!(o["tapnet.host_loopback"], "true");
        assert_eq!(o["com.docker.network.driver.mtu"], "65520");
        assert_eq!(o["tapnet.loopback_splice"], "true");
    }
}
