//! `cluster-sim`: the swarm control plane (membership with foca, the per-network
//! tables, composed as each host runs them) in a deterministic simulation in
//! virtual time, at N = 100, 300 and 1,000 nodes: every node on one network with
//! one endpoint; 1 % loss, 0.5–1 ms latency. Measures the time for a new endpoint
//! entry to reach every live node of its network (20 writes at random nodes), the
//! time from a crash until every live node removed the crashed node's entries (5
//! crashes), and the steady-state traffic per node, membership and tables apart.
//! Nothing is sent on a real network. Baseline of every row: the same figure at
//! N = 100.

use std::time::{Duration, Instant};

use anyhow::Result;
use tapnet_cluster::sim::{SwarmParams, SwarmReport, run_swarm};

use crate::opts::Opts;
use crate::report::{Better, Measurement, Reporter};

const SCENARIO: &str = "cluster-sim";
const SIZES: [usize; 3] = [100, 300, 1000];
const SEED: u64 = 1;
/// Target: an endpoint reaches every node of its network within this (p99, N = 1,000).
const PROPAGATION_TARGET: Duration = Duration::from_secs(2);
/// Target: a crashed node's entries are gone everywhere within this.
const DETECTION_TARGET: Duration = Duration::from_secs(15);
/// Target: per-node load at N = 1,000 at most this many times that at N = 100.
const LOAD_TARGET: f64 = 2.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The figures of one run, in row order: (case, unit, value).
fn figures(r: &SwarmReport) -> Vec<(&'static str, &'static str, f64)> {
    let t = r.traffic;
    vec![
        ("endpoint to all nodes p50", "ms", ms(r.propagation.p50)),
        ("endpoint to all nodes p99", "ms", ms(r.propagation.p99)),
        ("endpoint to all nodes max", "ms", ms(r.propagation.max)),
        (
            "crash to entries removed everywhere p50",
            "ms",
            ms(r.detection.p50),
        ),
        (
            "crash to entries removed everywhere p99",
            "ms",
            ms(r.detection.p99),
        ),
        (
            "crash to entries removed everywhere max",
            "ms",
            ms(r.detection.max),
        ),
        (
            "gossip bytes per node, total",
            "B/s",
            t.total.bytes_per_node_sec,
        ),
        (
            "gossip bytes per node, membership",
            "B/s",
            t.membership.bytes_per_node_sec,
        ),
        (
            "gossip bytes per node, tables",
            "B/s",
            t.tables.bytes_per_node_sec,
        ),
        (
            "gossip packets per node, total",
            "packets/s",
            t.total.packets_per_node_sec,
        ),
        (
            "gossip packets per node, membership",
            "packets/s",
            t.membership.packets_per_node_sec,
        ),
        (
            "gossip packets per node, tables",
            "packets/s",
            t.tables.packets_per_node_sec,
        ),
    ]
}

pub(crate) fn run(_opts: &Opts, rep: &mut Reporter) -> Result<()> {
    eprintln!(
        "{SCENARIO}: simulated swarm of {SIZES:?} nodes, one network, one endpoint each, 1 % loss"
    );
    let wall = Instant::now();
    let mut base: Option<Vec<(&'static str, &'static str, f64)>> = None;
    for n in SIZES {
        let t0 = Instant::now();
        let r = run_swarm(&SwarmParams::new(n, SEED));
        let took = t0.elapsed();
        eprintln!(
            "  N={n}: {:.1} s wall, {:.0} s virtual, converged after {:?}",
            took.as_secs_f64(),
            r.virtual_time.as_secs_f64(),
            r.converged
        );
        let rows = figures(&r);
        let baseline = base.get_or_insert_with(|| rows.clone()).clone();
        for ((case, unit, value), (_, _, b)) in rows.into_iter().zip(baseline) {
            let mut m = Measurement::new(
                SCENARIO,
                format!("{case}, N={n}"),
                unit,
                Better::Lower,
                value,
                "same, N=100",
                b,
                rep.machine(),
            )
            .detail("wall_s", crate::sys::round(took.as_secs_f64(), 1))
            .detail(
                "virtual_s",
                crate::sys::round(r.virtual_time.as_secs_f64(), 1),
            )
            .detail("seed", SEED);
            if case.starts_with("endpoint") {
                m = m
                    .note(format!(
                        "{} writes, {} never complete; {} of the first {n} writes still spreading after settling",
                        r.propagation.count, r.pending_propagations, r.initial_pending
                    ))
                    .detail("pending", r.pending_propagations);
                if case.ends_with("p99") {
                    let met = r.pending_propagations == 0 && r.propagation.p99 < PROPAGATION_TARGET;
                    m = m.target("p99 < 2 s (at N=1000)", met);
                }
            }
            if case.starts_with("crash") {
                m = m
                    .note(format!(
                        "{} crashes, {} not complete; membership alone: p50 {} ms, max {} ms",
                        r.detection.count,
                        r.pending_detections,
                        ms(r.member_detection.p50).round(),
                        ms(r.member_detection.max).round()
                    ))
                    .detail("pending", r.pending_detections);
                if case.ends_with("p99") || case.ends_with("max") {
                    let met = r.pending_detections == 0 && r.detection.max < DETECTION_TARGET;
                    m = m.target("< 15 s", met);
                }
            }
            if case.starts_with("gossip") {
                m = m.note(match r.startup_repaired {
                    Some(t) => format!(
                        "steady state: measured once every node showed the {n} start-up writes, {:.0} s after them",
                        t.as_secs_f64()
                    ),
                    None => format!(
                        "the {n} start-up writes were not shown everywhere within {} s: measured during their repair",
                        tapnet_cluster::sim::MAX_STARTUP.as_secs()
                    ),
                });
            }
            if case == "gossip bytes per node, total" && n == 1000 {
                m = m.target("≤ 2 × N=100", value <= LOAD_TARGET * b);
            }
            rep.push(m);
        }
    }
    eprintln!(
        "{SCENARIO}: {:.1} s wall in all",
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}
