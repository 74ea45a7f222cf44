//! `tapnet demo --multi-host`: the seed's multi-host overlay deployment on one machine.
//!
//! Three tapnet daemons, each a host of a swarm: as root each runs in a network
//! namespace of its own (`tn-demo-h1`…), joined by an underlay of veth pairs on a kernel
//! bridge in a fourth namespace (`tn-demo-wire`), addresses 10.213.0.1–3/24; without
//! root all three run in this namespace on 127.0.0.11–13 (rootless sandboxes). Node 1
//! initialises the swarm, nodes 2 and 3 join it with the worker token; node 1 creates
//! the overlay network `pets`; `db` runs on node 1, `web` on node 2 and finds db by name
//! (the embedded DNS of node 2 answers a sandbox of node 1, from the gossiped endpoint
//! table); a `client` on node 3 asks web; a `stranger` on another overlay network
//! cannot reach it. Traffic between the nodes is VXLAN on the underlay (UDP 4789).
//!
//! Every daemon and workload is a child process; at the end, or on failure, each gets
//! SIGTERM then SIGKILL by PID, the namespaces and the state directories are removed.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::demo::{answered_by_db, parse_answers};

/// The underlay subnet of the root variant (a /24 unlikely to be in use).
const UNDERLAY: [u8; 3] = [10, 213, 0];
/// Hosts in the demo.
const HOSTS: usize = 3;
/// How long a daemon has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One host of the demo: a daemon and where it lives.
struct Host {
    /// Its namespace (root variant).
    netns: Option<String>,
    /// Its address on the underlay.
    ip: Ipv4Addr,
    dir: PathBuf,
    daemon: Option<Child>,
}

struct MultiDemo {
    exe: PathBuf,
    base: PathBuf,
    hosts: Vec<Host>,
    wire: Option<String>,
    runs: Vec<(usize, String, Child)>,
}

fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = child.id() as i32;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < STOP_GRACE {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = child.wait();
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for MultiDemo {
    fn drop(&mut self) {
        for (h, _, c) in self.runs.iter_mut().rev() {
            let _ = *h;
            stop(c);
        }
        // Sandboxes go with their daemon's records; remove them while it runs.
        for i in 0..self.hosts.len() {
            if self.hosts[i].daemon.is_some() {
                if let Ok(out) = self.tapnet(i, &["sandbox", "ls", "-q"]) {
                    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = self.tapnet(i, &["sandbox", "rm", "-f", id]);
                    }
                }
            }
        }
        for h in self.hosts.iter_mut().rev() {
            if let Some(mut d) = h.daemon.take() {
                stop(&mut d);
            }
            if let Some(ns) = &h.netns {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        if let Some(w) = &self.wire {
            let _ = ip(&["netns", "del", w]);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl MultiDemo {
    /// `tapnet --state-dir DIR ARGS` against host `i`'s daemon; its output.
    fn tapnet(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.exe)
            .arg("--state-dir")
            .arg(&self.hosts[i].dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running tapnet")
    }

    /// As [`MultiDemo::tapnet`], failing with its error text unless it succeeds.
    fn ok(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = self.tapnet(i, args)?;
        if !out.status.success() {
            bail!(
                "node {}: tapnet {}: {}",
                i + 1,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start host `i`'s daemon (in its namespace, if any) and wait for its API.
    fn start_daemon(&mut self, i: usize) -> anyhow::Result<()> {
        let h = &self.hosts[i];
        std::fs::create_dir_all(&h.dir)?;
        let resolv = h.dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n")?;
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&h.dir)
            .arg("daemon")
            .arg("--resolv-conf")
            .arg(&resolv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(h.dir.join("daemon.log"))?)
            .process_group(0);
        if let Some(ns) = &h.netns {
            let f = std::fs::File::open(format!("/run/netns/{ns}"))
                .with_context(|| format!("opening namespace {ns}"))?;
            // Each node shows its own host name in `node ls`.
            let host = std::ffi::CString::new(format!("node{}", i + 1))?;
            // SAFETY: setns, unshare and sethostname are async-signal-safe; the fd and
            // the name stay alive until exec (the closure owns them).
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0
                        || libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(host.as_ptr(), host.as_bytes().len()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = c.spawn().context("starting a daemon")?;
        let sock = h.dir.join(tapnet_ctl::daemon::SOCKET_NAME);
        self.hosts[i].daemon = Some(child);
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(st) = self.hosts[i]
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(self.hosts[i].dir.join("daemon.log"))
                    .unwrap_or_default();
                bail!("node {}'s daemon exited ({st}): {}", i + 1, log.trim());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("node {}'s daemon did not come up", i + 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Build the underlay (root variant).
    fn underlay(&mut self, tag: &str) -> anyhow::Result<()> {
        let wire = format!("tn-demo-wire-{tag}");
        ip(&["netns", "add", &wire])?;
        self.wire = Some(wire.clone());
        ip(&["-n", &wire, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &wire, "link", "set", "br0", "up"])?;
        for (k, h) in self.hosts.iter_mut().enumerate() {
            let ns = format!("tn-demo-h{}-{tag}", k + 1);
            ip(&["netns", "add", &ns])?;
            h.netns = Some(ns.clone());
            let outer = format!("u{}", k + 1);
            ip(&[
                "-n", &wire, "link", "add", &outer, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &wire, "link", "set", &outer, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// `tapnet run --name NAME --network NET -- CMD` on host `i`, in the background; its
    /// output goes to `NAME.log` in the host's state directory.
    fn start(&mut self, i: usize, name: &str, net: &str, cmd: &[String]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.run_log(i, name))?;
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&self.hosts[i].dir)
            .args(["run", "--name", name, "--network", net, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = c.spawn().with_context(|| format!("starting {name}"))?;
        self.runs.push((i, name.into(), child));
        Ok(())
    }

    /// Wait (up to 30 s) until host `i` knows network `net`: a swarm network reaches the
    /// other nodes through the managers' log and gossip, a moment after its creation.
    fn wait_network(&self, i: usize, net: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.tapnet(i, &["network", "ls", "--format", "{{.Name}}"])?;
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == net)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {} did not learn network {net} within 30s", i + 1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where the output of host `i`'s background sandbox `name` goes.
    fn run_log(&self, i: usize, name: &str) -> PathBuf {
        self.hosts[i].dir.join(format!("{name}.log"))
    }

    /// Sandbox `name`'s address on host `i`, once it has one (bounded wait).
    fn address(&self, i: usize, name: &str) -> anyhow::Result<Ipv4Addr> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(out) = self.tapnet(i, &["sandbox", "inspect", name]) {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let found = v
                    .pointer("/0/Networks")
                    .and_then(|n| n.as_object())
                    .and_then(|n| n.values().next())
                    .and_then(|e| e.get("IPAddress"))
                    .and_then(|a| a.as_str())
                    .and_then(|a| a.parse().ok());
                if let Some(a) = found {
                    return Ok(a);
                }
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.run_log(i, name)).unwrap_or_default();
                bail!(
                    "sandbox {name} on node {} got no address within 30s: {}",
                    i + 1,
                    log.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run the demo client in a new sandbox `name` on host `i`, network `net` (`tapnet
    /// run` removes the sandbox when the command ends).
    fn check(
        &self,
        i: usize,
        name: &str,
        net: &str,
        args: &[String],
    ) -> anyhow::Result<Vec<super::demo::Answer>> {
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&self.hosts[i].dir)
            .args(["run", "--name", name, "--network", net, "--"])
            .arg(&self.exe)
            .arg("demo-client")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                stop(&mut child);
                bail!("the check in {name} did not finish within 60s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output()?;
        let answers = parse_answers(&String::from_utf8_lossy(&out.stdout));
        if answers.is_empty() {
            bail!(
                "the check in {name} answered nothing: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(answers)
    }
}

fn state_base() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("tapnet-demo-mh-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    Ok(base)
}

fn dir_of(base: &Path, k: usize) -> PathBuf {
    base.join(format!("node{}", k + 1))
}

/// `tapnet demo --multi-host`.
pub(crate) fn run() -> anyhow::Result<u8> {
    let root = nix::unistd::geteuid().is_root();
    let base = state_base()?;
    let tag = format!("{}", std::process::id() % 100_000);
    let hosts = (0..HOSTS)
        .map(|k| Host {
            netns: None,
            ip: if root {
                Ipv4Addr::new(UNDERLAY[0], UNDERLAY[1], UNDERLAY[2], k as u8 + 1)
            } else {
                Ipv4Addr::new(127, 0, 0, 11 + k as u8)
            },
            dir: dir_of(&base, k),
            daemon: None,
        })
        .collect();
    let mut demo = MultiDemo {
        exe: std::env::current_exe().context("finding the tapnet binary")?,
        base,
        hosts,
        wire: None,
        runs: Vec::new(),
    };
    println!(
        "tapnet demo --multi-host: Docker's multi-host overlay deployment, three swarm nodes on one machine"
    );
    if root {
        demo.underlay(&tag)?;
        println!("  underlay: namespaces tn-demo-h1..3-{tag} on a kernel bridge, 10.213.0.1-3/24");
    } else {
        println!(
            "  underlay: loopback addresses 127.0.0.11-13 (running without root: rootless sandboxes)"
        );
    }
    for k in 0..HOSTS {
        demo.start_daemon(k)?;
    }
    let addr = |k: usize| demo.hosts[k].ip.to_string();
    let a1 = addr(0);
    demo.ok(
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &a1,
            "--listen-addr",
            &format!("{a1}:2377"),
        ],
    )?;
    let token = demo
        .ok(0, &["swarm", "join-token", "-q", "worker"])?
        .trim()
        .to_string();
    for k in 1..HOSTS {
        let ak = addr(k);
        demo.ok(
            k,
            &[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &ak,
                "--listen-addr",
                &format!("{ak}:2377"),
                &format!("{a1}:2377"),
            ],
        )?;
    }
    println!("built:");
    print!("{}", indent(&demo.ok(0, &["node", "ls"])?));
    demo.ok(
        0,
        &["network", "create", "-d", "overlay", "--attachable", "pets"],
    )?;
    demo.ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "other",
        ],
    )?;
    for k in 1..HOSTS {
        for net in ["pets", "other"] {
            demo.wait_network(k, net)?;
        }
    }
    let exe = demo.exe.display().to_string();
    let db_cmd = [&exe, "demo-server", "db", "--listen", "0.0.0.0:7000"].map(String::from);
    demo.start(0, "db", "pets", &db_cmd)?;
    let db_ip = demo.address(0, "db")?;
    let web_cmd = [
        &exe,
        "demo-server",
        "web",
        "--listen",
        "0.0.0.0:8000",
        "--db",
        "db:7000",
    ]
    .map(String::from);
    demo.start(1, "web", "pets", &web_cmd)?;
    let web_ip = demo.address(1, "web")?;
    println!(
        "  network  pets   overlay (swarm)  db on node 1 at {db_ip}, web on node 2 at {web_ip}"
    );
    println!("checked:");
    let mut ok = true;
    let mut verdict = |good: bool, what: String| {
        ok &= good;
        println!("  {:<5} {what}", if good { "ok" } else { "FAIL" });
    };
    let web = SocketAddr::from((web_ip, 8000)).to_string();
    let args: Vec<String> = ["--web", &web, "--wait", "30", "max", "luna", "kiwi"]
        .map(String::from)
        .to_vec();
    let answers = demo.check(2, "client", "pets", &args)?;
    for a in &answers {
        match &a.result {
            Ok(v) => verdict(
                answered_by_db(v),
                format!(
                    "client (node 3, {}) -> web (node 2) {:?}: {v}",
                    a.from, a.key
                ),
            ),
            Err(e) => verdict(
                false,
                format!("client (node 3) -> web (node 2) {:?}: {e}", a.key),
            ),
        }
    }
    let by_name = format!("from db at db:7000 = {db_ip}:7000");
    verdict(
        answers
            .iter()
            .any(|a| a.result.as_ref().is_ok_and(|v| v.contains(&by_name))),
        format!(
            "web (node 2) -> db (node 1) by name: db resolved to {db_ip} by node 2's embedded DNS"
        ),
    );
    let args: Vec<String> = ["--web", &web, "max"].map(String::from).to_vec();
    for a in demo.check(2, "stranger", "other", &args)? {
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
    drop(demo);
    println!("removed: servers, sandboxes, daemons, namespaces and state");
    Ok(if ok { 0 } else { 1 })
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
