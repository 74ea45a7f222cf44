//! `publish-tcp`: a sandbox's published ports, used from the host through 127.0.0.1.
//! An iperf3 server and a TCP echo server run in the sandbox, each port published on
//! the host's 127.0.0.1 (tapnet: `PortBindings` with an empty `HostPort`, the port read
//! from the answer's `Ports`; pasta: `-t 127.0.0.1/HOSTPORT:PORT`; slirp4netns:
//! `add_hostfwd` on its API socket). Measured: iperf3 TCP from the host into the sandbox
//! and back (`-R`), and connections per second (connect, 64-byte request and echo,
//! close; one at a time). One record per baseline: ratio = tapnet / baseline.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

use crate::daemon_rig::{DaemonRig, in_private_netns_dir};
use crate::echo::{self, EchoServer};
use crate::egress_tcp::{iperf_client, seconds, tcp_sample};
use crate::opts::Opts;
use crate::proc::{Proc, ensure_iperf3, program_version, spawn_in, wait_listening};
use crate::report::{Better, Reporter, Sample};
use crate::stacks::{Forward, Sandbox, TapnetSandbox, err_text, installed_stacks, start_stacks};
use crate::sys;

const SCENARIO: &str = "publish-tcp";
const MTU: u32 = 1500;
const SUBNET: &str = "10.127.4.0/24";
/// The network whose loopback clients are spliced into the sandbox.
const SPLICE_SUBNET: &str = "10.127.5.0/24";
/// iperf3's port in the sandbox.
const IPERF_PORT: u16 = 5201;
/// The echo server's port in the sandbox.
const ECHO_PORT: u16 = 7007;
const FORWARDS: [Forward; 2] = [Forward { port: IPERF_PORT }, Forward { port: ECHO_PORT }];
/// At most this many connections per measurement (with `--seconds` the bound in time):
/// the client's ports in TIME_WAIT stay well below the ephemeral range.
const MAX_CONNECTIONS: u64 = 20_000;
/// Consecutive failed connections that end a measurement.
const MAX_FAILURES: u64 = 3;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers inside one sandbox.
struct Servers {
    _iperf: Proc,
    _echo: EchoServer,
}

fn start_servers(iperf: &Path, sb: &dyn Sandbox) -> Result<Servers> {
    let args = ["-s", "-B", "0.0.0.0", "-p", &IPERF_PORT.to_string()].map(String::from);
    let mut p = spawn_in(sb.ns(), iperf, &args, false, &[])?;
    wait_listening(&mut p, IPERF_PORT, Duration::from_secs(5))?;
    let l = sb
        .ns()
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT)))?
        .with_context(|| format!("binding 0.0.0.0:{ECHO_PORT} in the sandbox"))?;
    Ok(Servers {
        _iperf: p,
        _echo: echo::tcp(l)?,
    })
}

/// Connections per second to 127.0.0.1:`port`, one at a time, for `budget`.
fn connections(sb: &dyn Sandbox, port: u16, budget: Duration) -> Result<Sample> {
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let req = [0x5au8; 64];
    let mut resp = [0u8; 64];
    let (mut done, mut failures, mut failed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while done < MAX_CONNECTIONS && start.elapsed() < budget {
        sys::check_interrupt()?;
        let t0 = Instant::now();
        let r = (|| -> std::io::Result<()> {
            let mut c = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.write_all(&req)?;
            c.read_exact(&mut resp)?;
            Ok(())
        })();
        match r {
            Ok(()) if resp == req => {
                hist.saturating_record(t0.elapsed().as_nanos() as u64);
                done += 1;
                failures = 0;
            }
            Ok(()) => bail!("the echo through {to} differs from the request"),
            Err(e) => {
                failed += 1;
                failures += 1;
                if failures >= MAX_FAILURES {
                    bail!("{failures} connections in a row through {to} failed, the last: {e}");
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if done == 0 {
        bail!("no connection through {to} completed within {budget:?}");
    }
    Ok(Sample::new(done as f64 / secs)
        .note(format!(
            "{done} connections ({failed} failed), p99 {:.0} µs",
            hist.value_at_quantile(0.99) as f64 / 1e3
        ))
        .detail("connections", done)
        .detail("failed", failed)
        .detail(
            "p50_us",
            sys::round(hist.value_at_quantile(0.5) as f64 / 1e3, 1),
        )
        .detail(
            "p99_us",
            sys::round(hist.value_at_quantile(0.99) as f64 / 1e3, 1),
        )
        .detail("seconds", sys::round(secs, 3))
        .detail("version", sb.version())
        .detail("peak_rss_mib", sb.peak_rss_mib().map(|v| sys::round(v, 1))))
}

/// One measurement on a sandbox.
#[derive(Clone, Copy)]
enum Case {
    /// iperf3 from the host into the sandbox (`reverse`: the sandbox sends).
    Iperf { reverse: bool },
    /// Connections per second.
    Connections,
}

fn measure(iperf: &Path, sb: &dyn Sandbox, case: Case, secs: u64) -> Result<Sample> {
    match case {
        Case::Iperf { reverse } => {
            let hp = sb.host_port(IPERF_PORT)?;
            iperf_client(iperf, None, Ipv4Addr::LOCALHOST, hp, secs, reverse)
                .map(|t| tcp_sample(&t, sb).detail("host_port", hp))
        }
        Case::Connections => connections(sb, sb.host_port(ECHO_PORT)?, Duration::from_secs(secs)),
    }
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    let iperf_version = program_version(&iperf);
    let installed = installed_stacks();
    let secs = seconds(opts);
    in_private_netns_dir(|| {
        eprintln!("{SCENARIO}: a daemon (mapping {})", opts.mapping);
        sys::reset_peak_rss();
        let rig = DaemonRig::start("publish", opts.engine_config()?).map_err(err_text);
        let stacks = start_stacks(&installed, "pub", MTU, &FORWARDS);
        // Two tapnet sandboxes: the default path through the network's relay (the
        // sandbox sees the gateway address and the client's port), and one on a network
        // with `tapnet.loopback_splice=true`.
        let make = |name: &str, subnet: &str, splice: bool| {
            rig.as_ref().map_err(Clone::clone).and_then(|rig| {
                TapnetSandbox::create(rig, name, subnet, MTU, &FORWARDS, splice).map_err(err_text)
            })
        };
        let tapnet = make("perf-publish", SUBNET, false);
        let spliced = make("perf-publish-splice", SPLICE_SUBNET, true);
        for t in [&tapnet, &spliced] {
            if let Err(e) = t {
                eprintln!("tapnet: no sandbox: {e}");
            }
        }
        // Servers in each sandbox that was made (declared after the sandboxes: they stop
        // first).
        let serve = |sb: &dyn Sandbox| start_servers(&iperf, sb).map_err(err_text);
        let stack_servers: Vec<Result<Servers, String>> = stacks
            .iter()
            .map(|(_, st)| st.as_ref().map_err(Clone::clone).and_then(|sb| serve(sb)))
            .collect();
        let tapnet_servers = tapnet
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|sb| serve(sb));
        let spliced_servers = spliced
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|sb| serve(sb));
        let cases = [
            (
                Case::Iperf { reverse: false },
                "TCP host 127.0.0.1 -> published port",
                "Gbit/s",
            ),
            (
                Case::Iperf { reverse: true },
                "TCP published port -> host 127.0.0.1",
                "Gbit/s",
            ),
            (
                Case::Connections,
                "TCP connect + 64B echo + close, host 127.0.0.1 -> published port",
                "conn/s",
            ),
        ];
        for (case, name, unit) in cases {
            let mut bases = Vec::new();
            for ((kind, st), srv) in stacks.iter().zip(&stack_servers) {
                sys::check_interrupt()?;
                let r = st.as_ref().map_err(Clone::clone).and_then(|sb| {
                    srv.as_ref().map_err(Clone::clone)?;
                    eprintln!("{SCENARIO}: {name}, {}, {secs} s", kind.label());
                    measure(&iperf, sb, case, secs).map_err(err_text)
                });
                bases.push((kind.label(), r));
            }
            for (label, sb, servers) in [
                ("", &tapnet, &tapnet_servers),
                (", loopback splice", &spliced, &spliced_servers),
            ] {
                sys::check_interrupt()?;
                sys::reset_peak_rss();
                let t = sb.as_ref().map_err(Clone::clone).and_then(|sb| {
                    servers.as_ref().map_err(Clone::clone)?;
                    eprintln!("{SCENARIO}: {name}, tapnet{label}, {secs} s");
                    measure(&iperf, sb, case, secs).map_err(err_text)
                });
                let peak = sys::peak_rss_mib();
                rep.push_versus(
                    SCENARIO,
                    &format!("{name}, MTU {MTU}{label}"),
                    unit,
                    Better::Higher,
                    &t,
                    peak,
                    &bases,
                    &|m| {
                        m.detail("mtu", MTU)
                            .detail("seconds", secs)
                            .detail("iperf3", &iperf_version)
                            .detail("mapping", opts.mapping.clone())
                            .detail("loopback_splice", !label.is_empty())
                    },
                );
            }
        }
        drop(spliced_servers);
        drop(tapnet_servers);
        drop(spliced);
        drop(stack_servers);
        drop(tapnet);
        drop(stacks);
        Ok(())
    })
}
