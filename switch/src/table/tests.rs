use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, n])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn table(capacity: usize, aging_s: u64) -> MacTable {
    MacTable::new(TableConfig {
        capacity,
        aging: secs(aging_s),
        port_capacity: usize::MAX,
    })
}

/// Every key hashes to slot 0: one long probe run, the worst case for removal.
fn colliding(capacity: usize) -> MacTable {
    let cfg = TableConfig {
        capacity,
        aging: secs(300),
        port_capacity: usize::MAX,
    };
    MacTable::with_hash(cfg, MacHash { k0: 0, k1: 0 })
}

/// Each occupied slot is reachable from its home without crossing an empty
/// slot, and the counts match the slots.
fn assert_consistent(t: &MacTable) {
    let mut learned = 0;
    let mut statics = 0;
    for s in t.slots.iter().filter(|s| s.key != 0) {
        assert!(t.probe(s.key).is_ok(), "key {:x} unreachable", s.key);
        if s.is_static {
            statics += 1;
        } else {
            learned += 1;
        }
    }
    assert_eq!((learned, statics), (t.learned, t.statics));
    let mut per_port: HashMap<u32, u32> = HashMap::new();
    for s in t.slots.iter().filter(|s| s.key != 0 && !s.is_static) {
        *per_port.entry(s.port.0).or_default() += 1;
    }
    for (&i, &n) in &t.per_port {
        assert_eq!(n, per_port.get(&i).copied().unwrap_or(0), "port {i}");
    }
    for (&p, &n) in &per_port {
        assert!(n as usize <= t.port_capacity, "port {p} holds {n}");
        assert_eq!(t.port_len(PortId(p)), n as usize);
    }
    assert!(t.len() * 4 <= t.slots.len() * 3);
}

#[test]
fn learn_new_refresh_move() {
    let mut t = table(16, 300);
    assert_eq!(t.learn(mac(2), PortId(1), secs(1)), LearnOutcome::New);
    assert_eq!(t.learn(mac(2), PortId(1), secs(2)), LearnOutcome::Refreshed);
    assert_eq!(t.learn(mac(2), PortId(7), secs(3)), LearnOutcome::Moved);
    assert_eq!(t.lookup(mac(2), secs(3)), Some(PortId(7)));
    assert_eq!(t.lookup(mac(3), secs(3)), None);
    assert_eq!(t.len(), 1);
    assert_eq!(t.learned_len(), 1);
    assert_consistent(&t);
}

#[test]
fn default_config() {
    let c = TableConfig::default();
    assert_eq!((c.capacity, c.aging), (8192, secs(300)));
    let t = MacTable::new(c);
    // 8192 at <= 75 % load: 16384 slots, allocated once.
    assert_eq!(t.slots.len(), 16384);
}

#[test]
fn capacity_is_clamped() {
    let t = MacTable::new(TableConfig {
        capacity: usize::MAX,
        aging: secs(1),
        port_capacity: usize::MAX,
    });
    assert_eq!(t.config().capacity, TableConfig::MAX_CAPACITY);
}

#[test]
fn entry_expires_at_exactly_aging() {
    let mut t = table(16, 10);
    let _ = t.learn(mac(2), PortId(1), secs(100));
    assert_eq!(t.lookup(mac(2), secs(109)), Some(PortId(1)));
    assert_eq!(t.lookup(mac(2), secs(110)), None);
    // Still held until aged; relearning it counts as new.
    assert_eq!(t.len(), 1);
    assert_eq!(t.learn(mac(2), PortId(1), secs(111)), LearnOutcome::New);
    assert_eq!(t.lookup(mac(2), secs(111)), Some(PortId(1)));
}

#[test]
fn age_removes_only_expired_learned_entries() {
    let mut t = table(16, 10);
    assert_eq!(t.next_expiry(), None);
    assert_eq!(t.age(secs(1000)), 0);
    let _ = t.learn(mac(1), PortId(1), secs(0));
    let _ = t.learn(mac(2), PortId(1), secs(5));
    t.add_static(mac(3), PortId(2)).unwrap();
    // Earliest expiry 10 s plus the 312.5 ms sweep granularity.
    assert_eq!(t.next_expiry(), Some(Duration::from_micros(10_312_500)));
    assert_eq!(t.age(secs(9)), 0);
    assert_eq!(t.age(secs(10)), 1);
    assert_eq!(t.lookup(mac(1), secs(10)), None);
    assert_eq!(t.lookup(mac(2), secs(10)), Some(PortId(1)));
    assert_eq!(t.next_expiry(), Some(Duration::from_micros(15_312_500)));
    // A refresh pushes expiry later; the bound stays conservative.
    let _ = t.learn(mac(2), PortId(1), secs(14));
    assert_eq!(t.age(secs(16)), 0);
    assert_eq!(t.next_expiry(), Some(Duration::from_micros(24_312_500)));
    assert_eq!(t.age(secs(1_000_000)), 1);
    assert_eq!(t.next_expiry(), None);
    // Statics never age.
    assert_eq!(t.lookup(mac(3), secs(1_000_000)), Some(PortId(2)));
    assert_eq!(t.len(), 1);
    assert_consistent(&t);
}

#[test]
fn zero_aging_is_a_hub() {
    let mut t = table(16, 0);
    assert_eq!(t.learn(mac(1), PortId(1), secs(5)), LearnOutcome::New);
    assert_eq!(t.lookup(mac(1), secs(5)), None);
    assert_eq!(t.next_expiry(), Some(Duration::from_millis(5_100)));
    assert_eq!(t.age(secs(5)), 1);
}

#[test]
fn time_going_backwards_does_not_expire_or_panic() {
    let mut t = table(16, 10);
    let _ = t.learn(mac(1), PortId(1), secs(100));
    assert_eq!(t.lookup(mac(1), secs(50)), Some(PortId(1)));
    assert_eq!(
        t.learn(mac(1), PortId(1), secs(50)),
        LearnOutcome::Refreshed
    );
    assert_eq!(t.lookup(mac(1), secs(109)), Some(PortId(1)));
    assert_eq!(t.lookup(mac(1), secs(110)), None);
}

#[test]
fn static_entries_win_over_learning() {
    let mut t = table(16, 10);
    let _ = t.learn(mac(1), PortId(1), secs(0));
    t.add_static(mac(1), PortId(5)).unwrap();
    assert_eq!((t.learned_len(), t.static_len()), (0, 1));
    assert_eq!(
        t.learn(mac(1), PortId(9), secs(1)),
        LearnOutcome::StaticIgnored
    );
    assert_eq!(t.lookup(mac(1), secs(1_000)), Some(PortId(5)));
    // Re-pointing a static is allowed and does not add an entry.
    t.add_static(mac(1), PortId(6)).unwrap();
    assert_eq!(t.lookup(mac(1), secs(1)), Some(PortId(6)));
    assert_eq!(t.static_len(), 1);
    assert!(t.remove_static(mac(1)));
    assert!(!t.remove_static(mac(1)));
    assert_eq!(t.lookup(mac(1), secs(1)), None);
    assert_eq!(t.learn(mac(1), PortId(9), secs(1)), LearnOutcome::New);
    // remove_static leaves learned entries alone.
    assert!(!t.remove_static(mac(1)));
    assert_eq!(t.lookup(mac(1), secs(1)), Some(PortId(9)));
    assert_consistent(&t);
}

#[test]
fn full_table_refuses_new_macs_but_refreshes_old_ones() {
    let mut t = table(4, 10);
    for n in 0..4 {
        assert_eq!(t.learn(mac(n), PortId(1), secs(0)), LearnOutcome::New);
    }
    assert_eq!(t.learn(mac(4), PortId(1), secs(1)), LearnOutcome::TableFull);
    assert_eq!(t.lookup(mac(4), secs(1)), None);
    assert_eq!(t.learn(mac(0), PortId(1), secs(1)), LearnOutcome::Refreshed);
    assert_eq!(t.learn(mac(1), PortId(2), secs(1)), LearnOutcome::Moved);
    // Statics do not count against learning capacity...
    t.add_static(mac(50), PortId(3)).unwrap();
    assert_eq!(t.len(), 5);
    // ...and turning a learned entry static frees a learning slot.
    t.add_static(mac(3), PortId(3)).unwrap();
    assert_eq!(t.learn(mac(4), PortId(1), secs(2)), LearnOutcome::New);
    assert_eq!(t.learned_len(), 4);
    // Aging frees room.
    assert_eq!(t.age(secs(11)), 3);
    assert_eq!(t.learn(mac(5), PortId(1), secs(11)), LearnOutcome::New);
    assert_consistent(&t);
}

#[test]
fn zero_capacity_learns_nothing() {
    let mut t = table(0, 10);
    assert_eq!(t.learn(mac(1), PortId(1), secs(0)), LearnOutcome::TableFull);
    t.add_static(mac(1), PortId(1)).unwrap();
    assert_eq!(t.lookup(mac(1), secs(0)), Some(PortId(1)));
}

#[test]
fn static_limit_is_enforced_and_slots_grow_only_for_statics() {
    let mut t = table(4, 10);
    let initial = t.slots.len();
    for n in 0..100u8 {
        let _ = t.learn(mac(n), PortId(1), secs(u64::from(n)));
        let _ = t.age(secs(u64::from(n)));
    }
    assert_eq!(t.slots.len(), initial, "learning churn must not reallocate");
    for n in 0..MacTable::MAX_STATIC as u32 {
        let m = MacAddr([0x02, 0, 0, 0, (n >> 8) as u8, n as u8]);
        t.add_static(m, PortId(n)).unwrap();
    }
    assert_eq!(
        t.add_static(mac(200), PortId(0)),
        Err(SwitchError::StaticTableFull {
            limit: MacTable::MAX_STATIC
        })
    );
    // Re-pointing an existing static still works at the limit.
    t.add_static(MacAddr([0x02, 0, 0, 0, 0, 7]), PortId(1))
        .unwrap();
    assert_consistent(&t);
}

#[test]
fn flush_port_and_remove_port_statics() {
    let mut t = table(64, 10);
    for n in 0..30 {
        let _ = t.learn(mac(n), PortId(u32::from(n % 3)), secs(0));
    }
    t.add_static(mac(100), PortId(1)).unwrap();
    t.add_static(mac(101), PortId(2)).unwrap();
    assert_eq!(t.flush_port(PortId(1)), 10);
    assert_eq!(t.lookup(mac(100), secs(0)), Some(PortId(1)));
    assert_eq!(t.remove_port_statics(PortId(1)), 1);
    assert_eq!(t.lookup(mac(100), secs(0)), None);
    assert_eq!(t.len(), 21);
    assert!(t.iter().all(|e| e.port != PortId(1)));
    assert_consistent(&t);
}

#[test]
fn removal_inside_one_long_probe_run() {
    let mut t = colliding(32);
    for n in 0..32 {
        assert_eq!(
            t.learn(mac(n), PortId(u32::from(n)), secs(0)),
            LearnOutcome::New
        );
    }
    // Remove every third entry from the middle of the run.
    for n in (0..32u8).step_by(3) {
        assert_eq!(t.flush_port(PortId(u32::from(n))), 1);
        assert_consistent(&t);
    }
    for n in 0..32 {
        let want = (n % 3 != 0).then_some(PortId(u32::from(n)));
        assert_eq!(t.lookup(mac(n), secs(0)), want);
    }
}

#[test]
fn iter_reports_entries() {
    let mut t = table(8, 10);
    let _ = t.learn(mac(1), PortId(4), secs(3));
    t.add_static(mac(2), PortId(5)).unwrap();
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|e| e.mac);
    assert_eq!(
        v,
        [
            TableEntry {
                mac: mac(1),
                port: PortId(4),
                last_seen: secs(3),
                is_static: false
            },
            TableEntry {
                mac: mac(2),
                port: PortId(5),
                last_seen: Duration::ZERO,
                is_static: true
            },
        ]
    );
}

#[derive(Debug, Clone)]
enum Op {
    Learn(u8, u8),
    Lookup(u8),
    AddStatic(u8, u8),
    RemoveStatic(u8),
    FlushPort(u8),
    RemovePortStatics(u8),
    Age,
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    // 40 MACs over 4 ports, a 12-entry table: lots of fullness and churn.
    prop_oneof![
        6 => (0..40u8, 0..4u8).prop_map(|(m, p)| Op::Learn(m, p)),
        3 => (0..40u8).prop_map(Op::Lookup),
        1 => (0..40u8, 0..4u8).prop_map(|(m, p)| Op::AddStatic(m, p)),
        1 => (0..40u8).prop_map(Op::RemoveStatic),
        1 => (0..4u8).prop_map(Op::FlushPort),
        1 => (0..4u8).prop_map(Op::RemovePortStatics),
        1 => Just(Op::Age),
        2 => (0..8u8).prop_map(Op::Tick),
    ]
}

/// Reference model: (port, last_seen, is_static) per MAC.
type Model = HashMap<u8, (u8, u64, bool)>;

proptest! {
    /// The table agrees with a plain HashMap model on every operation, with
    /// random hash keys so probe runs wrap around the end of the array.
    #[test]
    fn matches_model(k0: u64, k1: u64, ops in proptest::collection::vec(op(), 1..300)) {
        run_model(k0, k1, ops, usize::MAX)?;
    }

    /// The same with a learning limit of 4 entries per port (the 4 ports
    /// could hold 16, the table 12): the model refuses a MAC new to a full
    /// port, and the table's per-port counts match its entries.
    #[test]
    fn matches_model_with_port_capacity(
        k0: u64,
        k1: u64,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        run_model(k0, k1, ops, 4)?;
    }
}

fn run_model(k0: u64, k1: u64, ops: Vec<Op>, pcap: usize) -> Result<(), TestCaseError> {
    {
        const CAP: usize = 12;
        const AGING: u64 = 10;
        let cfg = TableConfig {
            capacity: CAP,
            aging: secs(AGING),
            port_capacity: pcap,
        };
        let mut t = MacTable::with_hash(cfg, MacHash { k0, k1: k1 | 1 });
        let mut model = Model::new();
        let mut now = 0u64;
        let live = |e: &(u8, u64, bool), now: u64| e.2 || now < e.1 + AGING;
        for op in ops {
            match op {
                Op::Learn(m, p) => {
                    let got = t.learn(mac(m), PortId(p.into()), secs(now));
                    let learned = model.values().filter(|e| !e.2).count();
                    let on_p = model.values().filter(|e| !e.2 && e.0 == p).count();
                    let want = match model.get_mut(&m) {
                        Some(e) if e.2 => LearnOutcome::StaticIgnored,
                        Some(e) if e.0 != p && on_p >= pcap => LearnOutcome::PortLimit,
                        Some(e) => {
                            let was_live = live(e, now);
                            let moved = e.0 != p;
                            *e = (p, e.1.max(now), false);
                            if !was_live {
                                LearnOutcome::New
                            } else if moved {
                                LearnOutcome::Moved
                            } else {
                                LearnOutcome::Refreshed
                            }
                        }
                        None if learned >= CAP => LearnOutcome::TableFull,
                        None if on_p >= pcap => LearnOutcome::PortLimit,
                        None => {
                            model.insert(m, (p, now, false));
                            LearnOutcome::New
                        }
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Lookup(m) => {
                    let want = model
                        .get(&m)
                        .filter(|e| live(e, now))
                        .map(|e| PortId(e.0.into()));
                    prop_assert_eq!(t.lookup(mac(m), secs(now)), want);
                }
                Op::AddStatic(m, p) => {
                    t.add_static(mac(m), PortId(p.into())).unwrap();
                    model.insert(m, (p, 0, true));
                }
                Op::RemoveStatic(m) => {
                    let want = matches!(model.get(&m), Some(e) if e.2);
                    if want {
                        model.remove(&m);
                    }
                    prop_assert_eq!(t.remove_static(mac(m)), want);
                }
                Op::FlushPort(p) => {
                    let before = model.len();
                    model.retain(|_, e| e.2 || e.0 != p);
                    prop_assert_eq!(t.flush_port(PortId(p.into())), before - model.len());
                }
                Op::RemovePortStatics(p) => {
                    let before = model.len();
                    model.retain(|_, e| !e.2 || e.0 != p);
                    prop_assert_eq!(
                        t.remove_port_statics(PortId(p.into())),
                        before - model.len()
                    );
                }
                Op::Age => {
                    let before = model.len();
                    model.retain(|_, e| live(e, now));
                    prop_assert_eq!(t.age(secs(now)), before - model.len());
                }
                Op::Tick(d) => now += u64::from(d),
            }
            prop_assert_eq!(t.len(), model.len());
            prop_assert!(t.learned_len() <= CAP);
            assert_consistent(&t);
        }
        // Whatever happened, aging far in the future leaves only statics.
        let _ = t.age(secs(now + AGING));
        prop_assert_eq!(t.learned_len(), 0);
        prop_assert_eq!(t.next_expiry(), None);
    }
    Ok(())
}

#[test]
fn port_capacity_bounds_what_one_port_learns() {
    let mut t = MacTable::new(TableConfig {
        capacity: 64,
        aging: secs(10),
        port_capacity: 3,
    });
    t.reserve_port(PortId(1));
    for n in 0..3 {
        assert_eq!(t.learn(mac(n), PortId(1), secs(0)), LearnOutcome::New);
    }
    // A fourth MAC on port 1 is refused; port 2 still learns.
    assert_eq!(t.learn(mac(3), PortId(1), secs(0)), LearnOutcome::PortLimit);
    assert_eq!(t.lookup(mac(3), secs(0)), None);
    assert_eq!(t.learn(mac(4), PortId(2), secs(0)), LearnOutcome::New);
    // Nor may a MAC move onto the full port: it stays where it was.
    assert_eq!(t.learn(mac(4), PortId(1), secs(1)), LearnOutcome::PortLimit);
    assert_eq!(t.lookup(mac(4), secs(1)), Some(PortId(2)));
    // Known MACs on the port are still refreshed.
    assert_eq!(t.learn(mac(0), PortId(1), secs(1)), LearnOutcome::Refreshed);
    assert_eq!((t.port_len(PortId(1)), t.port_len(PortId(2))), (3, 1));
    // A MAC that moves away frees its place.
    assert_eq!(t.learn(mac(1), PortId(2), secs(2)), LearnOutcome::Moved);
    assert_eq!(t.learn(mac(3), PortId(1), secs(2)), LearnOutcome::New);
    // As do aging, a static entry replacing a learned one, and a flush.
    t.add_static(mac(3), PortId(1)).unwrap();
    assert_eq!(t.port_len(PortId(1)), 2);
    assert_eq!(t.age(secs(10)), 2);
    assert_eq!(t.port_len(PortId(1)), 1);
    assert_eq!(t.flush_port(PortId(1)), 1);
    assert_eq!(t.port_len(PortId(1)), 0);
    assert_consistent(&t);
    // A detached port's count goes with it; one still holding entries stays.
    t.release_port(PortId(1));
    t.release_port(PortId(2));
    assert_eq!(t.per_port.len(), 1);
    assert_eq!(t.port_len(PortId(2)), 1);
}

#[test]
fn default_port_capacity() {
    assert_eq!(TableConfig::default().port_capacity, 256);
}
