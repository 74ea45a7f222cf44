//! Measure membership in simulation: `cargo run --release -p tapnet-cluster
//! --example swarm_sim -- N [SEED]`.
//!
//! Starts N nodes (rolling start over 1 s, 1 % loss, 0.5–1 ms latency),
//! waits until every node sees every other, measures traffic per node over
//! 20 s of steady state, then crashes 10 nodes one after another (15 s apart)
//! and reports the detection times. Prints the wall time of the whole run.

use std::time::{Duration, Instant};

use tapnet_cluster::sim::{Percentiles, Sim, SimParams};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let wall = Instant::now();
    let params = SimParams {
        loss: 0.01,
        ..SimParams::default()
    };
    let mut sim = Sim::new(n, seed, params);
    let converged = sim.run_until_converged(Duration::from_secs(120));
    println!("n={n} seed={seed} convergence after start: {converged:?}");
    let traffic = sim.measure_traffic(Duration::from_secs(20));
    println!(
        "steady state per node: {:.1} packets/s, {:.0} bytes/s",
        traffic.packets_per_node_sec, traffic.bytes_per_node_sec
    );
    for k in 0..10 {
        sim.crash(n / 2 + k * (n / 20).max(1) % (n / 2));
        sim.run_for(Duration::from_secs(15));
    }
    sim.run_for(Duration::from_secs(15));
    let d = Percentiles::of(sim.detections());
    println!(
        "detection over {} crashes (pending {}): p50 {:?} p99 {:?} max {:?}",
        d.count,
        sim.pending_detections(),
        d.p50,
        d.p99,
        d.max
    );
    let net = sim.net_stats();
    println!(
        "virtual time {:?}, wall time {:?}, datagrams sent {} (lost {})",
        sim.now(),
        wall.elapsed(),
        net.sent,
        net.lost
    );
}
