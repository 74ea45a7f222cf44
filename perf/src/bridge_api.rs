//! `bridge-api`: how long the daemon takes to create and to remove a sandbox with one
//! endpoint on a user-defined bridge network, through its real API (`POST /sandboxes`,
//! `DELETE /sandboxes/{id}` over the Unix socket), N times (1,000 by default), and the
//! daemon's memory with N sandboxes up.
//!
//! Baseline, in the same run: the kernel doing the equivalent per sandbox over netlink,
//! as Docker's bridge driver has it done: a named namespace (`ip netns add`, `lo` up),
//! a veth pair whose one end is moved into it and given a MAC, an address, `up` and a
//! default route, and whose other end is attached to a Linux bridge (in a throwaway
//! namespace of its own) and set up; removal deletes the veth and the namespace.
//!
//! Then a breakdown of where a create and a remove go: the daemon's steps replicated one
//! by one with the same library calls (IPAM, redb commit, namespace, TAP, netlink,
//! engine port, route), timed separately.
//!
//! Everything runs inside a private `/run/netns` (see [`crate::daemon_rig`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use nix::errno::Errno;
use serde_json::{Value, json};
use tapnet_api::SandboxInspect;
use tapnet_ctl::daemon::ipam::{Ipam, PoolRequest};
use tapnet_ctl::daemon::model::{EndpointRecord, SandboxRecord, new_id, now_rfc3339};
use tapnet_ctl::daemon::plumbing::netns::{self as sandbox, TXQUEUELEN};
use tapnet_ctl::daemon::store::{Change, Store};
use tapnet_engine::sys::netlink::{Netlink, NetlinkError};
use tapnet_engine::sys::netns::NetNsGuard;
use tapnet_engine::sys::tap::{TapConfig, create_tap_in};
use tapnet_engine::{DomainConfig, Engine, MacAddr, TapPort};

use crate::counters::Snapshot;
use crate::daemon_rig::{self, DaemonRig, in_private_netns_dir, kernel_mem_mib, list_netns};
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, check_interrupt, cpu_percent, round, thread_cpu_ticks};
use crate::topo::ns_name;

const SCENARIO: &str = "bridge-api";
/// The daemon's user network: a /16, so that up to 65,533 sandboxes fit.
const SUBNET: &str = "10.123.0.0/16";
/// The kernel baseline's addresses: 10.124.0.0/16, gateway .0.1.
const KERNEL_NET: [u8; 2] = [10, 124];
/// The breakdown's pool.
const STEPS_SUBNET: &str = "10.125.0.0/16";
const PREFIX: u8 = 16;
const MTU: u32 = 1500;
/// Most sandboxes a /16 takes (less network, broadcast and gateway).
pub(crate) const MAX_SANDBOXES: usize = 65_533;

/// Latencies of one operation done N times (in ns): all of them, and those of the first
/// and of the last tenth, to show whether it slows down as sandboxes accumulate.
struct Lat {
    all: Histogram<u64>,
    first: Histogram<u64>,
    last: Histogram<u64>,
}

impl Lat {
    fn new() -> Result<Lat> {
        Ok(Lat {
            all: hist()?,
            first: hist()?,
            last: hist()?,
        })
    }

    /// The `i`-th of `n` took `d`.
    fn record(&mut self, i: usize, n: usize, d: Duration) {
        let tenth = (n / 10).max(1);
        record(&mut self.all, d);
        if i < tenth {
            record(&mut self.first, d);
        }
        if i + tenth >= n {
            record(&mut self.last, d);
        }
    }
}

/// Per-operation latencies.
struct Ops {
    create: Lat,
    remove: Lat,
    create_total: Duration,
    remove_total: Duration,
}

impl Ops {
    fn new() -> Result<Ops> {
        Ok(Ops {
            create: Lat::new()?,
            remove: Lat::new()?,
            create_total: Duration::ZERO,
            remove_total: Duration::ZERO,
        })
    }
}

fn hist() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(
        1_000,
        600_000_000_000,
        3,
    )?)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos() as u64);
}

/// Quantile `q` (1.0: the maximum) in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    let v = if q >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(q)
    };
    v as f64 / 1e6
}

fn summary(l: &Lat) -> Value {
    let h = &l.all;
    json!({
        "p50_ms": round(ms(h, 0.5), 3),
        "p99_ms": round(ms(h, 0.99), 3),
        "p99_9_ms": round(ms(h, 0.999), 3),
        "max_ms": round(ms(h, 1.0), 3),
        "mean_ms": round(h.mean() / 1e6, 3),
        "count": h.len(),
        "first_10pct_p50_ms": round(ms(&l.first, 0.5), 3),
        "last_10pct_p50_ms": round(ms(&l.last, 0.5), 3),
        "first_10pct_mean_ms": round(l.first.mean() / 1e6, 3),
        "last_10pct_mean_ms": round(l.last.mean() / 1e6, 3),
    })
}

/// The `i`-th host address of a /16 (skipping network and gateway).
fn host_addr(net: [u8; 2], i: usize) -> Ipv4Addr {
    let h = i + 2;
    Ipv4Addr::new(net[0], net[1], (h >> 8) as u8, (h & 0xff) as u8)
}

/// The kernel's equivalent, N times: create all, then remove all in the same order.
/// Returns the latencies, the steps' timings, and the kernel memory (SUnreclaim, Percpu)
/// N sandboxes took.
fn kernel(n: usize) -> Result<(Ops, Steps, Steps, f64, f64)> {
    let mut ops = Ops::new()?;
    let (mut sc, mut sr) = (Steps::new(n), Steps::new(n));
    let br = NetNsGuard::create(&ns_name("apibr")).context("creating the bridge namespace")?;
    let mut nlb = Netlink::open_in(&br)?;
    nlb.add_bridge("br0")?;
    let bri = nlb.link_index("br0")?;
    nlb.set_up(bri)?;
    let gw = IpAddr::V4(Ipv4Addr::new(KERNEL_NET[0], KERNEL_NET[1], 0, 1));
    let (slab0, pcpu0) = kernel_mem_mib();
    // Guards: on any error (or Ctrl-C) every namespace made so far goes, and the veths
    // with them (the bridge ends die with the bridge's namespace).
    let mut live: Vec<(NetNsGuard, u32)> = Vec::with_capacity(n);
    let t_all = Instant::now();
    for i in 0..n {
        check_interrupt()?;
        sc.at(i);
        let t0 = Instant::now();
        let (ns, mut nl) = sc.time("netns create + lo up", || {
            let ns = NetNsGuard::create(&ns_name(&format!("api{i}")))?;
            let mut nl = Netlink::open_in(&ns)?;
            nl.set_up(1)?;
            Ok((ns, nl))
        })?;
        let (port, end) = (format!("vb{i}"), format!("ve{i}"));
        let (pi, ei) = sc.time("veth pair create", || {
            nlb.add_veth(&port, &end)?;
            Ok((nlb.link_index(&port)?, nlb.link_index(&end)?))
        })?;
        sc.time("bridge attach + up", || {
            nlb.set_master(pi, bri)?;
            Ok(nlb.set_up(pi)?)
        })?;
        sc.time("move into netns", || Ok(nlb.move_to_netns(ei, ns.fd())?))?;
        let addr = host_addr(KERNEL_NET, i);
        sc.time("MAC, address, up, route", || {
            let ei = nl.link_index(&end)?;
            nl.set_mac(ei, MacAddr::from_ipv4(addr).0)?;
            nl.add_address(ei, IpAddr::V4(addr), PREFIX)?;
            nl.set_up(ei)?;
            Ok(nl.add_route(None, Some(gw), ei)?)
        })?;
        ops.create.record(i, n, t0.elapsed());
        live.push((ns, pi));
    }
    ops.create_total = t_all.elapsed();
    let (slab1, pcpu1) = kernel_mem_mib();
    let t_all = Instant::now();
    for (i, (ns, pi)) in live.into_iter().enumerate() {
        check_interrupt()?;
        sr.at(i);
        let t0 = Instant::now();
        sr.time("veth delete", || Ok(nlb.delete_link(pi)?))?;
        let path = ns.path().to_path_buf();
        sr.time("netns delete", || {
            drop(ns); // unmounts and unlinks, like `ip netns delete`
            Ok(())
        })?;
        ops.remove.record(i, n, t0.elapsed());
        if path.exists() {
            bail!("could not delete namespace {}", path.display());
        }
    }
    ops.remove_total = t_all.elapsed();
    Ok((ops, sc, sr, slab1 - slab0, pcpu1 - pcpu0))
}

/// What the daemon run measured besides the latencies.
struct DaemonRun {
    ops: Ops,
    rss_before: f64,
    rss_idle: f64,
    rss_up: f64,
    peak: Option<f64>,
    list_ms: f64,
    engine_ports: usize,
    netns_up: usize,
    slab_mib: f64,
    percpu_mib: f64,
    state_dir: PathBuf,
    db_bytes: u64,
    /// The engine with N sandboxes up and nothing to do: just after the last create,
    /// and once the sandboxes' own start-up traffic (IPv6 DAD, router solicitations,
    /// MLD reports) is over.
    idle_now: Idle,
    idle_settled: Idle,
}

/// One second of an engine with nothing to forward.
struct Idle {
    /// CPU of the workers, % of one CPU.
    cpu: BTreeMap<String, sys::CpuUse>,
    /// Frames the ports received (the sandboxes' kernels sent) in that second.
    rx_frames: u64,
    /// Frames the switch flooded.
    flooded: u64,
}

impl Idle {
    fn measure(engine: &Engine) -> Result<Idle> {
        let before = Snapshot::take(engine);
        let ticks = thread_cpu_ticks("tapnet-w");
        let t0 = Instant::now();
        sys::sleep(Duration::from_secs(1))?;
        let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
        let d = Snapshot::take(engine).since(&before);
        Ok(Idle {
            cpu,
            rx_frames: d.sum(".rx_packets"),
            flooded: d.sum(".flooded"),
        })
    }

    fn cpu_total(&self) -> f64 {
        self.cpu.values().map(|c| c.total).sum()
    }

    fn to_json(&self) -> Value {
        json!({"worker_cpu_pct": self.cpu, "rx_frames": self.rx_frames, "flooded": self.flooded})
    }
}

/// How long after the last sandbox came up its start-up traffic is surely over: three
/// router solicitations 4 s apart, DAD, MLD reports.
const SETTLE: Duration = Duration::from_secs(15);

/// Everything about one sandbox is where it should be: its namespace, `eth0` up with
/// the address the API reported, and its engine port.
fn check_sandbox(sb: &SandboxInspect) -> Result<()> {
    let ep = sb
        .networks
        .values()
        .next()
        .with_context(|| format!("sandbox {} has no endpoint", sb.name))?;
    let ns = daemon_rig::sandbox_netns(sb)?;
    let mut nl = Netlink::open_in(&ns)?;
    let idx = nl.link_index(&ep.interface)?;
    let want: Ipv4Addr = ep.ip_address.parse().context("endpoint address")?;
    if !nl
        .addresses(idx)?
        .contains(&(IpAddr::V4(want), ep.ip_prefix_len))
    {
        bail!(
            "sandbox {}: {} lacks {want}/{}",
            sb.name,
            ep.interface,
            ep.ip_prefix_len
        );
    }
    Ok(())
}

fn daemon(opts: &Opts, n: usize) -> Result<DaemonRun> {
    let rss_before = sys::rss_mib().context("cannot read VmRSS")?;
    sys::reset_peak_rss();
    let (slab0, pcpu0) = kernel_mem_mib();
    let rig = DaemonRig::start("api", opts.engine_config()?)?;
    let rss_idle = sys::rss_mib().unwrap_or(0.0);
    let net = rig.create_network("perf-api", SUBNET)?;
    let mut ops = Ops::new()?;
    let mut ids = Vec::with_capacity(n);
    let t_all = Instant::now();
    let mut last = None;
    let mut last_at = Instant::now();
    for i in 0..n {
        check_interrupt()?;
        let t0 = Instant::now();
        let sb = rig.create_sandbox(&format!("perf-{i}"), &net)?;
        ops.create.record(i, n, t0.elapsed());
        if i == 0 {
            check_sandbox(&sb)?;
        }
        ids.push(sb.id.clone());
        last = Some(sb);
        last_at = Instant::now();
    }
    ops.create_total = t_all.elapsed();
    if let Some(sb) = &last {
        check_sandbox(sb)?;
    }
    let t0 = Instant::now();
    let listed: Vec<Value> = rig.api().get("/sandboxes")?;
    let list_ms = t0.elapsed().as_secs_f64() * 1e3;
    if listed.len() != n {
        bail!("GET /sandboxes lists {} sandboxes, not {n}", listed.len());
    }
    drop(listed);
    let engine_ports = rig.engine().stats().ports.len();
    let idle_now = Idle::measure(rig.engine())?;
    sys::sleep(SETTLE.saturating_sub(last_at.elapsed()))?;
    let idle_settled = Idle::measure(rig.engine())?;
    let netns_up = list_netns()
        .iter()
        .filter(|s| s.starts_with("tapnet-"))
        .count();
    let rss_up = sys::rss_mib().context("cannot read VmRSS")?;
    let peak = sys::peak_rss_mib();
    let (slab1, pcpu1) = kernel_mem_mib();
    let db_bytes = std::fs::metadata(rig.state_dir().join("tapnet.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let t_all = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        check_interrupt()?;
        let t0 = Instant::now();
        rig.api().delete(&format!("/sandboxes/{id}"))?;
        ops.remove.record(i, n, t0.elapsed());
    }
    ops.remove_total = t_all.elapsed();
    rig.api().delete(&format!("/networks/{net}"))?;
    let left = rig.daemon().sandboxes().len();
    if left != 0 {
        bail!("the daemon still records {left} sandboxes after removing all");
    }
    let state_dir = rig.state_dir().to_path_buf();
    drop(rig);
    Ok(DaemonRun {
        ops,
        rss_before,
        rss_idle,
        rss_up,
        peak,
        list_ms,
        engine_ports,
        netns_up,
        slab_mib: slab1 - slab0,
        percpu_mib: pcpu1 - pcpu0,
        state_dir,
        db_bytes,
        idle_now,
        idle_settled,
    })
}

/// Timings of the daemon's steps, replicated one by one.
struct Steps {
    order: Vec<&'static str>,
    hists: BTreeMap<&'static str, Lat>,
    /// Which of the `n` sandboxes the next steps are for.
    i: usize,
    n: usize,
}

impl Steps {
    fn new(n: usize) -> Steps {
        Steps {
            order: Vec::new(),
            hists: BTreeMap::new(),
            i: 0,
            n,
        }
    }

    /// The next steps are for the `i`-th sandbox.
    fn at(&mut self, i: usize) {
        self.i = i;
    }

    /// Run `f`, adding its time to `step`.
    fn time<T>(&mut self, step: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let v = f()?;
        let d = t0.elapsed();
        if !self.hists.contains_key(step) {
            self.order.push(step);
            self.hists.insert(step, Lat::new()?);
        }
        if let Some(h) = self.hists.get_mut(step) {
            h.record(self.i, self.n, d);
        }
        Ok(v)
    }

    fn mean_total_ms(&self) -> f64 {
        self.hists.values().map(|h| h.all.mean() / 1e6).sum()
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.order
                .iter()
                .map(|s| (s.to_string(), summary(&self.hists[s])))
                .collect(),
        )
    }

    fn line(&self) -> String {
        self.order
            .iter()
            .map(|s| {
                let h = &self.hists[s];
                format!(
                    "{s} {:.2} (first/last tenth {:.2}/{:.2})",
                    h.all.mean() / 1e6,
                    h.first.mean() / 1e6,
                    h.last.mean() / 1e6
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon's create and remove of a one-endpoint sandbox, step by step, with the
/// same library calls the daemon makes (`Daemon::create_sandbox` → `plan_endpoint`,
/// `Store::commit`, `realize_sandbox` → `ensure_netns`, `plug`, `Engine::add_port`,
/// `set_default_route`; `drop_sandbox` → commit, `remove_port`, `remove_netns`,
/// `forget_netns`), `n` sandboxes up before any is removed, as in the API run.
fn breakdown(opts: &Opts, n: usize, state_parent: &Path) -> Result<(Steps, Steps)> {
    let dir = TempDir(state_parent.join(format!("tapnet-perf-{}-steps", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let store = Store::open(&dir.0.join("tapnet.db"))?;
    let mut ipam = Ipam::new();
    let pool = ipam.request_pool(
        &PoolRequest::parse(STEPS_SUBNET, "", "", &BTreeMap::new())?,
        &[],
    )?;
    let engine = Engine::start(opts.engine_config()?)?;
    let dom = engine.add_domain(DomainConfig::default())?;
    let net_id = new_id();
    let (mut create, mut remove) = (Steps::new(n), Steps::new(n));
    let mut live = Vec::with_capacity(n);
    for i in 0..n {
        check_interrupt()?;
        create.at(i);
        let (next, sb, ep, bytes) = create.time("plan (IPAM copy, records, encode)", || {
            let mut next = ipam.clone();
            let addr = next.request_address(&pool.id, None)?;
            let id = new_id();
            let ep = EndpointRecord {
                id: new_id(),
                network_id: net_id.clone(),
                sandbox_id: id.clone(),
                ifname: "eth0".into(),
                mac: MacAddr::from_ipv4(addr).to_string(),
                ipv4: Some(addr),
                prefix_len: PREFIX,
                ..Default::default()
            };
            let sb = SandboxRecord {
                name: format!("steps-{i}"),
                created: now_rfc3339(),
                netns: tapnet_ctl::daemon::core::netns_name(&id),
                hostname: id[..12].to_string(),
                endpoints: vec![ep.id.clone()],
                ports: Vec::new(),
                id,
                rootless: None,
                external: None,
            };
            let bytes = serde_json::to_vec(&next)?;
            Ok((next, sb, ep, bytes))
        })?;
        create.time("redb commit (durable)", || {
            Ok(store.commit(
                &[Change::PutEndpoint(&ep), Change::PutSandbox(&sb)],
                Some(&bytes),
            )?)
        })?;
        ipam = next;
        let ns = create.time("netns create + lo up", || {
            Ok(NetNsGuard(sandbox::ensure_netns(&sb.netns)?))
        })?;
        let addr = ep.ipv4.context("no address")?;
        let mac = MacAddr::from_ipv4(addr);
        let tap = create.time("TAP create (persistent, in netns)", || {
            Ok(create_tap_in(
                &ns,
                &TapConfig {
                    name: "eth0".into(),
                    persist: true,
                    ..TapConfig::default()
                },
            )?)
        })?;
        create.time("TAP config (netlink: MAC, MTU, qlen, addr, up)", || {
            // As `sandbox::plug` does once the TAP exists.
            let mut nl = Netlink::open_in(&ns)?;
            let idx = nl.link_index("eth0")?;
            let link = nl.link(idx)?;
            if link.mac != Some(mac.0) {
                nl.set_mac(idx, mac.0)?;
            }
            if link.mtu != Some(MTU) {
                nl.set_mtu(idx, MTU)?;
            }
            if link.txqueuelen != Some(TXQUEUELEN) {
                nl.set_txqueuelen(idx, TXQUEUELEN)?;
            }
            let have = nl.addresses(idx)?;
            if !have.contains(&(IpAddr::V4(addr), PREFIX)) {
                nl.add_address(idx, IpAddr::V4(addr), PREFIX)?;
            }
            nl.set_up(idx)?;
            Ok(())
        })?;
        let port = create.time("engine port + static MAC", || {
            let port = engine.add_port(Box::new(TapPort::new(tap, MTU)), dom)?;
            engine.add_static_mac(dom, mac, port)?;
            Ok(port)
        })?;
        create.time("default route (netlink)", || {
            Ok(sandbox::set_default_route(
                &ns,
                Some((Ipv4Addr::new(10, 125, 0, 1), "eth0")),
            )?)
        })?;
        live.push((ns, port, sb, ep));
    }
    for (i, (ns, port, sb, ep)) in live.into_iter().enumerate() {
        check_interrupt()?;
        remove.at(i);
        let (next, bytes) = remove.time("plan (IPAM copy, release, encode)", || {
            let mut next = ipam.clone();
            if let Some(a) = ep.ipv4 {
                next.release_address(&pool.id, a)?;
            }
            let bytes = serde_json::to_vec(&next)?;
            Ok((next, bytes))
        })?;
        remove.time("redb commit (durable)", || {
            Ok(store.commit(
                &[
                    Change::DelEndpoint(&ep.id),
                    Change::DelSandbox(&sb.id),
                    Change::NetnsGone(&sb.netns),
                ],
                Some(&bytes),
            )?)
        })?;
        ipam = next;
        remove.time("engine remove port", || Ok(engine.remove_port(port)?))?;
        let path = ns.path().to_path_buf();
        remove.time("netns delete", || {
            drop(ns);
            Ok(())
        })?;
        if path.exists() {
            bail!("could not delete namespace {}", path.display());
        }
        remove.time("redb forget netns (not durable)", || {
            Ok(store.forget_netns(&[&sb.netns])?)
        })?;
    }
    engine.shutdown();
    Ok((create, remove))
}

/// Wait until the kernel has torn down the namespaces deleted so far (it does so
/// asynchronously, in batches, after `ip netns delete` and the daemon's removal have
/// returned), so that one phase's cleanup does not slow the next; returns how long that
/// took (`None`: not within five minutes).
///
/// A sentinel tells: a namespace deleted after all of ours, holding one end of a veth
/// whose other end stays in an observer namespace. The kernel deletes that end when it
/// tears the sentinel down, in the same batch as ours or a later one, and the peer goes
/// with it. Unlike a machine-wide count of namespaces, this ignores other processes.
fn wait_netns_cleanup() -> Result<Option<f64>> {
    let observer = NetNsGuard::create(&ns_name("probe-o"))?;
    let mut nl = Netlink::open_in(&observer)?;
    {
        let sentinel = NetNsGuard::create(&ns_name("probe-s"))?;
        nl.add_veth("probe", "probe-peer")?;
        let peer = nl.link_index("probe-peer")?;
        nl.move_to_netns(peer, sentinel.fd())?;
    } // the sentinel is deleted here
    let t0 = Instant::now();
    loop {
        check_interrupt()?;
        match nl.link_index("probe") {
            Ok(_) => {}
            Err(NetlinkError::Kernel {
                errno: Errno::ENODEV,
                ..
            }) => return Ok(Some(t0.elapsed().as_secs_f64())),
            Err(e) => return Err(e.into()),
        }
        if t0.elapsed() > Duration::from_secs(300) {
            eprintln!("warning: the kernel is still tearing down namespaces after 300 s");
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The file system type of `p`, as /proc/mounts names it (longest matching mount).
fn fs_type(p: &Path) -> String {
    let Ok(m) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    let p = p.to_string_lossy();
    m.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2).then(|| (f[1], f[2]))
        })
        .filter(|(mnt, _)| {
            p.starts_with(mnt)
                && (mnt.ends_with('/') || p.len() == mnt.len() || p[mnt.len()..].starts_with('/'))
        })
        .max_by_key(|(mnt, _)| mnt.len())
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn run(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    in_private_netns_dir(|| run_inner(opts, rep))
}

fn run_inner(opts: &Opts, rep: &mut Reporter) -> Result<()> {
    let n = opts.sandboxes;
    eprintln!("bridge-api: kernel baseline, {n} × (netns + veth into a bridge + address + route)");
    let (k, ksc, ksr, k_slab, k_pcpu) = kernel(n)?;
    eprintln!(
        "bridge-api: kernel: create p50 {:.2} ms, remove p50 {:.2} ms ({:.1} s + {:.1} s)",
        ms(&k.create.all, 0.5),
        ms(&k.remove.all, 0.5),
        k.create_total.as_secs_f64(),
        k.remove_total.as_secs_f64()
    );
    eprintln!("bridge-api: kernel create steps (mean ms): {}", ksc.line());
    eprintln!("bridge-api: kernel remove steps (mean ms): {}", ksr.line());
    eprintln!("bridge-api: waiting for the kernel to tear down the namespaces");
    let k_cleanup = wait_netns_cleanup()?;
    eprintln!("bridge-api: daemon in this process, {n} × POST /sandboxes, then {n} × DELETE");
    let d = daemon(opts, n)?;
    eprintln!(
        "bridge-api: daemon: create p50 {:.2} ms, remove p50 {:.2} ms ({:.1} s + {:.1} s), RSS {:.1} MiB with {n} up",
        ms(&d.ops.create.all, 0.5),
        ms(&d.ops.remove.all, 0.5),
        d.ops.create_total.as_secs_f64(),
        d.ops.remove_total.as_secs_f64(),
        d.rss_up
    );
    eprintln!("bridge-api: waiting for the kernel to tear down the namespaces");
    let d_cleanup = wait_netns_cleanup()?;
    let state_parent = d
        .state_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    eprintln!("bridge-api: breakdown, the daemon's steps replicated, {n} × create then remove");
    let (sc, sr) = breakdown(opts, n, &state_parent)?;
    eprintln!("bridge-api: create steps (mean ms): {}", sc.line());
    eprintln!("bridge-api: remove steps (mean ms): {}", sr.line());
    wait_netns_cleanup()?;
    let left = list_netns();
    if !left.is_empty() {
        bail!(
            "{} namespaces left after the runs: {}",
            left.len(),
            left.join(" ")
        );
    }
    let state_fs = fs_type(&state_parent);
    let base = "kernel netns+veth+bridge";
    for (op, t, kl, steps, ksteps, total, ktotal) in [
        (
            "create",
            &d.ops.create,
            &k.create,
            &sc,
            &ksc,
            d.ops.create_total,
            k.create_total,
        ),
        (
            "remove",
            &d.ops.remove,
            &k.remove,
            &sr,
            &ksr,
            d.ops.remove_total,
            k.remove_total,
        ),
    ] {
        for (q, qn) in [(0.5, "p50"), (0.99, "p99")] {
            let mut m = Measurement::new(
                SCENARIO,
                format!("{op} sandbox+endpoint {qn} (N={n})"),
                "ms",
                Better::Lower,
                ms(&t.all, q),
                base,
                ms(&kl.all, q),
                rep.machine(),
            )
            .rss(d.peak);
            if qn == "p50" {
                m = m
                    .note(format!(
                        "max {:.1} ms (kernel {:.1}); first/last tenth p50 {:.2}/{:.2} ms (kernel {:.1}/{:.1}); {n} in {:.1} s (kernel {:.1} s)",
                        ms(&t.all, 1.0),
                        ms(&kl.all, 1.0),
                        ms(&t.first, 0.5),
                        ms(&t.last, 0.5),
                        ms(&kl.first, 0.5),
                        ms(&kl.last, 0.5),
                        total.as_secs_f64(),
                        ktotal.as_secs_f64()
                    ))
                    .detail("tapnet", summary(t))
                    .detail("baseline", summary(kl))
                    .detail("tapnet_total_s", round(total.as_secs_f64(), 2))
                    .detail("baseline_total_s", round(ktotal.as_secs_f64(), 2))
                    .detail("steps_replicated", steps.to_json())
                    .detail("steps_mean_total_ms", round(steps.mean_total_ms(), 3))
                    .detail("baseline_steps", ksteps.to_json())
                    .detail("state_dir_fs", &state_fs)
                    .detail("mapping", opts.mapping.clone());
                if op == "remove" {
                    // How long the kernel still worked on the namespaces after the last
                    // remove returned (it tears them down asynchronously).
                    m = m
                        .detail(
                            "tapnet_netns_teardown_wait_s",
                            d_cleanup.map(|v| round(v, 2)),
                        )
                        .detail(
                            "baseline_netns_teardown_wait_s",
                            k_cleanup.map(|v| round(v, 2)),
                        );
                }
            } else {
                m = m.note(format!(
                    "p99.9 {:.1} ms (kernel {:.1})",
                    ms(&t.all, 0.999),
                    ms(&kl.all, 0.999)
                ));
            }
            rep.push(m);
        }
    }
    let m = Measurement::new(
        SCENARIO,
        format!("daemon RSS with {n} sandboxes"),
        "MiB RSS",
        Better::Lower,
        d.rss_up,
        "perf process before the daemon",
        d.rss_before,
        rep.machine(),
    )
    .rss(d.peak)
    .target("< 256 MiB", d.rss_up < 256.0)
    .note(format!(
        "daemon adds {:.1} MiB ({:.1} at start, +{:.1} for {n} sandboxes); idle workers {:.0}% CPU just after the last create ({} frames/s in, {} flooded), {:.1}% {} s later; kernel unreclaimable slab+percpu {:.0} MiB (veth baseline {:.0})",
        d.rss_up - d.rss_before,
        d.rss_idle - d.rss_before,
        d.rss_up - d.rss_idle,
        d.idle_now.cpu_total(),
        d.idle_now.rx_frames,
        d.idle_now.flooded,
        d.idle_settled.cpu_total(),
        SETTLE.as_secs(),
        d.slab_mib + d.percpu_mib,
        k_slab + k_pcpu
    ))
    .detail("rss_before_mib", round(d.rss_before, 1))
    .detail("rss_idle_daemon_mib", round(d.rss_idle, 1))
    .detail("rss_up_mib", round(d.rss_up, 1))
    .detail("idle_just_after", d.idle_now.to_json())
    .detail("idle_settled", d.idle_settled.to_json())
    .detail("list_sandboxes_ms", round(d.list_ms, 2))
    .detail("engine_ports", d.engine_ports)
    .detail("sandbox_netns", d.netns_up)
    .detail("db_bytes", d.db_bytes)
    .detail("kernel_sunreclaim_mib", round(d.slab_mib, 1))
    .detail("kernel_percpu_mib", round(d.percpu_mib, 1))
    .detail("baseline_kernel_sunreclaim_mib", round(k_slab, 1))
    .detail("baseline_kernel_percpu_mib", round(k_pcpu, 1))
    .detail("state_dir_fs", &state_fs);
    rep.push(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_skip_network_and_gateway() {
        assert_eq!(host_addr([10, 124], 0), Ipv4Addr::new(10, 124, 0, 2));
        assert_eq!(host_addr([10, 124], 253), Ipv4Addr::new(10, 124, 0, 255));
        assert_eq!(host_addr([10, 124], 254), Ipv4Addr::new(10, 124, 1, 0));
        assert_eq!(
            host_addr([10, 124], MAX_SANDBOXES - 1),
            Ipv4Addr::new(10, 124, 255, 254)
        );
    }

    #[test]
    fn fs_type_of_root() {
        assert_ne!(fs_type(Path::new("/")), "unknown");
    }
}
