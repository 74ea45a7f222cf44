//! `idle-rss`: memory of an engine with two workers (pipeline) and 64 idle TAP ports,
//! against the perf process before the engine started. Also the CPU the idle engine
//! burns.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tapnet_engine::sys::netlink::Netlink;
use tapnet_engine::sys::netns::NetNsGuard;
use tapnet_engine::sys::tap::{Tap, TapConfig};
use tapnet_engine::{DomainConfig, Engine, EngineConfig, TapPort, WorkerMapping};

use crate::counters::Snapshot;
use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};
use crate::sys::{self, cpu_percent, thread_cpu_ticks};
use crate::topo::{MTU, ns_name};

const SCENARIO: &str = "idle-rss";
const PORTS: usize = 64;
const SETTLE: Duration = Duration::from_secs(1);

pub(crate) fn run(_opts: &Opts, rep: &mut Reporter) -> Result<()> {
    eprintln!("idle-rss: engine (pipeline, 2 workers) with {PORTS} TAPs");
    sys::reset_peak_rss();
    let before = sys::rss_mib().context("cannot read VmRSS")?;
    let name = ns_name("idle");
    let ns =
        NetNsGuard::create(&name).with_context(|| format!("creating network namespace {name}"))?;
    let engine = Engine::start(EngineConfig {
        mapping: WorkerMapping::pipeline(),
        pin: true,
        ..Default::default()
    })?;
    let dom = engine.add_domain(DomainConfig::default())?;
    let taps = ns.run(|| {
        (0..PORTS)
            .map(|i| {
                Tap::create(&TapConfig {
                    name: format!("t{i}"),
                    ..TapConfig::default()
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })??;
    let mut nl = Netlink::open_in(&ns)?;
    for tap in taps {
        let i = nl.link_index(tap.name())?;
        nl.set_mtu(i, MTU)?;
        nl.set_up(i)?;
        engine.add_port(Box::new(TapPort::new(tap, MTU)), dom)?;
    }
    let s0 = Snapshot::take(&engine);
    let ticks = thread_cpu_ticks("tapnet-w");
    let t0 = Instant::now();
    sys::sleep(SETTLE)?;
    let cpu = cpu_percent(&ticks, &thread_cpu_ticks("tapnet-w"), t0.elapsed());
    let d = Snapshot::take(&engine).since(&s0);
    let rss = sys::rss_mib().context("cannot read VmRSS")?;
    let peak = sys::peak_rss_mib();
    let free = engine.stats().pool_free;
    let (small_free, large_free) = (free.small, free.large);
    engine.shutdown();
    drop(engine);
    drop(ns);
    let m = Measurement::new(
        SCENARIO,
        format!("{PORTS} idle TAPs, pipeline 2w"),
        "MiB RSS",
        Better::Lower,
        rss,
        "perf process without engine",
        before,
        rep.machine(),
    )
    .rss(peak)
    .target("< 64 MiB", rss < 64.0)
    .note(format!(
        "engine adds {:.1} MiB; idle worker CPU {}",
        rss - before,
        cpu.iter()
            .map(|(k, v)| format!("{k} {}%", v.total))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .detail("engine_added_mib", sys::round(rss - before, 1))
    .detail("worker_cpu_pct_idle", &cpu)
    .detail("frames_while_idle", d.stages())
    .detail("pool_free", [small_free, large_free]);
    rep.push(m);
    Ok(())
}
