use std::time::Duration;

use super::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn lossy() -> SimParams {
    SimParams {
        loss: 0.01,
        ..SimParams::default()
    }
}

#[test]
fn twenty_nodes_converge() {
    let mut sim = Sim::new(20, 1, SimParams::default());
    // Periodic announces (every 10 s) fill what the rolling start missed.
    let took = sim.run_until_converged(SECS(30)).expect("no convergence");
    assert!(took < SECS(15), "took {took:?}");
    for i in 0..20 {
        assert_eq!(sim.node(i).membership().num_members(), 19);
        assert_eq!(sim.node(i).membership().stats().rejects_total(), 0);
    }
}

fn scripted_run(seed: u64) -> (u64, NetStats) {
    let mut sim = Sim::new(15, seed, lossy());
    sim.run_until_converged(SECS(20));
    sim.crash(4);
    sim.run_for(SECS(10));
    sim.restart(4);
    sim.partition(&[0, 1, 2]);
    sim.run_for(SECS(5));
    sim.heal();
    sim.run_for(SECS(5));
    (sim.digest(), sim.net_stats())
}

#[test]
fn same_seed_same_run() {
    let a = scripted_run(7);
    let b = scripted_run(7);
    assert_eq!(a, b);
    let c = scripted_run(8);
    assert_ne!(a.0, c.0);
}

#[test]
fn crash_one_of_fifty_is_detected_everywhere_within_15s() {
    let mut sim = Sim::new(50, 3, lossy());
    sim.run_until_converged(SECS(30)).expect("no convergence");
    sim.run_for(SECS(5));
    sim.crash(17);
    sim.run_for(SECS(15));
    assert_eq!(
        sim.pending_detections(),
        0,
        "crash not detected everywhere in 15 s"
    );
    let took = sim.detections()[0];
    assert!(took < SECS(15), "detection took {took:?}");
    // Nobody was falsely declared down on the way.
    assert!(
        sim.nodes
            .iter()
            .enumerate()
            .all(|(i, n)| i == 17 || n.view_len() == 48)
    );
}

#[test]
fn crashed_node_restarts_with_next_generation() {
    let mut sim = Sim::new(12, 4, SimParams::default());
    sim.run_until_converged(SECS(30)).expect("no convergence");
    let old = sim.node(5).membership().id();
    sim.crash(5);
    sim.run_for(SECS(12));
    assert_eq!(sim.detections().len(), 1);
    sim.restart(5);
    assert_eq!(sim.node(5).membership().id(), old.next_generation());
    sim.run_until_converged(SECS(20))
        .expect("restarted node not back");
}

#[test]
fn graceful_leave_is_no_crash_to_detect() {
    let mut sim = Sim::new(12, 5, SimParams::default());
    sim.run_until_converged(SECS(30)).expect("no convergence");
    sim.leave(3);
    let took = sim.run_until_converged(SECS(5)).expect("leave not seen");
    assert!(took < SECS(2), "took {took:?}");
}

#[test]
fn partition_heals() {
    let mut sim = Sim::new(20, 6, SimParams::default());
    sim.run_until_converged(SECS(30)).expect("no convergence");
    let side: Vec<usize> = (0..8).collect();
    sim.partition(&side);
    sim.run_for(SECS(20));
    // Each side holds the other down.
    assert_eq!(sim.node(0).view_len(), 7);
    assert_eq!(sim.node(19).view_len(), 11);
    sim.heal();
    // Announces to down members every 10 s bring the sides back together.
    let took = sim
        .run_until_converged(SECS(40))
        .expect("partition did not heal");
    assert!(took < SECS(30), "healing took {took:?}");
}

/// A layer that counts what reaches it, to show how one attaches.
#[derive(Default)]
struct Counter {
    ups: usize,
    datagrams: usize,
    outbox: Vec<(SocketAddrV4, Vec<u8>)>,
}

impl Layer for Counter {
    fn kind(&self) -> u8 {
        3
    }
    fn handle(&mut self, _from: SocketAddrV4, _bytes: &[u8], _now: Duration) {
        self.datagrams += 1;
    }
    fn tick(&mut self, _now: Duration) {}
    fn next_deadline(&self) -> Option<Duration> {
        None
    }
    fn poll_send(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        self.outbox.pop()
    }
    fn member_event(&mut self, event: &MemberEvent, _now: Duration) {
        if let MemberEvent::Up(id) = event {
            self.ups += 1;
            self.outbox.push((id.addr, vec![3, 1]));
        }
    }
}

#[test]
fn layers_get_their_kind_and_member_events() {
    let mut sim = Sim::new(5, 9, SimParams::default());
    for i in 0..5 {
        sim.node_mut(i).layers.push(Box::new(Counter::default()));
    }
    sim.run_until_converged(SECS(30)).expect("no convergence");
    sim.run_for(SECS(1));
    for i in 0..5 {
        assert_eq!(sim.node(i).unknown_kind, 0);
    }
    // Every node said hello on each Up it saw: 5 × 4 datagrams of kind 3.
    assert!(sim.net_stats().delivered >= 20);
}
