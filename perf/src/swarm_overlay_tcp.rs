//! `swarm-overlay-tcp`: `overlay-tcp` through an overlay that a swarm made. Two hosts,
//! namespaces U1 and U2 joined by a veth pair (MTU 1500, as `overlay_topo` builds them),
//! each run a `tapnet daemon` process of their own (its own state directory, hostname
//! and network namespace). Host 1 initializes a swarm, host 2 joins it with the worker
//! token; host 1 creates an attachable overlay network, and each host a sandbox on it
//! (`a` on host 1, `b` on host 2), all with the `tapnet` CLI. iperf3 then runs from a to
//! b, one stream and two, beside the kernel's VXLAN (`KernelVxlan`) in the same run.
//!
//! Unlike `overlay-tcp`'s engines driven through the overlay API, everything on the
//! tapnet side is the daemons' own: the VTEPs, the peers and entries learnt through the
//! managers' Raft and gossip, the sandboxes' TAPs.
//!
//! The whole scenario runs inside [`in_private_netns_dir`], and the daemons are started
//! from its thread: their sandboxes' namespaces are mounted in the private `/run/netns`
//! no other process sees, and go with it. On drop (also after a failure) each daemon's
//! sandbox is removed through the CLI, the daemon is stopped by its PID (SIGTERM,
//! SIGKILL after [`STOP_GRACE`]), whatever namespace it leaves is deleted, and its state
//! directory removed. Every wait is bounded.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tapnet_ctl::daemon::DaemonConfig;
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};

use crate::daemon_rig::in_private_netns_dir;
use crate::overlay_topo::{KernelVxlan, VTEP_1, VTEP_2, underlay};
use crate::proc::{ensure_iperf3, find_program, spawn_in, stop_child};
use crate::report::{Better, Measurement, Reporter};
use crate::sys;
use crate::tap_tcp::{client, server};
use crate::topo::Datapath;

const SCENARIO: &str = "swarm-overlay-tcp";
/// The overlay network the swarm creates.
const NETWORK: &str = "perfnet";
/// The swarm's management port.
const SWARM_PORT: u16 = 2377;
/// How long one CLI call may take.
const CLI_LIMIT: Duration = Duration::from_secs(60);
/// How long a daemon may take to answer on its socket.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long the swarm may take to agree (network listed on host 2, a reaching b).
const CONVERGE: Duration = Duration::from_secs(30);
/// How long a daemon has to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long building the `tapnet` binary may take.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The `tapnet` binary the daemons and the CLI run: `TAPNET_BIN` if set; else the one
/// beside this executable, first brought up to date with `cargo build -p tapnet-ctl
/// --bin tapnet` (same profile and target directory) when cargo and the workspace are
/// at hand, so that a stale daemon is never measured.
pub(crate) fn tapnet_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TAPNET_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("TAPNET_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("this executable's path")?;
    let profile_dir = exe.parent().context("this executable's directory")?;
    let bin = profile_dir.join("tapnet");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find_program("cargo"));
    if let (Some(cargo), Some(target_dir)) = (cargo, profile_dir.parent()) {
        if workspace.join("Cargo.toml").is_file() {
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(p) => p.to_string(),
            };
            eprintln!("{SCENARIO}: cargo build -p tapnet-ctl --bin tapnet --profile {profile}");
            let args: Vec<String> = [
                "build",
                "--quiet",
                "-p",
                "tapnet-ctl",
                "--bin",
                "tapnet",
                "--profile",
                &profile,
                "--target-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([target_dir.display().to_string()])
            .collect();
            let mut cmd = Command::new(&cargo);
            cmd.args(&args).current_dir(workspace);
            let (ok, _, err) = run_bounded(cmd, BUILD_LIMIT, "cargo build")?;
            if !ok {
                bail!("building tapnet failed: {}", err.trim());
            }
        }
    }
    if !bin.is_file() {
        bail!(
            "no tapnet binary at {} (build it with `cargo build --release -p tapnet-ctl --bin tapnet`, or set TAPNET_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Run `cmd` with its output captured, killing it (by its PID) past `limit`: whether
/// it succeeded, its stdout and its stderr.
pub(crate) fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    what: &str,
) -> Result<(bool, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut out = child.stdout.take().context("piped stdout")?;
    let mut err = child.stderr.take().context("piped stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if sys::interrupted() || Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = (t_out.join(), t_err.join());
        sys::check_interrupt()?;
        bail!("{what} did not finish within {limit:?}; killed it");
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    Ok((status.success(), out, err))
}

/// One host's `tapnet daemon`, a process in the host's namespace.
pub(crate) struct Node {
    name: String,
    bin: PathBuf,
    dir: PathBuf,
    /// The host's namespace (a handle of its own: the caller deletes it after the node
    /// drops).
    ns: NetNs,
    child: Option<Child>,
    /// Sandboxes created through this node: (name, namespace name).
    sandboxes: Vec<(String, String)>,
}

impl Node {
    /// Start `tapnet daemon` in `ns` with hostname `name` on a fresh state directory and
    /// wait for its API.
    fn start(bin: &Path, ns: &NetNs, name: &str) -> Result<Node> {
        Node::start_with(bin, ns, name, &[])
    }

    /// [`Node::start`] with more arguments of `tapnet daemon` (`--docker-plugin PATH`).
    pub(crate) fn start_with(
        bin: &Path,
        ns: &NetNs,
        name: &str,
        daemon_args: &[String],
    ) -> Result<Node> {
        let def = DaemonConfig::default_state_dir();
        let dir_name = format!("tapnet-perf-{}-{name}", std::process::id());
        let dir = def
            .parent()
            .map(|p| p.join(&dir_name))
            .unwrap_or_else(|| std::env::temp_dir().join(&dir_name));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut node = Node {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            dir,
            ns: NetNs::open(ns.name()).with_context(|| format!("opening {}", ns.name()))?,
            child: None,
            sandboxes: Vec::new(),
        };
        // Names the embedded DNS does not own fail fast: no resolver answers.
        let resolv = node.dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n")?;
        let log = std::fs::File::create(node.log_path())?;
        let host = CString::new(name)?;
        let fd = ns.fd().as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.arg("--state-dir")
            .arg(&node.dir)
            .arg("daemon")
            .arg("--resolv-conf")
            .arg(&resolv)
            .args(daemon_args)
            .env_remove("TAPNET_HOST")
            .env_remove("TAPNET_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: between fork and exec the closure makes only raw system calls (setns,
        // unshare, sethostname, setpgid, prctl), which are async-signal-safe and allocate
        // nothing; `fd` is the namespace file `ns` keeps open across the spawn, and `host`
        // was allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0
                    || libc::unshare(libc::CLONE_NEWUTS) != 0
                    || libc::sethostname(host.as_ptr(), host.as_bytes().len()) != 0
                    // Its own process group: Ctrl-C reaches this process only, which
                    // then removes the sandboxes through the daemon and stops it.
                    || libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting tapnet daemon on {name}"))?;
        let child = node.child.insert(child);
        let socket = node.dir.join("tapnet.sock");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if ping_api(&socket) {
                return Ok(node);
            }
            if let Some(st) = child.try_wait()? {
                node.child = None;
                bail!("{name}: the daemon exited ({st}): {}", node.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name}: the daemon's API is not up after {START_LIMIT:?}: {}",
                    node.log_tail()
                );
            }
            sys::sleep(Duration::from_millis(20))?;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The last lines of the daemon's output.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `tapnet ARGS` against this node's daemon, in the host's namespace: its stdout, or
    /// an error with its stderr.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let sock = format!("unix://{}", self.dir.join("tapnet.sock").display());
        let mut all: Vec<String> = vec!["-H".into(), sock];
        all.extend(args.iter().map(|s| s.to_string()));
        let p = spawn_in(&self.ns, &self.bin, &all, true, &[])?;
        let (st, out, err) = p.wait_output(CLI_LIMIT)?;
        if !st.success() {
            bail!(
                "{}: tapnet {} failed ({st}): {}{}",
                self.name,
                args.join(" "),
                out.trim(),
                err.trim()
            );
        }
        Ok(out)
    }

    /// `sandbox create --name NAME --network NET`, then its namespace and address.
    fn sandbox(&mut self, name: &str, net: &str) -> Result<(NetNs, Ipv4Addr)> {
        self.sandboxes.push((name.to_string(), String::new()));
        self.cli(&["sandbox", "create", "--name", name, "--network", net])?;
        let out = self.cli(&["sandbox", "inspect", name])?;
        let v: Value =
            serde_json::from_str(&out).with_context(|| format!("sandbox inspect {name}: {out}"))?;
        let v = &v[0];
        let netns = v["NetnsPath"]
            .as_str()
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .with_context(|| format!("sandbox {name} has no namespace: {out}"))?
            .to_string();
        if let Some(s) = self.sandboxes.last_mut() {
            s.1 = netns.clone();
        }
        let ip = v["Networks"][net]["IPAddress"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("sandbox {name} has no address on {net}: {out}"))?;
        let ns = NetNs::open(&netns).with_context(|| format!("opening {netns}"))?;
        Ok((ns, ip))
    }

    /// The daemon's (user, system) CPU ticks.
    pub(crate) fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// The daemon's peak RSS (VmHWM), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = l["VmHWM:".len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            for (sb, _) in self.sandboxes.clone() {
                if let Err(e) = self.cli(&["sandbox", "rm", &sb]) {
                    eprintln!("warning: {e:#}");
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            if !stop_child(&mut child, STOP_GRACE) {
                eprintln!(
                    "warning: {}: the daemon did not exit on SIGTERM; killed",
                    self.name
                );
            }
        }
        for (_, netns) in &self.sandboxes {
            if netns.is_empty() {
                continue;
            }
            let _ = std::fs::remove_dir_all(
                Path::new(tapnet_ctl::daemon::plumbing::netns::NETNS_ETC_DIR).join(netns),
            );
            if let Ok(ns) = NetNs::open(netns) {
                let _ = ns.delete();
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Whether the daemon on `socket` answers `GET /_ping` with 200.
pub(crate) fn ping_api(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let t = Some(Duration::from_secs(2));
    if s.set_read_timeout(t).is_err() || s.set_write_timeout(t).is_err() {
        return false;
    }
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: tapnet\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Poll `check` until it succeeds, for up to `limit`: the last error past it.
fn converge(what: &str, limit: Duration, mut check: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{what}: not so within {limit:?}")));
            }
            Err(_) => sys::sleep(Duration::from_millis(200))?,
        }
    }
}

/// Sandboxes a (host 1) and b (host 2) on an overlay network of a two-node swarm.
struct SwarmOverlay {
    // Field order is drop order: the namespaces' files close, the daemons remove the
    // sandboxes and stop, then the hosts' namespaces go.
    a: NetNs,
    b: NetNs,
    addr_b: Ipv4Addr,
    addr_a: Ipv4Addr,
    n1: Node,
    n2: Node,
    _u1: NetNsGuard,
    _u2: NetNsGuard,
}

impl SwarmOverlay {
    fn create(bin: &Path, ping: &Path) -> Result<SwarmOverlay> {
        let (u1, u2) = underlay("sotcp-t")?;
        let pid = std::process::id();
        let mut n1 = Node::start(bin, &u1, &format!("perf{pid}-h1"))?;
        let mut n2 = Node::start(bin, &u2, &format!("perf{pid}-h2"))?;
        let (v1, v2) = (VTEP_1.to_string(), VTEP_2.to_string());
        n1.cli(&["swarm", "init", "--advertise-addr", &v1])?;
        let token = n1.cli(&["swarm", "join-token", "-q", "worker"])?;
        let token = token.trim();
        let leader = format!("{VTEP_1}:{SWARM_PORT}");
        n2.cli(&[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &v2,
            &leader,
        ])?;
        n1.cli(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            NETWORK,
        ])?;
        converge("the overlay listed on host 2", CONVERGE, || {
            let out = n2.cli(&["network", "ls", "--format", "{{.Name}}"])?;
            if out.lines().any(|l| l.trim() == NETWORK) {
                Ok(())
            } else {
                bail!("host 2 lists {out:?}")
            }
        })?;
        let (a, addr_a) = n1.sandbox("a", NETWORK)?;
        let (b, addr_b) = n2.sandbox("b", NETWORK)?;
        let to = addr_b.to_string();
        let args: Vec<String> = ["-n", "-q", "-c", "1", "-W", "1", &to]
            .iter()
            .map(|s| s.to_string())
            .collect();
        converge("a reaching b over the overlay", CONVERGE, || {
            let p = spawn_in(&a, ping, &args, true, &[])?;
            let (st, _, _) = p.wait_output(Duration::from_secs(5))?;
            if st.success() {
                Ok(())
            } else {
                bail!("{to} does not answer a's ping")
            }
        })?;
        Ok(SwarmOverlay {
            a,
            b,
            addr_b,
            addr_a,
            n1,
            n2,
            _u1: u1,
            _u2: u2,
        })
    }

    /// Both daemons' CPU ticks.
    fn cpu_ticks(&self) -> [Option<u64>; 2] {
        [self.n1.cpu_ticks(), self.n2.cpu_ticks()]
    }
}

impl Datapath for SwarmOverlay {
    fn label(&self) -> &'static str {
        "tapnet-swarm"
    }
    fn a(&self) -> &NetNs {
        &self.a
    }
    fn b(&self) -> &NetNs {
        &self.b
    }
    fn ifnames(&self) -> (&'static str, &'static str) {
        ("eth0", "eth0")
    }
    fn addr_b(&self) -> Ipv4Addr {
        self.addr_b
    }
}

/// Per cent of one CPU each daemon used between two readings over `elapsed`.
fn daemon_cpu_pct(
    before: [Option<u64>; 2],
    after: [Option<u64>; 2],
    elapsed: Duration,
) -> [f64; 2] {
    let hz = crate::sys::clock_ticks_per_sec();
    let secs = elapsed.as_secs_f64().max(1e-9);
    [0, 1].map(|i| match (before[i], after[i]) {
        (Some(b), Some(a)) => sys::round(a.saturating_sub(b) as f64 / hz / secs * 100.0, 1),
        _ => f64::NAN,
    })
}

pub(crate) fn run(opts: &crate::opts::Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    let ping = find_program("ping").context("swarm-overlay-tcp needs ping (iputils-ping)")?;
    let bin = tapnet_bin()?;
    let iperf_version = crate::proc::program_version(&iperf);
    let secs = opts.seconds.unwrap_or(5.0).round().max(1.0) as u64;
    let cpus = opts.app_cpus()?;
    in_private_netns_dir(|| {
        eprintln!(
            "{SCENARIO}: kernel VXLAN, and two tapnet daemons ({}) forming a swarm with overlay network {NETWORK}",
            bin.display()
        );
        let kernel = KernelVxlan::create("sotcp-")?;
        let swarm = SwarmOverlay::create(&bin, &ping)?;
        let _ks = server(&iperf, &kernel, &cpus)?;
        let _ts = server(&iperf, &swarm, &cpus)?;
        for streams in [1u32, 2] {
            sys::check_interrupt()?;
            eprintln!("{SCENARIO}: {streams} stream(s), kernel VXLAN, {secs} s");
            let k = client(&iperf, &kernel, streams, secs, &cpus)?;
            eprintln!("{SCENARIO}: {streams} stream(s), tapnet swarm, {secs} s");
            let ticks = swarm.cpu_ticks();
            let t0 = Instant::now();
            let t = client(&iperf, &swarm, streams, secs, &cpus)?;
            let cpu = daemon_cpu_pct(ticks, swarm.cpu_ticks(), t0.elapsed());
            let rss = [swarm.n1.peak_rss_mib(), swarm.n2.peak_rss_mib()];
            let peak = rss.iter().flatten().copied().reduce(f64::max);
            let plural = if streams > 1 { "s" } else { "" };
            let m = Measurement::new(
                SCENARIO,
                format!(
                    "TCP {streams} stream{plural} a→b, overlay and sandboxes made by a 2-node swarm (a daemon per host)"
                ),
                "Gbit/s",
                Better::Higher,
                t.gbit,
                kernel.label(),
                k.gbit,
                rep.machine(),
            )
            .rss(peak)
            .note(format!(
                "retransmits {} (kernel-vxlan {}); daemon CPU h1 {}%, h2 {}%; peak RSS is the larger daemon's",
                t.retransmits, k.retransmits, cpu[0], cpu[1]
            ))
            .detail("tapnet_retransmits", t.retransmits)
            .detail("baseline_retransmits", k.retransmits)
            .detail(
                "tapnet_iperf_cpu_pct",
                [sys::round(t.sender_cpu, 1), sys::round(t.receiver_cpu, 1)],
            )
            .detail(
                "baseline_iperf_cpu_pct",
                [sys::round(k.sender_cpu, 1), sys::round(k.receiver_cpu, 1)],
            )
            .detail("daemon_cpu_pct", cpu)
            .detail("daemon_peak_rss_mib", rss)
            .detail("sandbox_addrs", [swarm.addr_a, swarm.addr_b])
            .detail("app_cpus", &cpus)
            .detail("kernel_baseline", "vxlan + veth in a Linux bridge per host")
            .detail("iperf3", &iperf_version)
            .detail("seconds", secs);
            rep.push(m);
        }
        Ok(())
    })
}
