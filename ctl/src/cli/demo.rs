//! `tapnet demo`: the seed's single-host deployment, built, checked and removed.
//!
//! A user-defined bridge `pets` with a `db` sandbox and a `web` sandbox, each running a
//! small server that tapnet ships (`tapnet demo-server`); `web` answers lookups by
//! reading from `db`, which it finds by name (`db:7000`, through the network's embedded
//! DNS, on every request), and publishes its port on the host's loopback. A
//! `client` sandbox on `pets` asks `web` (`tapnet demo-client`); a `stranger` sandbox on
//! another network shows it cannot; the host asks `web` through its published port.
//!
//! The daemon core runs in this process on a throwaway state directory and serves its
//! API on a socket there; every workload is a `tapnet run` child of this binary, as a
//! user would start it. So the demo needs no privilege: as an ordinary user those runs
//! make rootless sandboxes (see [`crate::rootless`]), as root sandboxes in named
//! namespaces, and the same code shows both. Each run is the leader of a process group
//! of its own; at the end, or on failure, SIGINT or SIGTERM, each gets SIGTERM (it
//! relays it to its command and removes its sandbox), the group SIGKILL if it has not
//! exited in time, then what is left in the daemon is removed and the directory with it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tapnet_ctl::daemon::core::NetworkSpec;
use tapnet_ctl::daemon::model::NetworkRecord;
use tapnet_ctl::daemon::plumbing::{OsPlumbing, Plumbing};
use tapnet_ctl::daemon::{Daemon, DaemonConfig, SOCKET_NAME, server};
use tapnet_engine::hostnet::HostNetConfig;
use tapnet_engine::runtime::EngineConfig;

const DB_PORT: u16 = 7000;
const WEB_PORT: u16 = 8000;

/// The records the db server holds.
const PETS: &[(&str, &str)] = &[
    ("max", "dog, 7 years, likes the beach"),
    ("luna", "cat, 3 years, sleeps on keyboards"),
    ("kiwi", "parrot, 12 years, says hello"),
];

/// `tapnet demo-server db|web`: the demo's workloads. `db` is where web finds db
/// (`HOST:PORT`, a name looked up on every request, as a Docker user's app does).
pub(crate) fn server(role: &str, listen: SocketAddr, db: Option<&str>) -> anyhow::Result<u8> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = serve_one(role, conn, db);
    }
    Ok(0)
}

fn serve_one(role: &str, conn: TcpStream, db: Option<&str>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let key = line.trim();
    let answer = match role {
        "db" => PETS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| "unknown".into()),
        _ => {
            let db = db.ok_or_else(|| anyhow!("web needs --db"))?;
            let addr = resolve(db)?;
            let from_db = ask(addr, key)?;
            if db == addr.to_string() {
                format!("{key}: {from_db} (from db at {db})")
            } else {
                format!("{key}: {from_db} (from db at {db} = {addr})")
            }
        }
    };
    writeln!(conn, "{answer}")?;
    Ok(())
}

/// The IPv4 address `host_port` names now (the system's resolver: in a sandbox, its
/// network's embedded DNS).
fn resolve(host_port: &str) -> anyhow::Result<SocketAddr> {
    host_port
        .to_socket_addrs()
        .with_context(|| format!("resolve {host_port}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("{host_port} has no IPv4 address"))
}

/// One request: send `key`, read one line.
fn ask(addr: SocketAddr, key: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    writeln!(s, "{key}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Ask `addr` for `key` until it answers or `deadline` passes (one try at least), while
/// the servers start.
fn ask_until(addr: SocketAddr, key: &str, deadline: Instant) -> anyhow::Result<String> {
    loop {
        let r = ask(addr, key);
        match r {
            Ok(v) if !v.is_empty() => return Ok(v),
            Ok(_) if Instant::now() >= deadline => {
                bail!("{addr} closed the connection without an answer")
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `tapnet demo-client --web ADDR --wait SECS KEY…`: the demo's check, run in a sandbox.
/// One line per key: `<own address> TAB <key> TAB ok|error TAB <answer or error>`;
/// exits 1 if any key got no answer.
pub(crate) fn client(web: SocketAddr, wait: u64, keys: &[String]) -> anyhow::Result<u8> {
    // The address this sandbox would send from (a route lookup; nothing is sent).
    let me = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect(web)?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "-".into());
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut ok = true;
    for key in keys {
        match ask_until(web, key, deadline) {
            Ok(v) => println!("{me}\t{key}\tok\t{v}"),
            Err(e) => {
                ok = false;
                println!("{me}\t{key}\terror\t{e:#}");
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// One answer of `tapnet demo-client`.
pub(super) struct Answer {
    pub(super) from: String,
    pub(super) key: String,
    pub(super) result: Result<String, String>,
}

pub(super) fn parse_answers(out: &str) -> Vec<Answer> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            let (from, key, status, text) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Answer {
                from: from.into(),
                key: key.into(),
                result: match status {
                    "ok" => Ok(text.into()),
                    _ => Err(text.into()),
                },
            })
        })
        .collect()
}

/// Set by SIGINT or SIGTERM: the demo stops, removing what it built.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: removing what the demo built");
    }
    Ok(())
}

/// How long a workload has to exit after SIGTERM before its group gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A `tapnet run` this demo started, leader of its own process group.
struct Run {
    name: String,
    child: Child,
}

impl Run {
    /// SIGTERM (relayed to the command, then the sandbox is removed); SIGKILL to the
    /// whole group if it has not exited in time.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as i32;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < STOP_GRACE {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "tapnet demo: {} did not stop within {STOP_GRACE:?}; killing its processes",
            self.name
        );
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Everything the demo made; all of it is removed on drop (at the end or on failure).
struct Demo {
    dir: PathBuf,
    exe: PathBuf,
    daemon: Option<Arc<Daemon>>,
    plumbing: Option<Arc<OsPlumbing>>,
    api: Option<(
        tokio::sync::oneshot::Sender<()>,
        JoinHandle<std::io::Result<()>>,
    )>,
    runs: Vec<Run>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Workloads first: their `tapnet run`s remove their sandboxes over the API.
        for r in self.runs.iter_mut().rev() {
            r.stop();
        }
        if let Some(d) = self.daemon.take() {
            for (sb, _) in d.sandboxes() {
                let _ = d.remove_sandbox(&sb.id);
            }
            for n in d.networks() {
                if !n.predefined {
                    let _ = d.remove_network(&n.id);
                }
            }
            if let Some((stop, thread)) = self.api.take() {
                let _ = stop.send(());
                let _ = thread.join();
            }
        }
        if let Some(p) = self.plumbing.take() {
            p.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new directory of our own under the temp dir, mode 0700.
fn make_state_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..100 {
        let dir = base.join(format!("tapnet-demo-{}-{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("no free name for a state directory in {}", base.display())
}

impl Demo {
    fn daemon(&self) -> &Arc<Daemon> {
        self.daemon.as_ref().expect("the daemon is open")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_NAME)
    }

    /// Serve the daemon's API on the state dir's socket, on a thread of its own, which
    /// also turns SIGINT and SIGTERM into [`INTERRUPTED`].
    fn serve_api(&mut self) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = self.daemon().clone();
        let socket = self.socket();
        let thread = std::thread::Builder::new()
            .name("tapnet-demo-api".into())
            .spawn(move || {
                server::serve(&socket, daemon, async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut stop = stop_rx;
                    let (Ok(mut int), Ok(mut term)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) else {
                        let _ = stop.await;
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => return,
                            Some(()) = int.recv() => INTERRUPTED.store(true, Ordering::SeqCst),
                            Some(()) = term.recv() => INTERRUPTED.store(true, Ordering::SeqCst),
                        }
                    }
                })
            })
            .context("starting the API thread")?;
        self.api = Some((stop_tx, thread));
        let socket = self.socket();
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if self.api.as_ref().is_some_and(|(_, t)| t.is_finished()) {
                let (_, t) = self.api.take().expect("checked");
                let r = t.join().map_err(|_| anyhow!("the API thread panicked"))?;
                r.with_context(|| format!("serving the API on {}", socket.display()))?;
                bail!("the API stopped before it served");
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("the API on {} did not come up", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `tapnet --host <our socket> ARGS`, as a process group of its own.
    fn tapnet(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .process_group(0);
        c
    }

    /// `tapnet run --name NAME --network NET [-p PUBLISH] -- CMD`; index in `runs`.
    fn start(
        &mut self,
        name: &str,
        net: &str,
        publish: Option<&str>,
        cmd: &[String],
        capture: bool,
    ) -> anyhow::Result<usize> {
        interrupted()?;
        let mut args: Vec<String> = ["run", "--name", name, "--network", net]
            .map(String::from)
            .to_vec();
        if let Some(p) = publish {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        args.push("--".into());
        args.extend_from_slice(cmd);
        let mut c = self.tapnet(&args);
        if capture {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            c.stdout(Stdio::null());
        }
        let child = c
            .spawn()
            .with_context(|| format!("starting tapnet run for {name}"))?;
        self.runs.push(Run {
            name: name.into(),
            child,
        });
        Ok(self.runs.len() - 1)
    }

    /// Wait until sandbox `name` (started as run `idx`) has its interfaces attached;
    /// its address and MAC on its first network.
    fn wait_up(&mut self, name: &str, idx: usize) -> anyhow::Result<(Ipv4Addr, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            interrupted()?;
            let d = self.daemon();
            if let Ok((_, eps)) = d.sandbox(name) {
                if let Some((e, _)) = eps.first() {
                    if eps.iter().all(|(e, _)| d.endpoint_attached(&e.id)) {
                        let ip = e.ipv4.ok_or_else(|| anyhow!("{name} has no address"))?;
                        return Ok((ip, e.mac.clone()));
                    }
                }
            }
            if let Some(st) = self.runs[idx].child.try_wait()? {
                bail!("tapnet run for {name} exited ({st}) before its sandbox came up");
            }
            if Instant::now() >= deadline {
                bail!("sandbox {name} did not come up within 20s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `tapnet demo-client ARGS` in a new sandbox `name` on `net` and read its
    /// answers (bounded in time).
    fn check(&mut self, name: &str, net: &str, args: &[&str]) -> anyhow::Result<Vec<Answer>> {
        let mut cmd = vec![self.exe.display().to_string(), "demo-client".into()];
        cmd.extend(args.iter().map(|a| a.to_string()));
        let idx = self.start(name, net, None, &cmd, true)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.runs[idx].child.try_wait()? {
                break st;
            }
            interrupted()?;
            if Instant::now() >= deadline {
                self.runs[idx].stop();
                bail!("the check in {name} did not finish within 30s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let child = &mut self.runs[idx].child;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out)?;
        }
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        let answers = parse_answers(&out);
        if answers.is_empty() {
            bail!(
                "the check in {name} answered nothing ({status}): {}",
                err.trim()
            );
        }
        Ok(answers)
    }
}

fn subnet(n: &NetworkRecord) -> String {
    let c = &n.ipam[0];
    format!(
        "{} gateway {}",
        c.subnet,
        c.gateway.map(|g| g.to_string()).unwrap_or_default()
    )
}

/// Where a sandbox's interfaces live: its named namespace, or for a rootless one the
/// namespace of the process that holds them.
fn netns_path(d: &Daemon, name: &str) -> anyhow::Result<String> {
    let (sb, _) = d.sandbox(name)?;
    Ok(d.netns_path(&sb))
}

pub(super) fn answered_by_db(v: &str) -> bool {
    v.contains("from db") && !v.contains("unknown")
}

/// `tapnet demo`.
pub(crate) fn run() -> anyhow::Result<u8> {
    let root = nix::unistd::geteuid().is_root();
    let mut demo = Demo {
        dir: make_state_dir()?,
        exe: std::env::current_exe().context("finding the tapnet binary")?,
        daemon: None,
        plumbing: None,
        api: None,
        runs: Vec::new(),
    };
    let cfg = DaemonConfig {
        state_dir: demo.dir.clone(),
    };
    let plumbing = Arc::new(OsPlumbing::start(
        EngineConfig::default(),
        HostNetConfig::default(),
    )?);
    demo.plumbing = Some(plumbing.clone());
    let d = Arc::new(Daemon::open(&cfg, plumbing.clone())?);
    demo.daemon = Some(d.clone());
    demo.serve_api()?;
    println!("tapnet demo: Docker's single-host bridge deployment, switched in user space");
    println!("  state: {} (removed at the end)", demo.dir.display());
    println!(
        "  sandboxes: {}",
        if root {
            "named network namespaces (running as root)"
        } else {
            "rootless, each in a user and network namespace of its own (running without root)"
        }
    );

    let net = |name: &str| NetworkSpec {
        name: name.into(),
        ..Default::default()
    };
    let pets = d.create_network(net("pets"), false)?;
    let other = d.create_network(net("other"), false)?;
    let exe = demo.exe.display().to_string();
    let db_cmd = [&exe, "demo-server", "db", "--listen", "0.0.0.0:7000"].map(String::from);
    let idx = demo.start("db", "pets", None, &db_cmd, false)?;
    let (db_ip, db_mac) = demo.wait_up("db", idx)?;
    let db_addr = SocketAddr::from((db_ip, DB_PORT));
    // By name, as the seed's example connects: the network's DNS answers it.
    let db_name = format!("db:{DB_PORT}");
    let web_cmd = [
        &exe,
        "demo-server",
        "web",
        "--listen",
        &format!("0.0.0.0:{WEB_PORT}"),
        "--db",
        &db_name,
    ]
    .map(String::from);
    let publish = format!("127.0.0.1::{WEB_PORT}");
    let idx = demo.start("web", "pets", Some(&publish), &web_cmd, false)?;
    let (web_ip, web_mac) = demo.wait_up("web", idx)?;
    let web_addr = SocketAddr::from((web_ip, WEB_PORT));
    let published = d
        .sandbox("web")?
        .0
        .ports
        .iter()
        .find(|p| p.container_port == WEB_PORT && p.proto == "tcp")
        .map(|p| SocketAddr::from((p.host_ip, p.host_port)))
        .ok_or_else(|| anyhow!("web has no published port {WEB_PORT}/tcp"))?;

    println!("built:");
    println!("  network  pets      bridge  {}", subnet(&pets));
    println!("  network  other     bridge  {}", subnet(&other));
    println!(
        "  sandbox  db        {db_ip:<12} {db_mac}  runs: tapnet demo-server db (port {DB_PORT})"
    );
    println!(
        "  sandbox  web       {web_ip:<12} {web_mac}  runs: tapnet demo-server web (port {WEB_PORT}), reads db at {db_name} (by name)"
    );
    println!("  port     web       {WEB_PORT}/tcp -> {published}");
    for name in ["db", "web"] {
        println!("  netns    {name:<9} {}", netns_path(&d, name)?);
    }

    println!("checked:");
    let mut ok = true;
    let mut verdict = |good: bool, what: String| {
        ok &= good;
        println!("  {:<5} {what}", if good { "ok" } else { "FAIL" });
    };
    let keys: Vec<&str> = PETS.iter().map(|(k, _)| *k).collect();
    let web_s = web_addr.to_string();
    let mut args = vec!["--web", &web_s, "--wait", "10"];
    args.extend(&keys);
    let answers = demo.check("client", "pets", &args)?;
    if let Some(a) = answers.first() {
        println!(
            "  sandbox  client    {} (pets), runs: tapnet demo-client",
            a.from
        );
    }
    for a in &answers {
        match &a.result {
            Ok(v) => verdict(
                answered_by_db(v),
                format!("client -> web {web_addr} {:?}: {v}", a.key),
            ),
            Err(e) => verdict(false, format!("client -> web {web_addr} {:?}: {e}", a.key)),
        }
    }
    // web found db by its name: the embedded DNS answered db's address.
    let by_name = format!("from db at {db_name} = {db_addr}");
    let resolved = answers
        .iter()
        .any(|a| a.result.as_ref().is_ok_and(|v| v.contains(&by_name)));
    let dns_at = pets
        .ipam
        .first()
        .and_then(|c| c.gateway)
        .map(|g| g.to_string())
        .unwrap_or_default();
    verdict(
        resolved,
        format!("web -> db by name: {db_name} resolved to {db_addr} (pets' DNS at {dns_at}:53)"),
    );
    let answers = demo.check("stranger", "other", &["--web", &web_s, "max"])?;
    for a in &answers {
        println!(
            "  sandbox  stranger  {} (other), runs: tapnet demo-client",
            a.from
        );
        match &a.result {
            Err(e) => verdict(
                true,
                format!("stranger (network other) cannot reach web: {e}"),
            ),
            Ok(v) => verdict(
                false,
                format!("stranger reached web across networks: {v:?}"),
            ),
        }
    }
    match ask_until(published, "luna", Instant::now() + Duration::from_secs(10)) {
        Ok(v) => verdict(
            answered_by_db(&v),
            format!("host -> {published} (web's {WEB_PORT}/tcp) \"luna\": {v}"),
        ),
        Err(e) => verdict(
            false,
            format!("host -> {published} (web's {WEB_PORT}/tcp): {e:#}"),
        ),
    }
    let st = plumbing.engine().stats();
    let frames: u64 = st.ports.iter().map(|p| p.stats.tx_packets).sum();
    let drops = st.switch.drop_malformed + st.switch.drop_no_domain;
    verdict(
        true,
        format!(
            "datapath: {} ports, {frames} frames delivered, {drops} malformed",
            st.ports.len()
        ),
    );
    drop(demo);
    println!("removed: servers, sandboxes, networks and state");
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_from_demo_client_lines() {
        let a = parse_answers(
            "172.18.0.4\tmax\tok\tmax: dog (from db at 172.18.0.2:7000)\n\
             172.19.0.2\tmax\terror\tconnect to 172.18.0.3:8000: timed out\n\
             garbage\n",
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].from, "172.18.0.4");
        assert_eq!(a[0].key, "max");
        assert!(a[0].result.as_ref().is_ok_and(|v| answered_by_db(v)));
        assert_eq!(
            a[1].result,
            Err("connect to 172.18.0.3:8000: timed out".to_string())
        );
    }
}
