//! `dns`: tapnet's embedded DNS server answering local names, against dnsmasq serving
//! the same names to the same client in the same run; and how a query flood from one
//! network's sandbox changes another network's answers.
//!
//! One engine with host networking (a [`HostNet`], as the daemon runs it), two
//! networks:
//!
//! - `pets` (10.200.53.0/24, gateway .1): a client sandbox (.10), a flooder sandbox
//!   (.11) and a sandbox running dnsmasq (.2), each a namespace with a TAP on the
//!   engine; names of further sandboxes (`db`, `web` with aliases `www` and
//!   `frontend`, `cache` alias `redis`, and `api` held by two sandboxes) live only in
//!   the `Names` given to the host thread ([`HostNet::set_names`]) and, line for line,
//!   in dnsmasq's hosts file (`--addn-hosts`, `X` and `X.pets`, TTL 600 like tapnet's,
//!   no resolv.conf, no upstream: `--no-resolv --no-hosts`), so both answer the same
//!   records.
//! - `other` (10.200.54.0/24): a probe sandbox (.10) and the names `peer`/`backend`.
//!
//! The load is `dnsperf` (Debian package) in the client's namespace with one query
//! file (A queries for the local names, mixed case, `X.pets` too), against
//! tapnet's gateway address and against dnsmasq's. Each comparison runs in [`ROUNDS`]
//! rounds of equal length whose order alternates (dnsmasq first, then tapnet first,
//! …), merged: load from elsewhere on a shared machine falls on both alike. Measured:
//!
//! 1. queries per second at the highest rate dnsperf reaches (`-q 100` outstanding),
//!    with the per-sandbox rate limit lifted (`HostNetConfig::dns_rate = 0`; noted in
//!    the report), and the CPU the engine's and host thread's (and dnsmasq's) threads
//!    used per answered query;
//! 2. latency p50/p99 at one offered rate for both (`-Q`, half the lower of the two
//!    maximum rates), from dnsperf's per-query latencies (`-v`);
//! 3. with the default rate limit (a new engine): the `other` probe's latency (dnsperf
//!    `-Q` [`PROBE_QPS`], `-v`) alone; while the `pets` flooder sends queries as fast as it
//!    can to an unread socket of its own namespace (the flood's CPU cost without
//!    tapnet); while it floods tapnet's DNS at `pets`' gateway as fast as it can; and
//!    while it floods it at [`PACED_FLOOD_TIMES`] times the default rate limit (a flood
//!    that leaves the machine's CPUs room). The flooder is a
//!    sender in this process ([`dnsflood`]), as fast as the kernel takes the queries,
//!    not dnsperf: dnsperf waits for each query the limit drops until its timeout and
//!    so slows down to the rate the limit lets through. Reported: p50 and p99 under
//!    the flood against both baselines, the flood's queries sent and answered, and
//!    the `rate_limited` counter.
//!
//! Both servers are reached through the same engine (the client's frames to dnsmasq
//! cross the engine to dnsmasq's TAP), so the comparison is of the DNS servers with
//! the datapath they need. Every namespace lives in a private `/run/netns`; dnsmasq
//! and dnsperf are children killed by PID (and by the kernel if this process dies);
//! each measurement is bounded by `--seconds` (default 5). On a machine with two CPUs
//! dnsperf, the server and the engine share them, and other builds on the machine
//! make the figures noisy (the 1-minute load average is recorded with each figure).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tapnet_engine::hostnet::{HostNet, HostNetConfig, NetAttach};
use tapnet_engine::sys::netns::{NetNs, NetNsGuard};
use tapnet_engine::sys::tap::{Tap, TapConfig};
use tapnet_engine::{DomainConfig, DomainId, Engine, MacAddr, TapPort};
use tapnet_nat::GatewayConfig;
use tapnet_nat::dns::{DEFAULT_BURST, DEFAULT_RATE, DnsStats, Names, TTL};

use crate::counters::Snapshot;
use crate::daemon_rig::in_private_netns_dir;
use crate::dnsflood::{self, Flood, Flooded};
use crate::dnsload::{Load, PerfRun, TempDir, dnsperf, probe, process_cpu_seconds, start_dnsmasq};
use crate::opts::Opts;
use crate::proc::{Proc, ensure_program, package_version};
use crate::report::{Better, Measurement, Reporter, Sample};
use crate::sys::{self, cpu_percent, round, thread_cpu_ticks};
use crate::topo::{MTU, TAP_TXQUEUELEN, configure, create_ns};

const SCENARIO: &str = "dns";
/// Queries outstanding in the maximum-rate runs (dnsperf's `-q`).
const MAX_OUTSTANDING: u32 = 100;
/// The paced flood's rate, in multiples of the default per-sandbox rate limit.
const PACED_FLOOD_TIMES: u32 = 5;
/// How long the flood runs before the probe starts, and how long past the probe's
/// run it may go on at most.
const FLOOD_LEAD: Duration = Duration::from_millis(500);
const FLOOD_GRACE: Duration = Duration::from_secs(2);
/// The `other` probe's offered rate, queries per second.
const PROBE_QPS: u32 = 1000;
/// Rounds each comparison with dnsmasq is split into, their order alternating.
const ROUNDS: u32 = 4;
/// The lowest offered rate of the fixed-rate latency runs.
const MIN_FIXED_QPS: u32 = 100;
/// dnsperf's own per-query timeout in the measured runs.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// One network of the scenario.
struct NetDef {
    key: &'static str,
    /// The first three octets of its /24.
    prefix: [u8; 3],
    /// Sandboxes that exist only as names: (id, last octet, names).
    names: &'static [(&'static str, u8, &'static [&'static str])],
}

impl NetDef {
    fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, last)
    }
    fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }
}

const PETS: NetDef = NetDef {
    key: "pets",
    prefix: [10, 200, 53],
    names: &[
        ("db", 20, &["db"]),
        ("web", 21, &["web", "www", "frontend"]),
        ("cache", 22, &["cache", "redis"]),
        ("api-1", 23, &["api-1", "api"]),
        ("api-2", 24, &["api-2", "api"]),
    ],
};
const OTHER: NetDef = NetDef {
    key: "other",
    prefix: [10, 200, 54],
    names: &[("peer", 20, &["peer", "backend"])],
};
/// Sandboxes with a namespace and a TAP: (network, name, last octet).
const CLIENT: (&NetDef, &str, u8) = (&PETS, "client", 10);
const FLOODER: (&NetDef, &str, u8) = (&PETS, "flooder", 11);
const DNSMASQ: (&NetDef, &str, u8) = (&PETS, "dnsmasq", 2);
const PROBE: (&NetDef, &str, u8) = (&OTHER, "probe", 10);
const SANDBOXES: [(&NetDef, &str, u8); 4] = [CLIENT, FLOODER, DNSMASQ, PROBE];

/// The query files: A queries of local names, mixed case, `X.network` too.
const PETS_QUERIES: &str = "db A\nWeb A\nwww A\nFrontend A\ncache A\nREDIS A\napi A\n\
db.pets A\nweb.Pets A\napi-1 A\ncache.pets A\nDB A\n";
const OTHER_QUERIES: &str = "peer A\nBackend A\npeer.other A\nPEER A\n";

/// dnsmasq's hosts file: every name of every network's sandboxes, bare and with
/// `.network`, as tapnet's `Names` hold them.
fn hosts_file() -> String {
    let mut s = String::new();
    for net in [&PETS, &OTHER] {
        let mut line = |ip: Ipv4Addr, names: &[&str]| {
            s.push_str(&ip.to_string());
            for n in names {
                s.push_str(&format!(" {n} {n}.{}", net.key));
            }
            s.push('\n');
        };
        for (_, last, names) in net.names {
            line(net.addr(*last), names);
        }
        for (n, name, last) in SANDBOXES {
            if n.key == net.key {
                line(net.addr(last), &[name]);
            }
        }
    }
    s
}

/// The `Names` of both networks, as the daemon would build them.
fn names() -> Names {
    let mut names = Names::new();
    for net in [&PETS, &OTHER] {
        names.add_network(net.key, net.key, true);
        for (id, last, n) in net.names {
            names.add_endpoint(net.key, id, net.addr(*last), n);
        }
        for (n, name, last) in SANDBOXES {
            if n.key == net.key {
                names.add_endpoint(net.key, name, net.addr(last), &[name]);
            }
        }
    }
    names
}

/// One engine with host networking, both networks and every sandbox.
struct Topo {
    // Dropped first: the workers stop and the TAP fds close, then the host thread,
    // then the namespaces go.
    engine: Engine,
    hostnet: HostNet,
    sandboxes: Vec<(&'static str, NetNsGuard)>,
}

impl Topo {
    /// Build it with DNS rate limit `rate` (0: none) per sandbox; `resolv_conf` names
    /// no resolver, so nothing is ever forwarded off the machine.
    fn create(opts: &Opts, tag: &str, rate: u32, resolv_conf: &Path) -> Result<Topo> {
        let engine = Engine::start(opts.engine_config()?)?;
        let hostnet = HostNet::start(
            engine.pool().clone(),
            HostNetConfig {
                resolv_conf: resolv_conf.to_path_buf(),
                dns_rate: rate,
                dns_burst: if rate == 0 { 0 } else { DEFAULT_BURST },
                ..HostNetConfig::default()
            },
        )
        .context("starting host networking")?;
        let mut topo = Topo {
            engine,
            hostnet,
            sandboxes: Vec::new(),
        };
        let mut domains: Vec<(&str, DomainId)> = Vec::new();
        for net in [&PETS, &OTHER] {
            let dom = topo.engine.add_domain(DomainConfig::default())?;
            let gw = GatewayConfig {
                mac: MacAddr::from_ipv4(net.gateway()),
                ip: net.gateway(),
                prefix_len: 24,
                internal: false,
            };
            let (port, _handle) = topo
                .hostnet
                .gateway_port(
                    net.key,
                    NetAttach {
                        gateway: gw,
                        mtu: MTU,
                        host_loopback: false,
                    },
                )
                .with_context(|| format!("the gateway port of {}", net.key))?;
            let id = topo.engine.add_gateway_port(Box::new(port), dom)?;
            topo.engine.add_static_mac(dom, gw.mac, id)?;
            domains.push((net.key, dom));
        }
        for (net, name, last) in SANDBOXES {
            let dom = domains
                .iter()
                .find(|(k, _)| *k == net.key)
                .map(|(_, d)| *d)
                .context("no domain")?;
            let ns = create_ns(&format!("{tag}{name}"))?;
            let addr = net.addr(last);
            let cfg = TapConfig {
                name: "eth0".into(),
                ..TapConfig::default()
            };
            let tap = ns.run(|| Tap::create(&cfg))??;
            configure(&ns, "eth0", addr, Some(TAP_TXQUEUELEN))?;
            let mac = MacAddr::from_ipv4(addr);
            let port = topo
                .engine
                .add_port(Box::new(TapPort::new(tap, MTU)), dom)?;
            topo.engine.add_static_mac(dom, mac, port)?;
            topo.hostnet.add_endpoint(net.key, name, addr, mac);
            topo.sandboxes.push((name, ns));
        }
        topo.hostnet.set_names(Arc::new(names()));
        Ok(topo)
    }

    fn ns(&self, name: &str) -> &NetNs {
        self.sandboxes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, ns)| &**ns)
            .expect("every sandbox is made by Topo::create")
    }

    fn dns(&self, net: &str) -> DnsStats {
        self.hostnet.dns_stats(net).unwrap_or_default()
    }
}

/// The counters that moved from `a` to `b`.
fn moved(a: &DnsStats, b: &DnsStats) -> BTreeMap<&'static str, u64> {
    b.pairs()
        .into_iter()
        .zip(a.pairs())
        .map(|((k, v1), (_, v0))| (k, v1.saturating_sub(v0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Files of a run: hosts, query files, an empty resolv.conf, dnsmasq's log.
struct Files {
    _dir: TempDir,
    hosts: PathBuf,
    pets: PathBuf,
    other: PathBuf,
    resolv: PathBuf,
    log: PathBuf,
}

impl Files {
    fn new() -> Result<Files> {
        let dir = TempDir::new("dns")?;
        Ok(Files {
            hosts: dir.write("hosts", &hosts_file())?,
            pets: dir.write("pets-queries", PETS_QUERIES)?,
            other: dir.write("other-queries", OTHER_QUERIES)?,
            resolv: dir.write("resolv.conf", "# no resolvers: nothing is forwarded\n")?,
            log: dir.0.join("dnsmasq.log"),
            _dir: dir,
        })
    }

    /// The end of dnsmasq's log (why it failed, if it did).
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// Programs and their versions.
struct Tools {
    dnsperf: PathBuf,
    dnsmasq: PathBuf,
    versions: Value,
}

/// Max-rate runs (rounds merged) with the CPU this process's `tapnet-*` threads
/// (the engine's workers, the host thread) and dnsmasq, when it serves, used.
#[derive(Default)]
struct MaxRun {
    run: PerfRun,
    /// Wall-clock seconds of the runs.
    elapsed: f64,
    /// CPU seconds per thread (`tapnet-*`).
    threads: BTreeMap<String, f64>,
    /// CPU seconds dnsmasq used.
    dnsmasq: Option<f64>,
    engine_drops: BTreeMap<String, u64>,
    dns: BTreeMap<&'static str, u64>,
    /// Queries per second of each round.
    rounds: Vec<f64>,
}

impl MaxRun {
    fn merge(&mut self, o: MaxRun) {
        self.rounds.push(round(o.run.qps, 0));
        self.run.merge(&o.run);
        self.elapsed += o.elapsed;
        for (k, v) in o.threads {
            *self.threads.entry(k).or_insert(0.0) += v;
        }
        if let Some(d) = o.dnsmasq {
            self.dnsmasq = Some(self.dnsmasq.unwrap_or(0.0) + d);
        }
        for (k, v) in o.engine_drops {
            *self.engine_drops.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.dns {
            *self.dns.entry(k).or_insert(0) += v;
        }
    }
}

/// CPU seconds of each `tapnet-*` thread of this process.
fn thread_cpu_seconds() -> BTreeMap<String, f64> {
    let hz = crate::sys::clock_ticks_per_sec();
    thread_cpu_ticks("tapnet-")
        .into_iter()
        .map(|(k, (u, s))| (k, (u + s) as f64 / hz))
        .collect()
}

fn max_run(
    t: &Tools,
    topo: &Topo,
    server: Ipv4Addr,
    queries: &Path,
    secs: f64,
    dm: Option<&Proc>,
) -> Result<MaxRun> {
    let cpu0 = thread_cpu_seconds();
    let dm0 = dm.and_then(|p| process_cpu_seconds(p.pid()));
    let drops = Snapshot::take(&topo.engine);
    let dns0 = topo.dns(PETS.key);
    let t0 = Instant::now();
    let run = dnsperf(
        &t.dnsperf,
        topo.ns(CLIENT.1),
        server,
        queries,
        secs,
        Load::Max {
            outstanding: MAX_OUTSTANDING,
            timeout: QUERY_TIMEOUT,
        },
    )?;
    let elapsed = t0.elapsed().as_secs_f64();
    let threads = thread_cpu_seconds()
        .into_iter()
        .map(|(k, v)| {
            let v0 = cpu0.get(&k).copied().unwrap_or(0.0);
            (k, (v - v0).max(0.0))
        })
        .collect();
    let dnsmasq = match (dm0, dm.and_then(|p| process_cpu_seconds(p.pid()))) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(MaxRun {
        run,
        elapsed,
        threads,
        dnsmasq,
        engine_drops: Snapshot::take(&topo.engine).since(&drops).drops(),
        dns: moved(&dns0, &topo.dns(PETS.key)),
        rounds: Vec::new(),
    })
}

fn max_sample(m: &MaxRun) -> Sample {
    let r = &m.run;
    let el = m.elapsed.max(1e-9);
    let pct = |secs: f64| round(secs / el * 100.0, 1);
    let threads: BTreeMap<&str, f64> = m
        .threads
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| (k.as_str(), pct(*v)))
        .collect();
    let cpu: f64 = m.threads.values().sum::<f64>() + m.dnsmasq.unwrap_or(0.0);
    let per_query = round(cpu * 1e6 / r.completed.max(1) as f64, 2);
    let mut s = Sample::new(r.qps)
        .note(format!(
            "{} sent, {} lost, {per_query} CPU µs/query",
            r.sent, r.lost
        ))
        .detail("run", r)
        .detail("cpu_pct_threads", &threads)
        .detail("cpu_us_per_query", per_query)
        .detail("qps_per_round", &m.rounds)
        .detail("engine_drops", &m.engine_drops)
        .detail("dns_counters", &m.dns);
    if let Some(d) = m.dnsmasq {
        s = s.detail("cpu_pct_dnsmasq", pct(d));
    }
    if !r.all_noerror() {
        s.note = format!("{}; answers {:?}", s.note, r.rcodes);
    }
    s
}

fn latency_sample(r: &PerfRun, q: f64) -> Result<Sample, String> {
    let v = r
        .us(q)
        .ok_or_else(|| "no per-query latency in dnsperf's output".to_string())?;
    let mut s = Sample::new(v)
        .note(format!("{} answered, {} lost", r.completed, r.lost))
        .detail("run", r);
    if let Some(h) = &r.hist {
        s = s.detail("max_us", round(h.max() as f64 / 1e3, 1)).detail(
            "p99_9_us",
            round(h.value_at_quantile(0.999) as f64 / 1e3, 1),
        );
    }
    Ok(s)
}

fn err_text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let dnsperf_bin = ensure_program("dnsperf", "dnsperf")?;
    let dnsmasq_bin = ensure_program("dnsmasq", "dnsmasq-base")?;
    let tools = Tools {
        versions: json!({
            "dnsperf": package_version("dnsperf"),
            "dnsmasq": package_version("dnsmasq-base"),
        }),
        dnsperf: dnsperf_bin,
        dnsmasq: dnsmasq_bin,
    };
    let secs = opts.seconds.unwrap_or(5.0);
    in_private_netns_dir(|| {
        let files = Files::new()?;
        versus_dnsmasq(opts, rep, &tools, &files, secs)?;
        sys::check_interrupt()?;
        flood(opts, rep, &tools, &files, secs)?;
        drop(files);
        Ok(())
    })
}

/// Parts 1 and 2: tapnet against dnsmasq, rate limit off.
fn versus_dnsmasq(
    opts: &Opts,
    rep: &mut Reporter,
    t: &Tools,
    files: &Files,
    secs: f64,
) -> Result<()> {
    sys::reset_peak_rss();
    let topo = Topo::create(opts, "d0", 0, &files.resolv)?;
    let client = topo.ns(CLIENT.1);
    let gw = PETS.gateway();
    let dm_addr = PETS.addr(DNSMASQ.2);
    let db = [PETS.addr(20)];
    let api = [PETS.addr(23), PETS.addr(24)];
    let mut dm = start_dnsmasq(
        &t.dnsmasq,
        topo.ns(DNSMASQ.1),
        dm_addr,
        &files.hosts,
        &files.log,
        TTL,
    )?;
    let ready_t = probe(client, gw, "db", &db, None)
        .and_then(|()| probe(client, gw, "API.pets", &api, None))
        .map_err(err_text);
    let ready_d = probe(client, dm_addr, "db", &db, Some(&mut dm))
        .and_then(|()| probe(client, dm_addr, "API.pets", &api, Some(&mut dm)))
        .map_err(|e| format!("{e:#} (dnsmasq log: {})", files.log_tail()));
    eprintln!(
        "{SCENARIO}: tapnet at {gw} {}, dnsmasq at {dm_addr} {}; {secs} s each per measurement, in {ROUNDS} rounds",
        if ready_t.is_ok() { "answers" } else { "FAILS" },
        if ready_d.is_ok() { "answers" } else { "FAILS" }
    );
    // 1. The highest rate, in rounds that alternate the order (dnsmasq, tapnet;
    // tapnet, dnsmasq; …): load from elsewhere on the machine falls on both alike.
    let chunk = secs / ROUNDS as f64;
    let mut base = ready_d.clone().map(|()| MaxRun::default());
    let mut tap = ready_t.clone().map(|()| MaxRun::default());
    sys::reset_peak_rss();
    for round in 0..ROUNDS {
        for tapnet in [round % 2 == 1, round % 2 == 0] {
            sys::check_interrupt()?;
            let (acc, server, proc) = if tapnet {
                (&mut tap, gw, None)
            } else {
                (&mut base, dm_addr, Some(&dm))
            };
            let Ok(sum) = acc else { continue };
            eprintln!(
                "{SCENARIO}: {}, max rate, round {}/{ROUNDS}",
                if tapnet { "tapnet" } else { "dnsmasq" },
                round + 1
            );
            match max_run(t, &topo, server, &files.pets, chunk, proc) {
                Ok(r) => sum.merge(r),
                Err(e) => *acc = Err(err_text(e)),
            }
        }
    }
    let peak = sys::peak_rss_mib();
    let no_limit = "per-sandbox rate limit off (HostNetConfig.dns_rate = 0)";
    let targ = |m: Measurement| {
        let met = m.ratio.is_some_and(|r| r >= 1.0);
        m.target(">= 1.0x dnsmasq", met)
            .note(no_limit)
            .detail("seconds", secs)
            .detail("rounds", ROUNDS)
            .detail("outstanding", MAX_OUTSTANDING)
            .detail("tools", &t.versions)
            .detail("mapping", opts.mapping.clone())
    };
    rep.push_versus(
        SCENARIO,
        "UDP A queries/s, local names, max rate (dnsperf -q 100)",
        "queries/s",
        Better::Higher,
        &tap.as_ref().map(max_sample).map_err(Clone::clone),
        peak,
        &[(
            "dnsmasq",
            base.as_ref().map(max_sample).map_err(Clone::clone),
        )],
        &targ,
    );
    // 2. Latency at one offered rate: half the lower maximum.
    let maxes: Vec<f64> = [&tap, &base]
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|m| m.run.qps))
        .collect();
    let Some(lowest) = maxes.iter().copied().reduce(f64::min) else {
        return Ok(());
    };
    let rate = ((lowest / 2.0) as u32).max(MIN_FIXED_QPS);
    let mut base = ready_d.map(|()| PerfRun::default());
    let mut tap = ready_t.map(|()| PerfRun::default());
    sys::reset_peak_rss();
    for round in 0..ROUNDS {
        for tapnet in [round % 2 == 1, round % 2 == 0] {
            sys::check_interrupt()?;
            let (acc, server) = if tapnet {
                (&mut tap, gw)
            } else {
                (&mut base, dm_addr)
            };
            let Ok(sum) = acc else { continue };
            eprintln!(
                "{SCENARIO}: {}, {rate} queries/s, round {}/{ROUNDS}",
                if tapnet { "tapnet" } else { "dnsmasq" },
                round + 1
            );
            match dnsperf(
                &t.dnsperf,
                client,
                server,
                &files.pets,
                chunk,
                Load::Rate(rate),
            ) {
                Ok(r) => sum.merge(&r),
                Err(e) => *acc = Err(err_text(e)),
            }
        }
    }
    let peak = sys::peak_rss_mib();
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let pick = |r: &Result<PerfRun, String>| r.clone().and_then(|r| latency_sample(&r, q));
        rep.push_versus(
            SCENARIO,
            &format!("UDP A latency {name} at {rate} queries/s (half the lower max)"),
            "µs",
            Better::Lower,
            &pick(&tap),
            peak,
            &[("dnsmasq", pick(&base))],
            &|m| {
                let m = m
                    .note(no_limit)
                    .detail("offered_qps", rate)
                    .detail("seconds", secs)
                    .detail("rounds", ROUNDS)
                    .detail("tools", &t.versions);
                if q > 0.9 {
                    let met = m.ratio.is_some_and(|r| r >= 1.0);
                    m.target("<= dnsmasq's", met)
                } else {
                    m
                }
            },
        );
    }
    drop(dm);
    drop(topo);
    Ok(())
}

/// A UDP socket on 127.0.0.1 of `ns` that is never read: what the CPU-matched flood
/// is sent to (the kernel drops what does not fit its buffer).
fn sink(ns: &NetNs) -> Result<UdpSocket> {
    Ok(ns.run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))??)
}

/// The `other` probe's run at [`PROBE_QPS`] while `flood` (if any) runs; the flood's
/// figures and the counters that moved.
struct ProbeRun {
    run: PerfRun,
    flood: Option<Flooded>,
    pets: BTreeMap<&'static str, u64>,
    other: BTreeMap<&'static str, u64>,
    threads: BTreeMap<String, sys::CpuUse>,
    engine_drops: BTreeMap<String, u64>,
}

fn probe_run(
    t: &Tools,
    topo: &Topo,
    files: &Files,
    secs: f64,
    flood_to: Option<SocketAddr>,
    pace: Option<u32>,
) -> Result<ProbeRun> {
    let (pets0, other0) = (topo.dns(PETS.key), topo.dns(OTHER.key));
    let drops = Snapshot::take(&topo.engine);
    let ticks = thread_cpu_ticks("tapnet-");
    let t0 = Instant::now();
    let names: Vec<&str> = PETS_QUERIES
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The flood starts first and would end on its own after the probe's run.
    let flood = flood_to
        .map(|to| {
            dnsflood::start(
                topo.ns(FLOODER.1),
                to,
                &names,
                Duration::from_secs_f64(secs) + FLOOD_GRACE,
                pace,
            )
        })
        .transpose()?;
    if flood.is_some() {
        sys::sleep(FLOOD_LEAD)?;
    }
    let run = dnsperf(
        &t.dnsperf,
        topo.ns(PROBE.1),
        OTHER.gateway(),
        &files.other,
        secs,
        Load::Rate(PROBE_QPS),
    );
    let flood = flood.map(Flood::finish);
    Ok(ProbeRun {
        run: run?,
        flood,
        threads: cpu_percent(&ticks, &thread_cpu_ticks("tapnet-"), t0.elapsed())
            .into_iter()
            .filter(|(_, c)| c.total > 0.0)
            .collect(),
        pets: moved(&pets0, &topo.dns(PETS.key)),
        other: moved(&other0, &topo.dns(OTHER.key)),
        engine_drops: Snapshot::take(&topo.engine).since(&drops).drops(),
    })
}

/// Part 3: a flood from `pets` and the `other` network's answers, default rate limit.
fn flood(opts: &Opts, rep: &mut Reporter, t: &Tools, files: &Files, secs: f64) -> Result<()> {
    sys::reset_peak_rss();
    let topo = Topo::create(opts, "d1", DEFAULT_RATE, &files.resolv)?;
    let (probe_ns, flooder_ns) = (topo.ns(PROBE.1), topo.ns(FLOODER.1));
    let (pets_gw, other_gw) = (PETS.gateway(), OTHER.gateway());
    probe(probe_ns, other_gw, "peer", &[OTHER.addr(20)], None)
        .context("tapnet's DNS on network other")?;
    probe(flooder_ns, pets_gw, "db", &[PETS.addr(20)], None)
        .context("tapnet's DNS on network pets")?;
    eprintln!("{SCENARIO}: other, {PROBE_QPS} queries/s, alone");
    let alone = probe_run(t, &topo, files, secs, None, None)?;
    sys::check_interrupt()?;
    let sink = sink(flooder_ns)?;
    eprintln!(
        "{SCENARIO}: other, {PROBE_QPS} queries/s, while the pets flooder sends as fast as it can to a socket of its own"
    );
    let matched = probe_run(t, &topo, files, secs, Some(sink.local_addr()?), None)?;
    drop(sink);
    sys::check_interrupt()?;
    sys::reset_peak_rss();
    eprintln!(
        "{SCENARIO}: other, {PROBE_QPS} queries/s, while the pets flooder sends tapnet's DNS as fast as it can"
    );
    let dns = SocketAddr::from((pets_gw, 53));
    let max = probe_run(t, &topo, files, secs, Some(dns), None)?;
    let peak = sys::peak_rss_mib();
    sys::check_interrupt()?;
    let paced_qps = PACED_FLOOD_TIMES * DEFAULT_RATE;
    eprintln!(
        "{SCENARIO}: other, {PROBE_QPS} queries/s, while the pets flooder sends tapnet's DNS {paced_qps} queries/s"
    );
    let paced = probe_run(t, &topo, files, secs, Some(dns), Some(paced_qps))?;
    let flooding = format!("a pets sandbox flooding at {paced_qps} q/s");
    for (under, base, label, how) in [
        (
            &max,
            &alone,
            "other network, no flood",
            "a pets sandbox flooding",
        ),
        (
            &max,
            &matched,
            "flooder's CPU load alone (flood to its own socket)",
            "a pets sandbox flooding",
        ),
        (&paced, &alone, "other network, no flood", flooding.as_str()),
    ] {
        let fl = under.flood.unwrap_or_default();
        let limited = under.pets.get("rate_limited").copied().unwrap_or(0);
        eprintln!(
            "{SCENARIO}: flooder sent {} answered {} ({:.0}/s); pets counters {:?}",
            fl.sent, fl.answered, fl.answered_per_s, under.pets
        );
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (Some(u), Some(a)) = (under.run.us(q), base.run.us(q)) else {
                rep.skip(
                    SCENARIO,
                    format!("other network's latency {name} under a pets flood vs {label}"),
                    "no per-query latency in dnsperf's output".into(),
                );
                continue;
            };
            let mut m = Measurement::new(
                SCENARIO,
                format!("other network's UDP A latency {name} at {PROBE_QPS} q/s, {how}"),
                "µs",
                Better::Lower,
                u,
                label,
                a,
                rep.machine(),
            )
            .rss(peak)
            .note(format!(
                "flood sent {} ({:.0}/s), answered {} ({:.0}/s), rate_limited {limited}; default limit {DEFAULT_RATE}/s burst {DEFAULT_BURST}",
                fl.sent, fl.sent_per_s, fl.answered, fl.answered_per_s
            ))
            .detail("flood", fl)
            .detail("probe", &under.run)
            .detail("baseline_probe", &base.run)
            .detail("baseline_flood", base.flood)
            .detail("pets_dns_counters", &under.pets)
            .detail("other_dns_counters", &under.other)
            .detail("baseline_other_dns_counters", &base.other)
            .detail("cpu_pct_threads", &under.threads)
            .detail("baseline_cpu_pct_threads", &base.threads)
            .detail("engine_drops", &under.engine_drops)
            .detail("baseline_engine_drops", &base.engine_drops)
            .detail("seconds", secs)
            .detail("tools", &t.versions)
            .detail("mapping", opts.mapping.clone());
            if q > 0.9 {
                let met = m.ratio.is_some_and(|r| r >= 0.9) && limited > 0;
                m = m.target(">= 0.9x, flood rate-limited", met);
            }
            rep.push(m);
        }
    }
    drop(topo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_holds_every_name_with_its_network() {
        let h = hosts_file();
        assert!(h.contains("10.200.53.21 web web.pets www www.pets frontend frontend.pets\n"));
        assert!(h.contains("10.200.53.23 api-1 api-1.pets api api.pets\n"));
        assert!(h.contains("10.200.53.24 api-2 api-2.pets api api.pets\n"));
        assert!(h.contains("10.200.54.20 peer peer.other backend backend.other\n"));
        assert!(h.contains("10.200.53.10 client client.pets\n"));
    }

    #[test]
    fn names_resolve_what_the_query_files_ask() {
        let n = names();
        assert_eq!(n.networks(), 2);
        assert_eq!(
            n.len(),
            PETS.names.len() + OTHER.names.len() + SANDBOXES.len()
        );
    }
}
