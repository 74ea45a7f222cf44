use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A few members over a lossless in-test network with no latency, stepped
/// every 10 ms.
struct Net {
    nodes: Vec<Membership>,
    running: Vec<bool>,
    events: Vec<Vec<MemberEvent>>,
    now: Duration,
}

const STEP: Duration = Duration::from_millis(10);

fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8 + 1), 7946)
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(addr(i), 1000 + i as u64)
}

impl Net {
    fn new(n: usize) -> Self {
        let nodes = (0..n)
            .map(|i| Membership::new(node_id(i), config(n as u32), i as u64))
            .collect();
        let mut net = Net {
            nodes,
            running: vec![true; n],
            events: vec![Vec::new(); n],
            now: Duration::ZERO,
        };
        for i in 1..n {
            net.nodes[i].join(addr(0), net.now);
        }
        net
    }

    fn index_of(&self, to: SocketAddrV4) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| addr(i) == to)
    }

    /// Deliver every queued datagram until the network is quiet.
    fn flush(&mut self) {
        let mut queue = VecDeque::new();
        loop {
            for i in 0..self.nodes.len() {
                while let Some((to, bytes)) = self.nodes[i].poll_send() {
                    if self.running[i] {
                        queue.push_back((addr(i), to, bytes));
                    }
                }
                while let Some(event) = self.nodes[i].poll_event() {
                    self.events[i].push(event);
                }
            }
            let Some((from, to, bytes)) = queue.pop_front() else {
                break;
            };
            if let Some(j) = self.index_of(to)
                && self.running[j]
            {
                self.nodes[j].handle(from, &bytes, self.now).unwrap();
            }
        }
    }

    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            self.now += STEP;
            for i in 0..self.nodes.len() {
                if self.running[i] {
                    self.nodes[i].tick(self.now);
                }
            }
            self.flush();
        }
    }

    /// Run until `done` holds, at most `limit`; how long it took.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.run_for(STEP);
        }
        None
    }

    fn all_see(&self, id: NodeId) -> bool {
        (0..self.nodes.len())
            .filter(|&i| self.running[i] && self.nodes[i].id() != id)
            .all(|i| self.nodes[i].members().any(|m| *m == id))
    }

    fn nobody_sees(&self, key: u64) -> bool {
        (0..self.nodes.len())
            .filter(|&i| self.running[i])
            .all(|i| self.nodes[i].members().all(|m| m.key != key))
    }

    fn converged(&self) -> bool {
        let live = self.running.iter().filter(|r| **r).count();
        (0..self.nodes.len())
            .filter(|&i| self.running[i])
            .all(|i| self.nodes[i].num_members() == live - 1)
    }
}

#[test]
fn all_members_see_each_other_up() {
    let mut net = Net::new(5);
    let took = net.run_until(Duration::from_secs(10), Net::converged);
    assert!(took.is_some(), "no convergence in 10 s");
    for i in 0..5 {
        let ups = net.events[i]
            .iter()
            .filter(|e| matches!(e, MemberEvent::Up(_)))
            .count();
        assert_eq!(ups, 4, "node {i}: {:?}", net.events[i]);
        assert_eq!(net.nodes[i].stats().rejects_total(), 0);
    }
}

#[test]
fn stopped_member_is_down_everywhere_then_rejoins_renewed() {
    let mut net = Net::new(4);
    assert!(
        net.run_until(Duration::from_secs(10), Net::converged)
            .is_some()
    );
    let gone = net.nodes[3].id();
    net.running[3] = false;
    let took = net
        .run_until(Duration::from_secs(15), |net| net.nobody_sees(gone.key))
        .expect("stopped member still seen after 15 s");
    // Suspicion is 3 s for a small cluster; probing and spreading add a few.
    assert!(took < Duration::from_secs(10), "detection took {took:?}");
    for i in 0..3 {
        assert!(net.events[i].contains(&MemberEvent::Down(gone)), "node {i}");
    }

    // It restarts with the next generation and joins through another seed.
    let renewed = gone.next_generation();
    net.nodes[3] = Membership::new(renewed, config(4), 99);
    net.running[3] = true;
    net.nodes[3].join(node_id(1), net.now);
    let took = net.run_until(Duration::from_secs(10), |net| {
        net.all_see(renewed) && net.converged()
    });
    assert!(took.is_some(), "renewed member not up everywhere");
    for i in 0..3 {
        assert!(
            net.events[i].contains(&MemberEvent::Up(renewed)),
            "node {i}: {:?}",
            net.events[i]
        );
    }
}

#[test]
fn graceful_leave_is_seen_at_once() {
    let mut net = Net::new(4);
    assert!(
        net.run_until(Duration::from_secs(10), Net::converged)
            .is_some()
    );
    let leaver = net.nodes[2].id();
    net.nodes[2].leave(net.now);
    net.flush();
    net.running[2] = false;
    // No suspicion period: the leave is gossiped as a down verdict.
    let took = net
        .run_until(Duration::from_secs(5), |net| net.nobody_sees(leaver.key))
        .expect("leave not seen");
    assert!(took < Duration::from_secs(2), "leave took {took:?}");

    // It comes back: the join renews its identity.
    net.running[2] = true;
    net.nodes[2].join(addr(0), net.now);
    assert!(
        net.run_until(Duration::from_secs(10), Net::converged)
            .is_some()
    );
    assert_eq!(net.nodes[2].id(), leaver.next_generation());
    assert!(net.all_see(leaver.next_generation()));
}

#[test]
fn bad_datagrams_are_counted() {
    let mut m = Membership::new(node_id(0), config(3), 1);
    let from = addr(1);
    let now = Duration::ZERO;
    let cases: [(&[u8], Reject); 7] = [
        (&[], Reject::Truncated),
        (&[KIND_MEMBERSHIP, VERSION], Reject::Truncated),
        (&[9, VERSION, OP_FOCA, 0], Reject::UnknownKind),
        (&[KIND_MEMBERSHIP, 7, OP_FOCA, 0], Reject::UnknownVersion),
        (&[KIND_MEMBERSHIP, VERSION, 5], Reject::UnknownOp),
        (&[KIND_MEMBERSHIP, VERSION, OP_HELLO, 10], Reject::Truncated),
        (&[KIND_MEMBERSHIP, VERSION, OP_FOCA, 10], Reject::Truncated),
    ];
    for (bytes, reason) in cases {
        assert_eq!(m.handle(from, bytes, now), Err(reason), "{bytes:?}");
    }
    let big = vec![KIND_MEMBERSHIP; MAX_DATAGRAM + 1];
    assert_eq!(m.handle(from, &big, now), Err(Reject::Oversized));
    // A hello with trailing bytes.
    let mut hello = wire::hello(&node_id(1));
    hello.push(0);
    assert_eq!(m.handle(from, &hello, now), Err(Reject::Malformed));
    // Our own hello.
    let own = wire::hello(&node_id(0).next_generation());
    assert_eq!(m.handle(from, &own, now), Err(Reject::FromOurselves));
    assert_eq!(m.stats().rejects_total(), 10);
    assert_eq!(m.stats().rejects(Reject::Truncated), 4);
    assert_eq!(m.stats().packets_in, 10);
    assert_eq!(m.num_members(), 0);
}

static SAMPLES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(sample_datagrams);

/// Real datagrams of a small cluster, to truncate and corrupt.
fn sample_datagrams() -> Vec<Vec<u8>> {
    let mut a = Membership::new(node_id(0), config(2), 1);
    let mut b = Membership::new(node_id(1), config(2), 2);
    let mut out = Vec::new();
    b.join(addr(0), Duration::ZERO);
    for step in 1..300u64 {
        let now = STEP * step as u32;
        a.tick(now);
        b.tick(now);
        while let Some((_, bytes)) = b.poll_send() {
            out.push(bytes.clone());
            let _ = a.handle(addr(1), &bytes, now);
        }
        while let Some((_, bytes)) = a.poll_send() {
            out.push(bytes.clone());
            let _ = b.handle(addr(0), &bytes, now);
        }
    }
    assert!(out.len() > 4);
    out
}

proptest! {
    #[test]
    fn garbage_never_panics_and_is_counted(datagrams in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..1500), 1..20)) {
        let mut m = Membership::new(node_id(0), config(3), 7);
        let mut errors = 0;
        for bytes in &datagrams {
            if m.handle(addr(1), bytes, Duration::ZERO).is_err() {
                errors += 1;
            }
        }
        prop_assert_eq!(m.stats().rejects_total(), errors);
    }

    #[test]
    fn cut_or_flipped_datagrams_never_panic(pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let samples = &*SAMPLES;
        let bytes = &samples[pick.index(samples.len())];
        let mut m = Membership::new(node_id(0), config(3), 7);
        // A cut after the foca header alone can still be a valid packet.
        let cut_at = cut.index(bytes.len());
        let cut_result = m.handle(addr(1), &bytes[..cut_at], Duration::ZERO);
        let mut flipped = bytes.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1;
        let result = m.handle(addr(1), &flipped, Duration::ZERO);
        prop_assert_eq!(
            m.stats().rejects_total(),
            u64::from(cut_result.is_err()) + u64::from(result.is_err())
        );
    }
}
