use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// What the data plane of one node would hold, built from its events only.
type Model = BTreeMap<(String, NodeKey, String), Vec<u8>>;

/// A datagram in flight.
#[derive(Debug, Clone)]
struct Flight {
    at: Duration,
    seq: u64,
    from: NodeKey,
    to: NodeKey,
    bytes: Vec<u8>,
}

/// A deterministic network of `Tables` with loss, latency jitter (reordering) and
/// node failures, standing in for the membership layer too.
struct Sim {
    nodes: Vec<Tables>,
    gens: Vec<u32>,
    alive: Vec<bool>,
    models: Vec<Model>,
    now: Duration,
    flights: Vec<Flight>,
    seq: u64,
    rng: ChaCha8Rng,
    loss: f64,
    /// Datagrams to these nodes are dropped.
    blocked: BTreeSet<NodeKey>,
    /// Every delivered datagram: (from, to, message).
    log: Vec<(NodeKey, NodeKey, Msg)>,
    cfg: Config,
}

fn key(i: usize) -> NodeKey {
    i as NodeKey + 1
}

fn idx(k: NodeKey) -> usize {
    k as usize - 1
}

impl Sim {
    fn new(n: usize, seed: u64, cfg: Config) -> Sim {
        let nodes: Vec<Tables> = (0..n)
            .map(|i| {
                Tables::new(
                    key(i),
                    1,
                    cfg.clone(),
                    seed ^ (i as u64 * 7919),
                    Duration::ZERO,
                )
            })
            .collect();
        let mut s = Sim {
            nodes,
            gens: vec![1; n],
            alive: vec![true; n],
            models: vec![Model::new(); n],
            now: Duration::ZERO,
            flights: Vec::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss: 0.0,
            blocked: BTreeSet::new(),
            log: Vec::new(),
            cfg,
        };
        for i in 0..n {
            s.tell_membership(i);
        }
        s
    }

    /// Membership as node `i` sees it: every other node up (with its generation)
    /// or down.
    fn tell_membership(&mut self, i: usize) {
        let now = self.now;
        for j in 0..self.nodes.len() {
            if j == i {
                continue;
            }
            if self.alive[j] {
                let g = self.gens[j];
                self.nodes[i].node_up(key(j), g, now);
            } else {
                self.nodes[i].node_down(key(j), now);
            }
        }
        self.drain(i);
    }

    fn down(&mut self, i: usize) {
        if !self.alive[i] {
            return;
        }
        self.alive[i] = false;
        let now = self.now;
        for j in 0..self.nodes.len() {
            if j != i && self.alive[j] {
                self.nodes[j].node_down(key(i), now);
                self.drain(j);
            }
        }
    }

    fn up(&mut self, i: usize) {
        if self.alive[i] {
            return;
        }
        self.alive[i] = true;
        let (now, g) = (self.now, self.gens[i]);
        for j in 0..self.nodes.len() {
            if j != i && self.alive[j] {
                self.nodes[j].node_up(key(i), g, now);
                self.drain(j);
            }
        }
        self.tell_membership(i);
    }

    /// Node `i` restarts with the next generation and empty state.
    fn restart(&mut self, i: usize) {
        self.down(i);
        self.gens[i] += 1;
        let seed = self.rng.random();
        self.nodes[i] = Tables::new(key(i), self.gens[i], self.cfg.clone(), seed, self.now);
        self.models[i].clear();
        self.up(i);
    }

    /// Apply node `i`'s events to its model, checking each is a real change.
    fn drain(&mut self, i: usize) {
        while let Some(ev) = self.nodes[i].poll_event() {
            match ev {
                Event::Upsert {
                    net,
                    key,
                    owner,
                    value,
                } => {
                    let old = self.models[i].insert((net, owner, key), value.clone());
                    assert_ne!(
                        old,
                        Some(value),
                        "node {i}: duplicate Upsert {:?}",
                        self.now
                    );
                }
                Event::Remove { net, key, owner } => {
                    let old = self.models[i].remove(&(net, owner, key));
                    assert!(old.is_some(), "node {i}: Remove of an absent entry");
                }
            }
        }
    }

    fn poll_all(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            if !self.alive[i] {
                continue;
            }
            while let Some((to, bytes)) = self.nodes[i].poll_send(now) {
                assert!(bytes.len() <= MAX_DATAGRAM);
                assert_ne!(to, key(i));
                if self.rng.random_bool(self.loss) || self.blocked.contains(&to) {
                    continue;
                }
                let at = now + MS * self.rng.random_range(1..40);
                self.seq += 1;
                self.flights.push(Flight {
                    at,
                    seq: self.seq,
                    from: key(i),
                    to,
                    bytes,
                });
            }
            self.drain(i);
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let mut due: Vec<Flight> = Vec::new();
        self.flights.retain(|f| {
            if f.at <= now {
                due.push(f.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|f| (f.at, f.seq));
        for f in due {
            let t = idx(f.to);
            if !self.alive[t] {
                continue;
            }
            if let Ok(m) = decode(&f.bytes) {
                self.log.push((f.from, f.to, m));
            }
            let _ = self.nodes[t].handle(f.from, &f.bytes, now);
            self.drain(t);
        }
    }

    /// Run in virtual time until `now + d`, jumping from deadline to deadline.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.poll_all();
            let mut next = end;
            for f in &self.flights {
                next = next.min(f.at);
            }
            for (i, t) in self.nodes.iter().enumerate() {
                if self.alive[i] {
                    next = next.min(t.next_deadline());
                }
            }
            let next = next.max(self.now + MS);
            if next > end {
                self.now = end;
                break;
            }
            self.now = next;
            self.deliver_due();
        }
    }

    /// No loss, no blocks, then long enough for every scope to sync several times.
    fn quiesce(&mut self) {
        self.loss = 0.0;
        self.blocked.clear();
        self.run(Duration::from_secs(100));
    }

    fn set(&mut self, i: usize, net: &str, k: &str, v: &[u8]) {
        let now = self.now;
        self.nodes[i].set(net, k, v, now).unwrap();
        self.drain(i);
    }

    fn join(&mut self, i: usize, net: &str) {
        let now = self.now;
        self.nodes[i].join_network(net, now).unwrap();
        self.drain(i);
    }

    /// The live entries of live owners attached to `net`, from the owners themselves.
    fn truth(&self, net: &str) -> Vec<EntryView> {
        let mut v: Vec<EntryView> = (0..self.nodes.len())
            .filter(|&i| self.alive[i])
            .flat_map(|i| {
                self.nodes[i]
                    .entries(net)
                    .into_iter()
                    .filter(move |e| e.owner == key(i))
            })
            .collect();
        v.sort();
        v
    }

    /// Every live node attached to `net` sees the truth, and its model (from
    /// events) equals what it sees.
    fn check(&self, net: &str) {
        let truth = self.truth(net);
        for i in 0..self.nodes.len() {
            if !self.alive[i] {
                continue;
            }
            let seen = self.nodes[i].entries(net);
            let model: Vec<EntryView> = self.models[i]
                .iter()
                .filter(|((n, _, _), _)| n == net)
                .map(|((_, o, k), v)| EntryView {
                    owner: *o,
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            assert_eq!(model, seen, "node {i}: events disagree with entries");
            if self.nodes[i].networks().iter().any(|n| n == net) {
                assert_eq!(seen, truth, "node {i} on {net} at {:?}", self.now);
            } else {
                assert!(seen.is_empty());
            }
        }
    }
}

fn cfg() -> Config {
    Config::default()
}

#[test]
fn writes_converge_under_loss() {
    let mut s = Sim::new(6, 1, cfg());
    for i in 0..6 {
        s.join(i, "n1");
    }
    s.loss = 0.2;
    s.run(Duration::from_secs(2));
    for i in 0..6 {
        for k in 0..3 {
            s.set(i, "n1", &format!("ep{i}-{k}"), &[i as u8, k as u8]);
        }
    }
    s.run(Duration::from_secs(5));
    s.quiesce();
    s.check("n1");
    assert_eq!(s.truth("n1").len(), 18);
}

#[test]
fn push_gossip_alone_spreads_writes_fast() {
    let mut s = Sim::new(5, 2, cfg());
    for i in 0..5 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(2));
    s.set(0, "n1", "a", b"x");
    let syncs = s.nodes.iter().map(|t| t.stats().syncs).sum::<u64>();
    s.run(Duration::from_secs(2));
    assert_eq!(
        syncs,
        s.nodes.iter().map(|t| t.stats().syncs).sum::<u64>(),
        "no anti-entropy ran"
    );
    s.check("n1");
}

#[test]
fn deletes_converge() {
    let mut s = Sim::new(5, 3, cfg());
    for i in 0..5 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(1));
    s.set(0, "n1", "a", b"1");
    s.set(1, "n1", "b", b"2");
    s.run(Duration::from_secs(3));
    s.loss = 0.3;
    let now = s.now;
    s.nodes[0].delete("n1", "a", now).unwrap();
    s.drain(0);
    s.run(Duration::from_secs(3));
    s.quiesce();
    s.check("n1");
    assert_eq!(s.truth("n1").len(), 1);
    for t in &s.nodes {
        assert!(t.entries("n1").iter().all(|e| e.key != "a"));
    }
}

/// moby PR #53437: a node misses write k of an owner while the owner's later
/// write arrives. Its high-water mark for the owner equals the owner's, so a
/// comparison of high-water marks sees nothing to repair; the hash does.
#[test]
fn lost_update_is_repaired_by_anti_entropy() {
    let mut s = Sim::new(3, 4, cfg());
    for i in 0..3 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(2));
    let c = key(2);
    s.blocked.insert(c);
    s.set(0, "n1", "k1", b"lost");
    s.run(Duration::from_secs(2));
    s.blocked.clear();
    s.set(0, "n1", "k2", b"arrives");
    s.run(Duration::from_secs(2));
    let seen: Vec<String> = s.nodes[2]
        .entries("n1")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        seen,
        vec!["k2".to_owned()],
        "the setup lost k1 and delivered k2"
    );
    let net = Scope::Net("n1".into());
    let theirs = s.nodes[2].scopes[&net].store.owner_digest(key(0)).unwrap();
    let ours = s.nodes[0].scopes[&net].store.owner_digest(key(0)).unwrap();
    assert_eq!(theirs.max, ours.max, "high-water marks agree");
    assert_ne!(theirs.hash, ours.hash, "hashes differ");
    assert!(
        s.now < Duration::from_secs(7),
        "no periodic sync yet (jitter ≥ 7.5 s)"
    );
    s.run(Duration::from_secs(30));
    s.check("n1");
    assert_eq!(s.nodes[2].entries("n1").len(), 2);
}

fn tomb(owner: NodeKey, k: &str, version: Version) -> Vec<u8> {
    Msg::Updates {
        scope: Scope::Net("n1".into()),
        sync: false,
        entries: vec![WireEntry {
            owner,
            key: k.into(),
            version,
            value: None,
        }],
    }
    .encode()
}

/// moby#47728: a stale or replayed tombstone never shadows a newer live entry.
#[test]
fn replayed_old_tombstone_does_not_delete_newer_entry() {
    let mut s = Sim::new(3, 5, cfg());
    for i in 0..3 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(1));
    s.set(0, "n1", "a", b"v1");
    s.run(Duration::from_secs(2));
    let now = s.now;
    s.nodes[0].delete("n1", "a", now).unwrap();
    s.drain(0);
    s.run(Duration::from_secs(2));
    s.set(0, "n1", "a", b"v3");
    s.run(Duration::from_secs(2));
    let held = s.nodes[1].scopes[&Scope::Net("n1".into())]
        .store
        .get(key(0), "a")
        .unwrap()
        .clone();
    assert_eq!(held.value.as_deref(), Some(&b"v3"[..]));
    // The old tombstone (version 2), replayed by anyone; then one at the entry's
    // own version.
    let stale = s.nodes[1].stats().stale;
    let now = s.now;
    for v in [
        Version {
            generation: 1,
            seq: 2,
        },
        held.version,
    ] {
        s.nodes[1]
            .handle(key(2), &tomb(key(0), "a", v), now)
            .unwrap();
    }
    s.drain(1);
    assert_eq!(s.nodes[1].stats().stale, stale + 2);
    s.run(Duration::from_secs(40));
    s.check("n1");
    assert_eq!(s.nodes[1].entries("n1")[0].value, b"v3");
}

#[test]
fn node_down_suspends_and_same_generation_restores_without_resend() {
    let mut s = Sim::new(4, 6, cfg());
    for i in 0..4 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(1));
    s.set(0, "n1", "a", b"1");
    s.set(0, "n1", "b", b"2");
    s.set(1, "n1", "c", b"3");
    s.run(Duration::from_secs(3));
    s.check("n1");
    s.down(0);
    for i in 1..4 {
        let e = s.nodes[i].entries("n1");
        assert_eq!(
            e.len(),
            1,
            "node {i}: the failed owner's entries are hidden"
        );
        // Kept in storage, not tombstoned.
        let st = &s.nodes[i].scopes[&Scope::Net("n1".into())].store;
        assert!(st.owners[&key(0)].values().all(|e| e.value.is_some()));
    }
    s.run(Duration::from_secs(30));
    // The owner comes back, but says nothing (its traffic is dropped).
    s.blocked = (1..=4).collect();
    s.up(0);
    s.blocked.clear();
    for i in 1..4 {
        assert_eq!(
            s.nodes[i].entries("n1").len(),
            3,
            "node {i}: restored at once"
        );
    }
    s.check("n1");
}

#[test]
fn higher_generation_replaces_old_entries() {
    let mut s = Sim::new(4, 7, cfg());
    for i in 0..4 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(1));
    s.set(0, "n1", "a", b"old-a");
    s.set(0, "n1", "b", b"old-b");
    s.run(Duration::from_secs(3));
    s.restart(0);
    // The restarted owner re-announces only `a`.
    s.join(0, "n1");
    s.set(0, "n1", "a", b"new-a");
    for i in 1..4 {
        assert!(
            s.nodes[i]
                .entries("n1")
                .iter()
                .all(|e| e.owner != key(0) || e.value == b"new-a")
        );
    }
    s.quiesce();
    s.check("n1");
    for i in 0..4 {
        let mine: Vec<_> = s.nodes[i]
            .entries("n1")
            .into_iter()
            .filter(|e| e.owner == key(0))
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].value, b"new-a");
    }
    // After the grace, a relay of the old generation is refused.
    let (now, stale) = (s.now, s.nodes[1].stats().stale);
    let old = upd(Scope::Net("n1".into()), key(0), "b", 99, Some(b"old-b"));
    s.nodes[1].handle(key(2), &old, now).unwrap();
    assert_eq!(s.nodes[1].stats().stale, stale + 1);
    s.check("n1");
}

#[test]
fn leave_network_tombstones_own_entries_and_drops_others() {
    let mut s = Sim::new(4, 8, cfg());
    for i in 0..4 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(1));
    for i in 0..4 {
        s.set(i, "n1", &format!("e{i}"), b"v");
    }
    s.run(Duration::from_secs(3));
    s.check("n1");
    let now = s.now;
    s.nodes[0].leave_network("n1", now).unwrap();
    s.drain(0);
    assert!(s.nodes[0].entries("n1").is_empty());
    assert!(s.models[0].is_empty(), "Remove events for everything");
    s.run(Duration::from_secs(3));
    for i in 1..4 {
        assert_eq!(s.nodes[i].entries("n1").len(), 3);
        let st = &s.nodes[i].scopes[&Scope::Net("n1".into())].store;
        assert!(
            st.get(key(0), "e0").is_some_and(|e| e.value.is_none()),
            "a tombstone"
        );
        assert!(!s.nodes[i].peers("n1").contains(&key(0)));
    }
    s.quiesce();
    s.check("n1");
    // Everything reaped and forgotten after the retention.
    assert!(!s.nodes[0].scopes.contains_key(&Scope::Net("n1".into())));
}

#[test]
fn traffic_of_a_network_goes_only_to_attached_nodes() {
    let mut s = Sim::new(6, 9, cfg());
    for i in 0..3 {
        s.join(i, "n1");
    }
    for i in 3..6 {
        s.join(i, "n2");
    }
    s.join(0, "n2");
    s.loss = 0.1;
    s.run(Duration::from_secs(1));
    for i in 0..6 {
        let net = if i < 3 { "n1" } else { "n2" };
        s.set(i, net, &format!("e{i}"), b"v");
    }
    s.quiesce();
    s.check("n1");
    s.check("n2");
    let on = |n: &str, k: NodeKey| if n == "n1" { k <= 3 } else { k == 1 || k >= 4 };
    let mut per_net = 0;
    for (from, to, m) in &s.log {
        let scope = match m {
            Msg::Updates { scope, .. }
            | Msg::Digest { scope, .. }
            | Msg::Want { scope, .. }
            | Msg::Summary { scope, .. } => scope,
        };
        if let Scope::Net(n) = scope {
            per_net += 1;
            assert!(
                on(n, *to) && on(n, *from),
                "{n} traffic from {from} to {to}"
            );
        }
    }
    assert!(per_net > 0);
    assert_eq!(s.nodes[1].entries("n2"), vec![]);
}

#[test]
fn queues_are_bounded() {
    let c = Config {
        max_queue: 8,
        max_outbox: 16,
        ..cfg()
    };
    let mut t = Tables::new(1, 1, c, 0, Duration::ZERO);
    t.join_network("n1", Duration::ZERO).unwrap();
    for k in 0..100 {
        t.set("n1", &format!("k{k}"), b"v", Duration::ZERO).unwrap();
    }
    let q = t.scopes[&Scope::Net("n1".into())].queue.len();
    assert_eq!(q, 8);
    assert_eq!(t.stats().queue_drops, 92);
    // Many digests asked of it: the outbox stays bounded.
    t.node_up(2, 1, Duration::ZERO);
    let d = Msg::Digest {
        scope: Scope::Net("n1".into()),
        lo: 0,
        hi: u64::MAX,
        owners: vec![],
    }
    .encode();
    for _ in 0..100 {
        t.handle(2, &d, Duration::ZERO).unwrap();
    }
    assert_eq!(t.outbox.len(), 16);
    assert!(t.stats().outbox_drops > 0);
}

#[test]
fn rejects_are_counted() {
    let mut t = Tables::new(1, 1, cfg(), 0, Duration::ZERO);
    t.join_network("n1", Duration::ZERO).unwrap();
    let z = Duration::ZERO;
    assert_eq!(
        t.handle(2, &[0u8; 2000], z),
        Err(Reject::Decode(DecodeError::Oversized))
    );
    assert_eq!(
        t.handle(2, &[KIND_TABLE], z),
        Err(Reject::Decode(DecodeError::Truncated))
    );
    assert_eq!(
        t.handle(2, &[9, 1, 0], z),
        Err(Reject::Decode(DecodeError::UnknownKind))
    );
    assert_eq!(
        t.handle(2, &[KIND_TABLE, 9, 0], z),
        Err(Reject::Decode(DecodeError::UnknownVersion))
    );
    let mut d = Msg::Want {
        scope: Scope::Cluster,
        owners: vec![],
    }
    .encode();
    d.push(0);
    assert_eq!(
        t.handle(2, &d, z),
        Err(Reject::Decode(DecodeError::Trailing))
    );
    let w = |n: &str| {
        Msg::Want {
            scope: Scope::Net(n.into()),
            owners: vec![],
        }
        .encode()
    };
    assert_eq!(t.handle(2, &w("other"), z), Err(Reject::UnknownNetwork));
    t.leave_network("n1", z).unwrap();
    assert_eq!(t.handle(2, &w("n1"), z), Err(Reject::NotAttached));
    let long = WireEntry {
        owner: 2,
        key: "k".repeat(65),
        version: Version::default(),
        value: None,
    };
    let m = Msg::Updates {
        scope: Scope::Cluster,
        sync: false,
        entries: vec![long],
    }
    .encode();
    assert_eq!(
        t.handle(2, &m, z),
        Err(Reject::Decode(DecodeError::Malformed))
    );
    let st = t.stats();
    assert_eq!(
        (
            st.rejected_oversized,
            st.rejected_malformed,
            st.rejected_unknown_network,
            st.rejected_not_attached
        ),
        (1, 5, 1, 1)
    );
    assert_eq!(t.set("n1", "k", b"v", z), Err(TableError::NotAttached));
    t.join_network("n1", z).unwrap();
    assert_eq!(t.set("n1", "", b"v", z), Err(TableError::BadKey));
    assert_eq!(
        t.set("n1", "k", &[0; 513], z),
        Err(TableError::ValueTooLong)
    );
    assert_eq!(t.delete("n1", "k", z), Err(TableError::NoSuchEntry));
}

#[test]
fn events_are_exactly_once() {
    // The simulation asserts on every event that it changes the model; here many
    // overlapping changes of the same keys, then the model equals the entries.
    let mut s = Sim::new(4, 10, cfg());
    for i in 0..4 {
        s.join(i, "n1");
    }
    s.loss = 0.2;
    s.run(Duration::from_secs(1));
    for round in 0..5u8 {
        for i in 0..4 {
            s.set(i, "n1", "same", &[round]);
            s.set(i, "n1", "same", &[round]);
            s.set(i, "n1", &format!("k{round}"), &[round]);
        }
        s.run(Duration::from_millis(300));
        s.down(3);
        s.run(Duration::from_millis(300));
        s.up(3);
    }
    s.quiesce();
    s.check("n1");
}

#[test]
fn a_joining_node_syncs_from_at_most_three_peers() {
    let mut s = Sim::new(8, 11, cfg());
    for i in 0..7 {
        s.join(i, "n1");
        s.set(i, "n1", "e", &[i as u8]);
    }
    s.run(Duration::from_secs(5));
    let before = s.log.len();
    s.join(7, "n1");
    s.run(Duration::from_secs(2));
    let digests: BTreeSet<NodeKey> = s.log[before..]
        .iter()
        .filter(|(f, _, m)| {
            *f == key(7)
                && matches!(
                    m,
                    Msg::Digest {
                        scope: Scope::Net(_),
                        ..
                    }
                )
        })
        .map(|(_, t, _)| *t)
        .collect();
    assert!(!digests.is_empty() && digests.len() <= 3, "{digests:?}");
    assert_eq!(s.nodes[7].entries("n1").len(), 7);
}

fn arb_entry() -> impl Strategy<Value = WireEntry> {
    (
        any::<u64>(),
        "[a-z0-9]{1,64}",
        any::<u32>(),
        any::<u64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512)),
    )
        .prop_map(|(owner, key, generation, seq, value)| WireEntry {
            owner,
            key,
            version: Version { generation, seq },
            value,
        })
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::Cluster), "[a-z0-9]{1,64}".prop_map(Scope::Net)]
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (
            arb_scope(),
            any::<bool>(),
            proptest::collection::vec(arb_entry(), 0..3)
        )
            .prop_map(|(scope, sync, entries)| Msg::Updates {
                scope,
                sync,
                entries
            }),
        (
            arb_scope(),
            proptest::collection::btree_map(
                any::<u64>(),
                (any::<u32>(), any::<u64>(), any::<u64>()),
                0..20
            )
        )
            .prop_map(|(scope, m)| Msg::Digest {
                scope,
                lo: 0,
                hi: u64::MAX,
                owners: m
                    .into_iter()
                    .map(|(owner, (generation, seq, hash))| OwnerDigest {
                        owner,
                        max: Version { generation, seq },
                        hash
                    })
                    .collect(),
            }),
        (arb_scope(), proptest::collection::vec(any::<u64>(), 0..50))
            .prop_map(|(scope, owners)| Msg::Want { scope, owners }),
        (arb_scope(), any::<u32>(), any::<u64>()).prop_map(|(scope, owners, hash)| Msg::Summary {
            scope,
            owners,
            hash
        }),
    ]
}

proptest! {
    #[test]
    fn codec_round_trips(m in arb_msg()) {
        let b = m.encode();
        if b.len() <= MAX_DATAGRAM {
            prop_assert_eq!(decode(&b), Ok(m));
        } else {
            prop_assert_eq!(decode(&b), Err(DecodeError::Oversized));
        }
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1600), kind in any::<bool>()) {
        let mut b = b;
        if kind && b.len() >= 2 {
            b[0] = KIND_TABLE;
            b[1] = FORMAT_VERSION;
        }
        let _ = decode(&b);
        let mut t = Tables::new(1, 1, cfg(), 0, Duration::ZERO);
        t.join_network("n1", Duration::ZERO).unwrap();
        let _ = t.handle(2, &b, Duration::ZERO);
    }

    #[test]
    fn packers_respect_the_datagram_size(es in proptest::collection::vec(arb_entry(), 0..20), n in 0usize..200) {
        let scope = Scope::Net("n".repeat(64));
        for d in wire::pack_updates(&scope, false, es.clone()) {
            prop_assert!(d.len() <= MAX_DATAGRAM);
            prop_assert!(decode(&d).is_ok());
        }
        let owners: Vec<OwnerDigest> = (0..n as u64)
            .map(|o| OwnerDigest { owner: o * 1_000_003, max: Version { generation: u32::MAX, seq: u64::MAX }, hash: u64::MAX })
            .collect();
        let ds = wire::pack_digest(&scope, &owners);
        let mut covered = 0;
        let mut lo_next = 0u64;
        for d in &ds {
            prop_assert!(d.len() <= MAX_DATAGRAM);
            let Ok(Msg::Digest { lo, hi, owners, .. }) = decode(d) else { panic!("not a digest") };
            prop_assert_eq!(lo, lo_next);
            lo_next = hi.wrapping_add(1);
            covered += owners.len();
        }
        prop_assert_eq!(lo_next, 0, "ranges cover every owner");
        prop_assert_eq!(covered, n);
    }
}

/// One step of a random scenario.
#[derive(Debug, Clone)]
enum Op {
    Set(usize, usize, usize, u8),
    Delete(usize, usize, usize),
    Join(usize, usize),
    Leave(usize, usize),
    Down(usize),
    Up(usize),
    Restart(usize),
    Loss(u8),
    Run(u16),
}

const NETS: [&str; 2] = ["n1", "n2"];

fn arb_op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..n, 0..2usize, 0..6usize, any::<u8>()).prop_map(|(a, b, c, d)| Op::Set(a, b, c, d)),
        2 => (0..n, 0..2usize, 0..4usize).prop_map(|(a, b, c)| Op::Delete(a, b, c)),
        3 => (0..n, 0..2usize).prop_map(|(a, b)| Op::Join(a, b)),
        1 => (0..n, 0..2usize).prop_map(|(a, b)| Op::Leave(a, b)),
        1 => (0..n).prop_map(Op::Down),
        2 => (0..n).prop_map(Op::Up),
        1 => (0..n).prop_map(Op::Restart),
        1 => (0u8..60).prop_map(Op::Loss),
        3 => (1u16..3000).prop_map(Op::Run),
    ]
}

/// Random interleavings, then quiescence: every live attached node sees exactly
/// the live entries of the live owners (and its events agree, exactly once).
fn scenario(seed: u64, ops: Vec<Op>, cfg: Config) {
    let mut s = Sim::new(6, seed, cfg);
    for op in ops {
        let now = s.now;
        match op {
            Op::Set(i, n, k, v) if s.alive[i] => {
                // Writers are attached: a set on a network not joined joins first.
                s.nodes[i].join_network(NETS[n], now).unwrap();
                s.nodes[i]
                    .set(NETS[n], &format!("k{k}"), &[v], now)
                    .unwrap();
            }
            Op::Delete(i, n, k) if s.alive[i] => {
                let _ = s.nodes[i].delete(NETS[n], &format!("k{k}"), now);
            }
            Op::Join(i, n) if s.alive[i] => s.nodes[i].join_network(NETS[n], now).unwrap(),
            Op::Leave(i, n) if s.alive[i] => {
                let _ = s.nodes[i].leave_network(NETS[n], now);
            }
            Op::Down(i) => s.down(i),
            Op::Up(i) => s.up(i),
            Op::Restart(i) => s.restart(i),
            Op::Loss(p) => s.loss = f64::from(p) / 100.0,
            Op::Run(ms) => s.run(MS * u32::from(ms)),
            _ => {}
        }
        for i in 0..s.nodes.len() {
            s.drain(i);
        }
    }
    s.quiesce();
    for net in NETS {
        s.check(net);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_scenarios_converge(seed in any::<u64>(), ops in proptest::collection::vec(arb_op(6), 1..100)) {
        scenario(seed, ops, cfg());
    }

    /// The same with tombstones reaped and restarts superseded after 1 s: what
    /// keeps deleted entries from coming back is the owner's authority and the
    /// attachment table, not the retention.
    #[test]
    fn random_scenarios_converge_with_fast_reaping(seed in any::<u64>(), ops in proptest::collection::vec(arb_op(6), 1..100)) {
        let c = Config {
            tombstone_retention: Duration::from_secs(1),
            restart_grace: Duration::from_secs(1),
            ..cfg()
        };
        scenario(seed, ops, c);
    }
}

fn upd(scope: Scope, owner: NodeKey, k: &str, seq: u64, value: Option<&[u8]>) -> Vec<u8> {
    Msg::Updates {
        scope,
        sync: false,
        entries: vec![WireEntry {
            owner,
            key: k.into(),
            version: Version { generation: 1, seq },
            value: value.map(<[u8]>::to_vec),
        }],
    }
    .encode()
}

#[test]
fn entries_of_a_node_not_attached_stay_hidden_until_it_is() {
    let z = Duration::ZERO;
    let mut t = Tables::new(1, 1, cfg(), 0, z);
    t.join_network("n1", z).unwrap();
    t.node_up(2, 1, z);
    let n1 = || Scope::Net("n1".into());
    t.handle(2, &upd(n1(), 2, "e", 1, Some(b"v")), z).unwrap();
    assert!(t.entries("n1").is_empty());
    assert_eq!(t.poll_event(), None);
    t.handle(2, &upd(Scope::Cluster, 2, "n1", 1, Some(b"")), z)
        .unwrap();
    assert_eq!(t.entries("n1").len(), 1);
    assert!(matches!(
        t.poll_event(),
        Some(Event::Upsert { owner: 2, .. })
    ));
    // It leaves the network: its entries go, and a replay of them does not return.
    t.handle(2, &upd(Scope::Cluster, 2, "n1", 2, None), z)
        .unwrap();
    assert!(matches!(
        t.poll_event(),
        Some(Event::Remove { owner: 2, .. })
    ));
    t.handle(3, &upd(n1(), 2, "e", 1, Some(b"v")), z).unwrap();
    assert!(t.entries("n1").is_empty());
    assert_eq!(t.poll_event(), None);
}

#[test]
fn node_left_drops_entries_at_once_and_refuses_relays() {
    let mut s = Sim::new(3, 12, cfg());
    for i in 0..3 {
        s.join(i, "n1");
        s.set(i, "n1", "e", &[i as u8]);
    }
    s.run(Duration::from_secs(3));
    s.check("n1");
    let now = s.now;
    s.alive[0] = false;
    for i in 1..3 {
        s.nodes[i].node_left(key(0), now);
        s.drain(i);
        assert_eq!(s.nodes[i].entries("n1").len(), 2);
    }
    let stale = s.nodes[1].stats().stale;
    s.nodes[1]
        .handle(
            key(2),
            &upd(Scope::Net("n1".into()), key(0), "e", 1, Some(b"x")),
            now,
        )
        .unwrap();
    assert_eq!(s.nodes[1].stats().stale, stale + 1);
    s.quiesce();
    s.check("n1");
}

#[test]
fn each_update_is_retransmitted_a_bounded_number_of_times() {
    let mut s = Sim::new(5, 13, cfg());
    for i in 0..5 {
        s.join(i, "n1");
    }
    s.run(Duration::from_secs(2));
    let before = s.log.len();
    s.set(0, "n1", "a", b"x");
    s.run(Duration::from_secs(4));
    let pushes = s.log[before..]
        .iter()
        .filter(|(_, _, m)| match m {
            Msg::Updates {
                sync: false,
                entries,
                ..
            } => entries.iter().any(|e| e.key == "a"),
            _ => false,
        })
        .count();
    // n = 5: limit 4 × ceil(log10(6)) = 4 sends per node that holds the update.
    assert!(pushes > 0 && pushes <= 5 * 4, "{pushes}");
    s.check("n1");
}

#[test]
fn in_sync_anti_entropy_sends_digests_only() {
    let mut s = Sim::new(5, 14, cfg());
    for i in 0..5 {
        s.join(i, "n1");
        for k in 0..20 {
            s.set(i, "n1", &format!("e{i}-{k}"), &[0; 40]);
        }
    }
    s.run(Duration::from_secs(60));
    s.check("n1");
    let before = s.log.len();
    let syncs: u64 = s.nodes.iter().map(|t| t.stats().syncs).sum();
    s.run(Duration::from_secs(60));
    assert!(s.nodes.iter().map(|t| t.stats().syncs).sum::<u64>() > syncs + 5);
    for (_, _, m) in &s.log[before..] {
        assert!(
            matches!(m, Msg::Summary { .. }),
            "only summaries once in sync: {m:?}"
        );
    }
    // One owner's entry is lost at one node: the answer carries that owner only.
    let net = Scope::Net("n1".into());
    let store = &mut s.nodes[4].scopes.get_mut(&net).unwrap().store;
    store.owners.get_mut(&key(1)).unwrap().remove("e1-3");
    store.changed();
    s.models[4].remove(&("n1".to_owned(), key(1), "e1-3".to_owned()));
    let before = s.log.len();
    s.run(Duration::from_secs(40));
    let owners: BTreeSet<NodeKey> = s.log[before..]
        .iter()
        .filter_map(|(_, _, m)| match m {
            Msg::Updates {
                sync: true,
                entries,
                ..
            } => Some(entries.iter().map(|e| e.owner)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(owners, BTreeSet::from([key(1)]));
    assert!(s.nodes[4].scopes[&net].store.get(key(1), "e1-3").is_some());
}

#[test]
fn a_hundred_nodes_converge_under_loss() {
    let mut s = Sim::new(100, 15, cfg());
    for i in 0..100 {
        s.join(i, if i % 2 == 0 { "n1" } else { "n2" });
        s.set(
            i,
            if i % 2 == 0 { "n1" } else { "n2" },
            "e",
            &[i as u8; 100],
        );
    }
    s.loss = 0.05;
    s.run(Duration::from_secs(10));
    s.quiesce();
    s.check("n1");
    s.check("n2");
    assert_eq!(s.truth("n1").len(), 50);
    // Every datagram is accounted for.
    let out: u64 = s.nodes.iter().map(|t| t.stats().msgs_out).sum();
    let lost_or_in: u64 = s.nodes.iter().map(|t| t.stats().msgs_in).sum();
    assert!(lost_or_in <= out && out > 0);
}
