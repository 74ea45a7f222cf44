//! `tapnet demo`: the seed's single-host deployment, built, checked and removed.
//!
//! A user-defined bridge `pets` with a `db` sandbox and a `web` sandbox, each running a
//! small server that tapnet ships (`tapnet demo-server`); `web` answers lookups by
//! reading from `db` by address. A `client` sandbox on `pets` asks `web`; a `stranger`
//! sandbox on another network shows it cannot. The daemon core runs in this process on
//! a throwaway state directory, so nothing is left behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tapnet_engine::daemon::core::{AttachSpec, NetworkSpec};
use tapnet_engine::daemon::{Daemon, DaemonConfig};
use tapnet_engine::netns::NetNs;
use tapnet_engine::runtime::EngineConfig;

const DB_PORT: u16 = 7000;
const WEB_PORT: u16 = 8000;

/// The records the db server holds.
const PETS: &[(&str, &str)] = &[
    ("max", "dog, 7 years, likes the beach"),
    ("luna", "cat, 3 years, sleeps on keyboards"),
    ("kiwi", "parrot, 12 years, says hello"),
];

/// `tapnet demo-server db|web`: the demo's workloads.
pub(crate) fn server(role: &str, listen: SocketAddr, db: Option<SocketAddr>) -> anyhow::Result<u8> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = serve_one(role, conn, db);
    }
    Ok(0)
}

fn serve_one(role: &str, conn: TcpStream, db: Option<SocketAddr>) -> anyhow::Result<()> {
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
            let from_db = ask(db, key)?;
            format!("{key}: {from_db} (from db at {db})")
        }
    };
    writeln!(conn, "{answer}")?;
    Ok(())
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

/// A child process in a sandbox, killed by PID when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(netns: &str, args: &[String]) -> anyhow::Result<Server> {
    let ns = std::fs::File::open(netns).with_context(|| format!("open {netns}"))?;
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: runs in the forked child before exec and only calls setns(2), which is
    // async-signal-safe; `ns` stays open until after spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().context("start demo server")?;
    drop(ns);
    Ok(Server(child))
}

/// Ask `addr` for `key` from inside the namespace `netns`, retrying while the server
/// starts (bounded).
fn ask_from(netns: &str, addr: SocketAddr, key: &str, wait: Duration) -> anyhow::Result<String> {
    let name = netns.rsplit('/').next().unwrap_or(netns);
    let ns = NetNs::open(name)?;
    let deadline = Instant::now() + wait;
    loop {
        let r = ns.run(|| ask(addr, key))?;
        match r {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

struct Cleanup {
    daemon: Option<Arc<Daemon>>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            for (sb, _) in d.sandboxes() {
                let _ = d.remove_sandbox(&sb.id);
            }
            for n in d.networks() {
                if !n.predefined {
                    let _ = d.remove_network(&n.id);
                }
            }
            d.engine().shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip_of(d: &Daemon, sandbox: &str, net: &str) -> anyhow::Result<(Ipv4Addr, String, String)> {
    let (sb, eps) = d.sandbox(sandbox)?;
    let (e, _) = eps
        .iter()
        .find(|(_, n)| n.name == net)
        .ok_or_else(|| anyhow!("{sandbox} has no endpoint on {net}"))?;
    let ip = e.ipv4.ok_or_else(|| anyhow!("{sandbox} has no address"))?;
    Ok((
        ip,
        e.mac.clone(),
        format!("{}/{}", tapnet_engine::netns::NETNS_RUN_DIR, sb.netns),
    ))
}

/// `tapnet demo`.
pub(crate) fn run() -> anyhow::Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        bail!("tapnet demo creates network namespaces and TAP devices: run it as root");
    }
    let dir = std::env::temp_dir().join(format!("tapnet-demo-{}", std::process::id()));
    let cfg = DaemonConfig {
        state_dir: dir.clone(),
        engine: EngineConfig::default(),
    };
    let mut guard = Cleanup { daemon: None, dir };
    let d = Arc::new(Daemon::open(&cfg)?);
    guard.daemon = Some(d.clone());
    println!("tapnet demo: Docker's single-host bridge deployment, switched in user space");
    println!("  state: {} (removed at the end)", cfg.state_dir.display());

    let pets = d.create_network(
        NetworkSpec {
            name: "pets".into(),
            ..Default::default()
        },
        false,
    )?;
    let other = d.create_network(
        NetworkSpec {
            name: "other".into(),
            ..Default::default()
        },
        false,
    )?;
    let on = |net: &str| {
        vec![AttachSpec {
            network: net.into(),
            ..Default::default()
        }]
    };
    for name in ["db", "web", "client"] {
        d.create_sandbox(Some(name.into()), None, on("pets"), &[])?;
    }
    d.create_sandbox(Some("stranger".into()), None, on("other"), &[])?;
    let (db_ip, db_mac, db_ns) = ip_of(&d, "db", "pets")?;
    let (web_ip, web_mac, web_ns) = ip_of(&d, "web", "pets")?;
    let (client_ip, _, client_ns) = ip_of(&d, "client", "pets")?;
    let (stranger_ip, _, stranger_ns) = ip_of(&d, "stranger", "other")?;
    let db_addr = SocketAddr::from((db_ip, DB_PORT));
    let web_addr = SocketAddr::from((web_ip, WEB_PORT));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let _db = spawn_in(
        &db_ns,
        &s(&[
            "demo-server",
            "db",
            "--listen",
            &format!("0.0.0.0:{DB_PORT}"),
        ]),
    )?;
    let _web = spawn_in(
        &web_ns,
        &s(&[
            "demo-server",
            "web",
            "--listen",
            &format!("0.0.0.0:{WEB_PORT}"),
            "--db",
            &db_addr.to_string(),
        ]),
    )?;
    let subnet = |n: &tapnet_engine::daemon::model::NetworkRecord| {
        let c = &n.ipam[0];
        format!(
            "{} gateway {}",
            c.subnet,
            c.gateway.map(|g| g.to_string()).unwrap_or_default()
        )
    };
    println!("built:");
    println!("  network  pets      bridge  {}", subnet(&pets));
    println!(
        "  sandbox  db        {db_ip:<12} {db_mac}  runs: tapnet demo-server db (port {DB_PORT})"
    );
    println!(
        "  sandbox  web       {web_ip:<12} {web_mac}  runs: tapnet demo-server web (port {WEB_PORT}), reads db at {db_addr}"
    );
    println!("  sandbox  client    {client_ip}");
    println!("  network  other     bridge  {}", subnet(&other));
    println!("  sandbox  stranger  {stranger_ip}  (on other)");

    println!("checked:");
    let mut ok = true;
    for (key, _) in PETS {
        match ask_from(&client_ns, web_addr, key, Duration::from_secs(5)) {
            Ok(v) if v.contains("from db") && !v.contains("unknown") => {
                println!("  ok    client -> web {web_addr} {key:?}: {v}");
            }
            Ok(v) => {
                ok = false;
                println!("  FAIL  client -> web {web_addr} {key:?}: unexpected answer {v:?}");
            }
            Err(e) => {
                ok = false;
                println!("  FAIL  client -> web {web_addr} {key:?}: {e:#}");
            }
        }
    }
    match ask_from(&stranger_ns, web_addr, "max", Duration::ZERO) {
        Err(e) => println!("  ok    stranger (network other) cannot reach web: {e:#}"),
        Ok(v) => {
            ok = false;
            println!("  FAIL  stranger reached web across networks: {v:?}");
        }
    }
    let st = d.engine().stats();
    let frames: u64 = st.ports.iter().map(|p| p.stats.tx_packets).sum();
    let drops = st.switch.drop_malformed + st.switch.drop_no_domain;
    println!(
        "  ok    datapath: {} ports, {frames} frames delivered, {drops} malformed",
        st.ports.len()
    );
    drop(_web);
    drop(_db);
    drop(guard);
    println!("removed: servers, sandboxes, networks and state");
    Ok(if ok { 0 } else { 1 })
}
