//! The swarm scenario the perf suite and the example run: N nodes on one network,
//! one endpoint each, then writes and crashes, with every measure of the module.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::{NetStats, Percentiles, Sim, SimParams, TrafficSplit};

/// What to run.
#[derive(Clone, Debug)]
pub struct SwarmParams {
    /// Nodes.
    pub n: usize,
    /// Seed of the whole run.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Writes measured (at random nodes, one a second).
    pub writes: usize,
    /// Crashes measured (of random nodes, one each [`SwarmParams::crash_gap`]).
    pub crashes: usize,
    /// Time between two crashes.
    pub crash_gap: Duration,
    /// Time after every node wrote its endpoint before the traffic is measured:
    /// long enough for the join gossip and the first anti-entropy rounds to end.
    /// After it, the run goes on (by 5 s, at most [`MAX_STARTUP`] from the writes)
    /// until every running node shows every node's endpoint: the load is measured
    /// in the steady state, not in the repair of the start-up burst.
    pub settle: Duration,
    /// Window of the traffic measure.
    pub window: Duration,
}

impl SwarmParams {
    /// The defaults for `n` nodes: 1 % loss, 20 writes, 5 crashes 20 s apart,
    /// 60 s to settle, traffic over 30 s.
    pub fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            loss: 0.01,
            writes: 20,
            crashes: 5,
            crash_gap: Duration::from_secs(20),
            settle: Duration::from_secs(60),
            window: Duration::from_secs(30),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct SwarmReport {
    /// Time until every node saw every other up, from the start.
    pub converged: Option<Duration>,
    /// Steady-state traffic per node per second.
    pub traffic: TrafficSplit,
    /// From a write until every live node of the network shows it.
    pub propagation: Percentiles,
    /// Writes not shown everywhere at the end.
    pub pending_propagations: usize,
    /// Of the first writes (every node's endpoint, at once), how many were still
    /// not shown everywhere when the traffic measure ended (not measured further).
    pub initial_pending: usize,
    /// From the first writes (every node's endpoint, at once) until every running
    /// node showed all of them; `None` if not within [`MAX_STARTUP`].
    pub startup_repaired: Option<Duration>,
    /// From a crash until every live node removed the crashed node's entries.
    pub detection: Percentiles,
    /// Crashes whose entries some node still showed at the end.
    pub pending_detections: usize,
    /// From a crash until every live node held it down (membership only).
    pub member_detection: Percentiles,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// The transport's counters.
    pub net: NetStats,
}

/// The network every node joins.
pub const NETWORK: &str = "overlay0";

/// Longest wait, from the first writes, for the start-up burst to be shown everywhere.
pub const MAX_STARTUP: Duration = Duration::from_secs(300);

/// Whether every running node shows one endpoint of every running node.
fn all_shown(sim: &Sim) -> bool {
    let running: Vec<usize> = (0..sim.len())
        .filter(|&i| sim.node(i).is_running())
        .collect();
    running
        .iter()
        .all(|&i| sim.node(i).node.tables().entries(NETWORK).len() == running.len())
}

/// An endpoint value of a realistic size (MAC, IPv4, VTEP, a name).
fn value(i: usize, k: usize) -> Vec<u8> {
    format!(
        "02:42:0a:00:{:02x}:{:02x} 10.0.{}.{} vtep=10.1.{}.{} name=svc-{i}-{k}",
        i % 256,
        k % 256,
        i / 256,
        i % 256,
        i / 256,
        i % 256
    )
    .into_bytes()
}

/// Run the scenario: start, converge, every node joins [`NETWORK`] and writes one
/// endpoint, settle, measure the traffic, then the writes, then the crashes.
pub fn run_swarm(p: &SwarmParams) -> SwarmReport {
    let params = SimParams {
        loss: p.loss,
        ..SimParams::default()
    };
    let mut sim = Sim::new(p.n, p.seed, params);
    let converged = sim.run_until_converged(Duration::from_secs(120));
    let writes_at = sim.now();
    for i in 0..p.n {
        let _ = sim.join_network(i, NETWORK);
        let _ = sim.set_entry(i, NETWORK, &format!("ep-{i}"), &value(i, 0));
    }
    sim.run_for(p.settle);
    let mut startup_repaired = None;
    while sim.now() - writes_at < MAX_STARTUP {
        if all_shown(&sim) {
            startup_repaired = Some(sim.now() - writes_at);
            break;
        }
        sim.run_for(Duration::from_secs(5));
    }
    let traffic = sim.measure_traffic(p.window);
    let initial_pending = sim.forget_pending_propagations();
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ 0x5157);
    let base = sim.propagations().len();
    for k in 0..p.writes {
        let i = rng.random_range(0..p.n);
        let _ = sim.set_entry(i, NETWORK, &format!("ep-{i}"), &value(i, k + 1));
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(10));
    let propagation = Percentiles::of(&sim.propagations()[base..]);
    let pending_propagations = sim.pending_propagations();
    let mut crashed = Vec::new();
    for _ in 0..p.crashes {
        let i = loop {
            let i = rng.random_range(p.n.min(3)..p.n);
            if !crashed.contains(&i) {
                break i;
            }
        };
        crashed.push(i);
        sim.crash(i);
        sim.run_for(p.crash_gap);
    }
    SwarmReport {
        converged,
        traffic,
        propagation,
        pending_propagations,
        initial_pending,
        startup_repaired,
        detection: Percentiles::of(sim.entry_detections()),
        pending_detections: sim.pending_entry_detections(),
        member_detection: Percentiles::of(sim.detections()),
        virtual_time: sim.now(),
        net: sim.net_stats(),
    }
}
