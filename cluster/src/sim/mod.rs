//! Deterministic simulation of a cluster in virtual time.
//!
//! [`Sim`] runs N nodes, each a [`SimNode`] holding the real per-node
//! composition [`Node`] (membership and tables; room for more sans-IO
//! [`Layer`]s), over a simulated
//! UDP network: every datagram takes a latency (base plus uniform jitter), may
//! be lost at random, is dropped between the sides of a partition, and is not
//! delivered to a crashed node. Time is virtual: one event queue ordered by
//! (instant, sequence) holds deliveries and node wake-ups, and the whole run
//! is a function of the seed, so a failure replays exactly.
//!
//! It measures what the swarm's design asks of membership: time until every
//! node sees every other ([`Sim::run_until_converged`]), time from a crash
//! until every live node holds the crashed node down ([`Sim::detections`]),
//! and the traffic per node in steady state ([`Sim::measure_traffic`], membership
//! and tables apart). With the tables in the loop, it measures what the data
//! plane sees: the time until an entry written at one node is visible at every
//! live node of its network ([`Sim::propagations`]), and the time from a crash
//! until every live node has removed the crashed node's entries
//! ([`Sim::entry_detections`]).

mod measure;
mod node;
mod swarm;
mod tables;
mod track;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use rand::{Rng, RngExt};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::member::{KIND_MEMBERSHIP, MemberEvent, NodeId, config};
use crate::node::{Node, NodeEvent};
use crate::table;

pub use measure::{NetStats, Percentiles, Traffic, TrafficSplit};
pub use node::{Layer, SimNode};
pub use swarm::{MAX_STARTUP, NETWORK, SwarmParams, SwarmReport, run_swarm};

use measure::Digest;

/// The gossip port of every simulated node.
pub const PORT: u16 = 7946;

/// How often a node in the cluster checks that a seed is among its members
/// ([`Action::Join`]).
const REJOIN_CHECK: Duration = Duration::from_secs(30);

/// A joining node that still knows no member after this long says hello to a
/// seed again (its datagrams may have been lost).
pub const JOIN_RETRY: Duration = Duration::from_secs(2);

/// Settings of a simulation.
#[derive(Clone, Debug)]
pub struct SimParams {
    /// Latency of every datagram before jitter.
    pub latency: Duration,
    /// Uniform extra latency in `[0, jitter)`.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// How many nodes (the first ones) serve as seeds: every node says hello
    /// to each seed when it starts.
    pub seeds: usize,
    /// Nodes start over this span, in index order (a rolling start).
    pub start_spread: Duration,
    /// Foca settings; `None` means [`config()`] for the cluster size.
    pub config: Option<foca::Config>,
    /// Table settings of every node.
    pub tables: table::Config,
}

impl Default for SimParams {
    /// A LAN: 500 µs ± 500 µs, no loss, 3 seeds, start over 1 s.
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(500),
            jitter: Duration::from_micros(500),
            loss: 0.0,
            seeds: 3,
            start_spread: Duration::from_secs(1),
            config: None,
            tables: table::Config::default(),
        }
    }
}

#[derive(Debug)]
enum Action {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Wake(usize),
    Join(usize),
}

#[derive(Debug)]
struct Queued {
    at: Duration,
    seq: u64,
    action: Action,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A crash whose detection is not complete yet.
#[derive(Debug)]
struct Pending {
    id: NodeId,
    since: Duration,
    /// Live nodes that held `id` up at the crash and have not seen it go.
    waiting: HashSet<usize>,
}

/// A simulated cluster. See the module documentation.
pub struct Sim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddrV4, usize>,
    /// Partition side of each node: datagrams cross only between equal sides.
    side: Vec<u8>,
    rng: ChaCha8Rng,
    params: SimParams,
    config: foca::Config,
    seed: u64,
    net: NetStats,
    digest: Digest,
    pending: Vec<Pending>,
    detections: Vec<Duration>,
    track: track::Tracker,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

/// The gossip address of node `index`: 10.0.0.1 onwards.
pub fn node_addr(index: usize) -> SocketAddrV4 {
    let ip = Ipv4Addr::from(0x0a00_0001u32.wrapping_add(index as u32));
    SocketAddrV4::new(ip, PORT)
}

/// A seed for the RNG of one life of one node.
fn life_seed(seed: u64, index: usize, life: u32) -> u64 {
    let mut d = Digest::default();
    d.add(seed);
    d.add(index as u64);
    d.add(u64::from(life));
    d.0
}

impl Sim {
    /// `n` nodes; the first [`SimParams::seeds`] are seeds, every node says
    /// hello to each (by address) at its start instant, and again every
    /// [`JOIN_RETRY`] while it knows no member.
    pub fn new(n: usize, seed: u64, params: SimParams) -> Self {
        let config = params.config.clone().unwrap_or_else(|| config(n as u32));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = HashMap::with_capacity(n);
        for i in 0..n {
            let id = NodeId::new(node_addr(i), rng.next_u64());
            let tables = params.tables.clone();
            let node = Node::new(
                id,
                config.clone(),
                tables,
                life_seed(seed, i, 0),
                Duration::ZERO,
            );
            nodes.push(SimNode::new(node));
            by_addr.insert(id.addr, i);
        }
        let mut sim = Self {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            by_addr,
            side: vec![0; n],
            rng,
            params,
            config,
            seed,
            net: NetStats::default(),
            digest: Digest::default(),
            pending: Vec::new(),
            detections: Vec::new(),
            track: track::Tracker::default(),
        };
        for i in 1..n {
            let at = sim.params.start_spread.mul_f64(i as f64 / n as f64);
            sim.push(at, Action::Join(i));
        }
        // The first node founds the cluster; it checks its seeds like the others.
        sim.push(REJOIN_CHECK, Action::Join(0));
        sim
    }

    fn push(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            action,
        }));
    }

    /// The virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> &SimNode {
        &self.nodes[index]
    }

    /// Node `index`, to attach a [`Layer`].
    pub fn node_mut(&mut self, index: usize) -> &mut SimNode {
        &mut self.nodes[index]
    }

    /// What the transport did so far.
    pub fn net_stats(&self) -> NetStats {
        self.net
    }

    /// Digest of every transmission and membership event so far: equal for
    /// two runs with the same seed, parameters and calls.
    pub fn digest(&self) -> u64 {
        self.digest.0
    }

    /// Run every event up to `until`, then set the clock there.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(Reverse(Queued { at, action, .. })) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.execute(action);
        }
        self.now = self.now.max(until);
    }

    /// Run for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    /// Run until every running node sees every other running node (with its
    /// current identity) up, for at most `limit`; how long it took, checked
    /// every 100 ms.
    pub fn run_until_converged(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now;
        loop {
            if self.converged() {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(Duration::from_millis(100));
        }
    }

    /// Whether every running node sees exactly the other running nodes up.
    pub fn converged(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running)
            .collect();
        let want = running.len().saturating_sub(1);
        if running.iter().any(|&i| self.nodes[i].view.len() != want) {
            return false;
        }
        let ids: Vec<NodeId> = running.iter().map(|&i| self.nodes[i].node.id()).collect();
        running.iter().all(|&i| {
            let own = self.nodes[i].node.id();
            ids.iter()
                .all(|id| *id == own || self.nodes[i].view.contains(id))
        })
    }

    /// Crash node `index`: it stops sending and receiving at once, and the
    /// time until every live node that saw it up sees it down is measured
    /// ([`Sim::detections`]).
    pub fn crash(&mut self, index: usize) {
        if !self.nodes[index].running {
            return;
        }
        self.nodes[index].running = false;
        self.digest.add(0xc4a5 ^ index as u64);
        let id = self.nodes[index].node.id();
        for pending in &mut self.pending {
            pending.waiting.remove(&index);
        }
        let waiting = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running && self.nodes[i].view.contains(&id))
            .collect();
        self.pending.push(Pending {
            id,
            since: self.now,
            waiting,
        });
        self.settle_detections();
        self.track.crashed(index, id.key, &self.nodes, self.now);
    }

    /// Restart crashed node `index` with the next generation of its identity
    /// and a fresh [`Node`] (its layers are kept; its tables start empty, as
    /// after a process restart), and join through a seed.
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.running {
            return;
        }
        node.restarts += 1;
        let mut known: Vec<usize> = node
            .view
            .iter()
            .filter_map(|m| self.by_addr.get(&m.addr).copied())
            .filter(|&k| k != index)
            .collect();
        known.sort_unstable();
        node.known = known;
        let id = node.node.id().next_generation();
        node.node = Node::new(
            id,
            self.config.clone(),
            self.params.tables.clone(),
            life_seed(self.seed, index, node.restarts),
            self.now,
        );
        node.view.clear();
        node.running = true;
        node.wake = None;
        self.digest.add(0x4e57 ^ index as u64);
        self.push(self.now, Action::Join(index));
    }

    /// Node `index` leaves gracefully and stops.
    pub fn leave(&mut self, index: usize) {
        if !self.nodes[index].running {
            return;
        }
        let now = self.now;
        self.nodes[index].node.leave(now);
        self.drain(index);
        self.nodes[index].running = false;
        self.track.gone(index, self.now);
    }

    /// Cut `nodes` off from the rest: no datagram crosses until [`Sim::heal`]
    /// (datagrams in flight across the cut are dropped too).
    pub fn partition(&mut self, nodes: &[usize]) {
        for &i in nodes {
            self.side[i] = 1;
        }
    }

    /// End every partition.
    pub fn heal(&mut self) {
        self.side.fill(0);
    }

    /// Detection times of the crashes whose detection completed.
    pub fn detections(&self) -> &[Duration] {
        &self.detections
    }

    /// How many crashes are still not detected everywhere.
    pub fn pending_detections(&self) -> usize {
        self.pending.len()
    }

    /// Run for `window` and return the traffic the running nodes sent in it,
    /// per node per second: the membership's, the tables' and both.
    pub fn measure_traffic(&mut self, window: Duration) -> TrafficSplit {
        let before = self.net;
        self.run_for(window);
        let running = self.nodes.iter().filter(|n| n.running).count().max(1) as f64;
        let per = running * window.as_secs_f64();
        let after = self.net;
        let rate = |packets: u64, bytes: u64| Traffic {
            packets_per_node_sec: packets as f64 / per,
            bytes_per_node_sec: bytes as f64 / per,
        };
        let member = rate(
            after.member_sent - before.member_sent,
            after.member_sent_bytes - before.member_sent_bytes,
        );
        let total = rate(
            after.sent - before.sent,
            after.sent_bytes - before.sent_bytes,
        );
        TrafficSplit {
            membership: member,
            tables: Traffic {
                packets_per_node_sec: total.packets_per_node_sec - member.packets_per_node_sec,
                bytes_per_node_sec: total.bytes_per_node_sec - member.bytes_per_node_sec,
            },
            total,
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Deliver { from, to, bytes } => {
                if !self.nodes[to].running {
                    self.net.unreachable += 1;
                    return;
                }
                if self.side[from] != self.side[to] {
                    self.net.partitioned += 1;
                    return;
                }
                self.net.delivered += 1;
                let now = self.now;
                self.nodes[to].dispatch(node_addr(from), &bytes, now);
                self.drain(to);
            }
            Action::Wake(i) => {
                if self.nodes[i].wake != Some(self.now) {
                    return;
                }
                self.nodes[i].wake = None;
                if self.nodes[i].running {
                    let now = self.now;
                    self.nodes[i].tick(now);
                    self.drain(i);
                }
            }
            Action::Join(i) => {
                if !self.nodes[i].running {
                    return;
                }
                let seeds = self.params.seeds.clamp(1, self.nodes.len());
                let mut to: Vec<usize> = (0..seeds).filter(|&s| s != i).collect();
                let member = self.nodes[i].node.membership().num_members() > 0;
                if member {
                    // In the cluster: every so often, say hello to each seed that is
                    // not among the members. Two groups that never saw each other (a
                    // partition from the start, each with a seed) merge this way once
                    // the seeds reach each other again; SWIM's own announces only go
                    // to members a node already knows. NetworkDB rejoins its
                    // bootstrap nodes only when none is a member, which leaves such
                    // groups apart. A seed that is gone just does not answer.
                    let view = &self.nodes[i].view;
                    to.retain(|&s| !view.iter().any(|m| m.addr == node_addr(s)));
                    if to.is_empty() {
                        self.push(self.now + REJOIN_CHECK, Action::Join(i));
                        return;
                    }
                }
                // Say hello to every seed (a seed: to every earlier one), as
                // a node given the managers' addresses does: joining through
                // one seed only can leave islands when a seed's own join was
                // lost. A restarted node also says hello to the nodes it knew.
                // When none of those runs any more, the node is pointed at one
                // that does, as an operator would give `join` a live address.
                if !member {
                    to.extend(self.nodes[i].known.iter().copied());
                }
                if !member
                    && !to.iter().any(|&t| self.nodes[t].running)
                    && let Some(live) =
                        (0..self.nodes.len()).find(|&t| t != i && self.nodes[t].running)
                {
                    to.push(live);
                }
                let now = self.now;
                for t in to {
                    self.nodes[i].node.join(node_addr(t), now);
                }
                self.drain(i);
                let again = if self.nodes[i].node.membership().num_members() > 0 {
                    REJOIN_CHECK
                } else {
                    JOIN_RETRY
                };
                self.push(self.now + again, Action::Join(i));
            }
        }
    }

    /// After node `i` ran: apply its events, send its datagrams, schedule
    /// its next wake-up.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            self.events(i);
            let Some((to, bytes)) = self.nodes[i].poll_send(now) else {
                break;
            };
            self.transmit(i, to, bytes);
        }
        self.events(i);
        if let Some(at) = self.nodes[i].next_deadline() {
            let at = at.max(now);
            if self.nodes[i].wake.is_none_or(|w| at < w) {
                self.nodes[i].wake = Some(at);
                self.push(at, Action::Wake(i));
            }
        }
    }

    /// Apply and record the events node `i` produced.
    fn events(&mut self, i: usize) {
        let now = self.now;
        while let Some(event) = self.nodes[i].node.poll_event() {
            match event {
                NodeEvent::Member(event) => {
                    self.nodes[i].apply(&event, now);
                    self.record(i, &event);
                }
                NodeEvent::Table(event) => {
                    self.record_table(i, &event);
                    self.track.table_event(i, &event, now);
                }
            }
        }
    }

    fn record_table(&mut self, i: usize, event: &table::Event) {
        let (tag, owner, key) = match event {
            table::Event::Upsert { owner, key, .. } => (5, *owner, key),
            table::Event::Remove { owner, key, .. } => (6, *owner, key),
        };
        self.digest.add(self.now.as_nanos() as u64);
        self.digest.add((i as u64) << 8 | tag);
        self.digest.add(owner ^ key.len() as u64);
    }

    fn record(&mut self, i: usize, event: &MemberEvent) {
        let (tag, id) = match *event {
            MemberEvent::Up(id) => (1, id),
            MemberEvent::Down(id) => (2, id),
            MemberEvent::Renamed { old, .. } => (3, old),
            MemberEvent::Rejoined(id) => (4, id),
        };
        self.digest.add(self.now.as_nanos() as u64);
        self.digest.add((i as u64) << 8 | tag);
        self.digest.add(id.key ^ u64::from(id.generation));
        if matches!(tag, 2 | 3) {
            let mut settled = false;
            for pending in &mut self.pending {
                if pending.id == id {
                    settled |= pending.waiting.remove(&i);
                }
            }
            if settled {
                self.settle_detections();
            }
        }
    }

    fn settle_detections(&mut self) {
        let now = self.now;
        let detections = &mut self.detections;
        self.pending.retain(|p| {
            if p.waiting.is_empty() {
                detections.push(now - p.since);
                false
            } else {
                true
            }
        });
    }

    fn transmit(&mut self, from: usize, to: SocketAddrV4, bytes: Vec<u8>) {
        if !self.nodes[from].running {
            return;
        }
        self.net.sent += 1;
        self.net.sent_bytes += bytes.len() as u64;
        if bytes.first() == Some(&KIND_MEMBERSHIP) {
            self.net.member_sent += 1;
            self.net.member_sent_bytes += bytes.len() as u64;
        }
        self.digest.add((from as u64) << 32 | bytes.len() as u64);
        let Some(&dest) = self.by_addr.get(&to) else {
            self.net.unreachable += 1;
            return;
        };
        if self.side[from] != self.side[dest] {
            self.net.partitioned += 1;
            return;
        }
        if self.params.loss > 0.0 && self.rng.random::<f64>() < self.params.loss {
            self.net.lost += 1;
            return;
        }
        let jitter = if self.params.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.params.jitter.mul_f64(self.rng.random::<f64>())
        };
        let at = self.now + self.params.latency + jitter;
        self.push(
            at,
            Action::Deliver {
                from,
                to: dest,
                bytes,
            },
        );
    }
}
