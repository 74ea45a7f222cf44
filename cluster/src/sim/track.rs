//! The tables in the simulation: operations on a node's tables, and the measures
//! taken from the data-plane events (what the daemon would program).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Sim, SimNode};
use crate::table::{Event, NodeKey, TableError};

/// A write not yet visible everywhere.
#[derive(Debug)]
struct Write {
    net: String,
    key: String,
    value: Vec<u8>,
    since: Duration,
    /// Live nodes attached to `net` at the write that have not shown it yet.
    waiting: HashSet<usize>,
}

/// A crash whose entries are not removed everywhere yet.
#[derive(Debug)]
struct Crash {
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
    writes: HashMap<NodeKey, Vec<Write>>,
    propagations: Vec<Duration>,
    crashes: Vec<Crash>,
    entry_detections: Vec<Duration>,
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

    fn settle(&mut self, now: Duration) {
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

impl Sim {
    fn running(&self, index: usize) -> Result<(), TableError> {
        if self.nodes[index].running {
            Ok(())
        } else {
            // A stopped node is attached to nothing.
            Err(TableError::NotAttached)
        }
    }

    /// Attach node `index` to `net`.
    pub fn join_network(&mut self, index: usize, net: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.join_network(net, now);
        self.drain(index);
        r
    }

    /// Detach node `index` from `net`.
    pub fn leave_network(&mut self, index: usize, net: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.leave_network(net, now);
        for w in self
            .track
            .writes
            .values_mut()
            .flatten()
            .filter(|w| w.net == net)
        {
            w.waiting.remove(&index);
        }
        self.drain(index);
        self.track.settle(now);
        r
    }

    /// Node `index` writes `key` = `value` on `net`; the time until every live
    /// node attached to `net` (at the write) shows it is measured
    /// ([`Sim::propagations`]). An earlier write of the same key still pending is
    /// no longer measured.
    pub fn set_entry(
        &mut self,
        index: usize,
        net: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        self.nodes[index].node.set(net, key, value, now)?;
        let owner = self.nodes[index].node.id().key;
        let ws = self.track.writes.entry(owner).or_default();
        ws.retain(|w| !(w.key == key && w.net == net));
        let waiting = (0..self.nodes.len())
            .filter(|&i| {
                i != index
                    && self.nodes[i].running
                    && self.nodes[i]
                        .node
                        .tables()
                        .networks()
                        .iter()
                        .any(|n| n == net)
            })
            .collect();
        self.track.writes.entry(owner).or_default().push(Write {
            net: net.to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
            since: now,
            waiting,
        });
        self.drain(index);
        self.track.settle(now);
        Ok(())
    }

    /// Node `index` deletes its entry `key` on `net`.
    pub fn delete_entry(&mut self, index: usize, net: &str, key: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.delete(net, key, now);
        self.drain(index);
        r
    }

    /// Times from a write ([`Sim::set_entry`]) until every live node of its
    /// network showed it, in completion order.
    pub fn propagations(&self) -> &[Duration] {
        &self.track.propagations
    }

    /// Writes not yet shown everywhere.
    pub fn pending_propagations(&self) -> usize {
        self.track.writes.values().map(Vec::len).sum()
    }

    /// Stop measuring the writes still pending (as the burst of a start), and
    /// say how many there were.
    pub fn forget_pending_propagations(&mut self) -> usize {
        let n = self.pending_propagations();
        self.track.writes.clear();
        n
    }

    /// Times from a crash until every live node that showed entries of the
    /// crashed node had removed them all (its Remove events), in completion order.
    pub fn entry_detections(&self) -> &[Duration] {
        &self.track.entry_detections
    }

    /// Crashes whose entries some live node still shows.
    pub fn pending_entry_detections(&self) -> usize {
        self.track.crashes.len()
    }
}
