//! `docker-tcp`: containers that Docker's own engine runs, on a network whose driver and
//! IPAM driver are tapnet's (`tapnet daemon --docker-plugin SOCKET`, found through a
//! plugin spec file), against the same containers on a user-defined network of Docker's
//! bridge driver (with its iptables rules), in the same run.
//!
//! Two `dockerd` processes (see [`crate::docker_rig`]) run at once, each in a network
//! namespace of its own, so Docker's bridge, its iptables rules and the tapnet daemon's
//! TAPs live and die there:
//! - **tapnet**: a `tapnet daemon` process (its own state directory) serving Docker's
//!   plugin protocols on a socket in this run's directory, and a `dockerd` with
//!   `--bridge=none --iptables=false …` in the same namespace (Docker moves the TAPs
//!   the daemon makes in its namespace into the containers); the network is
//!   `docker network create -d tapnet-perf-PID --ipam-driver tapnet-perf-PID`.
//! - **docker-bridge**: a `dockerd` with its defaults (bridge, iptables on) and
//!   `docker network create -d bridge`.
//!
//! No image is pulled: one holding iperf3 and busybox is staged from the host's own
//! binaries and `docker import`ed. On each network an iperf3 server container runs;
//! a client container (`docker run --rm … iperf3 -c SERVER -J`) measures one stream and
//! two. Then the time from `docker run -d` to the new container's first TCP connection
//! to a port listening in the server container (a socket this process opens in that
//! container's namespace), median of [`START_RUNS`]: how soon a container's network
//! works after Docker is asked to start it.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};

use crate::daemon_rig::in_private_netns_dir;
use crate::docker_rig::{Dockerd, PrivateTmpfs, TempDir, docker_client, stage_image};
use crate::opts::Opts;
use crate::proc::{ensure_iperf3, find_program, program_version};
use crate::report::{Better, Measurement, Reporter, Sample};
use crate::swarm_overlay_tcp::{Node, run_bounded, tapnet_bin};
use crate::sys;
use crate::tap_tcp::parse_iperf;

const SCENARIO: &str = "docker-tcp";
/// The image staged and imported into each engine.
const IMAGE: &str = "tapnet-perf-iperf3:latest";
/// The Docker network on each side (also its name on tapnet's side).
const NETWORK: &str = "perfnet";
const SERVER: &str = "perf-iperf3-server";
const IPERF_PORT: u16 = 5201;
/// Where the start-to-ready probes connect, in the server container's namespace.
const READY_PORT: u16 = 7001;
/// `docker run -d` per start-to-ready measurement.
const START_RUNS: usize = 10;
/// How long a probe container may take to connect.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long the server container may take to listen, the plugin socket to appear.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);
const BRIDGE: &str = "docker-bridge";

/// What both sides are made of.
struct Env {
    dockerd: PathBuf,
    client: PathBuf,
    tapnet: PathBuf,
    base: PathBuf,
    tar: PathBuf,
}

/// One engine's network with an iperf3 server container on it.
struct Side {
    // Field order is drop order: the listener closes, the engine removes the
    // containers and the network and stops, then the tapnet daemon, then the namespace.
    listener: TcpListener,
    server_ip: Ipv4Addr,
    label: &'static str,
    dockerd: Dockerd,
    node: Option<Node>,
    _ns: NetNsGuard,
}

impl Side {
    /// Docker's bridge when `bridge`, else tapnet's plugin.
    fn create(env: &Env, bridge: bool) -> Result<Side> {
        let pid = std::process::id();
        let (label, tag) = if bridge {
            (BRIDGE, "b")
        } else {
            ("tapnet", "t")
        };
        let ns = NetNsGuard::create(&format!("tnp-{pid}-dk{tag}"))?;
        Netlink::open_in(&ns)?.set_up(1)?;
        let driver = format!("tapnet-perf-{pid}");
        let node = if bridge {
            None
        } else {
            // /etc/docker is a tmpfs of this mount namespace (see `run`).
            let sock = env.base.join("p.sock");
            let plugins = Path::new("/etc/docker/plugins");
            std::fs::create_dir_all(plugins)?;
            std::fs::write(
                plugins.join(format!("{driver}.spec")),
                format!("unix://{}\n", sock.display()),
            )?;
            let args = ["--docker-plugin".to_string(), sock.display().to_string()];
            let node = Node::start_with(&env.tapnet, &ns, &format!("perf{pid}-docker"), &args)?;
            let deadline = Instant::now() + LISTEN_LIMIT;
            while !sock.exists() {
                if Instant::now() >= deadline {
                    bail!(
                        "the daemon's plugin socket {} is not there after {LISTEN_LIMIT:?}: {}",
                        sock.display(),
                        node.log_tail()
                    );
                }
                sys::sleep(Duration::from_millis(20))?;
            }
            Some(node)
        };
        let root = env.base.join(label);
        let dockerd = Dockerd::start(&env.dockerd, &env.client, &ns, root, label, bridge)?;
        let tar = env.tar.display().to_string();
        dockerd.docker(&[
            "import",
            "-c",
            "CMD [\"sh\"]",
            "-c",
            "ENV PATH=/usr/bin:/bin",
            &tar,
            IMAGE,
        ])?;
        let created = if bridge {
            dockerd.docker(&["network", "create", "-d", "bridge", NETWORK])
        } else {
            let opt = format!("tapnet.name={NETWORK}");
            dockerd.docker(&[
                "network",
                "create",
                "-d",
                &driver,
                "--ipam-driver",
                &driver,
                "-o",
                &opt,
                NETWORK,
            ])
        };
        if let Err(e) = created {
            let log = node.as_ref().map(Node::log_tail).unwrap_or_default();
            bail!("{e:#}\n{}\n{log}", dockerd.log_tail());
        }
        let port = IPERF_PORT.to_string();
        dockerd.docker(&[
            "run",
            "-d",
            "--name",
            SERVER,
            "--network",
            NETWORK,
            IMAGE,
            "iperf3",
            "-s",
            "-p",
            &port,
        ])?;
        let spid = dockerd.container_pid(SERVER)?;
        let server_ip = dockerd.container_ip(SERVER, NETWORK)?;
        wait_listening(spid, IPERF_PORT)?;
        let sns = NetNs::open_path(Path::new(&format!("/proc/{spid}/ns/net")))?;
        let listener = sns
            .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, READY_PORT)))?
            .with_context(|| format!("listening on port {READY_PORT} in {SERVER}"))?;
        listener.set_nonblocking(true)?;
        Ok(Side {
            listener,
            server_ip,
            label,
            dockerd,
            node,
            _ns: ns,
        })
    }

    /// iperf3 from a client container to the server container.
    fn tcp(&self, streams: u32, secs: u64) -> Result<Sample> {
        let name = format!("perf-iperf3-client-{streams}");
        let (ip, port, t, p) = (
            self.server_ip.to_string(),
            IPERF_PORT.to_string(),
            secs.to_string(),
            streams.to_string(),
        );
        let args = [
            "run",
            "--rm",
            "--name",
            &name,
            "--network",
            NETWORK,
            IMAGE,
            "iperf3",
            "-c",
            &ip,
            "-p",
            &port,
            "-t",
            &t,
            "-i",
            "0",
            "-J",
            "-P",
            &p,
        ];
        let ticks = self.node.as_ref().and_then(Node::cpu_ticks);
        let t0 = Instant::now();
        let limit = Duration::from_secs(secs + 90);
        let (ok, out, err) = run_bounded(self.dockerd.command(&args), limit, "docker run iperf3")?;
        let elapsed = t0.elapsed();
        let r = parse_iperf(&out).with_context(|| {
            format!(
                "{}: the iperf3 client container ({}): {}",
                self.label,
                if ok { "exit 0" } else { "failed" },
                err.trim()
            )
        })?;
        let mut s = Sample::new(r.gbit)
            .detail("retransmits", r.retransmits)
            .detail(
                "iperf_cpu_pct",
                [sys::round(r.sender_cpu, 1), sys::round(r.receiver_cpu, 1)],
            )
            .detail("server_addr", self.server_ip);
        let mut note = format!("retransmits {}", r.retransmits);
        if let (Some(b), Some(a)) = (ticks, self.node.as_ref().and_then(Node::cpu_ticks)) {
            let hz = crate::sys::clock_ticks_per_sec();
            let pct = a.saturating_sub(b) as f64 / hz / elapsed.as_secs_f64() * 100.0;
            let pct = sys::round(pct, 1);
            note.push_str(&format!(", daemon CPU {pct}%"));
            s = s.detail("daemon_cpu_pct", pct);
        }
        Ok(s.note(note))
    }

    /// Milliseconds from `docker run -d` to the container's first connection to
    /// [`READY_PORT`] in the server container, and to `docker run -d` returning, over
    /// `runs` containers (each removed after).
    fn start_to_ready(&self, runs: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let script = format!(
            "i=0; while [ $i -lt 5000 ]; do nc {} {READY_PORT} </dev/null && exit 0; i=$((i+1)); usleep 1000; done; exit 1",
            self.server_ip
        );
        let (mut ready, mut returned) = (Vec::new(), Vec::new());
        for i in 0..runs {
            sys::check_interrupt()?;
            while self.listener.accept().is_ok() {}
            let name = format!("perf-probe-{i}");
            let args = [
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                NETWORK,
                IMAGE,
                "sh",
                "-c",
                &script,
            ];
            let mut cmd = self.dockerd.command(&args);
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            let t0 = Instant::now();
            let mut child = cmd.spawn().context("starting docker run")?;
            let mut back: Option<Duration> = None;
            let outcome = loop {
                match self.listener.accept() {
                    Ok(_) => break Ok(t0.elapsed()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(anyhow::Error::from(e).context("accept")),
                }
                if back.is_none() {
                    if let Some(st) = child.try_wait()? {
                        if !st.success() {
                            let mut err = String::new();
                            if let Some(mut e) = child.stderr.take() {
                                let _ = e.read_to_string(&mut err);
                            }
                            break Err(anyhow::anyhow!("docker run -d failed: {}", err.trim()));
                        }
                        back = Some(t0.elapsed());
                    }
                }
                if sys::interrupted() || t0.elapsed() >= READY_LIMIT {
                    break Err(anyhow::anyhow!(
                        "no connection from {name} within {READY_LIMIT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_micros(100));
            };
            // `docker run -d` returns after the container started, often after its
            // connection: wait for it (bounded).
            while back.is_none() && t0.elapsed() < READY_LIMIT + Duration::from_secs(30) {
                if let Some(_st) = child.try_wait()? {
                    back = Some(t0.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if back.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
            let removed = self.dockerd.docker(&["rm", "-f", &name]);
            sys::check_interrupt()?;
            let t = outcome.with_context(|| format!("{}: start-to-ready run {i}", self.label))?;
            removed?;
            ready.push(t.as_secs_f64() * 1e3);
            returned.push(back.unwrap_or_default().as_secs_f64() * 1e3);
        }
        Ok((ready, returned))
    }
}

/// Wait until process `pid` (in a container) has a TCP socket listening on `port`, IPv4
/// or IPv6, reading its namespace's /proc/PID/net/tcp{,6}.
fn wait_listening(pid: u32, port: u16) -> Result<()> {
    let want = format!(":{port:04X}");
    let deadline = Instant::now() + LISTEN_LIMIT;
    loop {
        let listening = ["tcp", "tcp6"].iter().any(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .map(|s| {
                    s.lines().skip(1).any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
                    })
                })
                .unwrap_or(false)
        });
        if listening {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{SERVER} is not listening on port {port} after {LISTEN_LIMIT:?}");
        }
        sys::sleep(Duration::from_millis(20))?;
    }
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Why this scenario cannot run here, if it cannot.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (dockerd, network namespaces)".into());
    }
    if find_program("dockerd").is_none() {
        return Some("dockerd is not installed (Debian package docker.io)".into());
    }
    if docker_client().is_none() {
        return Some("the docker CLI is not installed (Debian package docker.io)".into());
    }
    for p in ["containerd", "runc", "busybox", "ldd", "tar"] {
        if find_program(p).is_none() {
            return Some(format!("{p} is not installed"));
        }
    }
    None
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    if let Some(why) = missing() {
        rep.skip(SCENARIO, "all cases".into(), why);
        return Ok(());
    }
    let iperf = match ensure_iperf3() {
        Ok(p) => p,
        Err(e) => {
            rep.skip(SCENARIO, "all cases".into(), format!("{e:#}"));
            return Ok(());
        }
    };
    let dockerd = find_program("dockerd").context("dockerd")?;
    let client = docker_client().context("docker")?;
    let tapnet = tapnet_bin()?;
    let secs = opts.seconds.unwrap_or(5.0).round().max(1.0) as u64;
    let versions = [
        ("iperf3", program_version(&iperf)),
        ("dockerd", program_version(&dockerd)),
    ];
    in_private_netns_dir(|| {
        // Plugin specs and dockerd's key.json, the shims' sockets: this mount namespace's.
        let _etc = PrivateTmpfs::mount("/etc/docker", "755")?;
        let _ctd = PrivateTmpfs::mount("/run/containerd", "711")?;
        let base = TempDir::new("docker")?;
        let tar = stage_image(base.path(), &iperf)?;
        let env = Env {
            dockerd,
            client,
            tapnet,
            base: base.path().to_path_buf(),
            tar,
        };
        eprintln!(
            "{SCENARIO}: dockerd with Docker's bridge ({})",
            env.dockerd.display()
        );
        let bridge = Side::create(&env, true)?;
        eprintln!(
            "{SCENARIO}: dockerd with tapnet's network and IPAM plugin ({})",
            env.tapnet.display()
        );
        let tap = Side::create(&env, false).map_err(|e| format!("{e:#}"));
        if let Err(e) = &tap {
            eprintln!("{SCENARIO}: tapnet's side could not be set up: {e}");
        }
        for streams in [1u32, 2] {
            sys::check_interrupt()?;
            eprintln!("{SCENARIO}: {streams} stream(s), {BRIDGE}, {secs} s");
            let b = bridge.tcp(streams, secs).map_err(|e| format!("{e:#}"));
            eprintln!("{SCENARIO}: {streams} stream(s), tapnet, {secs} s");
            let t = tap
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| s.tcp(streams, secs).map_err(|e| format!("{e:#}")));
            let rss = tap
                .as_ref()
                .ok()
                .and_then(|s| s.node.as_ref()?.peak_rss_mib());
            let plural = if streams > 1 { "s" } else { "" };
            rep.push_versus(
                SCENARIO,
                &format!(
                    "TCP {streams} stream{plural} between two containers on a Docker network (iperf3 in containers, dockerd)"
                ),
                "Gbit/s",
                Better::Higher,
                &t,
                rss,
                &[(BRIDGE, b)],
                &|m: Measurement| {
                    let met = m.ratio.is_some_and(|r| r >= 1.0);
                    m.target(">= 1.0x Docker's bridge", met)
                        .detail("seconds", secs)
                        .detail("versions", versions.clone())
                },
            );
        }
        sys::check_interrupt()?;
        eprintln!("{SCENARIO}: start to network ready, {START_RUNS} containers each");
        let ready = |s: &Side| -> Result<Sample, String> {
            let (mut r, mut d) = s.start_to_ready(START_RUNS).map_err(|e| format!("{e:#}"))?;
            let (min, max) = (
                r.iter().copied().fold(f64::MAX, f64::min),
                r.iter().copied().fold(0.0, f64::max),
            );
            let (med, back) = (median(&mut r), median(&mut d));
            Ok(Sample::new(med)
                .note(format!(
                    "min {:.1} max {:.1} ms; docker run -d returned at {:.1} ms (median)",
                    min, max, back
                ))
                .detail(
                    "ready_ms",
                    r.iter().map(|v| sys::round(*v, 2)).collect::<Vec<_>>(),
                )
                .detail("docker_run_returned_ms_median", sys::round(back, 2)))
        };
        let b = ready(&bridge);
        let t = tap.as_ref().map_err(Clone::clone).and_then(ready);
        let rss = tap
            .as_ref()
            .ok()
            .and_then(|s| s.node.as_ref()?.peak_rss_mib());
        rep.push_versus(
            SCENARIO,
            &format!(
                "container start to network ready: `docker run -d` to its first TCP connect to another container, median of {START_RUNS}"
            ),
            "ms",
            Better::Lower,
            &t,
            rss,
            &[(BRIDGE, b)],
            &|m: Measurement| m.detail("versions", versions.clone()),
        );
        drop(tap);
        drop(bridge);
        Ok(())
    })
}
