//! Measure the control plane in simulation: `cargo run --release -p
//! tapnet-cluster --example swarm_sim -- N [SEED]`.
//!
//! Runs [`run_swarm`]: N nodes (rolling start over 1 s, 1 % loss, 0.5–1 ms
//! latency) on one network with one endpoint each; steady-state traffic per
//! node, 20 writes and 5 crashes. Prints the wall time of the whole run.

use std::time::Instant;

use tapnet_cluster::sim::{SwarmParams, run_swarm};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let wall = Instant::now();
    let r = run_swarm(&SwarmParams::new(n, seed));
    println!(
        "n={n} seed={seed} convergence after start: {:?}",
        r.converged
    );
    let t = r.traffic;
    println!(
        "steady state per node: membership {:.2} packets/s {:.0} B/s, tables {:.2} packets/s {:.0} B/s, total {:.2} packets/s {:.0} B/s",
        t.membership.packets_per_node_sec,
        t.membership.bytes_per_node_sec,
        t.tables.packets_per_node_sec,
        t.tables.bytes_per_node_sec,
        t.total.packets_per_node_sec,
        t.total.bytes_per_node_sec
    );
    println!(
        "start-up writes shown everywhere after {:?} (None: not within the bound; traffic measured after)",
        r.startup_repaired
    );
    let p = r.propagation;
    println!(
        "endpoint to all nodes over {} writes (pending {}; first writes still pending after settling: {}): p50 {:?} p99 {:?} max {:?}",
        p.count, r.pending_propagations, r.initial_pending, p.p50, p.p99, p.max
    );
    let d = r.detection;
    println!(
        "entries removed everywhere over {} crashes (pending {}): p50 {:?} p99 {:?} max {:?}; membership: p50 {:?} max {:?}",
        d.count,
        r.pending_detections,
        d.p50,
        d.p99,
        d.max,
        r.member_detection.p50,
        r.member_detection.max
    );
    println!(
        "virtual time {:?}, wall time {:?}, datagrams sent {} (lost {})",
        r.virtual_time,
        wall.elapsed(),
        r.net.sent,
        r.net.lost
    );
}
