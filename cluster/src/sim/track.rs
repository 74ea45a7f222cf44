//! The measures taken from the data-plane events of the tables in the simulation
//! (what the daemon would program).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::node::SimNode;
use crate::table::{Event, NodeKey};

/// A write not yet visible everywhere.
#[derive(Debug)]
pub(super) struct Write {
    pub(super) net: String,
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    pub(super) since: Duration,
    /// Live nodes attached to `net` at the write that have not shown it yet.
    pub(super) waiting: HashSet<usize>,
}

/// A crash whose entries are not removed everywhere yet.
#[derive(Debug)]
pub(super) struct Crash {
    owner: NodeKey,
    since: Duration,
    /// Live nodes, and how many of the crashed node's entries each still shows.
    waiting: HashMap<usize, usize>,
}

/// Measures taken from the nodes' table events. Bounded by the writes and crashes
/// the caller makes (each pending one holds a set of at most N nodes).
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Pending writes by owner (a few per owner at most).
    pub(super) writes: HashMap<NodeKey, Vec<Write>>,
    pub(super) propagations: Vec<Duration>,
    pub(super) crashes: Vec<Crash>,
    pub(super) entry_detections: Vec<Duration>,
}

impl Tracker {
    /// Node `i` produced `event` at `now`.
    pub(super) fn table_event(&mut self, i: usize, event: &Event, now: Duration) {
        match event {
            Event::Upsert {
                net,
                key,
                owner,
                value,
            } => {
                let Some(ws) = self.writes.get_mut(owner) else {
                    return;
                };
                let mut done = false;
                for w in ws.iter_mut() {
                    if w.key == *key && w.net == *net && w.value == *value {
                        done |= w.waiting.remove(&i) && w.waiting.is_empty();
                    }
                }
                if !done {
                    return;
                }
            }
            Event::Remove { owner, .. } => {
                if self.crashes.is_empty() {
                    return;
                }
                for c in &mut self.crashes {
                    if c.owner == *owner
                        && let Some(left) = c.waiting.get_mut(&i)
                    {
                        *left -= 1;
                        if *left == 0 {
                            c.waiting.remove(&i);
                        }
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Node `index` (key `owner`) crashed: it waits for nothing any more, and the
    /// removal of its entries everywhere is measured from now.
    pub(super) fn crashed(
        &mut self,
        index: usize,
        owner: NodeKey,
        nodes: &[SimNode],
        now: Duration,
    ) {
        self.gone(index, now);
        let mut waiting = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if i == index || !n.running {
                continue;
            }
            let tables = n.node.tables();
            let shown: usize = tables
                .networks()
                .iter()
                .map(|net| {
                    tables
                        .entries(net)
                        .iter()
                        .filter(|e| e.owner == owner)
                        .count()
                })
                .sum();
            if shown > 0 {
                waiting.insert(i, shown);
            }
        }
        if !waiting.is_empty() {
            self.crashes.push(Crash {
                owner,
                since: now,
                waiting,
            });
        }
    }

    /// Node `index` stopped (crash or leave): it is no longer waited for.
    pub(super) fn gone(&mut self, index: usize, now: Duration) {
        for w in self.writes.values_mut().flatten() {
            w.waiting.remove(&index);
        }
        for c in &mut self.crashes {
            c.waiting.remove(&index);
        }
        self.settle(now);
    }

    pub(super) fn settle(&mut self, now: Duration) {
        let done = &mut self.propagations;
        self.writes.retain(|_, ws| {
            ws.retain(|w| {
                if w.waiting.is_empty() {
                    done.push(now - w.since);
                    false
                } else {
                    true
                }
            });
            !ws.is_empty()
        });
        let done = &mut self.entry_detections;
        self.crashes.retain(|c| {
            if c.waiting.is_empty() {
                done.push(now - c.since);
                false
            } else {
                true
            }
        });
    }
}
