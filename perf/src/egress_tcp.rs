//! `egress-tcp`: iperf3 TCP between a sandbox and a server on the host's 127.0.0.1,
//! sandbox to host and (`-R`) host to sandbox, at container MTU 1500 and 65520, through
//! tapnet (a daemon's bridge network with `tapnet.host_loopback=true`: the client dials
//! the gateway address), slirp4netns (10.0.2.2) and pasta (its gateway, mapped to the
//! host), in the same run. One record per baseline: ratio = tapnet / baseline.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tapnet_engine::sys::netns::NetNs;

use crate::daemon_rig::{DaemonRig, in_private_netns_dir};
use crate::opts::Opts;
use crate::proc::{ensure_iperf3, program_version, spawn_host, spawn_in, wait_listening};
use crate::report::{Better, Reporter, Sample};
use crate::stacks::{Sandbox, TapnetSandbox, err_text, free_port, installed_stacks, start_stacks};
use crate::sys;
use crate::tap_tcp::{Tcp, parse_iperf};

const SCENARIO: &str = "egress-tcp";
/// Container MTUs measured, and the subnet of tapnet's network for each.
const MTUS: [(u32, &str); 2] = [(1500, "10.127.1.0/24"), (65520, "10.127.2.0/24")];
/// How long iperf3 may take to reach its server (a datapath that drops the SYN fails
/// within this instead of TCP's minutes of retries).
pub(crate) const CONNECT_TIMEOUT_MS: u32 = 3000;

/// Seconds per iperf3 run: `--seconds`, 3 by default.
pub(crate) fn seconds(opts: &Opts) -> u64 {
    opts.seconds.unwrap_or(3.0).round().max(1.0) as u64
}

/// An iperf3 client in `ns` (or on the host) to `addr:port` for `secs`, one stream;
/// `reverse` makes the server send.
pub(crate) fn iperf_client(
    iperf: &Path,
    ns: Option<&NetNs>,
    addr: Ipv4Addr,
    port: u16,
    secs: u64,
    reverse: bool,
) -> Result<Tcp> {
    let mut args: Vec<String> = [
        "-c",
        &addr.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-i",
        "0",
        "-J",
        "--connect-timeout",
        &CONNECT_TIMEOUT_MS.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if reverse {
        args.push("-R".into());
    }
    let p = match ns {
        Some(ns) => spawn_in(ns, iperf, &args, true, &[])?,
        None => spawn_host(iperf, &args, true, &[])?,
    };
    let (status, out, err) = p.wait_output(Duration::from_secs(secs + 20))?;
    parse_iperf(&out).with_context(|| format!("iperf3 client ({status}): {}", err.trim()))
}

/// A throughput sample from an iperf3 result on `sb`.
pub(crate) fn tcp_sample(t: &Tcp, sb: &dyn Sandbox) -> Sample {
    Sample::new(t.gbit)
        .note(format!("retransmits {}", t.retransmits))
        .detail("retransmits", t.retransmits)
        .detail(
            "iperf_cpu_pct",
            [sys::round(t.sender_cpu, 1), sys::round(t.receiver_cpu, 1)],
        )
        .detail("sandbox_mtu", sb.mtu())
        .detail("version", sb.version())
        .detail("peak_rss_mib", sb.peak_rss_mib().map(|v| sys::round(v, 1)))
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let iperf = ensure_iperf3()?;
    let iperf_version = program_version(&iperf);
    let installed = installed_stacks();
    let secs = seconds(opts);
    in_private_netns_dir(|| {
        let port = free_port()?;
        let args = ["-s", "-B", "127.0.0.1", "-p", &port.to_string()].map(String::from);
        let mut server = spawn_host(&iperf, &args, false, &[])?;
        wait_listening(&mut server, port, Duration::from_secs(5))?;
        eprintln!(
            "{SCENARIO}: iperf3 server on 127.0.0.1:{port}; a daemon (mapping {})",
            opts.mapping
        );
        sys::reset_peak_rss();
        let rig = DaemonRig::start("egress", opts.engine_config()?).map_err(err_text);
        for (mtu, subnet) in MTUS {
            sys::check_interrupt()?;
            let stacks = start_stacks(&installed, &format!("eg{mtu}"), mtu, &[]);
            let tapnet = rig.as_ref().map_err(Clone::clone).and_then(|rig| {
                TapnetSandbox::create(rig, &format!("perf-egress-{mtu}"), subnet, mtu, &[], false)
                    .map_err(err_text)
            });
            if let Err(e) = &tapnet {
                eprintln!("tapnet: no sandbox at MTU {mtu}: {e}");
            }
            for reverse in [false, true] {
                sys::check_interrupt()?;
                let case = format!(
                    "TCP {}, MTU {mtu}",
                    if reverse {
                        "host 127.0.0.1 -> sandbox"
                    } else {
                        "sandbox -> host 127.0.0.1"
                    }
                );
                let mut bases = Vec::new();
                for (kind, st) in &stacks {
                    let r = st.as_ref().map_err(Clone::clone).and_then(|sb| {
                        eprintln!("{SCENARIO}: {case}, {}, {secs} s", kind.label());
                        iperf_client(&iperf, Some(sb.ns()), sb.host_addr(), port, secs, reverse)
                            .map(|t| tcp_sample(&t, sb))
                            .map_err(err_text)
                    });
                    bases.push((kind.label(), r));
                }
                sys::check_interrupt()?;
                sys::reset_peak_rss();
                let t = tapnet.as_ref().map_err(Clone::clone).and_then(|sb| {
                    eprintln!("{SCENARIO}: {case}, tapnet, {secs} s");
                    iperf_client(&iperf, Some(sb.ns()), sb.host_addr(), port, secs, reverse)
                        .map(|t| tcp_sample(&t, sb))
                        .map_err(err_text)
                });
                let peak = sys::peak_rss_mib();
                rep.push_versus(
                    SCENARIO,
                    &case,
                    "Gbit/s",
                    Better::Higher,
                    &t,
                    peak,
                    &bases,
                    &|m| {
                        m.detail("mtu", mtu)
                            .detail("seconds", secs)
                            .detail("iperf3", &iperf_version)
                            .detail("mapping", opts.mapping.clone())
                    },
                );
            }
            // The sandboxes of this MTU go before the next ones are made.
            drop(tapnet);
            drop(stacks);
        }
        Ok(())
    })
}
