//! `tapnet-perf`: measures tapnet's datapath against the kernel's (and a memcpy) in the
//! same run, on the same machine, and prints ratios with the absolute numbers beside.
//!
//! Traffic goes only to namespaces this process creates (`tnp-<pid>-…`, and the
//! `tapnet-…` sandboxes of the daemon that `bridge-api` and `daemon-tcp` run in this
//! process, or of the two daemon processes `swarm-overlay-tcp` starts, inside a private
//! `/run/netns`; `docker-tcp`'s containers, of the `dockerd` processes it starts in
//! namespaces of its own), and everything it creates (namespaces, interfaces, iperf3,
//! daemon and dockerd processes, containers, the daemons' state directories and
//! dockerd's roots) is removed when a scenario ends, fails or is interrupted with Ctrl-C.

mod bridge_api;
mod cluster_sim;
mod counters;
mod daemon_rig;
mod daemon_tcp;
mod dns;
mod dnsflood;
mod dnsload;
mod docker_rig;
mod docker_tcp;
mod echo;
mod egress_latency;
mod egress_tcp;
mod flood;
mod idle_rss;
mod latency;
mod opts;
mod overlay_latency;
mod overlay_rss;
mod overlay_tcp;
mod overlay_topo;
mod overlay_udp;
mod proc;
mod publish_tcp;
mod report;
mod stacks;
mod swarm_overlay_tcp;
mod switch_mem;
mod sys;
mod tap_tcp;
mod tap_udp;
mod topo;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tapnet_engine::WorkerMapping;

use opts::Opts;
use report::Reporter;

/// tapnet's benchmark suite: every figure is a ratio against a baseline measured in the
/// same run (memcpy, kernel veth + bridge), absolute numbers beside.
#[derive(Parser)]
#[command(name = "tapnet-perf", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run scenarios (`all` runs every one).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenarios to run, or `all`.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// Print one JSON object per measurement on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Seconds per measurement [default: 3 for switch-mem, 5 for the TAP scenarios].
    #[arg(long)]
    seconds: Option<f64>,
    /// Stage-to-worker mapping of the engine in the TAP scenarios (`rx,switch,tx` is one
    /// worker; `rx/switch,tx` two).
    #[arg(long, default_value = "rx,switch,tx")]
    mapping: String,
    /// Round trips per tap-latency measurement.
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Pin the traffic threads and processes of tap-tcp and tap-udp64 (both datapaths) to
    /// the CPUs the engine's workers leave free, instead of letting the scheduler place
    /// them. (tap-latency always does.)
    #[arg(long)]
    pin_apps: bool,
    /// Sandboxes bridge-api creates and removes (and the kernel baseline as many).
    #[arg(long, default_value_t = 1000)]
    sandboxes: usize,
}

type ScenarioFn = fn(&Opts, &mut Reporter) -> Result<()>;

const SCENARIOS: &[(&str, &str, ScenarioFn)] = &[
    (
        "switch-mem",
        "frames between two memory ports through the engine (64/512/1500 B; 1 worker and 2) vs memcpy",
        switch_mem::run,
    ),
    (
        "tap-tcp",
        "iperf3 TCP, 1 and 2 streams, between two namespaces: tapnet TAPs vs veth + Linux bridge",
        tap_tcp::run,
    ),
    (
        "tap-udp64",
        "64-byte UDP packet rate and loss: tapnet vs veth + Linux bridge",
        tap_udp::run,
    ),
    (
        "tap-latency",
        "UDP ping-pong round-trip times (HdrHistogram): tapnet vs veth + Linux bridge",
        latency::run,
    ),
    (
        "idle-rss",
        "RSS of an engine with 2 workers and 64 idle TAPs",
        idle_rss::run,
    ),
    (
        "overlay-tcp",
        "iperf3 TCP, 1 and 2 streams, between sandboxes on two engines over VXLAN (VNI 42, veth underlay, inner MTU 1450) vs the kernel's VXLAN; underlay syscalls per 64 KiB",
        overlay_tcp::run,
    ),
    (
        "swarm-overlay-tcp",
        "iperf3 TCP, 1 and 2 streams, between sandboxes on an overlay network made by a two-node swarm (a tapnet daemon process per host, veth underlay) vs the kernel's VXLAN",
        swarm_overlay_tcp::run,
    ),
    (
        "docker-tcp",
        "containers run by dockerd: iperf3 TCP, 1 and 2 streams, and start to network ready, on a network of tapnet's Docker plugin vs Docker's bridge (iptables on)",
        docker_tcp::run,
    ),
    (
        "overlay-udp64",
        "64-byte UDP over VXLAN at the kernel VXLAN's rate, and unpaced: rate and loss, two engines vs the kernel's VXLAN",
        overlay_udp::run,
    ),
    (
        "overlay-latency",
        "UDP ping-pong round-trip times over VXLAN (HdrHistogram): two engines vs the kernel's VXLAN",
        overlay_latency::run,
    ),
    (
        "overlay-rss",
        "RSS of an idle engine serving 64 overlay networks of 16 remote endpoints vs the same engine without overlay",
        overlay_rss::run,
    ),
    (
        "bridge-api",
        "create/remove N sandboxes through the daemon's API (p50/p99) and its RSS: vs kernel netns + veth + bridge",
        bridge_api::run,
    ),
    (
        "daemon-tcp",
        "iperf3 TCP, 1 and 2 streams, between two sandboxes of a daemon-made network vs veth + Linux bridge",
        daemon_tcp::run,
    ),
    (
        "egress-tcp",
        "iperf3 TCP both ways between a sandbox and the host's 127.0.0.1 (MTU 1500, 65520): tapnet vs slirp4netns, pasta",
        egress_tcp::run,
    ),
    (
        "egress-latency",
        "UDP and TCP request/response round trips (p50/p99/p99.9) from a sandbox to the host's 127.0.0.1: tapnet vs slirp4netns, pasta",
        egress_latency::run,
    ),
    (
        "publish-tcp",
        "a sandbox's published port from the host's 127.0.0.1: iperf3 TCP both ways and connections/s: tapnet vs slirp4netns, pasta",
        publish_tcp::run,
    ),
    (
        "flood",
        "iperf3 TCP on a network while a sandbox floods it (1M random source MACs, broadcast, multicast, ARP): throughput vs the same network unflooded, frames reaching another network, RSS",
        flood::run,
    ),
    (
        "dns",
        "dnsperf against the embedded DNS server (local names): queries/s and p50/p99 vs dnsmasq in a sandbox; another network's latency while a sandbox floods",
        dns::run,
    ),
    (
        "cluster-sim",
        "swarm control plane simulated at N = 100, 300, 1000 (foca + tables, 1 % loss): endpoint to all nodes, crash to entries removed, gossip load per node",
        cluster_sim::run,
    ),
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.cmd {
        Cmd::List => {
            for (name, about, _) in SCENARIOS {
                println!("{name:<12} {about}");
            }
            return ExitCode::SUCCESS;
        }
        Cmd::Run(a) => a,
    };
    let mut chosen: Vec<&(&str, &str, ScenarioFn)> = Vec::new();
    for s in &args.scenarios {
        if s == "all" {
            chosen.extend(SCENARIOS.iter());
            continue;
        }
        match SCENARIOS.iter().find(|(n, _, _)| n == s) {
            Some(sc) => chosen.push(sc),
            None => {
                let names: Vec<&str> = SCENARIOS.iter().map(|(n, _, _)| *n).collect();
                eprintln!(
                    "unknown scenario {s:?}: choose from {} or all",
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = WorkerMapping::parse(&args.mapping) {
        eprintln!("--mapping: {e}");
        return ExitCode::from(2);
    }
    if let Some(s) = args.seconds {
        if !(s > 0.0 && s <= 600.0) {
            eprintln!("--seconds must be in (0, 600]");
            return ExitCode::from(2);
        }
    }
    if !(1..=bridge_api::MAX_SANDBOXES).contains(&args.sandboxes) {
        eprintln!("--sandboxes must be in 1..={}", bridge_api::MAX_SANDBOXES);
        return ExitCode::from(2);
    }
    sys::fix_mmap_threshold();
    if let Err(e) = sys::install_signal_handlers() {
        eprintln!("cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    let opts = Opts {
        seconds: args.seconds,
        mapping: args.mapping,
        round_trips: args.round_trips.max(1),
        pin_apps: args.pin_apps,
        sandboxes: args.sandboxes,
    };
    let machine = sys::Machine::detect();
    let mut rep = Reporter::new(args.json, machine);
    let mut failed = Vec::new();
    for (name, _, f) in chosen {
        if sys::interrupted() {
            break;
        }
        eprintln!("== {name}");
        if let Err(e) = f(&opts, &mut rep) {
            eprintln!("{name} failed: {e:#}");
            failed.push(*name);
        }
    }
    rep.print_table();
    if sys::interrupted() {
        eprintln!("interrupted; everything created was removed");
        return ExitCode::from(130);
    }
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
