//! `egress-latency`: request/response round trips (64 bytes, one outstanding) from a
//! client in a sandbox to echo servers on the host's 127.0.0.1, over UDP and over one
//! TCP connection, through tapnet, slirp4netns and pasta; p50, p99 and p99.9 of an
//! HdrHistogram. One record per baseline and quantile: ratio = baseline / tapnet.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

use crate::daemon_rig::{DaemonRig, in_private_netns_dir};
use crate::echo;
use crate::latency::{Rtt, ping};
use crate::opts::Opts;
use crate::report::{Better, Reporter, Sample};
use crate::stacks::{Sandbox, TapnetSandbox, err_text, installed_stacks, start_stacks};
use crate::sys;

const SCENARIO: &str = "egress-latency";
const MTU: u32 = 1500;
const SUBNET: &str = "10.127.3.0/24";
const PAYLOAD: usize = 64;
const WARMUP: u64 = 500;
/// How long the first echo may take to come back before the datapath is called broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A UDP socket in the sandbox, connected to `port` on the host's loopback, once one
/// echo has come back.
fn udp_client(sb: &dyn Sandbox, port: u16) -> Result<UdpSocket> {
    let to = SocketAddr::from((sb.host_addr(), port));
    let s = sb.ns().run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(to)?;
        Ok(s)
    })??;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 64];
    loop {
        sys::check_interrupt()?;
        s.send(b"probe")?;
        if let Ok(n) = s.recv(&mut buf) {
            if &buf[..n] == b"probe" {
                return Ok(s);
            }
        }
        if Instant::now() >= deadline {
            bail!("no UDP echo from {to} within {PROBE_TIMEOUT:?}");
        }
    }
}

/// `count` round trips on one TCP connection after a warm-up, within `budget`.
fn tcp_ping(sb: &dyn Sandbox, port: u16, count: u64, budget: Duration) -> Result<Rtt> {
    let to = SocketAddr::from((sb.host_addr(), port));
    let mut c = sb
        .ns()
        .run(|| TcpStream::connect_timeout(&to, PROBE_TIMEOUT))?
        .with_context(|| format!("connecting to {to}"))?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut req = [0u8; PAYLOAD];
    let mut resp = [0u8; PAYLOAD];
    let start = Instant::now();
    let mut measured_from = None;
    for seq in 0..WARMUP + count {
        sys::check_interrupt()?;
        if start.elapsed() > budget {
            break;
        }
        if seq == WARMUP {
            measured_from = Some(Instant::now());
        }
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let t0 = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut resp)
            .with_context(|| format!("no echo of request {seq} from {to}"))?;
        let rtt = t0.elapsed();
        if resp != req {
            bail!("the echo of request {seq} from {to} differs from the request");
        }
        if seq >= WARMUP {
            hist.saturating_record(rtt.as_nanos() as u64);
        }
    }
    Ok(Rtt {
        hist,
        lost: 0,
        elapsed: measured_from.map(|t| t.elapsed()).unwrap_or_default(),
    })
}

/// The round trips of one protocol on one sandbox.
fn measure(sb: &dyn Sandbox, tcp: bool, port: u16, count: u64, budget: Duration) -> Result<Rtt> {
    let r = if tcp {
        tcp_ping(sb, port, count, budget)?
    } else {
        ping(&udp_client(sb, port)?, count, budget)?
    };
    if r.hist.is_empty() {
        bail!("no round trip completed within {budget:?}");
    }
    Ok(r)
}

/// The sample of quantile `q` (1.0: the maximum).
fn sample(r: &Rtt, q: f64, sb: &dyn Sandbox) -> Sample {
    let v = if q < 1.0 {
        r.us(q)
    } else {
        r.hist.max() as f64 / 1e3
    };
    Sample::new(v)
        .note(format!("{} round trips, {} lost", r.hist.len(), r.lost))
        .detail("round_trips", r.hist.len())
        .detail("lost", r.lost)
        .detail("mean_us", sys::round(r.hist.mean() / 1e3, 2))
        .detail("seconds", sys::round(r.elapsed.as_secs_f64(), 3))
        .detail("version", sb.version())
        .detail("peak_rss_mib", sb.peak_rss_mib().map(|v| sys::round(v, 1)))
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let installed = installed_stacks();
    let count = opts.round_trips;
    let budget = Duration::from_secs_f64(opts.seconds.unwrap_or(3.0));
    in_private_netns_dir(|| {
        let ul = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0/udp")?;
        let uport = ul.local_addr()?.port();
        let _uecho = echo::udp(ul)?;
        let tl = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        let tport = tl.local_addr()?.port();
        let _techo = echo::tcp(tl)?;
        eprintln!(
            "{SCENARIO}: echo on 127.0.0.1:{uport}/udp and :{tport}/tcp; a daemon (mapping {})",
            opts.mapping
        );
        sys::reset_peak_rss();
        let rig = DaemonRig::start("egresslat", opts.engine_config()?).map_err(err_text);
        let stacks = start_stacks(&installed, "elat", MTU, &[]);
        let tapnet = rig.as_ref().map_err(Clone::clone).and_then(|rig| {
            TapnetSandbox::create(rig, "perf-egress-lat", SUBNET, MTU, &[], false).map_err(err_text)
        });
        if let Err(e) = &tapnet {
            eprintln!("tapnet: no sandbox: {e}");
        }
        for (tcp, port) in [(false, uport), (true, tport)] {
            let proto = if tcp { "TCP" } else { "UDP" };
            let mut bases = Vec::new();
            for (kind, st) in &stacks {
                sys::check_interrupt()?;
                let r = st.as_ref().map_err(Clone::clone).and_then(|sb| {
                    eprintln!("{SCENARIO}: {proto}, {}, {count} round trips", kind.label());
                    measure(sb, tcp, port, count, budget)
                        .map(|r| (r, sb as &dyn Sandbox))
                        .map_err(err_text)
                });
                bases.push((kind.label(), r));
            }
            sys::check_interrupt()?;
            sys::reset_peak_rss();
            let t = tapnet.as_ref().map_err(Clone::clone).and_then(|sb| {
                eprintln!("{SCENARIO}: {proto}, tapnet, {count} round trips");
                measure(sb, tcp, port, count, budget)
                    .map(|r| (r, sb as &dyn Sandbox))
                    .map_err(err_text)
            });
            let peak = sys::peak_rss_mib();
            for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
                let pick = |r: &Result<(Rtt, &dyn Sandbox), String>| {
                    r.as_ref()
                        .map(|(r, sb)| sample(r, q, *sb))
                        .map_err(Clone::clone)
                };
                let b: Vec<(&str, Result<Sample, String>)> =
                    bases.iter().map(|(l, r)| (*l, pick(r))).collect();
                rep.push_versus(
                    SCENARIO,
                    &format!("{proto} {PAYLOAD}B RTT {name}, sandbox -> host 127.0.0.1"),
                    "µs",
                    Better::Lower,
                    &pick(&t),
                    peak,
                    &b,
                    &|m| {
                        m.detail("mtu", MTU)
                            .detail("budget_seconds", budget.as_secs_f64())
                            .detail("mapping", opts.mapping.clone())
                    },
                );
            }
        }
        drop(tapnet);
        drop(stacks);
        Ok(())
    })
}
